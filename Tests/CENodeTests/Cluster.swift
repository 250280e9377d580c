import CECluster
import CECore
import CENode
import Foundation
import Testing
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

// What the tests do with a cluster (CECluster's ``Cluster``): start it and wait for it, speak
// to its nodes through their control endpoints or as raw sockets, and check what they stored.

extension Cluster {
    /// Starts the nodes, then waits until each answers on its control endpoint and all hear each other.
    func launch(_ names: [String]) async throws {
        for name in names { try start(name) }
        for name in names { try await waitUntilUp(name) }
        try await waitUntilConnected(names)
    }

    // MARK: The test's own raw sockets, speaking as a node of the topology

    /// A context for raw sockets; with CURVE, its authenticator admits the topology's keys
    /// (a raw socket that binds, as a node's PUB or ROUTER would, needs one).
    func rawContext() throws -> Context {
        let context = try Context()
        if !keys.isEmpty { _ = try context.startAuthenticator(allowing: keys.values.map(\.publicKey)) }
        return context
    }

    /// Puts node `name`'s secret key back into its data folder (made 0700 if gone), mode 0600,
    /// as an operator restores a node's identity onto a new disk.
    func restoreKey(_ name: String) throws {
        guard let pair = keys[name] else { return }
        try FileManager.default.createDirectory(atPath: data(name), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = data(name) + "/curve.key"
        guard FileManager.default.createFile(atPath: path, contents: Data((pair.secretKey + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw TestFailure("cannot write \(path)")
        }
    }

    /// Makes a raw socket a CURVE server with node `name`'s keys (before it binds).
    func serve(_ socket: Socket, as name: String) throws {
        guard let pair = keys[name] else { return }
        try socket.set([.curveServer(true), .curvePublicKey(pair.publicKey), .curveSecretKey(pair.secretKey)])
        if socket.type == .router { try socket.set(.receiveUserID(true)) }
    }

    /// A raw socket standing in for node `name` (a CURVE server with its keys): a PUB bound to
    /// its pub port, any other type to its rep port.
    func impersonate(_ name: String, _ type: SocketType, in context: Context) throws -> Socket {
        let socket = try context.socket(type)
        try serve(socket, as: name)
        let node = topology.node(named: name)!
        try socket.bind(type == .pub || type == .xpub ? node.bindPubEndpoint : node.bindRepEndpoint)
        return socket
    }

    /// Makes a raw socket a CURVE client of node `peer` with node `name`'s keys (before it connects).
    func dial(_ socket: Socket, as name: String, to peer: String) throws {
        guard let pair = keys[name], let server = keys[peer] else { return }
        try socket.set([.curveServerKey(server.publicKey), .curvePublicKey(pair.publicKey), .curveSecretKey(pair.secretKey)])
    }

    /// Writes `count` event files into the node's event folder, named in the order of their
    /// payload's `n` (`planner_plan_ready_00000.json`, ...); returns the folder.
    func dropEventFiles(_ name: String, count: Int) throws -> String {
        let outbox = workspace(name) + "/.ce-events"
        try FileManager.default.createDirectory(atPath: outbox, withIntermediateDirectories: true)
        for n in 0..<count {
            let file = #"{"stream":"planner","event_type":"plan_ready","payload":{"n":\#(n)},"timestamp":"2026-11-25T10:00:00Z"}"#
            try Data(file.utf8).write(to: URL(fileURLWithPath: outbox + String(format: "/planner_plan_ready_%05d.json", n)))
        }
        return outbox
    }

    /// Checks that the node stored the events of `dropEventFiles(_:count:)` once each, in
    /// the files' name order, numbered from 1.
    func expectEventFilesStoredInOrder(_ name: String, count: Int) async throws {
        let history = try await history(name)
        let ns = history.compactMap { $0["payload"]?["n"]?.intValue }
        #expect(ns.count == count, "\(ns.count) events stored for \(count) files")
        #expect(Set(ns).count == ns.count, "a file was emitted twice")
        let misplaced = ns.indices.first { ns[$0] != $0 }
        #expect(misplaced == nil, "file \(misplaced.map { ns[$0] } ?? -1) went out as event \((misplaced ?? -2) + 1)")
        #expect(history.compactMap { $0["seq"]?.intValue } == Array(1...count))
    }

    /// With `CE_KEEP_LOGS` naming a folder, copies every started node's log and the topology
    /// file there, into a folder named after `label` (the cluster's own folder is removed when
    /// it is torn down).
    func keepLogs(_ label: String) {
        guard let folder = ProcessInfo.processInfo.environment["CE_KEEP_LOGS"] else { return }
        let run = folder + "/" + String(label.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        try? FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        for name in processes.keys { try? log(name).write(toFile: run + "/\(name).log", atomically: true, encoding: .utf8) }
        try? FileManager.default.removeItem(atPath: run + "/topology.yaml")
        try? FileManager.default.copyItem(atPath: topologyPath, toPath: run + "/topology.yaml")
    }

    func control(_ name: String, _ request: JSONValue, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        try await ControlClient(dataDirectory: data(name)).call(request, timeout: timeout)
    }

    func status(_ name: String) async throws -> JSONValue {
        try await control(name, ["cmd": "status"])["status"]!
    }

    @discardableResult
    func emit(_ name: String, _ type: String, _ payload: JSONValue = .null) async throws -> JSONValue {
        // Delivery tests use types of their own: admitted on purpose (AdmissionTests checks the default).
        try await control(name, ["cmd": "emit", "event_type": .string(type), "payload": payload, "allow_custom_type": true])["event"]!
    }

    func waitUntilUp(_ name: String) async throws {
        try await eventually(30, "\(name) answers on its control endpoint\n\(log(name))") {
            guard processes[name]?.isRunning == true else { throw TestFailure("\(name) exited:\n\(log(name))") }
            return (try? await ControlClient(dataDirectory: data(name)).call(["cmd": "status"], timeout: .milliseconds(500))) != nil
        }
    }

    /// Until each running node hears the heartbeats of every other running node.
    func waitUntilConnected(_ names: [String]) async throws {
        try await eventually(30, "nodes hear each other") {
            for name in names {
                let peers = try await status(name)["peers"]?.arrayValue ?? []
                for peer in peers where names.contains(peer["name"]?.stringValue ?? "") {
                    if peer["up"]?.boolValue != true { return false }
                }
            }
            return true
        }
    }

    /// Events stored at a node (its audit trail), read through `ce-node history`.
    func history(_ name: String, type: String? = nil) async throws -> [JSONValue] {
        var args = ["history", "--data", data(name), "--limit", "100000", "--json"]
        if let type { args += ["--type", type] }
        let out = try await run(args)
        return out.split(separator: "\n").compactMap { try? JSONValue(parsing: String($0)) }
    }

    func run(_ arguments: [String]) async throws -> String { try await runCENode(arguments).output }

    /// Plays the agent of a pool with a workspace: waits for the next question file, then
    /// (once `before` holds) writes `answer` as the reply, write-then-rename. Returns the question.
    func answerNextQuestion(of node: String, with answer: JSONValue, before: () async throws -> Bool = { true }) async throws -> JSONValue {
        let requests = workspace(node) + "/.ce-events/requests"
        let replies = workspace(node) + "/.ce-events/replies"
        var name: String?
        try await eventually(10, "a question file appears for \(node)") {
            name = (try? FileManager.default.contentsOfDirectory(atPath: requests))?.first { $0.hasSuffix(".json") && !$0.hasPrefix(".") }
            return name != nil
        }
        let question = try JSONValue(parsing: [UInt8](FileManager.default.contents(atPath: requests + "/" + name!)!))
        try await eventually(10, "the moment to answer") { try await before() }
        try Data(JSONValue.object(["answer": answer]).serialized()).write(to: URL(fileURLWithPath: replies + "/.tmp"))
        try FileManager.default.moveItem(atPath: replies + "/.tmp", toPath: replies + "/" + name!)
        return question
    }

    func stop(_ name: String) async throws {
        guard let p = processes[name], p.isRunning else { return }
        p.terminate()
        try await eventually(15, "\(name) stops on SIGTERM") { !p.isRunning }
    }
}

/// Runs the built `ce-node` with arguments, waiting on a thread of its own; returns its exit
/// status and its output. Bounded like every wait in the tests: a command still running after
/// `seconds` is killed and reported with status -1.
func runCENode(_ arguments: [String], seconds: Double = 120) async throws -> (status: Int32, output: String) {
    try await offThePool { try runBoundedBlocking(arguments, seconds: seconds) }
}

private func runBoundedBlocking(_ arguments: [String], seconds: Double) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = ceNodeBinary
    process.arguments = arguments
    let out = NSTemporaryDirectory() + "ce-run-" + UUID().uuidString.prefix(8)
    FileManager.default.createFile(atPath: out, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: out) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    var status = Int32(-1)
    if process.isRunning {
        kill(process.processIdentifier, SIGKILL)
        awaitExit(process)
    } else {
        status = process.terminationStatus
    }
    try handle.close()
    return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Waits until `condition` holds, checking every 20 ms, for at most `seconds`.
func eventually(_ seconds: Double, _ what: @autoclosure () -> String, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if try await condition() { return }
        // Checked once more after the deadline: a test kept off the threads past it (the
        // machine busy with other tests) fails only if the condition still does not hold.
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out after \(seconds) s: \(what())")
}

/// Runs `body` with a started cluster and always tears it down, also when the test fails.
/// `later`: nodes with a host and keys that the first topology leaves out (see ``Cluster/init(_:pools:settings:namespaces:later:)``).
func withCluster(
    _ nodes: [Cluster.NodeDef], pools: String = "",
    settings: String = "heartbeat_ms: 200\n  ask_timeout_ms: 500\n  ask_retries: 1", start: [String]? = nil,
    namespaces: Bool = false, later: [Cluster.NodeDef] = [],
    _ body: (Cluster) async throws -> Void
) async throws {
    let cluster = try await Cluster.make(nodes, pools: pools, settings: settings, namespaces: namespaces, later: later)
    do {
        try await cluster.launch(start ?? nodes.map(\.name))
        try await body(cluster)
    } catch {
        print("cluster logs in \(cluster.root):")
        for node in nodes + later { print("--- \(node.name)\n\(cluster.log(node.name).suffix(3000))") }
        await cluster.tearDown()
        throw error
    }
    await cluster.tearDown()
}

/// Runs `body` with the node of a one-node cluster (pool planner, no security) running in
/// this process, then stops it and removes the cluster's folder.
func withNodeInProcess(_ body: (Node) async throws -> Void) async throws {
    let cluster = try await Cluster.make([.init(name: "planner-1", pool: "planner")], pools: "", settings: "security: none\n  heartbeat_ms: 200")
    let node = try Node(options: try Node.Options(topology: cluster.topology, name: "planner-1"))
    let running = Task { try await node.run() }
    var failure: (any Error)?
    do { try await body(node) } catch { failure = error }
    running.cancel()
    _ = try? await running.value
    await cluster.tearDown()
    if let failure { throw failure }
}
