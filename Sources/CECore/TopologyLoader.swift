import Foundation
import Yams

/// Reads and validates topology files.
///
/// Every key (docs/PROTOCOL.md, "Topology files", has the same list):
///
///     version: 1                     # required; this release reads 1
///     cluster: demo                  # optional name ([A-Za-z0-9_.-]); default "cluster"
///     settings:                      # optional; every key defaulted
///       heartbeat_ms: 1000           # heartbeat interval, 10-600000 (also ZMTP heartbeats)
///       ask_timeout_ms: 5000         # how long `ask` waits for a reply per attempt, 1-3600000
///       ask_retries: 2               # retries after a timeout, each on a fresh socket, 0-100
///       max_message_bytes: 1048576   # larger inbound messages drop the connection, 1024-2^30
///       security: curve              # curve (default): CURVE + an allow-list of the keys below; none: plain TCP
///       keys_file: keys.yaml         # optional; a mapping node name -> public key, relative to this file
///       http_token_file: http.token  # optional; relative to this file; without it HTTP ports are read-only,
///                                    # with it POST /resolve needs "Authorization: Bearer <the file's text>"
///                                    # (the file: mode 0600 or stricter, not empty; read when the coordinator starts)
///       coordinator_failover_ms: 5000  # default 5000 (or 3 x heartbeat_ms if longer); a standby takes over after the coordinator is silent this long
///                                    # (and most pool nodes hear it down); 0: never by itself; else >= 3 x heartbeat_ms
///     coordinator:                   # optional; a node of the reserved pool "coordinator"
///       name / host / bind / ports / data / workspace / public_key   (as for nodes; no pool key)
///       standby:                     # optional; a second coordinator that takes over (same keys, no standby)
///     nodes:                         # required, at least one
///       - name: planner-1            # required, unique; [A-Za-z0-9_.-], 1-64 bytes
///         pool: planner              # required; a name, not "coordinator"
///         host: 127.0.0.1            # required; how peers reach it: IPv4, IPv6 or a DNS name
///         bind: 0.0.0.0              # optional; "*" or an IP; default host if an IP literal, else *
///         ports: {pub: 7110, rep: 7111, replay: 7112, metrics: 7119}   # pub, rep required; replay, metrics optional; 1-65535
///         data: .ce-data/planner-1   # optional; default .ce-data/<name>, relative to this file's folder
///         workspace: ws/planner      # optional event folder root, relative to this file's folder
///         public_key: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"   # the node's CURVE public key (40 Z85 characters)
///     custom_types: [schema_v1, early_feedback]   # optional; event types beyond the catalog that nodes may emit
///     pools:                         # optional; keys are pools that have nodes
///       planner: {subscribe: [build_ready, review_complete]}   # event types, or "all" (the default)
///     gates:                         # optional
///       - name: architecture_approval                 # required, unique name
///         pools: [planner, builder]                   # required, at least one pool with nodes
///         require_events: [architecture_complete]     # optional event types
///         deadline_s: 600                             # optional, > 0
///         every_node: false                           # optional; true: every node reports, not one per pool
///         subject: architecture                       # optional; an open conflict on it holds the gate
///     conflicts:                     # optional
///       resolvers: [planner, human]  # escalation chain: pools with nodes, or "human" (the CLI / event folder)
///       escalate_after_s: 300        # optional, > 0; default 300
///
/// Validation collects every problem before failing; each names its key path and line.
public enum TopologyLoader {
    /// Reads and validates a topology file.
    public static func load(path: String) throws(TopologyError) -> Topology {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw TopologyError(
                file: path,
                problems: [.init(path: "(file)", message: exists ? "cannot read the file" : "file not found")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TopologyError(file: path, problems: [.init(path: "(file)", message: "the file is not UTF-8 text")])
        }
        // Paths in the file are relative to its folder, made absolute here, so every command
        // reads the same folders whatever its working directory.
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent().standardizedFileURL.path
        return try parse(yaml: text, file: path, folder: folder)
    }

    /// Validates a topology given as text; `file` names it in problems. Relative paths in it
    /// (`data`, `workspace`, `keys_file`, `http_token_file`) are taken relative to `folder`
    /// (default: the folder of `file`, as given).
    public static func parse(yaml: String, file: String = "topology.yaml") throws(TopologyError) -> Topology {
        try parse(yaml: yaml, file: file, folder: nil)
    }

    /// ``parse(yaml:file:)`` with relative paths taken from `folder`.
    public static func parse(yaml: String, file: String, folder: String?) throws(TopologyError) -> Topology {
        let root: Yams.Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw TopologyError(file: file, problems: [yamlProblem(error)])
        }
        guard let root else { throw TopologyError(file: file, problems: [.init(path: "(file)", message: "the file is empty")]) }
        var reader = Reader(file: file, folder: folder ?? (file as NSString).deletingLastPathComponent)
        var topology = reader.topology(root)
        reader.readKeysFile(into: &topology)
        if !reader.problems.isEmpty { throw TopologyError(file: file, problems: reader.problems) }
        var digest = Digest()
        digest.add(Array(yaml.utf8))
        if let keys = topology.settings.keysFile, let data = FileManager.default.contents(atPath: keys) { digest.add(Array(data)) }
        topology.digest = digest.hex
        return topology
    }

    static func yamlProblem(_ error: any Error) -> TopologyError.Problem {
        guard let error = error as? YamlError else {
            return .init(path: "(yaml)", message: "invalid YAML: \(error)")
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let around = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return .init(path: "(yaml)", message: "invalid YAML: \(problem)\(around)", line: mark.line)
        case .duplicatedKeysInMapping(let duplicates, let context):
            return .init(
                path: "(yaml)", message: "invalid YAML: duplicate key \(duplicates.sorted().map { "\"\($0)\"" }.joined(separator: ", "))",
                line: context.mark.line)
        default:
            return .init(path: "(yaml)", message: "invalid YAML: \(error)")
        }
    }

    /// Walks the YAML tree, building the topology and collecting problems.
    struct Reader {
        let file: String
        /// The folder relative paths in the file are taken from ("": the working directory).
        let folder: String
        init(file: String, folder: String) {
            self.file = file
            self.folder = folder
        }

        /// A path of the file: absolute as given, else relative to the file's folder.
        func resolve(_ path: String) -> String {
            path.hasPrefix("/") || folder.isEmpty ? path : (folder.hasSuffix("/") ? folder : folder + "/") + path
        }
        var problems: [TopologyError.Problem] = []
        /// For each node read: its key path and its YAML mapping (for the lines of cross-node problems).
        var nodeSources: [(path: String, keys: [String: Yams.Node])] = []
        /// Every well-formed pool name given to a node, even one with other problems (so a
        /// typo in a port does not also make its pool "unknown" in gates).
        var declaredPools: Set<String> = []
        /// The line of each mapping read, by key path: where a missing key belongs.
        var mappingLines: [String: Int] = [:]

        mutating func problem(_ path: String, _ node: Yams.Node?, _ message: String) {
            var line = node?.mark?.line
            if line == nil, let dot = path.lastIndex(of: ".") { line = mappingLines[String(path[..<dot])] }
            if line == nil, path.hasSuffix("]"), let bracket = path.lastIndex(of: "[") { line = mappingLines[String(path[..<bracket])] }
            problems.append(.init(path: path, message: message, line: line))
        }

        static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

        static func describe(_ node: Yams.Node) -> String {
            switch node {
            case .scalar: "a value"
            case .mapping: "a mapping"
            case .sequence: "a list"
            case .alias: "an alias"
            }
        }

        mutating func mapping(_ node: Yams.Node, _ path: String, allowed: [String], what: String = "key") -> [String: Yams.Node]? {
            guard case .mapping(let m) = node else {
                problem(path.isEmpty ? "(top level)" : path, node, "wrong type: expected a mapping (key: value), got \(Self.describe(node))")
                return nil
            }
            if !path.isEmpty { mappingLines[path] = node.mark?.line }
            var result: [String: Yams.Node] = [:]
            for (k, v) in m {
                guard case .scalar(let scalar) = k else {
                    problem(path, k, "keys must be plain text")
                    continue
                }
                let key = scalar.string
                if !allowed.contains(key) {
                    let choices = allowed.isEmpty ? "none" : allowed.joined(separator: ", ")
                    problem(Self.join(path, key), k, "unknown \(what) \"\(key)\" (allowed: \(choices))")
                    continue
                }
                result[key] = v
            }
            return result
        }

        mutating func string(_ m: [String: Yams.Node], _ key: String, _ path: String, required: Bool = false) -> String? {
            let p = Self.join(path, key)
            guard let node = m[key] else {
                if required { problem(p, nil, "missing required key") }
                return nil
            }
            guard case .scalar(let s) = node else {
                problem(p, node, "wrong type: expected text, got \(Self.describe(node))")
                return nil
            }
            return s.string
        }

        mutating func name(_ m: [String: Yams.Node], _ key: String, _ path: String, required: Bool = false) -> String? {
            guard let s = string(m, key, path, required: required) else { return nil }
            do { try Name.validate(s) } catch {
                problem(Self.join(path, key), m[key], "\(error)")
                return nil
            }
            return s
        }

        mutating func int(_ m: [String: Yams.Node], _ key: String, _ path: String, range: ClosedRange<Int>, required: Bool = false) -> Int? {
            let p = Self.join(path, key)
            guard let node = m[key] else {
                if required { problem(p, nil, "missing required key") }
                return nil
            }
            guard case .scalar(let s) = node, let value = Int(s.string) else {
                problem(p, node, "wrong type: expected an integer, got \(node.scalar.map { "\"\($0.string)\"" } ?? Self.describe(node))")
                return nil
            }
            guard range.contains(value) else {
                problem(p, node, "\(value) is outside \(range.lowerBound)-\(range.upperBound)")
                return nil
            }
            return value
        }

        mutating func seconds(_ m: [String: Yams.Node], _ key: String, _ path: String) -> Double? {
            guard let node = m[key] else { return nil }
            guard case .scalar(let s) = node, let value = Double(s.string), value.isFinite, value > 0 else {
                problem(Self.join(path, key), node, "expected a positive number of seconds, got \(node.scalar.map { "\"\($0.string)\"" } ?? Self.describe(node))")
                return nil
            }
            return value
        }

        mutating func bool(_ m: [String: Yams.Node], _ key: String, _ path: String) -> Bool? {
            guard let node = m[key] else { return nil }
            guard case .scalar(let s) = node, let value = Bool(s.string.lowercased()) else {
                problem(Self.join(path, key), node, "expected true or false, got \(node.scalar.map { "\"\($0.string)\"" } ?? Self.describe(node))")
                return nil
            }
            return value
        }

        /// A list of text values (a lone value is not a list).
        mutating func list(_ node: Yams.Node?, _ path: String) -> [(String, Yams.Node)] {
            guard let node else { return [] }
            guard case .sequence(let seq) = node else {
                problem(path, node, "wrong type: expected a list, got \(Self.describe(node))")
                return []
            }
            var out: [(String, Yams.Node)] = []
            for (i, item) in seq.enumerated() {
                guard case .scalar(let s) = item else {
                    problem("\(path)[\(i)]", item, "wrong type: expected text, got \(Self.describe(item))")
                    continue
                }
                out.append((s.string, item))
            }
            return out
        }

        mutating func eventTypes(_ node: Yams.Node?, _ path: String) -> [EventType] {
            list(node, path).enumerated().compactMap { (i, entry) in
                do { return try EventType(validating: entry.0) } catch {
                    problem("\(path)[\(i)]", entry.1, "\(error)")
                    return nil
                }
            }
        }

        mutating func topology(_ root: Yams.Node) -> Topology {
            var topology = Topology(
                file: file, cluster: "cluster", settings: TopologySettings(), nodes: [], pools: [:], gates: [],
                conflicts: ConflictSettings())
            let topKeys = ["version", "cluster", "settings", "coordinator", "nodes", "pools", "gates", "conflicts", "custom_types"]
            guard let top = mapping(root, "", allowed: topKeys) else { return topology }
            if let version = int(top, "version", "", range: 0...Int.max, required: true), version != 1 {
                problem("version", top["version"], "unsupported version \(version) (this release reads version 1)")
            }
            if let cluster = name(top, "cluster", "") { topology.cluster = cluster }
            if let types = top["custom_types"] {
                topology.customTypes = eventTypes(types, "custom_types")
                for (i, type) in topology.customTypes.enumerated() where type.isStandard {
                    problem("custom_types[\(i)]", nil, "\(type) is a standard type; list only types outside the catalog")
                }
            }
            if let s = top["settings"] {
                readSettings(s, into: &topology.settings)
            }
            if let c = top["coordinator"], let spec = nodeSpec(c, "coordinator", coordinator: true) {
                topology.nodes.append(spec)
                if let s = c.mapping?[Yams.Node("standby")], let standby = nodeSpec(s, "coordinator.standby", coordinator: true, standby: true) {
                    topology.nodes.append(standby)
                }
            }
            if let n = top["nodes"] {
                if case .sequence(let seq) = n {
                    for (i, item) in seq.enumerated() {
                        if let spec = nodeSpec(item, "nodes[\(i)]", coordinator: false) { topology.nodes.append(spec) }
                    }
                    if seq.isEmpty { problem("nodes", n, "no nodes: at least one is needed") }
                } else {
                    problem("nodes", n, "wrong type: expected a list of nodes, got \(Self.describe(n))")
                }
            } else {
                problem("nodes", nil, "missing required key")
            }
            checkNodes()
            let pools = declaredPools
            let poolList = pools.sorted().joined(separator: ", ")
            if let p = top["pools"], let m = mapping(p, "pools", allowed: pools.sorted(), what: "pool") {
                for (pool, node) in m {
                    let path = "pools.\(pool)"
                    guard let spec = mapping(node, path, allowed: ["subscribe"]) else { continue }
                    if let sub = spec["subscribe"], case .scalar(let s) = sub {
                        if s.string != "all" {
                            problem("\(path).subscribe", sub, "expected a list of event types or \"all\", got \"\(s.string)\"")
                        }
                        topology.pools[pool] = PoolSpec(subscribe: nil)
                    } else if let sub = spec["subscribe"] {
                        topology.pools[pool] = PoolSpec(subscribe: eventTypes(sub, "\(path).subscribe"))
                    } else {
                        topology.pools[pool] = PoolSpec(subscribe: nil)
                    }
                }
            }
            if let g = top["gates"] {
                if case .sequence(let seq) = g {
                    var seen: [String: Int] = [:]
                    for (i, item) in seq.enumerated() {
                        let path = "gates[\(i)]"
                        let keys = ["name", "pools", "require_events", "deadline_s", "every_node", "subject"]
                        guard let m = mapping(item, path, allowed: keys) else { continue }
                        let name = name(m, "name", path, required: true)
                        if let name {
                            if let first = seen[name] {
                                problem("\(path).name", m["name"], "duplicate gate \"\(name)\" (first at gates[\(first)])")
                            } else {
                                seen[name] = i
                            }
                        }
                        let gatePools = list(m["pools"], "\(path).pools")
                        if m["pools"] == nil {
                            problem("\(path).pools", nil, "missing required key")
                        } else if gatePools.isEmpty, case .sequence = m["pools"]! {
                            problem("\(path).pools", m["pools"], "a gate needs at least one pool")
                        }
                        for (j, (pool, node)) in gatePools.enumerated() where !pools.contains(pool) {
                            problem("\(path).pools[\(j)]", node, "unknown pool \"\(pool)\" (pools: \(poolList))")
                        }
                        let requireEvents = eventTypes(m["require_events"], "\(path).require_events")
                        let deadline = seconds(m, "deadline_s", path)
                        let everyNode = bool(m, "every_node", path) ?? false
                        let subject = string(m, "subject", path)
                        guard let name else { continue }
                        topology.gates.append(
                            GateSpec(
                                name: name, pools: gatePools.map(\.0), requireEvents: requireEvents, deadlineSeconds: deadline,
                                everyNode: everyNode, subject: subject))
                    }
                } else {
                    problem("gates", g, "wrong type: expected a list of gates, got \(Self.describe(g))")
                }
            }
            if let c = top["conflicts"], let m = mapping(c, "conflicts", allowed: ["resolvers", "escalate_after_s"]) {
                let resolvers = list(m["resolvers"], "conflicts.resolvers")
                for (j, (pool, node)) in resolvers.enumerated() where pool != "human" && !pools.contains(pool) {
                    problem("conflicts.resolvers[\(j)]", node, "unknown pool \"\(pool)\" (pools: \(poolList), or human)")
                }
                topology.conflicts.resolvers = resolvers.map(\.0)
                if let after = seconds(m, "escalate_after_s", "conflicts") { topology.conflicts.escalateAfterSeconds = after }
            }
            return topology
        }

        mutating func readSettings(_ node: Yams.Node, into settings: inout TopologySettings) {
            let keys = [
                "heartbeat_ms", "ask_timeout_ms", "ask_retries", "max_message_bytes", "security", "keys_file", "http_token_file",
                "coordinator_failover_ms",
            ]
            guard let m = mapping(node, "settings", allowed: keys) else { return }
            if let v = string(m, "security", "settings") {
                if let mode = SecurityMode(rawValue: v) {
                    settings.security = mode
                } else {
                    problem("settings.security", m["security"], "expected curve or none, got \"\(v)\"")
                }
            }
            if let v = string(m, "keys_file", "settings") {
                if v.isEmpty {
                    problem("settings.keys_file", m["keys_file"], "empty path")
                } else {
                    settings.keysFile = resolve(v)
                }
            }
            if let v = string(m, "http_token_file", "settings") {
                if v.isEmpty {
                    problem("settings.http_token_file", m["http_token_file"], "empty path")
                } else {
                    settings.httpTokenFile = resolve(v)
                }
            }
            if let v = int(m, "heartbeat_ms", "settings", range: 10...600_000) { settings.heartbeatMilliseconds = v }
            if let v = int(m, "ask_timeout_ms", "settings", range: 1...3_600_000) { settings.askTimeoutMilliseconds = v }
            if let v = int(m, "ask_retries", "settings", range: 0...100) { settings.askRetries = v }
            if let v = int(m, "max_message_bytes", "settings", range: 1024...(1 << 30)) { settings.maxMessageBytes = v }
            if let v = int(m, "coordinator_failover_ms", "settings", range: 0...3_600_000) {
                if v != 0 && v < 3 * settings.heartbeatMilliseconds {
                    problem(
                        "settings.coordinator_failover_ms", m["coordinator_failover_ms"],
                        "\(v) ms is shorter than three heartbeats (3 x heartbeat_ms = \(3 * settings.heartbeatMilliseconds) ms): a standby would take over from a coordinator that is only slow; use 0 to turn failover off")
                } else {
                    settings.coordinatorFailoverMilliseconds = v
                }
            } else {
                settings.coordinatorFailoverMilliseconds = max(5000, 3 * settings.heartbeatMilliseconds)
            }
        }

        mutating func nodeSpec(_ node: Yams.Node, _ path: String, coordinator: Bool, standby: Bool = false) -> NodeSpec? {
            var allowed = ["name", "host", "bind", "ports", "data", "workspace", "public_key", "next_public_key"]
            if !coordinator { allowed.insert("pool", at: 1) }
            if coordinator && !standby { allowed.append("standby") }
            guard let m = mapping(node, path, allowed: allowed) else { return nil }
            let name = name(m, "name", path, required: true)
            var pool: String? = "coordinator"
            if coordinator {
                declaredPools.insert("coordinator")
            } else {
                pool = self.name(m, "pool", path, required: true)
                if let pool { declaredPools.insert(pool) }
                if pool == "coordinator" {
                    problem("\(path).pool", m["pool"], "the pool name \"coordinator\" is reserved for the coordinator section")
                }
            }
            let host = string(m, "host", path, required: true)
            if let host, !Self.isValidHost(host) {
                problem("\(path).host", m["host"], "bad address \"\(host)\": expected an IPv4 address, an IPv6 address or a host name")
            }
            let bind = string(m, "bind", path)
            if let bind, bind != "*", !Self.isIPLiteral(bind) {
                problem("\(path).bind", m["bind"], "bad address \"\(bind)\": expected * or an IP address")
            }
            var pub: Int?, rep: Int?, replay: Int?, metrics: Int?
            if let p = m["ports"] {
                if let ports = mapping(p, "\(path).ports", allowed: ["pub", "rep", "replay", "metrics"]) {
                    pub = int(ports, "pub", "\(path).ports", range: 1...65535, required: true)
                    rep = int(ports, "rep", "\(path).ports", range: 1...65535, required: true)
                    replay = int(ports, "replay", "\(path).ports", range: 1...65535)
                    metrics = int(ports, "metrics", "\(path).ports", range: 1...65535)
                }
            } else {
                problem("\(path).ports", nil, "missing required key")
            }
            let data = string(m, "data", path)
            let workspace = string(m, "workspace", path)
            var publicKey = string(m, "public_key", path)
            if let key = publicKey, let why = CurveKeyText.problem(key) {
                problem("\(path).public_key", m["public_key"], "node \"\(name ?? "?")\": \(why)")
                publicKey = nil
            }
            var nextKey = string(m, "next_public_key", path)
            if let key = nextKey, let why = CurveKeyText.problem(key) {
                problem("\(path).next_public_key", m["next_public_key"], "node \"\(name ?? "?")\": \(why)")
                nextKey = nil
            }
            if let key = nextKey, key == publicKey {
                problem("\(path).next_public_key", m["next_public_key"], "node \"\(name ?? "?")\": the next key is its current key")
            }
            guard let name, let pool, let host, let pub, let rep else { return nil }
            nodeSources.append((path, m))
            var spec = NodeSpec(
                name: name, pool: pool, host: host, bind: bind ?? (Self.isIPLiteral(host) ? host : "*"),
                pubPort: pub, repPort: rep, replayPort: replay, data: resolve(data ?? ".ce-data/\(name)"),
                workspace: workspace.map(resolve), isCoordinator: coordinator, publicKey: publicKey)
            spec.metricsPort = metrics
            spec.nextPublicKey = nextKey
            return spec
        }

        /// Problems across nodes: duplicate names, a port used twice on a host, a data folder
        /// shared on a host. Only nodes that read cleanly are compared.
        mutating func checkNodes() {
            guard nodeSources.count > 1 else { return }
            var specs: [(name: String, host: String, ports: [(String, Int)], data: String)] = []
            for (path, m) in nodeSources {
                _ = path
                let ports = m["ports"].flatMap { node -> [String: Yams.Node]? in
                    if case .mapping(let mm) = node { return Dictionary(mm.compactMap { k, v in k.scalar.map { ($0.string, v) } }, uniquingKeysWith: { a, _ in a }) }
                    return nil
                } ?? [:]
                var used: [(String, Int)] = []
                for role in ["pub", "rep", "replay", "metrics"] {
                    if let s = ports[role]?.scalar, let port = Int(s.string) { used.append((role, port)) }
                }
                let name = m["name"]?.scalar?.string ?? ""
                specs.append((name, m["host"]?.scalar?.string ?? "", used, m["data"]?.scalar?.string ?? ".ce-data/\(name)"))
            }
            var names: [String: Int] = [:]
            var ports: [String: (Int, String)] = [:]
            var folders: [String: Int] = [:]
            for (i, spec) in specs.enumerated() {
                let (path, m) = nodeSources[i]
                if let first = names[spec.name] {
                    problem("\(path).name", m["name"], "duplicate node \"\(spec.name)\" (first at \(nodeSources[first].path))")
                } else {
                    names[spec.name] = i
                }
                for (role, port) in spec.ports {
                    let key = "\(spec.host) \(port)"
                    if let (other, otherRole) = ports[key] {
                        let portsNode = m["ports"]?.mapping?[Yams.Node(role)]
                        problem(
                            "\(path).ports.\(role)", portsNode,
                            "port \(port) on \(spec.host) is already used by \(nodeSources[other].path).ports.\(otherRole)")
                    } else {
                        ports[key] = (i, role)
                    }
                }
                let folderKey = "\(spec.host) \(spec.data)"
                if let first = folders[folderKey], names[spec.name] == i {
                    problem(
                        "\(path).data", m["data"] ?? m["name"],
                        "data folder \"\(spec.data)\" on \(spec.host) is already used by \(nodeSources[first].path)")
                } else if folders[folderKey] == nil {
                    folders[folderKey] = i
                }
            }
        }

        /// Reads `settings.keys_file` (a YAML mapping: node name -> public key) into the nodes,
        /// then checks that no two nodes share a key (a key must name one sender).
        mutating func readKeysFile(into topology: inout Topology) {
            if let path = topology.settings.keysFile {
                readKeys(path, into: &topology)
            }
            var owners: [String: String] = [:]
            for node in topology.nodes {
                for key in node.publicKeys {
                    if let other = owners[key], other != node.name {
                        problems.append(.init(path: keyPath(of: node.name), message: "node \"\(node.name)\" has the same public key as \"\(other)\" (each node needs its own key pair)"))
                    } else {
                        owners[key] = node.name
                    }
                }
            }
        }

        func keyPath(of node: String) -> String {
            (nodeSources.first { $0.keys["name"]?.scalar?.string == node }?.path ?? node) + ".public_key"
        }

        mutating func readKeys(_ path: String, into topology: inout Topology) {
            let shown = (path as NSString).lastPathComponent
            guard let data = FileManager.default.contents(atPath: path) else {
                if FileManager.default.fileExists(atPath: path) {
                    problems.append(.init(path: "settings.keys_file", message: "cannot read \(path)"))
                } else {
                    topology.settings.keysFileFound = false
                }
                return
            }
            func fail(_ message: String, _ node: Yams.Node?) {
                let line = node?.mark.map { " line \($0.line)" } ?? ""
                problems.append(.init(path: "settings.keys_file", message: "\(shown)\(line): \(message)"))
            }
            let root: Yams.Node?
            do { root = try Yams.compose(yaml: String(decoding: data, as: UTF8.self)) } catch {
                fail(TopologyLoader.yamlProblem(error).message, nil)
                return
            }
            guard let root else { return }  // an empty file: no keys yet
            guard case .mapping(let entries) = root else {
                fail("expected a mapping of node names to public keys, got \(Self.describe(root))", root)
                return
            }
            let names = topology.nodes.map(\.name)
            let given = Dictionary(topology.nodes.map { ($0.name, $0.publicKey) }, uniquingKeysWith: { a, _ in a })
            var found: [String: String] = [:]
            var next: [String: String] = [:]
            for (k, v) in entries {
                guard var name = k.scalar?.string else {
                    fail("keys must be node names", k)
                    continue
                }
                // `<node>.next`: the key the node rotates to.
                let isNext = !names.contains(name) && name.hasSuffix(".next")
                if isNext { name = String(name.dropLast(5)) }
                guard names.contains(name) else {
                    fail("unknown node \"\(name)\" (nodes: \(names.joined(separator: ", ")); \"<node>.next\" names a node's next key)", k)
                    continue
                }
                if isNext {
                    guard let key = v.scalar?.string, CurveKeyText.problem(key) == nil else {
                        fail("node \"\(name)\": next public key: expected 40 Z85 characters", v)
                        continue
                    }
                    next[name] = key
                    continue
                }
                guard let key = v.scalar?.string else {
                    fail("node \"\(name)\": public key: expected text, got \(Self.describe(v))", v)
                    continue
                }
                if let why = CurveKeyText.problem(key) {
                    fail("node \"\(name)\": public key: \(why)", v)
                    continue
                }
                if let listed = given[name] ?? nil, listed != key {
                    fail("node \"\(name)\": public key differs from its public_key in the topology", v)
                    continue
                }
                found[name] = key
            }
            // Set after reading, all at once: the nodes are not changed while the file is read.
            topology.nodes = topology.nodes.map { node in
                var node = node
                if let key = found[node.name] { node.publicKey = key }
                if let key = next[node.name] {
                    if key == node.publicKey {
                        fail("node \"\(node.name)\": its next key is its current key", nil)
                    } else {
                        node.nextPublicKey = key
                    }
                }
                return node
            }
        }

        static func isIPLiteral(_ s: String) -> Bool {
            var v4 = in_addr()
            var v6 = in6_addr()
            let bare = s.hasPrefix("[") && s.hasSuffix("]") ? String(s.dropFirst().dropLast()) : s
            return inet_pton(AF_INET, bare, &v4) == 1 || inet_pton(AF_INET6, bare, &v6) == 1
        }

        static func isValidHost(_ s: String) -> Bool {
            if isIPLiteral(s) { return true }
            // Something that looks like a dotted quad but is not one is a typo, not a name.
            if s.allSatisfy({ $0.isNumber || $0 == "." }) { return false }
            let labels = s.split(separator: ".", omittingEmptySubsequences: false)
            guard !s.isEmpty, s.utf8.count <= 253 else { return false }
            return labels.allSatisfy { label in
                !label.isEmpty && label.utf8.count <= 63 && !label.hasPrefix("-") && !label.hasSuffix("-")
                    && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }
            }
        }
    }
}
