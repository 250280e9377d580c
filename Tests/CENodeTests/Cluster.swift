import CECore
import CENode
import Foundation
import Synchronization
import Testing
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A cluster of real `ce-node` processes on loopback, in a temporary folder, torn down at the end.
final class Cluster: @unchecked Sendable {
    // @unchecked Sendable: `processes` and `topology` are only touched by the test that owns the cluster.
    let root: String
    let topologyPath: String
    /// What the topology file says: as first written, or as the last ``rewrite(_:pools:ports:)`` wrote it.
    private(set) var topology: Topology
    let hosts: Hosts
    var processes: [String: Process] = [:]
    /// Each node's CURVE key pair (empty with `security: none`); the secret keys are in the
    /// nodes' data folders, the public keys in the topology.
    let keys: [String: CurveKeyPair]
    /// Every node the cluster has a host for: those of the first topology, then those held back.
    let defs: [NodeDef]
    /// Each node's ports, chosen once: a node keeps them through every rewrite of the file.
    let ports: [String: Ports]
    /// The `settings` lines every topology of this cluster is written with.
    let settings: String

    struct NodeDef {
        var name: String
        var pool: String
        var workspace = false
        /// A host name instead of the harness's address (for peers that cannot be reached).
        var host: String? = nil
        /// An HTTP port (`ports.metrics`) for /metrics, /status.json and the dashboard.
        var metrics = false
    }

    struct Ports: Sendable, Equatable {
        var pub: Int
        var rep: Int
        var metrics: Int?
    }

    /// Writes a topology for the nodes (free loopback ports); `launch` starts them.
    /// `namespaces`: one network namespace per node where this machine allows it.
    /// Every node gets a CURVE key pair (secret key in its data folder, public key in the
    /// topology) unless `settings` says `security: none`.
    /// `later`: nodes that get a host, ports and keys but are left out of the first topology,
    /// to be added by ``rewrite(_:pools:ports:)``.
    ///
    /// Made with ``make(_:pools:settings:namespaces:later:)`` from async code: the hosts are set up
    /// by running `ip` dozens of times, which must not hold a cooperative thread.
    init(_ nodes: [NodeDef], pools: String, settings: String, namespaces: Bool = false, later: [NodeDef] = []) throws {
        root = NSTemporaryDirectory() + "ce-test-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defs = nodes + later
        self.settings = settings
        hosts = Hosts(nodes: defs.map(\.name), namespaces: namespaces)
        var keys: [String: CurveKeyPair] = [:]
        if !settings.contains("security: none") {
            for node in defs { keys[node.name] = try NodeKeyFile.generate(dataDirectory: "\(root)/\(node.name)", node: node.name) }
        }
        self.keys = keys
        var ports: [String: Ports] = [:]
        for node in defs {
            // Each host has its own ports in namespaces; on loopback each node needs its own.
            let (pub, rep) = hosts.mode == .namespaces ? (7000, 7001) : (try freePort(), try freePort())
            let metrics = node.metrics ? (hosts.mode == .namespaces ? 7002 : try freePort()) : nil
            ports[node.name] = Ports(pub: pub, rep: rep, metrics: metrics)
        }
        self.ports = ports
        topologyPath = root + "/topology.yaml"
        let yaml = Self.text(nodes, pools: pools, settings: settings, root: root, hosts: hosts, keys: keys, ports: ports)
        try yaml.write(toFile: topologyPath, atomically: true, encoding: .utf8)
        topology = try TopologyLoader.load(path: topologyPath)
    }

    /// The topology file's text for `nodes`, each with its ports in `ports`.
    private static func text(_ nodes: [NodeDef], pools: String, settings: String, root: String, hosts: Hosts,
                             keys: [String: CurveKeyPair], ports: [String: Ports]) -> String {
        func key(_ name: String) -> String { keys[name].map { "  public_key: \"\($0.publicKey)\"\n" } ?? "" }
        var yaml = "version: 1\ncluster: test\nsettings:\n  \(settings)\nnodes:\n"
        var coordinator = ""
        for node in nodes {
            let (pub, rep) = (ports[node.name]!.pub, ports[node.name]!.rep)
            let host = node.host ?? hosts.address(of: node.name)
            let metrics = ports[node.name]!.metrics.map { ", metrics: \($0)" } ?? ""
            if node.pool == "coordinator" {
                let entry = "name: \(node.name)\nhost: \(host)\nports: { pub: \(pub), rep: \(rep)\(metrics) }\ndata: \(root)/\(node.name)\n"
                    + (keys[node.name].map { "public_key: \"\($0.publicKey)\"\n" } ?? "")
                if coordinator.isEmpty {
                    coordinator = "coordinator:\n" + Self.indented(entry, by: 2)
                } else {
                    // A second coordinator is the first one's standby, a mapping inside its section.
                    coordinator += "  standby:\n" + Self.indented(entry, by: 4)
                }
                continue
            }
            yaml += "  - name: \(node.name)\n    pool: \(node.pool)\n    host: \(host)\n    ports: { pub: \(pub), rep: \(rep)\(metrics) }\n    data: \(root)/\(node.name)\n"
            yaml += key(node.name).replacingOccurrences(of: "  public_key", with: "    public_key")
            if node.workspace { yaml += "    workspace: \(root)/ws-\(node.name)\n" }
        }
        yaml += coordinator
        yaml += pools
        // The custom types of the demo's topology, unless the test names its own.
        if !pools.contains("custom_types:") { yaml += "\ncustom_types: [schema_v1, early_feedback]\n" }
        return yaml
    }

    /// The topology file's text for some of the cluster's nodes (in the order they were
    /// first given), with `pools` and the cluster's settings unless `settings` replaces them;
    /// `ports` overrides a node's ports.
    func text(_ names: [String], pools: String, settings: String? = nil, ports changed: [String: Ports] = [:]) -> String {
        let nodes = defs.filter { names.contains($0.name) }
        return Self.text(nodes, pools: pools, settings: settings ?? self.settings, root: root, hosts: hosts, keys: keys,
                         ports: ports.merging(changed) { _, new in new })
    }

    /// Writes the topology file as running nodes would find it on a reload: whole or not at
    /// all (written beside it, then renamed over it). `topology` stays as it was.
    func writeTopology(_ text: String) throws {
        try text.write(toFile: topologyPath, atomically: true, encoding: .utf8)
    }

    /// Writes the topology file anew for some of the cluster's nodes and reads it back into
    /// `topology`. The keys are in the file itself, so there is no keys file to rewrite.
    func rewrite(_ names: [String], pools: String, ports changed: [String: Ports] = [:]) throws {
        try writeTopology(text(names, pools: pools, ports: changed))
        topology = try TopologyLoader.load(path: topologyPath)
    }

    /// Indents every line of `text` (which ends in a newline) by `spaces`.
    private static func indented(_ text: String, by spaces: Int) -> String {
        text.split(separator: "\n").map { String(repeating: " ", count: spaces) + $0 + "\n" }.joined()
    }

    /// Makes a cluster on a thread of its own (see the initializer).
    static func make(_ nodes: [NodeDef], pools: String, settings: String, namespaces: Bool = false, later: [NodeDef] = []) async throws -> Cluster {
        try await offThePool { try Cluster(nodes, pools: pools, settings: settings, namespaces: namespaces, later: later) }
    }

    /// Cuts a node's host off the switch, on a thread of its own (`ip` runs).
    func cut(_ node: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.cut(node) }
    }

    /// Links a node's host to the switch again, on a thread of its own.
    func heal(_ node: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.heal(node) }
    }

    /// Cuts the link between two nodes' hosts only, on a thread of its own (`ip` and `iptables` run).
    func cutLink(_ a: String, _ b: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.cutLink(a, b) }
    }

    /// Mends the link between two nodes' hosts, on a thread of its own.
    func healLink(_ a: String, _ b: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.healLink(a, b) }
    }

    func launch(_ names: [String]) async throws {
        for name in names { try start(name) }
        for name in names { try await waitUntilUp(name) }
        try await waitUntilConnected(names)
    }

    func start(_ name: String, _ extra: [String] = []) throws {
        let process = Process()
        let (executable, arguments) = hosts.command(
            for: name, Cluster.binary, ["run", "--topology", topologyPath, "--node", name, "--log-level", "info"] + extra)
        process.executableURL = executable
        process.arguments = arguments
        let log = root + "/\(name).log"
        if !FileManager.default.fileExists(atPath: log) { FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes[name] = process
    }

    /// The built `ce-node`, next to this test bundle.
    static let binary: URL = {
        let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        return here.appendingPathComponent("ce-node")
    }()

    /// A node's data folder; a node not in the topology (yet, or any more) has the one it would be given.
    func data(_ name: String) -> String { topology.node(named: name)?.data ?? "\(root)/\(name)" }

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
    func workspace(_ name: String) -> String { topology.node(named: name)!.workspace! }

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
    func log(_ name: String) -> String { (try? String(contentsOfFile: root + "/\(name).log", encoding: .utf8)) ?? "" }

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

    func kill(_ name: String, signal: Int32 = SIGKILL) {
        guard let p = processes[name], p.isRunning else { return }
        Glibc.kill(p.processIdentifier, signal)
        awaitExit(p)
    }

    func stop(_ name: String) async throws {
        guard let p = processes[name], p.isRunning else { return }
        p.terminate()
        try await eventually(15, "\(name) stops on SIGTERM") { !p.isRunning }
    }

    /// Stops every node (SIGTERM, then SIGKILL) and removes the folder.
    func tearDown() async {
        for (_, p) in processes where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(10)
        for (_, p) in processes {
            while p.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL); awaitExit(p) }
        }
        let hosts = self.hosts
        _ = try? await offThePool { hosts.tearDown() }
        try? FileManager.default.removeItem(atPath: root)
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
    process.executableURL = Cluster.binary
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

/// Waits (at most `seconds`) until a process that was sent SIGKILL has exited. A bounded poll:
/// `Process.waitUntilExit` was once seen spinning for minutes after its child had been reaped.
func awaitExit(_ process: Process, seconds: Double = 10) {
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(5_000) }
}

/// Runs blocking code (a child process to its end, a socket read) on a thread of its own.
/// The tests share the cooperative threads (two on a two-core machine), and a test blocked
/// on one holds up every other test's deadlines.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// Runs a program to its end; returns its exit status and its output (stdout and stderr).
func runProcess(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
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

/// Ports handed out in this test process: never the same twice, even to tests running at once
/// (a free port is only free until someone binds it).
let portsGiven = Mutex<Set<Int>>([])

/// Runs `body` (bind or connect) with 127.0.0.1:`port` as a socket address.
func withLoopback<T>(_ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral
/// range (which outgoing connections draw from, so a port taken from it can be gone by the
/// time a node binds it).
func freePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000..<32000)
        guard portsGiven.withLock({ $0.insert(port).inserted }) else { continue }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let ok = withLoopback(port) { bind(fd, $0, $1) == 0 }
        if ok { return port }
    }
    throw TestFailure("no free port in 20000-31999")
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
