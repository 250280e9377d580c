import ArgumentParser
import CECluster
import CECore
import CENode
import Foundation

/// One node alone (no peers): `--events` emitted in batches of `--batch` from `--emitters`
/// tasks through `Node.emit`, stored durably: the origin's side of the bus without a subscriber.
struct EmitBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "emit",
        abstract: "One node alone: events emitted in batches through Node.emit and stored durably (the origin's side of the bus).")

    @Option(help: "Events emitted.")
    var events = 200_000

    @Option(help: "Events per emit call.")
    var batch = 1000

    @Option(help: "Concurrent tasks emitting.")
    var emitters = 4

    @Flag(help: "Store with synchronous=NORMAL (no fsync per batch) instead of FULL.")
    var normal = false

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--events": events, "--batch": batch, "--emitters": emitters])
    }

    @MainActor func run() async throws {
        let (count, batch, emitters) = (events, batch, emitters)
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        let path = try cluster.write(topology: """
            version: 1
            settings: { heartbeat_ms: 500\(cluster.securitySetting) }
            nodes:
              - { name: origin, pool: planner, \(try cluster.place("origin")) }
            """)
        var options = try Node.Options(topology: try TopologyLoader.load(path: path), name: "origin")
        options.durability = normal ? .normal : .full
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
}
