import ArgumentParser
import CECluster
import CECore
@_spi(Measuring) import CENode
import CEObserve
import Foundation
import Synchronization
import ZeroMQ

/// A subscriber node in its own process, the origin node in this one: emit -> stored at the
/// origin -> stored at the subscriber. Throughput, latency at a fixed rate (and its first part,
/// the emit's acknowledgement), and the ask round trip.
struct BusBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bus",
        abstract: "Emit -> stored at the origin -> stored at a subscriber process: throughput, latency at a fixed rate, ask round trip.")

    @Option(help: "Events of the throughput phase (and at most this many in the paced phase).")
    var events = 50_000

    @Option(help: ArgumentHelp("The paced phase's rate (events/s), offered for 5 s.", valueName: "events-per-s"))
    var rate = 10_000

    @Option(help: "Ask round trips timed.")
    var asks = 2000

    @Option(help: "Concurrent tasks emitting in the throughput phase.")
    var emitters = 256

    @Option(help: "Events per emit call in the throughput phase (one acknowledgement for the batch).")
    var batch = 1

    @Flag(help: "Both nodes store with synchronous=NORMAL (no fsync per batch) instead of FULL.")
    var normal = false

    @Flag(help: "Plain PUB/SUB at both nodes: no sequence tracking or replay, to see what the guarantees cost.")
    var noReplay = false

    @Flag(help: "Record no metrics at either node (swift-metrics' no-op handlers), to see what they cost.")
    var noMetrics = false

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--events": events, "--rate": rate, "--asks": asks, "--emitters": emitters, "--batch": batch])
    }

    @MainActor func run() async throws {
        let (count, rate, asks) = (events, rate, asks)
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        let path = try cluster.write(topology: """
            version: 1
            settings: { heartbeat_ms: 200, ask_timeout_ms: 5000\(cluster.securitySetting) }
            nodes:
              - { name: origin, pool: planner, \(try cluster.place("origin")) }
              - { name: subscriber, pool: builder, \(try cluster.place("subscriber")) }
              - { name: asker, pool: reviewer, \(try cluster.place("asker")) }
            """)
        let topology = try TopologyLoader.load(path: path)

        var subscriberArguments: [String] = []
        var originOptions = try Node.Options(topology: topology, name: "origin")
        originOptions.durability = normal ? .normal : .full
        subscriberArguments += ["--durability", originOptions.durability.rawValue]
        if noReplay {
            originOptions.replay = false
            subscriberArguments += ["--no-replay"]
            print("bus: plain PUB/SUB, no sequence tracking or replay")
        }
        // Metrics as `ce-node run` records them (a Prometheus registry behind swift-metrics), at
        // the origin in this process and at the subscriber process; --no-metrics: no-op handlers.
        if noMetrics {
            subscriberArguments += ["--no-metrics"]
            print("bus: no metrics")
        } else {
            _ = Observability.bootstrap()
        }
        let origin = try Node(options: originOptions)
        origin.answerQuestions { question in question.question }
        let child = try startNode(topology: path, node: "subscriber", logLevel: "warning", subscriberArguments)
        defer { stopNode(child) }
        let originTask = Task { try await origin.run() }
        defer { originTask.cancel() }

        // Every event the subscriber stores appears on its feed: note when.
        let context = try Context()
        let feed = try context.socket(.sub)
        try feed.set(.subscribe(Array("plan_ready/".utf8)))
        try feed.set(.receiveHighWaterMark(0))
        let subscriberPaths = NodePaths(dataDirectory: topology.node(named: "subscriber")!.data)
        let arrivals = Mutex<[UInt64: ContinuousClock.Instant]>([:])
        let client = ControlClient(dataDirectory: subscriberPaths.data)
        var up = false
        for _ in 0..<500 where !up {
            if let status = try? await client.status(timeout: .milliseconds(200)),
                status["peers"]?.arrayValue?.first(where: { $0["name"]?.stringValue == "origin" })?["up"]?.boolValue == true {
                up = true
            } else {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        guard up else { throw BenchmarkFailure("the subscriber node did not come up") }
        try feed.connect(subscriberPaths.feedEndpoint)
        // Detached: a task made here would run on the main actor and hop to and from it for every
        // message it awaits, costing the machine two thread wake-ups per event and delaying `now`.
        let reader = Task.detached {
            for try await message in feed.messages {
                let now = ContinuousClock.now
                guard message.count == 2, let seqText = message[1].bytes.split(separator: UInt8(ascii: ",")).first(where: { $0.starts(with: Array("\"seq\":".utf8)) }),
                    let seq = UInt64(String(decoding: seqText.dropFirst(6), as: UTF8.self)) else { continue }
                arrivals.withLock { $0[seq] = now }
            }
        }
        defer { reader.cancel() }
        // Warm up until the feed delivers.
        var warm = 0
        while arrivals.withLock({ $0.isEmpty }) && warm < 500 {
            _ = try await origin.emit(.planReady, payload: payload)
            try await Task.sleep(for: .milliseconds(10))
            warm += 1
        }
        let firstSeq = origin.lastSequence + 1

        // 1. Throughput: many tasks emitting as fast as the origin stores them (each emit returns
        // once its event is durable, so the batch per fsync is at most the number of emitters).
        let start = ContinuousClock.now
        // With --batch B each emitter emits B events per call (one acknowledgement for the batch,
        // like an asynchronous publisher that waits for acks in windows).
        let (emitters, emitBatch) = (emitters, batch)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<emitters {
                group.addTask {
                    let mine = stride(from: t, to: count, by: emitters).map { _ in Node.Emission(.planReady, payload: payload) }
                    for start in stride(from: 0, to: mine.count, by: emitBatch) {
                        let slice = Array(mine[start..<min(mine.count, start + emitBatch)])
                        if slice.count == 1 { _ = try await origin.emit(.planReady, payload: payload) } else { _ = try await origin.emit(slice) }
                    }
                }
            }
            try await group.waitForAll()
        }
        let stored = seconds(since: start)
        let last = firstSeq + UInt64(count) - 1
        let deadline = ContinuousClock.now + .seconds(120)
        while arrivals.withLock({ $0[last] == nil }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let delivered = seconds(since: start)
        let got = arrivals.withLock { a in (firstSeq...last).filter { a[$0] != nil }.count }
        print(String(format: "bus: %d events of 256 B payload, %d concurrent emitters, batches of \(emitBatch): stored at origin at %.0f events/s; stored and delivered at the subscriber process at %.0f events/s (%d of %d arrived)",
                     count, emitters, Double(count) / stored, Double(got) / delivered, got, count))
        // How the subscriber got them: live, or by replay after its queue at the origin overflowed.
        let counters = (try? await client.status())?["counters"]
        print(String(format: "bus: at the subscriber: %d received, %d of them by replay, %d live events dropped behind a gap",
                     counters?["received"]?.intValue ?? -1, counters?["replayed_in"]?.intValue ?? -1, counters?["pending_dropped"]?.intValue ?? -1))

        // 2. Latency at a fixed rate: emit call -> event on the subscriber's feed.
        let latencyCount = min(count, rate * 5)
        let offered = ContinuousClock.now
        let cpuBefore = (here: cpuSeconds(), subscriber: cpuSeconds(child.processIdentifier))
        let results = try await pacedEmits(latencyCount, perSecond: rate) { try await origin.emit(.planReady, payload: payload).seq }
        let sent = Dictionary(uniqueKeysWithValues: results.map { ($0.seq, $0.start) })
        let acknowledged = results.map(\.ack).sorted()
        let offeredRate = Double(latencyCount) / seconds(since: offered)
        let lastPaced = sent.keys.max()!
        let deadline2 = ContinuousClock.now + .seconds(60)
        while arrivals.withLock({ $0[lastPaced] == nil }) && ContinuousClock.now < deadline2 { try await Task.sleep(for: .milliseconds(5)) }
        let latencies = arrivals.withLock { a in sent.compactMap { seq, t in a[seq].map { microseconds($0 - t) } } }.sorted()
        print(String(format: "bus: latency at %d events/s (%d events emitted at %.0f a second, emit -> stored at origin -> stored at subscriber): p50 %.0f us, p99 %.0f us",
                     rate, latencies.count, offeredRate, percentile(latencies, 0.5), percentile(latencies, 0.99)))
        // What the paced phase cost each process, per event (this one holds the origin node and the
        // benchmark's own pacing and feed reader).
        let cpuHere = cpuSeconds() - cpuBefore.here, cpuSubscriber = cpuSeconds(child.processIdentifier) - cpuBefore.subscriber
        print(String(format: "bus: CPU while paced: %.2f s here (origin and benchmark), %.2f s at the subscriber: %.0f and %.0f us per event",
                     cpuHere, cpuSubscriber, cpuHere * 1e6 / Double(latencyCount), cpuSubscriber * 1e6 / Double(latencyCount)))
        // The first part of that path: the emit call until it returns (stored at the origin).
        print(String(format: "bus: of which emit -> acknowledged (stored at the origin): p50 %.0f us, p99 %.0f us",
                     percentile(acknowledged, 0.5), percentile(acknowledged, 0.99)))

        // 3. ask round trip: a second in-process node asks the origin's pool (a Swift handler answers).
        let asker = try Node(options: try Node.Options(topology: topology, name: "asker"))
        let askerTask = Task { try await asker.run() }
        defer { askerTask.cancel() }
        // A new node takes the history from its peers first: asks are timed after that.
        await asker.waitForRefill()
        _ = try await asker.ask(pool: "planner", question: "warm up")
        // Off the main actor (as the feed reader and the paced emits): each ask would otherwise
        // hop to the main thread and back, two thread wake-ups that are the benchmark's, not the bus's.
        let rtts = try await Task.detached {
            var rtts: [Double] = []
            for i in 0..<asks {
                let t = ContinuousClock.now
                _ = try await asker.ask(pool: "planner", question: .number(Double(i)))
                rtts.append(microseconds(ContinuousClock.now - t))
            }
            return rtts.sorted()
        }.value
        print(String(format: "bus: ask round trip (%d asks, answered once and recorded durably): p50 %.0f us, p99 %.0f us",
                     asks, percentile(rtts, 0.5), percentile(rtts, 0.99)))
        askerTask.cancel()
        originTask.cancel()
        _ = await askerTask.result
        _ = await originTask.result
        await context.shutdown()
    }
}

/// Calls `emit` `count` times at `perSecond`, each call a task of its own started at its time
/// whether the ones before have returned or not, so the rate is offered as asked (one emitter
/// waiting for each acknowledgement would offer at most one per commit). Returns each call's
/// sequence, start and duration in microseconds, once all have returned.
///
/// The times are kept by a thread of its own that sleeps until each one (`nanosleep`): a task
/// sleeping between emits (`Task.sleep`) armed a timer of the runtime's for every event, and at
/// 10 k events/s the thread serving those timers took a sixth of the process's CPU, beside the
/// origin node it shares the machine with.
func pacedEmits(_ count: Int, perSecond rate: Int, _ emit: @escaping @Sendable () async throws -> UInt64) async throws -> [(seq: UInt64, start: ContinuousClock.Instant, ack: Double)] {
    guard count > 0 else { return [] }
    final class Paced: Sendable {
        let state: Mutex<(results: [(seq: UInt64, start: ContinuousClock.Instant, ack: Double)], failure: (any Error)?, left: Int)>
        init(_ count: Int) { state = Mutex(([], nil, count)) }
    }
    let paced = Paced(count)
    return try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            ThreadName.set("ce-bench-pacer")
            let first = ContinuousClock.now
            let interval = 1.0 / Double(rate)
            for i in 0..<count {
                let wait = first + .seconds(Double(i) * interval) - ContinuousClock.now
                if wait > .zero {
                    let (seconds, attoseconds) = wait.components
                    var time = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
                    var left = timespec()
                    while nanosleep(&time, &left) != 0 && errno == EINTR { time = left }
                }
                Task.detached {
                    let t = ContinuousClock.now
                    var result: Result<UInt64, any Error>
                    do { result = .success(try await emit()) } catch { result = .failure(error) }
                    let ack = microseconds(ContinuousClock.now - t)
                    let done = paced.state.withLock { s -> Bool in
                        switch result {
                        case .success(let seq): s.results.append((seq, t, ack))
                        case .failure(let error): s.failure = s.failure ?? error
                        }
                        s.left -= 1
                        return s.left == 0
                    }
                    guard done else { return }
                    let (results, failure) = paced.state.withLock { ($0.results, $0.failure) }
                    if let failure { continuation.resume(throwing: failure) } else { continuation.resume(returning: results) }
                }
            }
        }
        thread.start()
    }
}
