import ArgumentParser
import CECluster
import CECore
import CENode
import Foundation
import Synchronization
import ZeroMQ

/// A coordinator, its standby and N pools (one node each), every node a `ce-node run`
/// process on loopback. Per run: every pool but the last reports to the gate, the active
/// coordinator is killed (SIGKILL), the last pool reports at once; timed from the kill: the
/// standby's `coordinator_active` at the first pool, and `gate_passed` (the new active
/// coordinator's first decision) stored at every pool. A fresh cluster per run.
struct FailoverBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Standby takeover: SIGKILL of the active coordinator -> the standby's first decision stored at every pool.")

    @Option(help: "Runs, each on a fresh cluster.")
    var runs = 10

    @Option(help: "Pools, one node each, all in the one gate.")
    var pools = 3

    @Option(name: .customLong("heartbeat-ms"), help: ArgumentHelp("The topology's heartbeat interval.", valueName: "ms"))
    var heartbeatMilliseconds = 200

    @Option(name: .customLong("failover-ms"), help: ArgumentHelp("settings.coordinator_failover_ms.", valueName: "ms"))
    var failoverMilliseconds = 2000

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--runs": runs, "--pools": pools, "--heartbeat-ms": heartbeatMilliseconds, "--failover-ms": failoverMilliseconds])
        guard failoverMilliseconds >= 3 * heartbeatMilliseconds else {
            throw ValidationError("--failover-ms must be at least three heartbeats (\(3 * heartbeatMilliseconds) ms)")
        }
    }

    @MainActor func run() async throws {
        var claims: [Double] = []
        var decisions: [Double] = []
        for run in 1...runs {
            let (claim, decision) = try await once()
            claims.append(claim)
            decisions.append(decision)
            print(String(format: "run %d: kill -> coordinator_active %.0f ms, -> gate_passed at every pool %.0f ms", run, claim, decision))
        }
        claims.sort()
        decisions.sort()
        print(String(format: "failover: %d runs, failover %d ms, heartbeat %d ms, %d pools: kill -> coordinator_active p50 %.0f ms, max %.0f ms; kill -> first decision (gate_passed) at every pool p50 %.0f ms, max %.0f ms",
                     runs, failoverMilliseconds, heartbeatMilliseconds, pools, percentile(claims, 0.5), claims.last ?? .nan,
                     percentile(decisions, 0.5), decisions.last ?? .nan))
    }

    /// One run: milliseconds from the kill to the claim at the first pool, and to the gate
    /// passed at every pool.
    @MainActor func once() async throws -> (Double, Double) {
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        var yaml = "version: 1\nsettings: { heartbeat_ms: \(heartbeatMilliseconds), coordinator_failover_ms: \(failoverMilliseconds)\(cluster.securitySetting) }\n"
        yaml += "coordinator: { name: coord-a, \(try cluster.place("coord-a")), standby: { name: coord-b, \(try cluster.place("coord-b")) } }\nnodes:\n"
        for i in 0..<pools { yaml += "  - { name: n\(i), pool: p\(i), \(try cluster.place("n\(i)")) }\n" }
        yaml += "gates:\n  - { name: g, pools: [\((0..<pools).map { "p\($0)" }.joined(separator: ", "))] }\n"
        let path = try cluster.write(topology: yaml)
        let topology = try TopologyLoader.load(path: path)
        var children: [String: Process] = [:]
        defer { for child in children.values { stopNode(child, signal: SIGKILL) } }
        for spec in topology.nodes {
            children[spec.name] = try startNode(topology: path, node: spec.name, logLevel: "warning", ["--durability", "normal"])
        }
        // Until every node hears every other (so the pools' votes and the standby's view are in).
        let start = ContinuousClock.now
        while true {
            var meshed = true
            for spec in topology.nodes {
                let status = try? await ControlClient(dataDirectory: spec.data).status(timeout: .seconds(5))
                let peers = status?["peers"]?.arrayValue ?? []
                if peers.count != topology.nodes.count - 1 || !peers.allSatisfy({ $0["up"]?.boolValue == true }) { meshed = false }
            }
            if meshed { break }
            guard ContinuousClock.now - start < .seconds(60) else { throw BenchmarkFailure("the nodes did not all hear each other within 60 s") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let poolSpecs = topology.poolNodes
        let context = try Context()
        final class Arrivals: Sendable {
            let claim = Mutex<ContinuousClock.Instant?>(nil)
            let passed = Mutex<[String: ContinuousClock.Instant]>([:])
        }
        let box = Arrivals()
        var readers: [Task<Void, any Error>] = []
        for spec in poolSpecs {
            let feed = try context.socket(.sub)
            try feed.set(.subscribe(Array("gate_passed/".utf8)))
            try feed.set(.subscribe(Array("coordinator_active/".utf8)))
            try feed.connect(NodePaths(dataDirectory: spec.data).feedEndpoint)
            let name = spec.name
            readers.append(Task.detached {
                for try await message in feed.messages {
                    let now = ContinuousClock.now
                    guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes) else { continue }
                    if event.type == .gatePassed { box.passed.withLock { $0[name] = $0[name] ?? now } }
                    if event.type.rawValue == "coordinator_active" { box.claim.withLock { $0 = $0 ?? now } }
                }
            })
        }
        defer { for reader in readers { reader.cancel() } }
        let clients = poolSpecs.map { ControlClient(dataDirectory: $0.data) }
        let report = ControlRequest.EmitItem(.syncPointReached, payload: ["gate": "g"])
        for client in clients.dropLast() { _ = try await client.emit(report, timeout: .seconds(10)) }
        // The standby holds the first reports before the kill (as it would after any real delay).
        let standby = ControlClient(dataDirectory: topology.standby!.data)
        let waitReports = ContinuousClock.now
        while true {
            // An error while the standby still rebuilds (its new store refills first) is asked again.
            let gates = try? await standby.gates(timeout: .seconds(5))
            let aligned = gates?["gates"]?[0]?["aligned"]?.arrayValue?.count ?? 0
            if aligned == pools - 1 { break }
            guard ContinuousClock.now - waitReports < .seconds(30) else { throw BenchmarkFailure("the standby did not hold the first reports within 30 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let killed = ContinuousClock.now
        kill(children["coord-a"]!.processIdentifier, SIGKILL)
        _ = try await clients.last!.emit(report, timeout: .seconds(10))
        while box.passed.withLock({ $0.count }) < pools || box.claim.withLock({ $0 }) == nil {
            guard ContinuousClock.now - killed < .seconds(60) else { throw BenchmarkFailure("the gate did not pass at every pool within 60 s of the kill") }
            try await Task.sleep(for: .milliseconds(1))
        }
        let claim = milliseconds(box.claim.withLock { $0! } - killed)
        let passed = milliseconds(box.passed.withLock { $0.values.max()! } - killed)
        await context.shutdown()
        return (claim, passed)
    }
}
