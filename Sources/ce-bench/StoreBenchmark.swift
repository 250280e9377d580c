import ArgumentParser
import CECore
import CEStore
import Foundation

/// Appends `--events` events with a 256-byte payload to fresh stores: in batches of `--batch`
/// from one caller (with each commit's latency), then one event per call from `--tasks`
/// concurrent tasks through the group-commit writer. With `--ceiling PATH` it first runs
/// shared/bench/sqlite_ceiling.c's binary (tuned, same rows and batch, and `full` when the
/// store runs synchronous=FULL) and prints each figure as a share of it. `--checkpoints
/// background|inline|both`: where WAL checkpoints run (inline: inside the commits, as SQLite
/// does by default), to show what they do to the commit latency tail.
struct StoreBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Append 256 B events to fresh stores: in batches from one caller, and one at a time through the group-commit writer.")

    enum DurabilityChoice: String, CaseIterable, ExpressibleByArgument {
        case full, normal, both
        var durabilities: [EventStore.Durability] {
            switch self {
            case .full: [.full]
            case .normal: [.normal]
            case .both: [.normal, .full]
            }
        }
    }

    enum CheckpointChoice: String, CaseIterable, ExpressibleByArgument {
        case background, inline, both
        var modes: [EventStore.Checkpoints] {
            switch self {
            case .background: [.background]
            case .inline: [.inline]
            case .both: [.background, .inline]
            }
        }
    }

    @Option(help: "Events appended in each run.")
    var events = 200_000

    @Option(help: "Events per commit from the one caller (and per batch of the C ceiling).")
    var batch = 1000

    @Option(help: "Concurrent tasks appending one event per call through the group-commit writer.")
    var tasks = 16

    @Option(help: "synchronous=FULL (fsync each commit), NORMAL, or both in turn.")
    var durability = DurabilityChoice.both

    @Option(help: "Where WAL checkpoints run: on a thread of their own, inside the commits (SQLite's default), or both in turn.")
    var checkpoints = CheckpointChoice.background

    @Flag(name: .customLong("random-ids"), help: "Random ids (UUID v4) instead of the time-ordered ids a node makes.")
    var randomIDs = false

    @Option(help: ArgumentHelp("The folder for the stores (default: the temporary folder).", valueName: "dir"))
    var dir: String?

    @Option(help: ArgumentHelp(
        "The C ceiling's binary (shared/bench/sqlite_ceiling.c): run first, and each figure printed as a share of it.",
        valueName: "path"))
    var ceiling: String?

    func validate() throws {
        try requirePositive(["--events": events, "--batch": batch, "--tasks": tasks])
    }

    @MainActor func run() async throws {
        let count = events
        let durabilities = durability.durabilities
        let checkpointModes = checkpoints.modes
        let root = (dir ?? NSTemporaryDirectory()) + "/ce-bench-store-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)

        var ceilings: [EventStore.Durability: Double] = [:]
        if let program = ceiling {
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
                    throw BenchmarkFailure("the ceiling program failed: \(text)")
                }
                ceilings[durability] = rate
            }
        }
        func report(_ label: String, _ durability: EventStore.Durability, _ start: ContinuousClock.Instant, _ extra: String = "") {
            let rate = Double(count) / seconds(since: start)
            let share = ceilings[durability].map { String(format: " = %.2fx the C ceiling at the same durability", rate / $0) } ?? ""
            print(String(format: "store: %d events, %@, synchronous=%@: %.0f events/s", count, label, durability == .full ? "FULL" : "NORMAL", rate) + share + extra)
        }

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
                let tasks = self.tasks
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
}
