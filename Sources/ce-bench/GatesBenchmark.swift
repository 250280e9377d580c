import ArgumentParser
import CECluster
import CECore
import CENode
import Foundation
import Synchronization
import ZeroMQ

/// N pools (one node each) and a coordinator on loopback. Per round: N-1 pools report, then
/// the last one; the time from its emit to `gate_passed` stored at every pool. By default all
/// nodes share this process (each with its own context and store, durability normal); with
/// `--processes` every node is its own `ce-node run` process, driven through its control
/// endpoint and watched through its feed.
struct GatesBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gates",
        abstract: "Gate decision latency: the last sync_point_reached -> gate_passed stored at every pool.")

    @Option(help: "Pools, one node each, all in the one gate.")
    var pools = 3

    @Option(help: "Gate rounds timed.")
    var rounds = 20

    @Flag(help: "Every node in a `ce-node run` process of its own, driven through its control endpoint and watched through its feed.")
    var processes = false

    @Option(name: .customLong("heartbeat-ms"), help: ArgumentHelp("The topology's heartbeat interval.", valueName: "ms"))
    var heartbeatMilliseconds = 500

    @Flag(help: "A standby coordinator beside the coordinator (it keeps the state, the coordinator decides).")
    var standby = false

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--pools": pools, "--rounds": rounds, "--heartbeat-ms": heartbeatMilliseconds])
    }

    @MainActor func run() async throws {
        let (pools, rounds) = (pools, rounds)
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        var yaml = "version: 1\nsettings: { heartbeat_ms: \(heartbeatMilliseconds)\(cluster.securitySetting) }\n"
        let standbyEntry = standby ? ", standby: { name: coordinator-2, \(try cluster.place("coordinator-2")) }" : ""
        yaml += "coordinator: { name: coordinator, \(try cluster.place("coordinator"))\(standbyEntry) }\nnodes:\n"
        for i in 0..<pools {
            yaml += "  - { name: n\(i), pool: p\(i), \(try cluster.place("n\(i)")) }\n"
        }
        // Pools listen to the coordinator only (each still connects to every peer).
        yaml += "pools:\n" + (0..<pools).map { "  p\($0): { subscribe: [gate_passed] }\n" }.joined()
        yaml += "gates:\n  - { name: g, pools: [\((0..<pools).map { "p\($0)" }.joined(separator: ", "))] }\n"
        let path = try cluster.write(topology: yaml)
        if processes {
            try await runWithProcesses(topologyPath: path)
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
        let services = nodes.filter(\.spec.isCoordinator).map { CoordinatorService(node: $0) }
        final class Arrivals: Sendable { let byRound = Mutex<[Int: [String: ContinuousClock.Instant]]>([:]) }
        let box = Arrivals()
        let running = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in nodes { group.addTask { try await node.run() } }
                for service in services { group.addTask { try await service.run() } }
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
            latencies.append(milliseconds(last - t0))
        }
        report(rounds: rounds, latencies: latencies, coordinatorReceived: coordinator.counters.received)
        running.cancel()
        _ = await running.result
    }

    func report(rounds: Int, latencies: [Double], coordinatorReceived handled: Int) {
        let latencies = latencies.sorted()
        print("gates\(standby ? " (with a standby)" : ""): " + String(format: "%d pools, %d rounds: last report -> gate_passed stored at every pool: p50 %.1f ms, p99 %.1f ms; coordinator received %d events (%.1f per gate for %d pools) and published one decision per gate; %d TCP subscriptions in the mesh",
                     pools, latencies.count, percentile(latencies, 0.5), percentile(latencies, 0.99), handled,
                     Double(handled) / Double(rounds), pools, (pools + (standby ? 2 : 1)) * (pools + (standby ? 1 : 0))))
    }

    /// The gate benchmark with one `ce-node run` process per node.
    @MainActor func runWithProcesses(topologyPath: String) async throws {
        let topology = try TopologyLoader.load(path: topologyPath)
        var children: [Process] = []
        defer {
            for child in children where child.isRunning { child.terminate() }
            for child in children { stopNode(child) }
        }
        for spec in topology.nodes {
            children.append(try startNode(topology: topologyPath, node: spec.name, logLevel: "warning", ["--durability", "normal"]))
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
                let status = try? await ControlClient(dataDirectory: topology.node(named: name)!.data).status(timeout: .seconds(5))
                let peers = status?["peers"]?.arrayValue?.filter { name == coordinator.name || $0["name"]?.stringValue == coordinator.name }
                if peers == nil || !peers!.allSatisfy({ $0["up"]?.boolValue == true }) { still.append(name) }
            }
            pending = still
            if !pending.isEmpty { try await Task.sleep(for: .milliseconds(200)) }
        }
        guard pending.isEmpty else {
            throw BenchmarkFailure("\(pending.count) nodes did not hear the coordinator (or it them) within 180 s (first: \(pending[0]))")
        }
        print(String(format: "%d node processes up and meshed after %.1f s", topology.nodes.count, seconds(since: start)))

        // Every pool's feed shows what it stores: note when each gate_passed arrives.
        let context = try Context()
        final class Arrivals: Sendable { let byRound = Mutex<[Int: [String: ContinuousClock.Instant]]>([:]) }
        let box = Arrivals()
        var readers: [Task<Void, any Error>] = []
        for spec in poolSpecs {
            let feed = try context.socket(.sub)
            try feed.set(.subscribe(Array("gate_passed/".utf8)))
            try feed.connect(NodePaths(dataDirectory: spec.data).feedEndpoint)
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
        let syncPoint = ControlRequest.EmitItem(.syncPointReached, payload: ["gate": "g"])
        // A first round to be sure every feed is connected; it is not counted.
        var latencies: [Double] = []
        for round in 1...(rounds + 1) {
            for client in clients.dropLast() { _ = try await client.emit(syncPoint, timeout: .seconds(10)) }
            try await Task.sleep(for: .milliseconds(100))  // let the coordinator take the first reports
            let t0 = ContinuousClock.now
            _ = try await clients.last!.emit(syncPoint, timeout: .seconds(10))
            let deadline = ContinuousClock.now + .seconds(30)
            while box.byRound.withLock({ ($0[round]?.count ?? 0) < pools }) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(1))
            }
            guard let last = box.byRound.withLock({ $0[round]?.values.max() }), box.byRound.withLock({ $0[round]?.count }) == pools else {
                print("round \(round): not every pool heard the gate within 30 s"); continue
            }
            if round == 1 { continue }
            latencies.append(milliseconds(last - t0))
        }
        let status = try await ControlClient(dataDirectory: coordinator.data).status()
        let received = status["counters"]?["received"]?.intValue ?? -1
        report(rounds: rounds + 1, latencies: latencies, coordinatorReceived: received)
        for reader in readers { reader.cancel() }
        await context.shutdown()
    }
}
