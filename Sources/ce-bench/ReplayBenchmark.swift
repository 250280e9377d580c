import ArgumentParser
import CECluster
import CECore
import CENode
import Foundation

/// 1. A subscriber process started when the origin (this process) already holds `--events`
/// events it subscribes to: how fast it catches up by replay. 2. The subscriber frozen
/// (SIGSTOP) while the origin emits `--stall` more: the origin's memory stays bounded (live
/// events beyond the high-water mark are dropped for that subscriber, not buffered), and the
/// subscriber catches up by replay once it runs again.
struct ReplayBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Catch-up rate of a new subscriber by replay; the origin's memory while a subscriber is frozen (SIGSTOP).")

    @Option(help: "Events the origin holds when the subscriber starts.")
    var events = 100_000

    @Option(help: "Events the origin emits while the subscriber is frozen.")
    var stall = 200_000

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--events": events, "--stall": stall])
    }

    @MainActor func run() async throws {
        let (count, stall) = (events, stall)
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        let path = try cluster.write(topology: """
            version: 1
            settings: { heartbeat_ms: 200\(cluster.securitySetting) }
            nodes:
              - { name: origin, pool: planner, \(try cluster.place("origin")) }
              - { name: subscriber, pool: builder, \(try cluster.place("subscriber")) }
            pools:
              builder: { subscribe: [plan_ready] }
            """)
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

        let child = try startNode(topology: path, node: "subscriber", logLevel: "warning")
        defer {
            if child.isRunning { kill(child.processIdentifier, SIGCONT) }
            stopNode(child)
        }
        let client = ControlClient(dataDirectory: topology.node(named: "subscriber")!.data)
        func cursor() async -> Int {
            let status = try? await client.status(timeout: .seconds(5))
            return status?["peers"]?[0]?["cursor"]?.intValue ?? -1
        }
        func waitForCursor(_ target: UInt64, _ what: String) async throws {
            let deadline = ContinuousClock.now + .seconds(600)
            while await cursor() < Int(target) {
                guard ContinuousClock.now < deadline else { throw BenchmarkFailure("the subscriber did not catch up (\(what)) within 600 s") }
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
        let counters = try await client.status()["counters"]
        print(String(format: "replay: subscriber frozen while the origin emitted %d events (%.0f events/s): origin RSS %d KiB before, %d KiB after (+%d KiB); the frozen subscriber %d KiB",
                     stall, Double(stall) / emitted, before, during, during - before, stalledRSS))
        print(String(format: "replay: after SIGCONT it caught up in %.2f s (%d received live or by replay, %d by replay, %d live events dropped behind the gap); subscriber RSS %d KiB",
                     recovered, counters?["received"]?.intValue ?? -1, counters?["replayed_in"]?.intValue ?? -1,
                     counters?["pending_dropped"]?.intValue ?? -1, residentKiB(child.processIdentifier)))
        originTask.cancel()
        _ = await originTask.result
    }
}
