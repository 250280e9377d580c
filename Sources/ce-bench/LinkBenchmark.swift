import ArgumentParser
import CECore
import CENode
import Foundation
import Synchronization
import ZeroMQ

/// Two nodes that already run (in containers, on other hosts, or `ce-node run` here), reached
/// through their data folders: events emitted at `--from` (control endpoint, one at a time, at
/// `--rate` per second) and timed until they appear on `--to`'s feed, i.e. stored there. The
/// emit call includes the durable store at the origin; `--type` must be one `--to` subscribes to.
struct LinkBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link",
        abstract: "Two running nodes reached through their data folders: emit at one -> stored at the other, p50/p99.")

    @Option(help: ArgumentHelp("The data folder of the node that emits.", valueName: "data-dir"))
    var from: String

    @Option(help: ArgumentHelp("The data folder of the node whose feed shows the events stored.", valueName: "data-dir"))
    var to: String

    @Option(help: "Events emitted, one at a time.")
    var events = 2000

    @Option(help: ArgumentHelp("Events emitted per second.", valueName: "events-per-s"))
    var rate = 200

    @Option(name: .customLong("type"), help: ArgumentHelp("The events' type; the receiving node must subscribe to it.", valueName: "event-type"))
    var typeName = "plan_ready"

    func validate() throws {
        try requirePositive(["--events": events, "--rate": rate])
        do { _ = try EventType(validating: typeName) } catch { throw ValidationError("--type: not an event type: \(typeName)") }
    }

    @MainActor func run() async throws {
        let (count, rate, typeName, from, to) = (events, rate, typeName, from, to)
        let type = try EventType(validating: typeName)
        let context = try Context()
        let feed = try context.socket(.sub)
        try feed.set([.subscribe(Topic.subscriptionPrefix(for: type)), .receiveHighWaterMark(0)])
        try feed.connect(NodePaths(dataDirectory: to).feedEndpoint)
        // A REQ socket of its own rather than ControlClient's call, which opens one per request:
        // the request is encoded once and the socket kept, so the emit is what is timed.
        let control = try context.socket(.req)
        try control.set(.linger(milliseconds: 0))
        try control.connect(NodePaths(dataDirectory: from).controlEndpoint)
        let arrivals = Mutex<[String: ContinuousClock.Instant]>([:])
        let reader = Task.detached {  // off the main actor, as the bus benchmark's reader
            for try await message in feed.messages {
                let now = ContinuousClock.now
                guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes) else { continue }
                arrivals.withLock { $0[event.id] = now }
            }
        }
        defer { reader.cancel() }
        let request = ControlRequest.emit(.init(type, payload: payload))
        let message = Message(request.json.serialized())
        func emit() async throws -> String {
            try await control.send(message)
            let reply = try await control.receive(timeout: .seconds(30))
            switch try ControlReply(json: try JSONValue(parsing: reply[0].bytes), answering: request) {
            case .event(let event):
                guard let id = event["id"]?.stringValue else { throw BenchmarkFailure("the node at \(from) stored an event without an id: \(event.serializedString)") }
                return id
            case .failure(let text): throw BenchmarkFailure("the node at \(from) refused the emit: \(text)")
            default: throw BenchmarkFailure("the node at \(from) answered the emit with another reply")
            }
        }
        // Warm up until the feed delivers (the feed's subscription takes a moment to reach the node).
        var warm = 0
        while arrivals.withLock({ $0.isEmpty }) {
            warm += 1
            if warm > 500 { throw BenchmarkFailure("nothing emitted at \(from) reached the feed of \(to) in 500 tries: does it subscribe to \(typeName)?") }
            _ = try await emit()
            try await Task.sleep(for: .milliseconds(10))
        }
        var sent: [(String, ContinuousClock.Instant)] = []
        var acks: [Double] = []
        let paced = ContinuousClock.now
        for i in 0..<count {
            let due = paced + .seconds(Double(i) / Double(rate))
            if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
            let t = ContinuousClock.now
            let id = try await emit()
            acks.append(milliseconds(ContinuousClock.now - t))
            sent.append((id, t))
        }
        let lastID = sent.last!.0
        let deadline = ContinuousClock.now + .seconds(30)
        while arrivals.withLock({ $0[lastID] == nil }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let latencies = arrivals.withLock { a in sent.compactMap { id, t in a[id].map { milliseconds($0 - t) } } }.sorted()
        acks.sort()
        print(String(format: "link: %d %@ events of 256 B at %d/s: emit call -> stored at the receiver p50 %.2f ms, p99 %.2f ms (%d of %d arrived); emit acknowledged (stored at the origin) p50 %.2f ms, p99 %.2f ms",
                     count, typeName as NSString, rate, percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.count, count,
                     percentile(acks, 0.5), percentile(acks, 0.99)))
        reader.cancel()
        await context.shutdown()
    }
}
