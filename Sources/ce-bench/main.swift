// Benchmarks of the store and the bus, printing figures (never asserted in tests).
//   ce-bench store [--events N] [--batch B] [--tasks T] [--durability full|normal|both] [--checkpoints M] [--dir DIR] [--ceiling PATH]
//                                                 appends 256 B events: batches, and the group-commit writer
//   ce-bench gates [--pools N] [--rounds R] [--processes]   gate decision latency: last sync_point_reached -> gate_passed at every pool
//   ce-bench bus [--events N] [--rate R] [--emitters E] [--asks A]   emit -> stored at origin -> stored at a subscriber process;
//                                                  (bus, gates, replay: CURVE as in every cluster; --no-curve: security none)
//                                                  throughput, latency at R events/s (and its first part, the
//                                                  emit's acknowledgement), ask round trip
//   ce-bench replay [--events N] [--stall N]     catch-up rate of a subscriber N events behind; origin memory
//                                                  while a subscriber is stalled (SIGSTOP) and N events pass
//   ce-bench refill [--events N] [--gates G]    a node restarting with its store lost, in a cluster holding N
//                                                  events: refill rate and time until its store matches the census;
//                                                  a coordinator whose disk is lost rebuilding G open gates and G
//                                                  open conflicts from the pools
//   ce-bench codec [--events N] [--fields F]    the envelope alone: encode and decode (with the topic check),
//                                                  per event, as the bus and replay pay them at both ends, and
//                                                  decode with the payload read (F more keys in it)
//   ce-bench link --from DATA --to DATA [--events N] [--rate R] [--type T]
//                                                 two running nodes (any hosts, e.g. containers) reached through
//                                                  their data folders: emit at one -> stored at the other, p50/p99
import CECore
import CENode
import CEObserve
import CEStore
import Foundation
import Synchronization
import ZeroMQ

func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data((text + "\n").utf8))
    exit(2)
}

let usage = "usage: ce-bench store [--events N] [--batch B] [--tasks T] [--durability full|normal|both] [--checkpoints background|inline|both] [--random-ids] [--dir DIR] [--ceiling PATH_TO_sqlite_ceiling]\n       ce-bench gates [--pools N] [--rounds R] [--processes] [--heartbeat-ms MS]\n       ce-bench bus [--events N] [--rate EVENTS_PER_S] [--asks N] [--emitters N] [--batch B] [--normal] [--no-replay] [--no-curve] [--no-metrics]\n       ce-bench emit [--events N] [--batch B] [--emitters E] [--normal] [--no-curve]\n       ce-bench replay [--events N] [--stall N]\n       ce-bench refill [--events N] [--gates G]\n       ce-bench codec [--events N] [--fields F]\n       ce-bench link --from DATA_DIR --to DATA_DIR [--events N] [--rate EVENTS_PER_S] [--type EVENT_TYPE]"
let arguments = Array(CommandLine.arguments.dropFirst(2))
guard let command = CommandLine.arguments.dropFirst().first else { fail(usage) }

/// The text after `name`, if given.
@MainActor func textOption(_ name: String) -> String? {
    guard let i = arguments.firstIndex(of: name) else { return nil }
    guard i + 1 < arguments.count else { fail("\(name) needs a value\n\(usage)") }
    return arguments[i + 1]
}

@MainActor func option(_ name: String, default value: Int) -> Int {
    guard let i = arguments.firstIndex(of: name) else { return value }
    guard i + 1 < arguments.count, let n = Int(arguments[i + 1]), n > 0 else { fail("\(name) needs a positive number\n\(usage)") }
    return n
}
for (i, a) in arguments.enumerated() where a.hasPrefix("--") && !["--events", "--gates", "--rate", "--asks", "--emitters", "--normal", "--pools", "--rounds", "--batch", "--tasks", "--durability", "--dir", "--ceiling", "--processes", "--heartbeat-ms", "--no-replay", "--stall", "--from", "--to", "--type", "--checkpoints", "--random-ids", "--no-curve", "--no-metrics", "--fields"].contains(a) {
    fail("unknown flag \(a) (argument \(i + 1))\n\(usage)")
}

/// CURVE for a node of a benchmark topology, as every cluster has it by default: its secret
/// key in its data folder, and the `public_key` entry for its line of the topology. With
/// `--no-curve`, nothing (and `securitySetting` turns security off).
@MainActor func key(_ name: String) throws -> String {
    if arguments.contains("--no-curve") { return "" }
    let pair = try NodeKeyFile.generate(dataDirectory: temporaryRoot + "/" + name, node: name, force: true)
    return ", public_key: \"\(pair.publicKey)\""
}

@MainActor func securitySetting() -> String { arguments.contains("--no-curve") ? ", security: none" : "" }

func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

@Sendable func microseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

let payload: JSONValue = .string(String(repeating: "x", count: 256))

/// Stops a child process: `signal`, then SIGKILL after 10 s; returns once it has exited or
/// 15 s have passed. Polls instead of `waitUntilExit`, which was seen spinning for minutes after
/// a child that had already been reaped.
func stopChild(_ child: Process, signal: Int32 = SIGTERM) {
    guard child.isRunning else { return }
    kill(child.processIdentifier, signal)
    let start = Date()
    while child.isRunning && Date().timeIntervalSince(start) < 15 {
        if signal != SIGKILL && Date().timeIntervalSince(start) >= 10 { kill(child.processIdentifier, SIGKILL) }
        usleep(10_000)
    }
}

/// The `ce-node` built beside this benchmark.
let ceNodeBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ce-node")

/// A loopback port for a node of a benchmark topology, never the same twice in a run, below
/// the kernel's ephemeral range (32768-60999), which outgoing connections take.
var portsGiven = Set<Int>()
@MainActor func port() -> Int {
    while true {
        let p = Int.random(in: 20000..<32000)
        if portsGiven.insert(p).inserted { return p }
    }
}
let temporaryRoot = NSTemporaryDirectory() + "ce-bench-" + UUID().uuidString.prefix(8)
defer { try? FileManager.default.removeItem(atPath: temporaryRoot) }

switch command {
case "store": try await storeBenchmark()
case "bus": try await busBenchmark()
case "gates": try await gateBenchmark()
case "replay": try await replayBenchmark()
case "link": try await linkBenchmark()
case "emit": try await emitBenchmark()
case "refill": try await refillBenchmark()
case "codec": codecBenchmark()
default: fail("unknown benchmark \(command)\n\(usage)")
}
try? FileManager.default.removeItem(atPath: temporaryRoot)

/// Appends `--events` events with a 256-byte payload to fresh stores: in batches of `--batch`
/// from one caller (with each commit's latency), then one event per call from `--tasks`
/// concurrent tasks through the group-commit writer. With `--ceiling PATH` it first runs
/// shared/bench/sqlite_ceiling.c's binary (tuned, same rows and batch, and `full` when the
/// store runs synchronous=FULL) and prints each figure as a share of it. `--checkpoints
/// background|inline|both`: where WAL checkpoints run (inline: inside the commits, as SQLite
/// does by default), to show what they do to the commit latency tail.
@MainActor func storeBenchmark() async throws {
    let count = option("--events", default: 200_000)
    let batch = option("--batch", default: 1000)
    let tasks = option("--tasks", default: 16)
    let durabilities: [EventStore.Durability]
    switch textOption("--durability") ?? "both" {
    case "both": durabilities = [.normal, .full]
    case let text:
        guard let durability = EventStore.Durability(rawValue: text) else { fail("--durability is full, normal or both\n\(usage)") }
        durabilities = [durability]
    }
    let checkpointModes: [EventStore.Checkpoints]
    switch textOption("--checkpoints") ?? "background" {
    case "both": checkpointModes = [.background, .inline]
    case let text:
        guard let mode = EventStore.Checkpoints(rawValue: text) else { fail("--checkpoints is background, inline or both\n\(usage)") }
        checkpointModes = [mode]
    }
    let root = (textOption("--dir") ?? NSTemporaryDirectory()) + "/ce-bench-store-" + UUID().uuidString.prefix(8)
    defer { try? FileManager.default.removeItem(atPath: root) }
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)

    var ceilings: [EventStore.Durability: Double] = [:]
    if let program = textOption("--ceiling") {
        for durability in durabilities {
            let process = Process()
            let output = Pipe()
            process.executableURL = URL(fileURLWithPath: program)
            let file = root + "/ceiling-\(durability).sqlite"
            process.arguments = [file, "\(count)", "\(batch)", "tuned"] + (durability == .full ? ["full"] : [])
            process.standardOutput = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: file + suffix) }
            print("ceiling (\(program), \(durability == .full ? "tuned full" : "tuned")): " + text.trimmingCharacters(in: .whitespacesAndNewlines))
            // "<rows> rows, batch <b>, tuned: <rate> rows/s"
            guard process.terminationStatus == 0, let rate = text.split(separator: ":").last.flatMap({ Double($0.split(separator: " ").first ?? "") }) else {
                fail("the ceiling program failed: \(text)")
            }
            ceilings[durability] = rate
        }
    }
    func report(_ label: String, _ durability: EventStore.Durability, _ start: ContinuousClock.Instant, _ extra: String = "") {
        let rate = Double(count) / seconds(since: start)
        let share = ceilings[durability].map { String(format: " = %.2fx the C ceiling at the same durability", rate / $0) } ?? ""
        print(String(format: "store: %d events, %@, synchronous=%@: %.0f events/s", count, label, durability == .full ? "FULL" : "NORMAL", rate) + share + extra)
    }

    let randomIDs = arguments.contains("--random-ids")
    // An epoch, as a node stamps on every event it emits.
    let epoch = Epoch.make()
    let events = (1...count).map { seq -> StoredEvent in
        // Ids as the node makes them (time-ordered), or random (UUID v4) with --random-ids.
        let id = randomIDs ? UUID().uuidString.lowercased() : EventID.make()
        let e = Event(id: id, origin: "planner-1", epoch: epoch, seq: UInt64(seq), stream: "planning", type: .planReady,
                      timestamp: Date(), payload: payload)
        return StoredEvent(event: e, envelope: EnvelopeCodec.encode(e))
    }
    for durability in durabilities {
        for mode in checkpointModes {
            let store = try EventStore(directory: root + "/\(durability)-\(mode)-batch", durability: durability, checkpoints: mode)
            var commits: [Double] = []
            var start = ContinuousClock.now
            for chunk in stride(from: 0, to: count, by: batch) {
                let t = ContinuousClock.now
                try store.append(Array(events[chunk..<min(count, chunk + batch)]))
                commits.append(seconds(since: t) * 1000)
            }
            commits.sort()
            // The index (by type, by stream) is filled after the commits, on its own thread:
            // how long it takes to read the last one.
            let last = try store.lastRowID()
            let committed = ContinuousClock.now
            while store.indexedUpTo < last && ContinuousClock.now < committed + .seconds(60) { try await Task.sleep(for: .milliseconds(1)) }
            let lag = seconds(since: committed) * 1000
            report("batches of \(batch) from one caller, checkpoints \(mode)", durability, start,
                   String(format: "; commit p50 %.2f ms, p99 %.2f ms, max %.2f ms; the index had read everything %.0f ms after the last commit",
                          percentile(commits, 0.5), percentile(commits, 0.99), commits.last ?? .nan, lag))
            if mode != checkpointModes.first { continue }

            let writer = try EventStore(directory: root + "/\(durability)-\(mode)-writer", durability: durability, checkpoints: mode).writer()
            start = ContinuousClock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for t in 0..<tasks {
                    group.addTask {
                        for i in stride(from: t, to: count, by: tasks) { _ = try await writer.append(events[i]) }
                    }
                }
                try await group.waitForAll()
            }
            report("\(tasks) tasks appending one at a time through the group-commit writer (\(writer.counts.transactions) transactions)", durability, start)
            await writer.shutdown()
        }
    }
}

/// One node alone (no peers): `--events` emitted in batches of `--batch` from `--emitters`
/// tasks through `Node.emit`, stored durably: the origin's side of the bus without a subscriber.
@MainActor func emitBenchmark() async throws {
    let count = option("--events", default: 200_000)
    let batch = option("--batch", default: 1000)
    let emitters = option("--emitters", default: 4)
    try FileManager.default.createDirectory(atPath: temporaryRoot, withIntermediateDirectories: true)
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 500\(securitySetting()) }
        nodes:
          - { name: origin, pool: planner, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/origin\(try key("origin")) }
        """
    let path = temporaryRoot + "/topology.yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    var options = try Node.Options(topology: try TopologyLoader.load(path: path), name: "origin")
    options.durability = arguments.contains("--normal") ? .normal : .full
    options.logger.logLevel = .warning
    let origin = try Node(options: options)
    let running = Task { try await origin.run() }
    _ = try await origin.emit(.planReady, payload: payload)
    let start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for t in 0..<emitters {
            group.addTask {
                let mine = stride(from: t, to: count, by: emitters).map { _ in Node.Emission(.planReady, payload: payload) }
                for first in stride(from: 0, to: mine.count, by: batch) {
                    _ = try await origin.emit(Array(mine[first..<min(mine.count, first + batch)]))
                }
            }
        }
        try await group.waitForAll()
    }
    let rate = Double(count) / seconds(since: start)
    print(String(format: "emit: %d events of 256 B payload, %d emitters, batches of %d, synchronous=%@: %.0f events/s stored and acknowledged",
                 count, emitters, batch, options.durability == .full ? "FULL" : "NORMAL", rate))
    running.cancel()
    _ = await running.result
}

/// A subscriber node in its own process, the origin node in this one.
@MainActor func busBenchmark() async throws {
    let count = option("--events", default: 50_000)
    let rate = option("--rate", default: 10_000)
    let asks = option("--asks", default: 2000)
    try FileManager.default.createDirectory(atPath: temporaryRoot, withIntermediateDirectories: true)
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 200, ask_timeout_ms: 5000\(securitySetting()) }
        nodes:
          - { name: origin, pool: planner, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/origin\(try key("origin")) }
          - { name: subscriber, pool: builder, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/subscriber\(try key("subscriber")) }
          - { name: asker, pool: reviewer, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/asker\(try key("asker")) }
        """
    let path = temporaryRoot + "/topology.yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    let topology = try TopologyLoader.load(path: path)

    let child = Process()
    child.executableURL = ceNodeBinary
    child.arguments = ["run", "--topology", path, "--node", "subscriber", "--log-level", "warning"]
    defer { stopChild(child) }

    var originOptions = try Node.Options(topology: topology, name: "origin")
    originOptions.durability = arguments.contains("--normal") ? .normal : .full
    child.arguments! += ["--durability", originOptions.durability.rawValue]
    if arguments.contains("--no-replay") {
        originOptions.replay = false
        child.arguments! += ["--no-replay"]
        print("bus: plain PUB/SUB, no sequence tracking or replay")
    }
    // Metrics as `ce-node run` records them (a Prometheus registry behind swift-metrics), at
    // the origin in this process and at the subscriber process; --no-metrics: no-op handlers.
    if arguments.contains("--no-metrics") {
        child.arguments! += ["--no-metrics"]
        print("bus: no metrics")
    } else {
        _ = Observability.bootstrap()
    }
    let origin = try Node(options: originOptions)
    origin.answerQuestions { question in question.question }
    try child.run()
    let originTask = Task { try await origin.run() }
    defer { originTask.cancel() }

    // Every event the subscriber stores appears on its feed: note when.
    let context = try Context()
    let feed = try context.socket(.sub)
    try feed.set(.subscribe(Array("plan_ready/".utf8)))
    try feed.set(.receiveHighWaterMark(0))
    let subscriberData = topology.node(named: "subscriber")!.data
    let arrivals = Mutex<[UInt64: ContinuousClock.Instant]>([:])
    let client = ControlClient(dataDirectory: subscriberData)
    var up = false
    for _ in 0..<500 where !up {
        if let status = try? await client.call(["cmd": "status"], timeout: .milliseconds(200)),
            status["status"]?["peers"]?.arrayValue?.first(where: { $0["name"]?.stringValue == "origin" })?["up"]?.boolValue == true {
            up = true
        } else {
            try await Task.sleep(for: .milliseconds(20))
        }
    }
    guard up else { fail("the subscriber node did not come up") }
    try feed.connect("ipc://" + subscriberData + "/feed.sock")
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
    let emitters = option("--emitters", default: 256)
    let emitBatch = option("--batch", default: 1)
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
    let counters = (try? await client.call(["cmd": "status"]))?["status"]?["counters"]
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

/// N pools (one node each) and a coordinator on loopback. Per round: N-1 pools report, then
/// the last one; the time from its emit to `gate_passed` stored at every pool. By default all
/// nodes share this process (each with its own context and store, durability normal); with
/// `--processes` every node is its own `ce-node run` process, driven through its control
/// endpoint and watched through its feed.
@MainActor func gateBenchmark() async throws {
    let pools = option("--pools", default: 3)
    let rounds = option("--rounds", default: 20)
    try FileManager.default.createDirectory(atPath: temporaryRoot, withIntermediateDirectories: true)
    let heartbeat = option("--heartbeat-ms", default: 500)
    var yaml = "version: 1\nsettings: { heartbeat_ms: \(heartbeat)\(securitySetting()) }\n"
    yaml += "coordinator: { name: coordinator, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/coordinator\(try key("coordinator")) }\nnodes:\n"
    for i in 0..<pools {
        yaml += "  - { name: n\(i), pool: p\(i), host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/n\(i)\(try key("n\(i)")) }\n"
    }
    // Pools listen to the coordinator only (each still connects to every peer).
    yaml += "pools:\n" + (0..<pools).map { "  p\($0): { subscribe: [gate_passed] }\n" }.joined()
    yaml += "gates:\n  - { name: g, pools: [\((0..<pools).map { "p\($0)" }.joined(separator: ", "))] }\n"
    let path = temporaryRoot + "/topology.yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    if arguments.contains("--processes") {
        try await gateBenchmarkWithProcesses(topologyPath: path, pools: pools, rounds: rounds)
        return
    }
    let topology = try TopologyLoader.load(path: path)
    var nodes: [Node] = []
    for spec in topology.nodes {
        var options = try Node.Options(topology: topology, name: spec.name)
        options.durability = .normal
        options.logger.logLevel = .warning
        nodes.append(try Node(options: options))
    }
    let coordinator = nodes.first { $0.spec.isCoordinator }!
    let poolNodes = nodes.filter { !$0.spec.isCoordinator }
    let service = CoordinatorService(node: coordinator)
    final class Arrivals: Sendable { let byRound = Mutex<[Int: [String: ContinuousClock.Instant]]>([:]) }
    let box = Arrivals()
    let running = Task {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in nodes { group.addTask { try await node.run() } }
            group.addTask { try await service.run() }
            for node in poolNodes {
                let stream = node.events()
                group.addTask {
                    for await event in stream where event.type == .gatePassed {
                        let now = ContinuousClock.now
                        let round = event.payload["round"]?.intValue ?? 0
                        box.byRound.withLock { $0[round, default: [:]][node.spec.name] = now }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    // Until every pool hears the coordinator (heartbeats) and the coordinator hears every pool.
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .seconds(60) {
        let ready = nodes.allSatisfy { node in
            let heard = node.peerHeartbeats
            return topology.peers(of: node.spec.name).allSatisfy { heard[$0.name].map { Date().timeIntervalSince($0) < 1.5 } ?? false }
        }
        if ready { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    var latencies: [Double] = []
    for round in 1...rounds {
        for node in poolNodes.dropLast() { _ = try await node.emit(.syncPointReached, payload: ["gate": "g"]) }
        try await Task.sleep(for: .milliseconds(100))  // let the coordinator take the first reports
        let t0 = ContinuousClock.now
        _ = try await poolNodes.last!.emit(.syncPointReached, payload: ["gate": "g"])
        let deadline = ContinuousClock.now + .seconds(30)
        while box.byRound.withLock({ ($0[round]?.count ?? 0) < pools }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        guard let last = box.byRound.withLock({ $0[round]?.values.max() }), box.byRound.withLock({ $0[round]?.count }) == pools else {
            print("round \(round): not every pool heard the gate within 30 s"); continue
        }
        let d = last - t0
        latencies.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
    }
    reportGates(pools: pools, rounds: rounds, latencies: latencies, coordinatorReceived: coordinator.counters.received)
    running.cancel()
    _ = await running.result
}

func reportGates(pools: Int, rounds: Int, latencies: [Double], coordinatorReceived handled: Int) {
    let latencies = latencies.sorted()
    print(String(format: "gates: %d pools, %d rounds: last report -> gate_passed stored at every pool: p50 %.1f ms, p99 %.1f ms; coordinator received %d events (%.1f per gate for %d pools) and published one decision per gate; %d TCP subscriptions in the mesh",
                 pools, latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99), handled,
                 Double(handled) / Double(rounds), pools, (pools + 1) * pools))
}

/// The gate benchmark with one `ce-node run` process per node.
@MainActor func gateBenchmarkWithProcesses(topologyPath: String, pools: Int, rounds: Int) async throws {
    let topology = try TopologyLoader.load(path: topologyPath)
    let executable = ceNodeBinary
    var children: [Process] = []
    defer {
        for child in children where child.isRunning { child.terminate() }
        for child in children { stopChild(child) }
    }
    for spec in topology.nodes {
        let child = Process()
        child.executableURL = executable
        child.arguments = ["run", "--topology", topologyPath, "--node", spec.name, "--log-level", "warning", "--durability", "normal"]
        try child.run()
        children.append(child)
    }
    let coordinator = topology.coordinator!
    let poolSpecs = topology.nodes.filter { !$0.isCoordinator }
    // Until the coordinator hears every pool and every pool hears the coordinator (with many
    // nodes on two cores, heartbeats between all pairs lag behind the "up" window).
    let start = ContinuousClock.now
    var pending = topology.nodes.map(\.name)
    while !pending.isEmpty && ContinuousClock.now - start < .seconds(180) {
        var still: [String] = []
        for name in pending {
            let status = try? await ControlClient(dataDirectory: topology.node(named: name)!.data).call(["cmd": "status"], timeout: .seconds(5))
            let peers = status?["status"]?["peers"]?.arrayValue?.filter { name == coordinator.name || $0["name"]?.stringValue == coordinator.name }
            if peers == nil || !peers!.allSatisfy({ $0["up"]?.boolValue == true }) { still.append(name) }
        }
        pending = still
        if !pending.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
    }
    guard pending.isEmpty else { fail("\(pending.count) nodes did not hear the coordinator (or it them) within 180 s (first: \(pending[0]))") }
    print(String(format: "%d node processes up and meshed after %.1f s", topology.nodes.count, seconds(since: start)))

    // Every pool's feed shows what it stores: note when each gate_passed arrives.
    let context = try Context()
    final class Arrivals: Sendable { let byRound = Mutex<[Int: [String: ContinuousClock.Instant]]>([:]) }
    let box = Arrivals()
    var readers: [Task<Void, any Error>] = []
    for spec in poolSpecs {
        let feed = try context.socket(.sub)
        try feed.set(.subscribe(Array("gate_passed/".utf8)))
        try feed.connect("ipc://" + spec.data + "/feed.sock")
        let name = spec.name
        readers.append(Task.detached {  // off the main actor, as the bus benchmark's reader
            for try await message in feed.messages {
                let now = ContinuousClock.now
                guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes) else { continue }
                let round = event.payload["round"]?.intValue ?? 0
                box.byRound.withLock { $0[round, default: [:]][name] = now }
            }
        })
    }
    let clients = poolSpecs.map { ControlClient(dataDirectory: $0.data) }
    func report(_ client: ControlClient) async throws {
        _ = try await client.call(["cmd": "emit", "event_type": "sync_point_reached", "payload": ["gate": "g"]], timeout: .seconds(10))
    }
    // A first round to be sure every feed is connected; it is not counted.
    var latencies: [Double] = []
    for round in 1...(rounds + 1) {
        for client in clients.dropLast() { try await report(client) }
        try await Task.sleep(for: .milliseconds(100))  // let the coordinator take the first reports
        let t0 = ContinuousClock.now
        try await report(clients.last!)
        let deadline = ContinuousClock.now + .seconds(30)
        while box.byRound.withLock({ ($0[round]?.count ?? 0) < pools }) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
        guard let last = box.byRound.withLock({ $0[round]?.values.max() }), box.byRound.withLock({ $0[round]?.count }) == pools else {
            print("round \(round): not every pool heard the gate within 30 s"); continue
        }
        if round == 1 { continue }
        let d = last - t0
        latencies.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
    }
    let status = try await ControlClient(dataDirectory: coordinator.data).call(["cmd": "status"])
    let received = status["status"]?["counters"]?["received"]?.intValue ?? -1
    reportGates(pools: pools, rounds: rounds + 1, latencies: latencies, coordinatorReceived: received)
    for reader in readers { reader.cancel() }
    await context.shutdown()
}

/// CPU time (user and system, every thread) a process has used so far, in seconds; -1 when
/// it cannot be read. Fields 14 and 15 of `/proc/PID/stat`, in clock ticks.
func cpuSeconds(_ pid: Int32? = nil) -> Double {
    let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
    // The command name (field 2) may hold spaces: count the fields after its closing ')'.
    guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return -1 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return -1 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Resident memory of a process, from /proc (KiB).
func residentKiB(_ pid: Int32? = nil) -> Int {
    let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return -1 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}

/// 1. A subscriber process started when the origin (this process) already holds `--events`
/// events it subscribes to: how fast it catches up by replay. 2. The subscriber frozen
/// (SIGSTOP) while the origin emits `--stall` more: the origin's memory stays bounded (live
/// events beyond the high-water mark are dropped for that subscriber, not buffered), and the
/// subscriber catches up by replay once it runs again.
@MainActor func replayBenchmark() async throws {
    let count = option("--events", default: 100_000)
    let stall = option("--stall", default: 200_000)
    try FileManager.default.createDirectory(atPath: temporaryRoot, withIntermediateDirectories: true)
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 200\(securitySetting()) }
        nodes:
          - { name: origin, pool: planner, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/origin\(try key("origin")) }
          - { name: subscriber, pool: builder, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/subscriber\(try key("subscriber")) }
        pools:
          builder: { subscribe: [plan_ready] }
        """
    let path = temporaryRoot + "/topology.yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    let topology = try TopologyLoader.load(path: path)
    let origin = try Node(options: try Node.Options(topology: topology, name: "origin"))
    let originTask = Task { try await origin.run() }
    defer { originTask.cancel() }
    func emit(_ n: Int) async throws {
        var left = n
        while left > 0 {
            let k = min(1000, left)
            _ = try await origin.emit((0..<k).map { _ in Node.Emission(.planReady, payload: payload) })
            left -= k
        }
    }
    var start = ContinuousClock.now
    try await emit(count)
    print(String(format: "replay: origin stored %d events (256 B payload) in %.1f s", count, seconds(since: start)))

    let child = Process()
    child.executableURL = ceNodeBinary
    child.arguments = ["run", "--topology", path, "--node", "subscriber", "--log-level", "warning"]
    defer {
        if child.isRunning { kill(child.processIdentifier, SIGCONT) }
        stopChild(child)
    }
    try child.run()
    let client = ControlClient(dataDirectory: topology.node(named: "subscriber")!.data)
    func cursor() async -> Int {
        let status = try? await client.call(["cmd": "status"], timeout: .seconds(5))
        return status?["status"]?["peers"]?[0]?["cursor"]?.intValue ?? -1
    }
    func waitForCursor(_ target: UInt64, _ what: String) async throws {
        let deadline = ContinuousClock.now + .seconds(600)
        while await cursor() < Int(target) {
            guard ContinuousClock.now < deadline else { fail("the subscriber did not catch up (\(what)) within 600 s") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
    // From the moment the subscriber answers on its control endpoint.
    while await cursor() < 0 { try await Task.sleep(for: .milliseconds(10)) }
    start = ContinuousClock.now
    try await waitForCursor(origin.lastSequence, "start")
    let took = seconds(since: start)
    print(String(format: "replay: a new subscriber caught up on %d events in %.2f s: %.0f events/s (stored durably, handed over in order); subscriber RSS %d KiB",
                 count, took, Double(count) / took, residentKiB(child.processIdentifier)))

    // Stalled subscriber.
    let before = residentKiB()
    kill(child.processIdentifier, SIGSTOP)
    start = ContinuousClock.now
    try await emit(stall)
    let emitted = seconds(since: start)
    let during = residentKiB()
    let stalledRSS = residentKiB(child.processIdentifier)
    kill(child.processIdentifier, SIGCONT)
    start = ContinuousClock.now
    try await waitForCursor(origin.lastSequence, "after the stall")
    let recovered = seconds(since: start)
    let status = try await client.call(["cmd": "status"])
    let counters = status["status"]?["counters"]
    print(String(format: "replay: subscriber frozen while the origin emitted %d events (%.0f events/s): origin RSS %d KiB before, %d KiB after (+%d KiB); the frozen subscriber %d KiB",
                 stall, Double(stall) / emitted, before, during, during - before, stalledRSS))
    print(String(format: "replay: after SIGCONT it caught up in %.2f s (%d received live or by replay, %d by replay, %d live events dropped behind the gap); subscriber RSS %d KiB",
                 recovered, counters?["received"]?.intValue ?? -1, counters?["replayed_in"]?.intValue ?? -1,
                 counters?["pending_dropped"]?.intValue ?? -1, residentKiB(child.processIdentifier)))
    originTask.cancel()
    _ = await originTask.result
}
/// Two nodes that already run (in containers, on other hosts, or `ce-node run` here), reached
/// through their data folders: events emitted at `--from` (control endpoint, one at a time, at
/// `--rate` per second) and timed until they appear on `--to`'s feed, i.e. stored there. The
/// emit call includes the durable store at the origin; `--type` must be one `--to` subscribes to.
@MainActor func linkBenchmark() async throws {
    guard let from = textOption("--from"), let to = textOption("--to") else { fail("link needs --from DATA_DIR and --to DATA_DIR\n\(usage)") }
    let count = option("--events", default: 2000)
    let rate = option("--rate", default: 200)
    let typeName = textOption("--type") ?? "plan_ready"
    guard let type = try? EventType(validating: typeName) else { fail("--type: not an event type: \(typeName)") }
    func endpoint(_ dir: String, _ name: String) -> String {
        "ipc://" + (dir.hasPrefix("/") ? dir : FileManager.default.currentDirectoryPath + "/" + dir) + "/" + name
    }
    let context = try Context()
    let feed = try context.socket(.sub)
    try feed.set([.subscribe(Topic.subscriptionPrefix(for: type)), .receiveHighWaterMark(0)])
    try feed.connect(endpoint(to, "feed.sock"))
    let control = try context.socket(.req)
    try control.set(.linger(milliseconds: 0))
    try control.connect(endpoint(from, "control.sock"))
    let arrivals = Mutex<[String: ContinuousClock.Instant]>([:])
    let reader = Task.detached {  // off the main actor, as the bus benchmark's reader
        for try await message in feed.messages {
            let now = ContinuousClock.now
            guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes) else { continue }
            arrivals.withLock { $0[event.id] = now }
        }
    }
    defer { reader.cancel() }
    let request = Message(JSONValue.object(["cmd": "emit", "event_type": .string(typeName), "payload": payload]).serialized())
    func emit() async throws -> String {
        try await control.send(request)
        let reply = try await control.receive(timeout: .seconds(30))
        let value = try JSONValue(parsing: reply[0].bytes)
        guard let id = value["event"]?["id"]?.stringValue else { fail("the node at \(from) refused the emit: \(value.serializedString)") }
        return id
    }
    // Warm up until the feed delivers (the feed's subscription takes a moment to reach the node).
    var warm = 0
    while arrivals.withLock({ $0.isEmpty }) {
        warm += 1
        if warm > 500 { fail("nothing emitted at \(from) reached the feed of \(to) in 500 tries: does it subscribe to \(typeName)?") }
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
        let d = ContinuousClock.now - t
        acks.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
        sent.append((id, t))
    }
    let lastID = sent.last!.0
    let deadline = ContinuousClock.now + .seconds(30)
    while arrivals.withLock({ $0[lastID] == nil }) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
    let latencies = arrivals.withLock { a in
        sent.compactMap { id, t in a[id].map { d in Double((d - t).components.seconds) * 1e3 + Double((d - t).components.attoseconds) / 1e15 } }
    }.sorted()
    acks.sort()
    print(String(format: "link: %d %@ events of 256 B at %d/s: emit call -> stored at the receiver p50 %.2f ms, p99 %.2f ms (%d of %d arrived); emit acknowledged (stored at the origin) p50 %.2f ms, p99 %.2f ms",
                 count, typeName as NSString, rate, percentile(latencies, 0.5), percentile(latencies, 0.99), latencies.count, count,
                 percentile(acks, 0.5), percentile(acks, 0.99)))
    reader.cancel()
    await context.shutdown()
}

/// A node whose store is lost, restarted in a cluster that holds `--events` events of another
/// origin and some of its own: the time from its start until its store holds every line as
/// the others do (by `status`, then checked event by event after it stopped). Then a
/// coordinator whose disk is lost with `--gates` gates half reported and as many conflicts
/// open: the time from its start until `gates` answers with all of them back.
@MainActor func refillBenchmark() async throws {
    /// Written at once (not held in stdout's buffer), so a figure is kept if a later step fails.
    func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
    let count = option("--events", default: 500_000)
    let gates = option("--gates", default: 100)
    let own = max(1, count / 50)
    try FileManager.default.createDirectory(atPath: temporaryRoot, withIntermediateDirectories: true)
    var gateList = ""
    for g in 1...gates { gateList += "  - { name: g\(g), pools: [planner, builder] }\n" }
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 200\(securitySetting()) }
        nodes:
          - { name: planner-1, pool: planner, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/planner-1\(try key("planner-1")) }
          - { name: builder-1, pool: builder, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/builder-1\(try key("builder-1")) }
        coordinator: { name: coordinator, host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(temporaryRoot)/coordinator\(try key("coordinator")) }
        gates:
        \(gateList)conflicts: { resolvers: [planner, human], escalate_after_s: 3600 }

        """
    let path = temporaryRoot + "/topology.yaml"
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    let topology = try TopologyLoader.load(path: path)
    let planner = try Node(options: try Node.Options(topology: topology, name: "planner-1"))
    let plannerTask = Task { try await planner.run() }
    defer { plannerTask.cancel() }
    var processes: [String: Process] = [:]
    func start(_ name: String) throws {
        let child = Process()
        child.executableURL = ceNodeBinary
        child.arguments = ["run", "--topology", path, "--node", name, "--log-level", "notice"]
        let log = FileHandle(forWritingAtPath: temporaryRoot + "/\(name).log") ?? {
            _ = FileManager.default.createFile(atPath: temporaryRoot + "/\(name).log", contents: nil)
            return FileHandle(forWritingAtPath: temporaryRoot + "/\(name).log")!
        }()
        log.seekToEndOfFile()
        child.standardError = log
        child.standardOutput = log
        try child.run()
        processes[name] = child
    }
    func stop(_ name: String) {
        guard let child = processes[name], child.isRunning else { return }
        stopChild(child, signal: SIGKILL)
    }
    defer { for name in processes.keys { stop(name) } }
    /// Deletes the store (a lost disk), keeping the node's key (its identity, restored from a backup).
    func wipe(_ name: String) throws {
        let dir = topology.node(named: name)!.data
        for file in try FileManager.default.contentsOfDirectory(atPath: dir) where file.hasPrefix("events.sqlite") {
            try FileManager.default.removeItem(atPath: dir + "/" + file)
        }
    }
    func status(_ name: String) async -> JSONValue? {
        try? await ControlClient(dataDirectory: topology.node(named: name)!.data).call(["cmd": "status"], timeout: .seconds(5))["status"]
    }
    func waitUntil(_ what: String, _ seconds: Double = 900, _ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !(await condition()) {
            guard ContinuousClock.now < deadline else { fail("refill: timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
    /// Every line `name` holds as far as every other node holds it (origin: its last sequence).
    func matches(_ name: String) async -> Bool {
        guard let mine = await status(name), mine["refill"]?["done"]?.boolValue != false else { return false }
        var held: [String: Int] = [:]
        for line in mine["lines"]?.arrayValue ?? [] { held["\(line["origin"]?.stringValue ?? "")@\(line["epoch"]?.stringValue ?? "")"] = line["through"]?.intValue }
        for other in ["planner-1", "builder-1", "coordinator"] where other != name {
            guard let theirs = await status(other) else { return false }
            for line in theirs["lines"]?.arrayValue ?? [] {
                let key = "\(line["origin"]?.stringValue ?? "")@\(line["epoch"]?.stringValue ?? "")"
                if line["origin"]?.stringValue == name && line["current"]?.boolValue == true && line["epoch"]?.stringValue == mine["epoch"]?.stringValue { continue }
                if (held[key] ?? -1) < (line["through"]?.intValue ?? 0) { return false }
            }
        }
        return true
    }

    // The history first, then the other nodes, which take it by replay.
    var started = ContinuousClock.now
    var left = count
    while left > 0 {
        let k = min(1000, left)
        _ = try await planner.emit((0..<k).map { _ in Node.Emission(.planReady, payload: payload) })
        left -= k
    }
    try start("builder-1")
    try start("coordinator")
    let builderClient = ControlClient(dataDirectory: topology.node(named: "builder-1")!.data)
    try await waitUntil("builder-1 to answer") { await status("builder-1") != nil }
    left = own
    while left > 0 {
        let k = min(1000, left)
        let batch: [JSONValue] = (0..<k).map { _ in ["event_type": "build_ready", "payload": payload] }
        _ = try await builderClient.call(["cmd": "emit", "events": .array(batch)], timeout: .seconds(60))
        left -= k
    }
    try await waitUntil("the cluster to hold every event everywhere") { await matches("builder-1") }
    say(String(format: "refill: the cluster holds %d events of planner-1 and %d of builder-1 (256 B payloads), set up in %.1f s", count, own, seconds(since: started)))

    stop("builder-1")
    try wipe("builder-1")
    try start("builder-1")
    started = ContinuousClock.now
    try await waitUntil("builder-1's refill") { await matches("builder-1") }
    let took = seconds(since: started)
    let refilled = (await status("builder-1"))?["refill"]?["events"]?.intValue ?? -1
    say(String(format: "refill: builder-1 restarted with its store lost: %d events refilled (planner-1's and its own) in %.1f s from its start: %.0f events/s, its store matching the census", refilled, took, Double(refilled) / took))
    stop("builder-1")
    // The census, event by event: builder-1's store holds every id the others hold.
    let ids = { (name: String, origin: String) throws -> Set<String> in
        var q = EventQuery()
        q.origin = origin
        q.limit = Int.max
        return Set(try EventStore(directory: topology.node(named: name)!.data, durability: .normal).events(q).map(\.id))
    }
    let plannerHeld = try ids("builder-1", "planner-1") == ids("coordinator", "planner-1")
    let ownHeld = try ids("builder-1", "builder-1").isSuperset(of: ids("coordinator", "builder-1"))
    say("refill: census after the stop: planner-1's events \(plannerHeld ? "all present, none extra" : "DIFFER"); builder-1's own \(ownHeld ? "all back" : "MISSING")")
    try start("builder-1")
    try await waitUntil("builder-1 to answer") { await status("builder-1") != nil }

    // The coordinator: every gate half reported, as many conflicts open.
    for g in 1...gates { _ = try await planner.emit(.syncPointReached, payload: ["gate": .string("g\(g)")]) }
    for c in 1...gates {
        _ = try await planner.emit(.conflictDetected, payload: ["subject": .string("s\(c)"), "parties": ["builder"], "description": "bench"])
    }
    let coordinatorClient = ControlClient(dataDirectory: topology.node(named: "coordinator")!.data)
    func rebuilt() async -> Bool {
        guard let reply = try? await coordinatorClient.call(["cmd": "gates"], timeout: .seconds(5)) else { return false }
        let open = reply["coordinator"]?["conflicts"]?.arrayValue?.count ?? 0
        let aligned = reply["coordinator"]?["gates"]?.arrayValue?.filter { ($0["aligned"]?.arrayValue?.count ?? 0) == 1 }.count ?? 0
        return open == gates && aligned == gates
    }
    try await waitUntil("the coordinator to open every gate and conflict") { await rebuilt() }
    try await waitUntil("the pools to hold every decision") { await matches("coordinator") }
    stop("coordinator")
    let dir = topology.node(named: "coordinator")!.data
    for file in try FileManager.default.contentsOfDirectory(atPath: dir) where file != "curve.key" {
        try FileManager.default.removeItem(atPath: dir + "/" + file)
    }
    try start("coordinator")
    started = ContinuousClock.now
    try await waitUntil("the coordinator to rebuild") { await rebuilt() }
    let rebuildTook = seconds(since: started)
    var asks = EventQuery()
    asks.type = "resolution_needed"
    asks.limit = Int.max
    // Counted once the pools hold every line the rebuilt coordinator holds (its decisions included).
    try await waitUntil("the pools to hold the coordinator's decisions", 5) { await matches("coordinator") }
    let decisions = try EventStore(directory: topology.node(named: "planner-1")!.data, durability: .normal).count(asks)
    say(String(format: "refill: coordinator with its disk lost rebuilt %d half-reported gates and %d open conflicts from the pools in %.2f s from its start (resolution_needed at planner-1: %d, one per conflict)",
                 gates, gates, rebuildTook, decisions))
    plannerTask.cancel()
    _ = await plannerTask.result
}

/// Encodes and decodes `--events` envelopes with a 256-byte payload (the bus benchmark's
/// events), five rounds each; prints the best round per event, so the CPU the bus and
/// replay spend on the envelope can be told from the rest.
@MainActor func codecBenchmark() {
    let count = option("--events", default: 100_000)
    // --fields N: a payload of N more keys, as an agent's plan or review might carry.
    let fields = option("--fields", default: 0)
    let extra = (0..<fields).map { ("field_\($0)", JSONValue.string("value \($0) of a plan")) }
    let events = (1...count).map { seq in
        Event(id: EventID.make(), origin: "planner-1", seq: UInt64(seq), stream: "planning", type: .planReady,
              timestamp: Date(), payload: .object(Dictionary(uniqueKeysWithValues: [("text", payload), ("n", .number(Double(seq)))] + extra)))
    }
    var encoded: [[UInt8]] = []
    var best = (encode: Double.infinity, decode: Double.infinity, read: Double.infinity)
    for _ in 0..<5 {
        var start = ContinuousClock.now
        encoded = events.map { EnvelopeCodec.encode($0) }
        best.encode = min(best.encode, seconds(since: start))
        let topic = Topic.bytes(type: .planReady, stream: "planning")
        // Decoded as a node that stores and forwards does (the payload is checked, not read),
        // then as a handler that reads the payload does.
        for reading in [false, true] {
            start = ContinuousClock.now
            var seqs: UInt64 = 0
            for bytes in encoded {
                guard let event = try? EnvelopeCodec.decode(topic: topic, body: bytes) else { fail("an envelope did not decode") }
                seqs &+= reading ? UInt64(event.payload["n"]?.intValue ?? 0) : event.seq
            }
            if reading { best.read = min(best.read, seconds(since: start)) } else { best.decode = min(best.decode, seconds(since: start)) }
            guard seqs == UInt64(count) * UInt64(count + 1) / 2 else { fail("decoded sequences do not add up") }
        }
    }
    let size = encoded.reduce(0) { $0 + $1.count } / count
    print(String(format: "codec: %d envelopes of %d B: encode %.2f us, decode %.2f us, decode and read the payload %.2f us per event (best of 5)",
                 count, size, best.encode / Double(count) * 1e6, best.decode / Double(count) * 1e6, best.read / Double(count) * 1e6))
}
