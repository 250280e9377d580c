import Foundation

/// A cluster: its nodes (with the pool each serves and its endpoints), what each pool
/// subscribes to, the quality gates and how conflicts are resolved. Loaded from a YAML file
/// by ``TopologyLoader``; docs/PROTOCOL.md lists every key.
public struct Topology: Sendable, Hashable {
    public var file: String
    public var cluster: String
    public var settings: TopologySettings
    /// Every node, the coordinator (pool "coordinator") included.
    public var nodes: [NodeSpec]
    public var pools: [String: PoolSpec]
    public var gates: [GateSpec]
    public var conflicts: ConflictSettings
    /// `custom_types`: event types beyond the catalog that this cluster's nodes may emit.
    public var customTypes: [EventType] = []
    /// A digest of the file's text and its keys file's (16 hex digits): nodes say it in their
    /// heartbeats, so two nodes running different topologies show. Empty when not loaded.
    public var digest = ""

    public func node(named name: String) -> NodeSpec? { nodes.first { $0.name == name } }
    public func nodes(inPool pool: String) -> [NodeSpec] { nodes.filter { $0.pool == pool } }
    /// Every node but the named one.
    public func peers(of name: String) -> [NodeSpec] { nodes.filter { $0.name != name } }
    public var poolNames: Set<String> { Set(nodes.map(\.pool)) }
    /// The coordinator the file names first (active in term 0).
    public var coordinator: NodeSpec? { nodes.first { $0.isCoordinator } }
    /// The coordinator section's `standby`, if any.
    public var standby: NodeSpec? { coordinators.dropFirst().first }
    /// The coordinator and its standby (empty without a coordinator section).
    public var coordinators: [NodeSpec] { nodes.filter(\.isCoordinator) }
    /// The nodes that vote on a takeover: every node outside the pool "coordinator".
    public var poolNodes: [NodeSpec] { nodes.filter { !$0.isCoordinator } }

    /// The event types a pool subscribes to, or nil for all of them.
    public func subscriptions(forPool pool: String) -> [EventType]? { pools[pool]?.subscribe }

    /// The event types a node admits without `allow_custom_type`: the catalog, `custom_types`,
    /// and every type the file names (subscribe lists, gates' required events).
    public var knownTypes: Set<EventType> {
        var types = Set(EventType.catalog.keys)
        types.formUnion(customTypes)
        for spec in pools.values { types.formUnion(spec.subscribe ?? []) }
        for gate in gates { types.formUnion(gate.requireEvents) }
        return types
    }

    /// Nodes the file gives no public key (neither `public_key:` nor `settings.keys_file`).
    public var nodesWithoutKeys: [String] { nodes.filter { $0.publicKey == nil }.map(\.name) }

    /// The node a CURVE public key (its key or its next one) belongs to.
    public func node(withPublicKey key: String) -> NodeSpec? { nodes.first { $0.publicKeys.contains(key) } }
}

/// Whether a cluster's TCP sockets authenticate and encrypt (`settings.security`).
public enum SecurityMode: String, Sendable, Hashable {
    /// CURVE on every TCP socket; only keys listed in the topology get in (the default).
    case curve
    /// Plain TCP: anyone who reaches a port takes part. Must be asked for explicitly.
    case none
}

/// Cluster-wide settings; every one has a default.
public struct TopologySettings: Sendable, Hashable {
    public var heartbeatMilliseconds = 1000
    public var askTimeoutMilliseconds = 5000
    public var askRetries = 2
    public var maxMessageBytes = 1 << 20
    /// `settings.security`: CURVE unless the file says `none`.
    public var security = SecurityMode.curve
    /// `settings.keys_file` resolved against the topology file's folder, if given.
    public var keysFile: String?
    /// False when `keys_file` names a file that does not exist (yet): nodes refuse to start
    /// with CURVE then, saying which command makes the keys.
    public var keysFileFound = true
    /// `settings.http_token_file` resolved against the topology file's folder, if given: the
    /// file holding the bearer token that HTTP requests which change state (`POST /resolve`)
    /// must carry. Nil: every HTTP port is read-only. The file is read (and checked) by the
    /// process that takes such requests, when it starts; this is only where it is.
    public var httpTokenFile: String?
    /// `settings.coordinator_failover_ms`: how long the active coordinator must be silent
    /// before its standby takes over (with a majority of pool nodes hearing it down); 0: never.
    public var coordinatorFailoverMilliseconds = 5000
    public init() {}
}

/// One node: a `ce-node` process on a host.
public struct NodeSpec: Sendable, Hashable {
    public var name: String
    public var pool: String
    public var host: String
    /// The interface to bind: `host` when it is an IP literal, else `*`, unless set.
    public var bind: String
    public var pubPort: Int
    public var repPort: Int
    public var replayPort: Int?
    /// The HTTP port of `/metrics`, `/status.json` and `/events` (and the dashboard on the
    /// coordinator); nil: no HTTP server.
    public var metricsPort: Int? = nil
    /// The node's data folder (event store, control endpoint): absolute, or relative to the
    /// topology file's folder (absolute once the file is loaded with ``TopologyLoader/load(path:)``).
    public var data: String
    /// The workspace whose `.ce-events/` file-only agents use, if any.
    public var workspace: String?
    public var isCoordinator: Bool
    /// The node's CURVE public key (40 Z85 characters), from `public_key:` or `settings.keys_file`.
    public var publicKey: String? = nil
    /// The key it rotates to (`next_public_key:`, or `<name>.next` in the keys file): peers
    /// admit both, and dial it with whichever its servers hold.
    public var nextPublicKey: String? = nil
    /// The keys the node may use: its key, then its next one.
    public var publicKeys: [String] { [publicKey, nextPublicKey].compactMap { $0 } }

    private var hostForURL: String { host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host }
    private var bindForURL: String { bind.contains(":") && !bind.hasPrefix("[") ? "[\(bind)]" : bind }

    public var pubEndpoint: String { "tcp://\(hostForURL):\(pubPort)" }
    public var repEndpoint: String { "tcp://\(hostForURL):\(repPort)" }
    public var replayEndpoint: String? { replayPort.map { "tcp://\(hostForURL):\($0)" } }
    public var bindPubEndpoint: String { "tcp://\(bindForURL):\(pubPort)" }
    public var bindRepEndpoint: String { "tcp://\(bindForURL):\(repPort)" }
    public var bindReplayEndpoint: String? { replayPort.map { "tcp://\(bindForURL):\($0)" } }
    /// `http://host:port` of the node's HTTP server, if it has one.
    public var metricsURL: String? { metricsPort.map { "http://\(hostForURL):\($0)" } }
    /// The address the HTTP server binds (`*` is every IPv4 interface).
    public var metricsBindHost: String {
        bind == "*" ? "0.0.0.0" : (bind.hasPrefix("[") ? String(bind.dropFirst().dropLast()) : bind)
    }
}

public struct PoolSpec: Sendable, Hashable {
    /// Event types the pool's nodes subscribe to; nil for all.
    public var subscribe: [EventType]?
}

/// A quality gate: the pools that must align before work moves on.
public struct GateSpec: Sendable, Hashable {
    public var name: String
    public var pools: [String]
    public var requireEvents: [EventType]
    public var deadlineSeconds: Double?
    public var everyNode: Bool
    public var subject: String?
}

public struct ConflictSettings: Sendable, Hashable {
    /// Who resolves conflicts, in escalation order; "human" is the CLI or the event folder.
    public var resolvers: [String] = []
    public var escalateAfterSeconds: Double = 300
}

/// Everything wrong with a topology file, one problem per line: `file: key.path: what`.
public struct TopologyError: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var problems: [Problem]

    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var message: String
        public var line: Int?
        public init(path: String, message: String, line: Int? = nil) {
            self.path = path
            self.message = message
            self.line = line
        }

        /// `key.path: what is wrong (line N)`.
        public var description: String { "\(path): \(message)\(line.map { " (line \($0))" } ?? "")" }
    }

    public var description: String {
        problems.map { "\(file): \($0)" }.joined(separator: "\n")
    }
}

/// FNV-1a, 64 bits: tells two texts apart (a topology drifting between nodes); not a
/// cryptographic hash, nothing is authenticated with it.
public struct Digest: Sendable {
    private var value: UInt64 = 0xcbf2_9ce4_8422_2325

    public init() {}

    public mutating func add(_ bytes: [UInt8]) {
        for byte in bytes {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
    }

    public var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
