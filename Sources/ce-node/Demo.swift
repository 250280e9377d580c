import ArgumentParser
import CECore
import CENode
import Foundation
import Synchronization
import ZeroMQ

/// `ce-node demo`: a whole cluster on this machine, one process per node, playing a
/// compound-engineering pipeline with a live timeline.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start the demo cluster (one process per node) and play a pipeline with a live timeline.")

    @Option(help: "The topology file (all nodes on this machine, unless --attach; $CE_TOPOLOGY when set).")
    var topology: String = ProcessInfo.processInfo.environment["CE_TOPOLOGY"] ?? "topology/demo.yaml"

    @Flag(help: "Play on a cluster that already runs (containers, other hosts' nodes reached through their local endpoints): start and stop nothing.")
    var attach = false

    @Option(help: "With --attach: node NAME's data folder is DIR/NAME instead of the topology's (every node's data volume mounted side by side).")
    var dataRoot: String?

    func run() async throws {
        var cluster: Topology
        do { cluster = try TopologyLoader.load(path: topology) } catch { throw ValidationError("\(error)") }
        if let dataRoot {
            guard attach else { throw ValidationError("--data-root goes with --attach") }
            cluster.nodes = cluster.nodes.map { node in
                var node = node
                node.data = dataRoot + "/" + node.name
                return node
            }
        }
        if attach {
            print("Playing on the running cluster of \(topology) (\(cluster.nodes.map(\.name).joined(separator: ", ")))")
            do {
                try await play(cluster)
            } catch {
                print("Demo failed: \(error)")
                throw ExitCode.failure
            }
            return
        }
        let root = commonDataRoot(cluster)
        try? FileManager.default.removeItem(atPath: root)  // the demo's own folder, from a previous run
        try FileManager.default.createDirectory(atPath: root + "/logs", withIntermediateDirectories: true)
        try makeKeys(cluster)
        print("Starting \(cluster.nodes.count) nodes from \(topology) (logs in \(root)/logs)")
        if let url = cluster.coordinator?.metricsURL { print("The dashboard, while they run: \(url)/") }
        let processes = try cluster.nodes.map { node in try NodeProcess.start(topology: topology, node: node.name, log: "\(root)/logs/\(node.name).log") }
        var failure: (any Error)?
        do {
            try await play(cluster)
        } catch {
            failure = error
        }
        print("\nStopping the nodes (SIGTERM)...")
        for p in processes { p.terminate() }
        for p in processes { p.waitOrKill(seconds: 10) }
        if let failure {
            print("Demo failed: \(failure)")
            throw ExitCode.failure
        }
        print("""

            The audit trail stays in each node's store, for example:
              ce-node history --topology \(topology) --node reviewer-1
            """)
    }

    /// CURVE for the demo: a secret key in each node's data folder (made when missing) and
    /// every public key in the topology's `settings.keys_file`.
    func makeKeys(_ cluster: Topology) throws {
        guard cluster.settings.security == .curve else {
            print("Security is none in \(topology): the nodes run without CURVE")
            return
        }
        var lines: [String] = []
        for node in cluster.nodes {
            let pair: CurveKeyPair
            do {
                if FileManager.default.fileExists(atPath: NodeKeyFile.path(dataDirectory: node.data)) {
                    pair = try NodeKeyFile.load(dataDirectory: node.data, node: node.name, topologyFile: topology)
                } else {
                    pair = try NodeKeyFile.generate(dataDirectory: node.data, node: node.name)
                }
            } catch {
                throw ValidationError("\(error)")
            }
            if let listed = node.publicKey, listed != pair.publicKey, cluster.settings.keysFile == nil {
                throw ValidationError("\(topology) lists another public key for \(node.name) than its secret key in \(node.data): remove the node's public_key: or the key file")
            }
            lines.append(KeysFile.line(node: node.name, publicKey: pair.publicKey))
        }
        if cluster.nodes.allSatisfy({ $0.publicKey != nil }) && cluster.settings.keysFile == nil { return }
        guard let file = cluster.settings.keysFile else {
            throw ValidationError("\(topology) lacks public keys and has no settings.keys_file for the demo to write them into")
        }
        try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try (lines.joined(separator: "\n") + "\n").write(toFile: file, atomically: true, encoding: .utf8)
        print("CURVE keys: each node's secret key in its data folder, the public keys in \(file)")
    }

    func commonDataRoot(_ cluster: Topology) -> String {
        let parents = Set(cluster.nodes.map { ($0.data as NSString).deletingLastPathComponent })
        return parents.count == 1 ? parents.first! : ".ce-data/demo"
    }

    func play(_ cluster: Topology) async throws {
        let started = ContinuousClock.now
        let timeline = Timeline(cluster: cluster, started: started)
        let context = try Context()
        do {
            try await play(cluster, started: started, timeline: timeline, context: context)
        } catch {
            await context.shutdown()
            throw error
        }
        await context.shutdown()
    }

    func play(_ cluster: Topology, started: ContinuousClock.Instant, timeline: Timeline, context: Context) async throws {
        // Wait for every node to answer on its control endpoint, then for heartbeats between all.
        for node in cluster.nodes {
            try await waitFor("\(node.name) to start", seconds: 30) {
                (try? await ControlClient(dataDirectory: node.data).status(timeout: .seconds(1))) != nil
            }
            try timeline.follow(node, context: context)
        }
        try await waitFor("every node to hear every peer", seconds: 30) {
            for node in cluster.nodes {
                guard let status = try? await ControlClient(dataDirectory: node.data).status(timeout: .seconds(1)),
                    let peers = status["peers"]?.arrayValue,
                    peers.allSatisfy({ $0["up"]?.boolValue == true })
                else { return false }
            }
            return true
        }
        print("Cluster up after \(format(ContinuousClock.now - started)). Timeline (time since start; who received each event, and how long after it was emitted):\n")
        let collector = Task { try await timeline.collect() }
        defer { collector.cancel() }

        func emit(_ node: String, _ type: String, _ payload: JSONValue, target: String? = nil) async throws {
            guard let spec = cluster.node(named: node) else { throw ValidationError("the demo needs a node named \(node) in the topology") }
            let event = try await ControlClient(dataDirectory: spec.data).emit(.init(try EventType(validating: type), payload: payload, target: target))
            guard let id = event["id"]?.stringValue else { throw ValidationError("emit gave no event id") }
            try await timeline.waitUntilDelivered(id)
        }

        // 1. Planners publish a first schema early (progressive synchronization), then the plan.
        try await emit("planner-1", "schema_v1", ["entities": ["User", "Session"], "version": 1])
        try await emit("planner-1", "plan_ready", ["feature": "login", "tasks": ["api", "ui", "tests"]], target: "builder")
        // 2. Reviewers react in preview mode while builders start.
        try await emit("reviewer-1", "early_feedback", ["on": "plan_ready", "note": "add rate limiting to the login API"])
        // 3. Architecture approval: a quality gate where all three pools must align before
        //    builders start the full implementation.
        try await emit("planner-1", "architecture_complete", ["components": ["api", "ui", "store"]])
        for node in ["planner-1", "builder-1", "reviewer-1"] {
            try await emit(node, "sync_point_reached", ["gate": "architecture_approval"])
        }
        try await timeline.waitForCoordinator("gate_passed")
        // 4. A builder asks the planners a question; the planner agent answers through its event folder.
        let planner = cluster.node(named: "planner-1")!
        let answerer = Task { try await answerAsPlannerAgent(workspace: planner.workspace ?? planner.data) }
        let builder = cluster.node(named: "builder-1")!
        let askedAt = ContinuousClock.now
        let answer = try await ControlClient(dataDirectory: builder.data).ask(
            pool: "planner", question: ["text": "Sessions in a cookie or a bearer token?"], timeout: .seconds(30))
        let rtt = ContinuousClock.now - askedAt
        _ = try? await answerer.value
        timeline.note("builder-1 asked pool planner: \"Sessions in a cookie or a bearer token?\"")
        timeline.note("  answer \(answer.serializedString) in \(format(rtt))")
        // 5. Builders deliver.
        try await emit("builder-1", "build_ready", ["artifact": "login-api", "commit": "a1b2c3"])
        try await emit("builder-2", "implementation_complete", ["artifact": "login-ui"])
        // 6. Reviewers and builders disagree; the coordinator asks the planners, escalates to a
        //    human when nobody decides, and the human's decision closes it.
        try await emit("reviewer-1", "conflict_detected", ["subject": "login-tests", "parties": ["builder"], "description": "no tests for token expiry"])
        try await emit("builder-1", "conflict_detected", ["subject": "login-tests", "parties": ["reviewer"], "description": "expiry is covered by the session tests"])
        try await timeline.waitForCoordinator("resolution_needed")
        try await timeline.waitForCoordinator("resolution_needed", second: true)
        let coordinator = cluster.coordinator!
        let open = try await ControlClient(dataDirectory: coordinator.data).gates()
        guard let conflictID = open["conflicts"]?[0]?["conflict_id"]?.stringValue else {
            throw ValidationError("the coordinator shows no open conflict")
        }
        _ = try await ControlClient(dataDirectory: coordinator.data).emit(
            .init(.conflictResolved, payload: ["conflict_id": .string(conflictID), "decision": "add an expiry test", "resolved_by": "human"]))
        timeline.note("a human resolved conflict \(conflictID.prefix(8)): \"add an expiry test\"")
        try await timeline.waitForCoordinator("conflict_closed")
        // 7. Reviewers do the full review; release readiness; approval.
        try await emit("reviewer-1", "review_complete", ["verdict": "pass", "comments": 2])
        try await emit("reviewer-1", "quality_validated", ["coverage": 0.91])
        for node in ["builder-1", "reviewer-1"] {
            try await emit(node, "sync_point_reached", ["gate": "release_readiness"])
        }
        try await timeline.waitForCoordinator("gate_passed", second: true)
        try await emit("reviewer-1", "approval_granted", ["release": "login-v1"])
        print("\nPipeline complete in \(format(ContinuousClock.now - started)).")
    }

    /// The planner agent of the demo: reads a question file, writes the reply file.
    func answerAsPlannerAgent(workspace: String) async throws {
        let requests = workspace + "/.ce-events/requests"
        let replies = workspace + "/.ce-events/replies"
        var name: String?
        try await waitFor("the question to reach the planner's event folder", seconds: 30) {
            name = (try? FileManager.default.contentsOfDirectory(atPath: requests))?.first { $0.hasSuffix(".json") && !$0.hasPrefix(".") }
            return name != nil
        }
        let reply: JSONValue = ["answer": "Bearer token; see schema_v1 for the Session entity."]
        let temporary = replies + "/." + name! + ".tmp"
        try Data(reply.serialized()).write(to: URL(fileURLWithPath: temporary))
        try FileManager.default.moveItem(atPath: temporary, toPath: replies + "/" + name!)
    }
}

func format(_ d: Duration) -> String {
    let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    return ms < 1000 ? String(format: "%.1f ms", ms) : String(format: "%.2f s", ms / 1000)
}

/// Polls `condition` every 20 ms until it holds, or fails after `seconds`.
func waitFor(_ what: String, seconds: Double, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw ValidationError("timed out after \(seconds) s waiting for \(what)")
}

/// Watches every node's feed and prints who emitted what and who received it, with latencies.
final class Timeline: Sendable {
    let cluster: Topology
    let started: ContinuousClock.Instant
    let feeds = Mutex<[(String, Socket)]>([])
    /// event id -> (origin, type, stream, emitted at, [receiver: seen at])
    let seen = Mutex<[String: Sighting]>([:])

    struct Sighting: Sendable {
        var origin: String
        var type: EventType
        var stream: String
        var at: [String: ContinuousClock.Instant] = [:]
    }

    init(cluster: Topology, started: ContinuousClock.Instant) {
        self.cluster = cluster
        self.started = started
    }

    func follow(_ node: NodeSpec, context: Context) throws {
        let sub = try context.socket(.sub)
        try sub.set(.subscribe([]))
        try sub.connect(NodePaths(dataDirectory: node.data).feedEndpoint)
        feeds.withLock { $0.append((node.name, sub)) }
    }

    func collect() async throws {
        let feeds = self.feeds.withLock { $0 }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (name, sub) in feeds {
                group.addTask {
                    for try await message in sub.messages {
                        let now = ContinuousClock.now
                        guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes) else { continue }
                        self.seen.withLock { s in
                            s[event.id, default: Sighting(origin: event.origin, type: event.type, stream: event.stream)].at[name] = now
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Nodes whose pool subscribes to the type (all but the origin).
    func receivers(of type: EventType, from origin: String) -> [String] {
        cluster.nodes.filter { node in
            node.name != origin && (Node.subscribedTypes(pool: node.pool, topology: cluster).map { $0.contains(type) } ?? true)
        }.map(\.name)
    }

    func waitUntilDelivered(_ id: String) async throws {
        var sighting: Sighting?
        try await waitFor("event \(id) to reach its subscribers", seconds: 10) {
            guard let s = seen.withLock({ $0[id] }), s.at[s.origin] != nil else { return false }
            sighting = s
            return receivers(of: s.type, from: s.origin).allSatisfy { s.at[$0] != nil }
        }
        guard let s = sighting, let emitted = s.at[s.origin] else { return }
        // The feeds are read by one observer: a receiver's feed can be read a hair before the origin's.
        let deliveries = receivers(of: s.type, from: s.origin).map { name in
            "\(name) +\(format(max(.zero, s.at[name]! - emitted)))"
        }
        let line = String(format: "%9@  %-11@ emitted %-24@ -> %@",
                          format(emitted - started) as NSString, s.origin as NSString, "\(s.type)" as NSString,
                          (deliveries.isEmpty ? "(no subscribers)" : deliveries.joined(separator: ", ")) as NSString)
        print(line)
    }

    /// Waits for the coordinator's first (or second) event of a type and prints its line.
    func waitForCoordinator(_ typeName: String, second: Bool = false) async throws {
        let type = try EventType(validating: typeName)
        guard let coordinator = cluster.coordinator?.name else { return }
        var id: String?
        try await waitFor("the coordinator to publish \(typeName)", seconds: 15) {
            let ids = seen.withLock { s in s.filter { $0.value.type == type && $0.value.origin == coordinator }.sorted { $0.value.at[coordinator]! < $1.value.at[coordinator]! }.map(\.key) }
            id = ids.count > (second ? 1 : 0) ? ids[second ? 1 : 0] : nil
            return id != nil
        }
        try await waitUntilDelivered(id!)
    }

    func note(_ text: String) {
        print(String(format: "%9@  %@", format(ContinuousClock.now - started) as NSString, text as NSString))
    }
}

/// A `ce-node run` child process.
final class NodeProcess: Sendable {
    let process: Process
    let name: String

    init(process: Process, name: String) {
        self.process = process
        self.name = name
    }

    static func start(topology: String, node: String, log: String) throws -> NodeProcess {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["run", "--topology", topology, "--node", node, "--log-level", "notice"]
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return NodeProcess(process: process, name: node)
    }

    func terminate() { if process.isRunning { process.terminate() } }

    func waitOrKill(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            // Polled, not `waitUntilExit`, which was once seen spinning after its child was reaped.
            kill(process.processIdentifier, SIGKILL)
            let killed = Date()
            while process.isRunning && Date().timeIntervalSince(killed) < 10 { usleep(5_000) }
        }
    }
}
