import CECore
import CENode
import Foundation
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A cluster of real `ce-node` processes on this machine, in a temporary folder, torn down at
/// the end: the tests' cluster. Its hosts are network namespaces or loopback (``Hosts``).
public final class Cluster: @unchecked Sendable {
    // @unchecked Sendable: `processes` and `topology` are only touched by the code that owns the cluster.
    let folder: ClusterFolder
    /// What the topology file says: as first written, or as the last ``rewrite(_:pools:ports:)`` wrote it.
    public private(set) var topology: Topology
    public let hosts: Hosts
    public var processes: [String: Process] = [:]
    /// Each node's CURVE key pair (empty with `security: none`); the secret keys are in the
    /// nodes' data folders, the public keys in the topology.
    public let keys: [String: CurveKeyPair]
    /// Every node the cluster has a host for: those of the first topology, then those held back.
    let defs: [NodeDef]
    /// Each node's ports, chosen once: a node keeps them through every rewrite of the file.
    public let ports: [String: Ports]
    /// The `settings` lines every topology of this cluster is written with.
    let settings: String

    public var root: String { folder.root }
    public var topologyPath: String { folder.topologyPath }

    public struct NodeDef: Sendable {
        public var name: String
        public var pool: String
        public var workspace: Bool
        /// A host name instead of the harness's address (for peers that cannot be reached).
        public var host: String?
        /// An HTTP port (`ports.metrics`) for /metrics, /status.json and the dashboard.
        public var metrics: Bool

        public init(name: String, pool: String, workspace: Bool = false, host: String? = nil, metrics: Bool = false) {
            self.name = name
            self.pool = pool
            self.workspace = workspace
            self.host = host
            self.metrics = metrics
        }
    }

    public struct Ports: Sendable, Equatable {
        public var pub: Int
        public var rep: Int
        public var metrics: Int?

        public init(pub: Int, rep: Int, metrics: Int? = nil) {
            self.pub = pub
            self.rep = rep
            self.metrics = metrics
        }
    }

    /// Writes a topology for the nodes (free loopback ports); the nodes are started one by one
    /// with ``start(_:_:)``.
    /// `namespaces`: one network namespace per node where this machine allows it.
    /// Every node gets a CURVE key pair (secret key in its data folder, public key in the
    /// topology) unless `settings` says `security: none`.
    /// `later`: nodes that get a host, ports and keys but are left out of the first topology,
    /// to be added by ``rewrite(_:pools:ports:)``.
    ///
    /// Made with ``make(_:pools:settings:namespaces:later:)`` from async code: the hosts are set up
    /// by running `ip` dozens of times, which must not hold a cooperative thread.
    public init(_ nodes: [NodeDef], pools: String, settings: String, namespaces: Bool = false, later: [NodeDef] = []) throws {
        folder = try ClusterFolder(prefix: "ce-test-", curve: !settings.contains("security: none"))
        defs = nodes + later
        self.settings = settings
        hosts = Hosts(nodes: defs.map(\.name), namespaces: namespaces)
        var keys: [String: CurveKeyPair] = [:]
        for node in defs { keys[node.name] = try folder.makeKey(node.name) }
        self.keys = keys
        var ports: [String: Ports] = [:]
        for node in defs {
            // Each host has its own ports in namespaces; on loopback each node needs its own.
            let (pub, rep) = hosts.mode == .namespaces ? (7000, 7001) : (try freePort(), try freePort())
            let metrics = node.metrics ? (hosts.mode == .namespaces ? 7002 : try freePort()) : nil
            ports[node.name] = Ports(pub: pub, rep: rep, metrics: metrics)
        }
        self.ports = ports
        let yaml = Self.text(nodes, pools: pools, settings: settings, folder: folder, hosts: hosts, keys: keys, ports: ports)
        try folder.write(topology: yaml)
        topology = try TopologyLoader.load(path: folder.topologyPath)
    }

    /// The topology file's text for `nodes`, each with its ports in `ports`.
    private static func text(_ nodes: [NodeDef], pools: String, settings: String, folder: ClusterFolder, hosts: Hosts,
                             keys: [String: CurveKeyPair], ports: [String: Ports]) -> String {
        func key(_ name: String) -> String { keys[name].map { "  public_key: \"\($0.publicKey)\"\n" } ?? "" }
        var yaml = "version: 1\ncluster: test\nsettings:\n  \(settings)\nnodes:\n"
        var coordinator = ""
        for node in nodes {
            let (pub, rep) = (ports[node.name]!.pub, ports[node.name]!.rep)
            let host = node.host ?? hosts.address(of: node.name)
            let metrics = ports[node.name]!.metrics.map { ", metrics: \($0)" } ?? ""
            if node.pool == "coordinator" {
                let entry = "name: \(node.name)\nhost: \(host)\nports: { pub: \(pub), rep: \(rep)\(metrics) }\ndata: \(folder.data(node.name))\n"
                    + (keys[node.name].map { "public_key: \"\($0.publicKey)\"\n" } ?? "")
                if coordinator.isEmpty {
                    coordinator = "coordinator:\n" + Self.indented(entry, by: 2)
                } else {
                    // A second coordinator is the first one's standby, a mapping inside its section.
                    coordinator += "  standby:\n" + Self.indented(entry, by: 4)
                }
                continue
            }
            yaml += "  - name: \(node.name)\n    pool: \(node.pool)\n    host: \(host)\n    ports: { pub: \(pub), rep: \(rep)\(metrics) }\n    data: \(folder.data(node.name))\n"
            yaml += key(node.name).replacingOccurrences(of: "  public_key", with: "    public_key")
            if node.workspace { yaml += "    workspace: \(folder.root)/ws-\(node.name)\n" }
        }
        yaml += coordinator
        yaml += pools
        // The custom types of the demo's topology, unless the caller names its own.
        if !pools.contains("custom_types:") { yaml += "\ncustom_types: [schema_v1, early_feedback]\n" }
        return yaml
    }

    /// The topology file's text for some of the cluster's nodes (in the order they were
    /// first given), with `pools` and the cluster's settings unless `settings` replaces them;
    /// `ports` overrides a node's ports.
    public func text(_ names: [String], pools: String, settings: String? = nil, ports changed: [String: Ports] = [:]) -> String {
        let nodes = defs.filter { names.contains($0.name) }
        return Self.text(nodes, pools: pools, settings: settings ?? self.settings, folder: folder, hosts: hosts, keys: keys,
                         ports: ports.merging(changed) { _, new in new })
    }

    /// Writes the topology file as running nodes would find it on a reload: whole or not at
    /// all (written beside it, then renamed over it). `topology` stays as it was.
    public func writeTopology(_ text: String) throws {
        try folder.write(topology: text)
    }

    /// Writes the topology file anew for some of the cluster's nodes and reads it back into
    /// `topology`. The keys are in the file itself, so there is no keys file to rewrite.
    public func rewrite(_ names: [String], pools: String, ports changed: [String: Ports] = [:]) throws {
        try writeTopology(text(names, pools: pools, ports: changed))
        topology = try TopologyLoader.load(path: topologyPath)
    }

    /// Indents every line of `text` (which ends in a newline) by `spaces`.
    private static func indented(_ text: String, by spaces: Int) -> String {
        text.split(separator: "\n").map { String(repeating: " ", count: spaces) + $0 + "\n" }.joined()
    }

    /// Makes a cluster on a thread of its own (see the initializer).
    public static func make(_ nodes: [NodeDef], pools: String, settings: String, namespaces: Bool = false, later: [NodeDef] = []) async throws -> Cluster {
        try await offThePool { try Cluster(nodes, pools: pools, settings: settings, namespaces: namespaces, later: later) }
    }

    /// Cuts a node's host off the switch, on a thread of its own (`ip` runs).
    public func cut(_ node: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.cut(node) }
    }

    /// Links a node's host to the switch again, on a thread of its own.
    public func heal(_ node: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.heal(node) }
    }

    /// Cuts the link between two nodes' hosts only, on a thread of its own (`ip` and `iptables` run).
    public func cutLink(_ a: String, _ b: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.cutLink(a, b) }
    }

    /// Mends the link between two nodes' hosts, on a thread of its own.
    public func healLink(_ a: String, _ b: String) async throws {
        let hosts = self.hosts
        try await offThePool { try hosts.healLink(a, b) }
    }

    /// Starts node `name` on its host, with `extra` arguments; its output is appended to its log.
    public func start(_ name: String, _ extra: [String] = []) throws {
        processes[name] = try startNode(topology: topologyPath, node: name, logLevel: "info", extra, log: folder.logPath(name), on: hosts)
    }

    /// A node's data folder; a node not in the topology (yet, or any more) has the one it would be given.
    public func data(_ name: String) -> String { topology.node(named: name)?.data ?? folder.data(name) }

    public func workspace(_ name: String) -> String { topology.node(named: name)!.workspace! }

    /// What node `name` has written to its log so far (empty before it started).
    public func log(_ name: String) -> String { (try? String(contentsOfFile: folder.logPath(name), encoding: .utf8)) ?? "" }

    /// Sends node `name` a signal (SIGKILL unless told) and waits, bounded, until it has exited.
    public func kill(_ name: String, signal: Int32 = SIGKILL) {
        guard let p = processes[name], p.isRunning else { return }
        Glibc.kill(p.processIdentifier, signal)
        awaitExit(p)
    }

    /// Stops every node (SIGTERM, then SIGKILL) and removes the folder.
    public func tearDown() async {
        for (_, p) in processes where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(10)
        for (_, p) in processes {
            while p.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL); awaitExit(p) }
        }
        let hosts = self.hosts
        _ = try? await offThePool { hosts.tearDown() }
        folder.remove()
    }
}

/// What the harness could not do, saying why.
public struct ClusterError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
