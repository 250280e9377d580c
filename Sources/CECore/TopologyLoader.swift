import Foundation
import Yams

/// Reads and validates topology files.
///
///     version: 1                     # required, 1
///     cluster: demo                  # optional name
///     settings:                      # optional
///       heartbeat_ms: 1000           # heartbeat interval (also ZMTP heartbeats)
///       ask_timeout_ms: 5000         # how long `ask` waits for a reply per attempt
///       ask_retries: 2               # retries after a timeout, each on a fresh socket
///       max_message_bytes: 1048576   # larger inbound messages drop the connection
///     coordinator:                   # optional; a node of the reserved pool "coordinator"
///       name / host / bind / ports / data / workspace   (as for nodes, no pool)
///     nodes:                         # required, at least one
///       - name: planner-1            # unique; [A-Za-z0-9_.-], 1-64 bytes
///         pool: planner              # the pool the node serves
///         host: 127.0.0.1            # how peers reach it: IPv4, IPv6 or a DNS name
///         bind: 0.0.0.0              # optional; default host if an IP literal, else *
///         ports: {pub: 7110, rep: 7111, replay: 7112}   # replay optional
///         data: .ce-data/planner-1   # optional; default .ce-data/<name>
///         workspace: ws/planner      # optional event folder root
///     pools:                         # optional
///       planner: {subscribe: [build_ready, review_complete]}   # or "all" (the default)
///     gates:                         # optional
///       - name: architecture_approval
///         pools: [planner, builder]
///         require_events: [architecture_complete]   # optional
///         deadline_s: 600                           # optional
///         every_node: false                         # optional
///         subject: architecture                     # optional
///     conflicts:                     # optional
///       resolvers: [planner, human]
///       escalate_after_s: 300
public enum TopologyLoader {
    public static func load(path: String) throws(TopologyError) -> Topology {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TopologyError(file: path, problems: [.init(path: "(file)", message: "cannot read the file (does it exist?)")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TopologyError(file: path, problems: [.init(path: "(file)", message: "the file is not UTF-8 text")])
        }
        return try parse(yaml: text, file: path)
    }

    public static func parse(yaml: String, file: String = "topology.yaml") throws(TopologyError) -> Topology {
        var reader = Reader(file: file)
        let root: Yams.Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch {
            throw TopologyError(file: file, problems: [.init(path: "(yaml)", message: "invalid YAML: \(error)")])
        }
        guard let root else { throw TopologyError(file: file, problems: [.init(path: "(file)", message: "the file is empty")]) }
        let topology = reader.topology(root)
        if !reader.problems.isEmpty { throw TopologyError(file: file, problems: reader.problems) }
        return topology
    }

    struct Reader {
        let file: String
        var problems: [TopologyError.Problem] = []

        mutating func problem(_ path: String, _ node: Yams.Node?, _ message: String) {
            problems.append(.init(path: path, message: message, line: node?.mark.map { $0.line }))
        }

        mutating func mapping(_ node: Yams.Node, _ path: String, allowed: [String]) -> [String: Yams.Node]? {
            guard case .mapping(let m) = node else {
                problem(path, node, "must be a mapping (key: value)")
                return nil
            }
            var result: [String: Yams.Node] = [:]
            for (k, v) in m {
                guard let key = k.string else {
                    problem(path, k, "keys must be strings")
                    continue
                }
                if !allowed.contains(key) {
                    problem(path.isEmpty ? key : "\(path).\(key)", k, "unknown key \"\(key)\" (allowed: \(allowed.joined(separator: ", ")))")
                }
                result[key] = v
            }
            return result
        }

        mutating func string(_ m: [String: Yams.Node], _ key: String, _ path: String, required: Bool = false) -> String? {
            let p = path.isEmpty ? key : "\(path).\(key)"
            guard let node = m[key] else {
                if required { problem(p, nil, "missing required key") }
                return nil
            }
            guard case .scalar(let s) = node else {
                problem(p, node, "must be a text value")
                return nil
            }
            return s.string
        }

        mutating func int(_ m: [String: Yams.Node], _ key: String, _ path: String, range: ClosedRange<Int>, required: Bool = false) -> Int? {
            let p = path.isEmpty ? key : "\(path).\(key)"
            guard let node = m[key] else {
                if required { problem(p, nil, "missing required key") }
                return nil
            }
            guard case .scalar(let s) = node, let value = Int(s.string) else {
                problem(p, node, "must be an integer")
                return nil
            }
            guard range.contains(value) else {
                problem(p, node, "\(value) is outside \(range.lowerBound)-\(range.upperBound)")
                return nil
            }
            return value
        }

        mutating func double(_ m: [String: Yams.Node], _ key: String, _ path: String) -> Double? {
            guard let node = m[key] else { return nil }
            guard case .scalar(let s) = node, let value = Double(s.string), value > 0 else {
                problem("\(path).\(key)", node, "must be a positive number")
                return nil
            }
            return value
        }

        mutating func bool(_ m: [String: Yams.Node], _ key: String, _ path: String) -> Bool? {
            guard let node = m[key] else { return nil }
            guard case .scalar(let s) = node, let value = Bool(s.string.lowercased()) else {
                problem("\(path).\(key)", node, "must be true or false")
                return nil
            }
            return value
        }

        mutating func list(_ node: Yams.Node?, _ path: String) -> [(String, Yams.Node)] {
            guard let node else { return [] }
            guard case .sequence(let seq) = node else {
                problem(path, node, "must be a list")
                return []
            }
            var out: [(String, Yams.Node)] = []
            for (i, item) in seq.enumerated() {
                guard case .scalar(let s) = item else {
                    problem("\(path)[\(i)]", item, "must be a text value")
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
            guard let top = mapping(root, "", allowed: ["version", "cluster", "settings", "coordinator", "nodes", "pools", "gates", "conflicts"]) else {
                return topology
            }
            if let version = int(top, "version", "", range: 0...Int.max, required: true), version != 1 {
                problem("version", top["version"], "unsupported version \(version) (this release reads version 1)")
            }
            if let cluster = string(top, "cluster", "") { topology.cluster = cluster }
            if let s = top["settings"], let m = mapping(s, "settings", allowed: ["heartbeat_ms", "ask_timeout_ms", "ask_retries", "max_message_bytes"]) {
                if let v = int(m, "heartbeat_ms", "settings", range: 10...600_000) { topology.settings.heartbeatMilliseconds = v }
                if let v = int(m, "ask_timeout_ms", "settings", range: 1...3_600_000) { topology.settings.askTimeoutMilliseconds = v }
                if let v = int(m, "ask_retries", "settings", range: 0...100) { topology.settings.askRetries = v }
                if let v = int(m, "max_message_bytes", "settings", range: 1024...(1 << 30)) { topology.settings.maxMessageBytes = v }
            }
            if let c = top["coordinator"], let spec = nodeSpec(c, "coordinator", coordinator: true) {
                topology.nodes.append(spec)
            }
            if let n = top["nodes"] {
                if case .sequence(let seq) = n {
                    for (i, item) in seq.enumerated() {
                        if let spec = nodeSpec(item, "nodes[\(i)]", coordinator: false) { topology.nodes.append(spec) }
                    }
                    if seq.isEmpty { problem("nodes", n, "at least one node is needed") }
                } else {
                    problem("nodes", n, "must be a list of nodes")
                }
            } else {
                problem("nodes", nil, "missing required key")
            }
            checkNodes(topology.nodes, top)
            let pools = Set(topology.nodes.map(\.pool))
            if let p = top["pools"], let m = mapping(p, "pools", allowed: Array(pools).sorted()) {
                for (pool, node) in m {
                    let path = "pools.\(pool)"
                    guard let spec = mapping(node, path, allowed: ["subscribe"]) else { continue }
                    if let sub = spec["subscribe"], case .scalar(let s) = sub, s.string == "all" {
                        topology.pools[pool] = PoolSpec(subscribe: nil)
                    } else {
                        topology.pools[pool] = PoolSpec(subscribe: eventTypes(spec["subscribe"], "\(path).subscribe"))
                    }
                }
            }
            if let g = top["gates"] {
                if case .sequence(let seq) = g {
                    var seen: [String: Int] = [:]
                    for (i, item) in seq.enumerated() {
                        let path = "gates[\(i)]"
                        guard let m = mapping(item, path, allowed: ["name", "pools", "require_events", "deadline_s", "every_node", "subject"]) else { continue }
                        guard let name = string(m, "name", path, required: true) else { continue }
                        if let first = seen[name] { problem("\(path).name", m["name"], "duplicate gate \"\(name)\" (first at gates[\(first)])") }
                        seen[name] = seen[name] ?? i
                        let gatePools = list(m["pools"], "\(path).pools")
                        if gatePools.isEmpty { problem("\(path).pools", m["pools"], "a gate needs at least one pool") }
                        for (j, (pool, node)) in gatePools.enumerated() where !pools.contains(pool) {
                            problem("\(path).pools[\(j)]", node, "unknown pool \"\(pool)\" (pools: \(pools.sorted().joined(separator: ", ")))")
                        }
                        topology.gates.append(GateSpec(
                            name: name, pools: gatePools.map(\.0), requireEvents: eventTypes(m["require_events"], "\(path).require_events"),
                            deadlineSeconds: double(m, "deadline_s", path), everyNode: bool(m, "every_node", path) ?? false,
                            subject: string(m, "subject", path)))
                    }
                } else {
                    problem("gates", g, "must be a list of gates")
                }
            }
            if let c = top["conflicts"], let m = mapping(c, "conflicts", allowed: ["resolvers", "escalate_after_s"]) {
                let resolvers = list(m["resolvers"], "conflicts.resolvers")
                for (j, (pool, node)) in resolvers.enumerated() where pool != "human" && !pools.contains(pool) {
                    problem("conflicts.resolvers[\(j)]", node, "unknown pool \"\(pool)\" (pools: \(pools.sorted().joined(separator: ", ")), or human)")
                }
                topology.conflicts.resolvers = resolvers.map(\.0)
                if let after = double(m, "escalate_after_s", "conflicts") { topology.conflicts.escalateAfterSeconds = after }
            }
            return topology
        }

        mutating func nodeSpec(_ node: Yams.Node, _ path: String, coordinator: Bool) -> NodeSpec? {
            var allowed = ["name", "host", "bind", "ports", "data", "workspace"]
            if !coordinator { allowed.append("pool") }
            guard let m = mapping(node, path, allowed: allowed) else { return nil }
            let name = string(m, "name", path, required: true)
            if let name, !Name.isValid(name) { problem("\(path).name", m["name"], "\"\(name)\" is not a valid name ([A-Za-z0-9_.-], 1-64 bytes)") }
            var pool = "coordinator"
            if !coordinator {
                pool = string(m, "pool", path, required: true) ?? ""
                if !pool.isEmpty && !Name.isValid(pool) { problem("\(path).pool", m["pool"], "\"\(pool)\" is not a valid pool name") }
                if pool == "coordinator" { problem("\(path).pool", m["pool"], "the pool name \"coordinator\" is reserved for the coordinator section") }
            }
            let host = string(m, "host", path, required: true)
            if let host, !Self.isValidHost(host) { problem("\(path).host", m["host"], "\"\(host)\" is not an IPv4 address, IPv6 address or host name") }
            let bind = string(m, "bind", path)
            if let bind, bind != "*", !Self.isIPLiteral(bind) { problem("\(path).bind", m["bind"], "\"\(bind)\" must be * or an IP address") }
            var pub: Int?, rep: Int?, replay: Int?
            if let p = m["ports"], let ports = mapping(p, "\(path).ports", allowed: ["pub", "rep", "replay"]) {
                pub = int(ports, "pub", "\(path).ports", range: 1...65535, required: true)
                rep = int(ports, "rep", "\(path).ports", range: 1...65535, required: true)
                replay = int(ports, "replay", "\(path).ports", range: 1...65535)
            } else if m["ports"] == nil {
                problem("\(path).ports", nil, "missing required key")
            }
            guard let name, let host, let pub, let rep else { return nil }
            return NodeSpec(
                name: name, pool: pool, host: host, bind: bind ?? (Self.isIPLiteral(host) ? host : "*"),
                pubPort: pub, repPort: rep, replayPort: replay, data: string(m, "data", path) ?? ".ce-data/\(name)",
                workspace: string(m, "workspace", path), isCoordinator: coordinator)
        }

        mutating func checkNodes(_ nodes: [NodeSpec], _ top: [String: Yams.Node]) {
            func path(_ index: Int) -> String {
                nodes[index].isCoordinator ? "coordinator" : "nodes[\(index - (nodes.first?.isCoordinator == true ? 1 : 0))]"
            }
            var names: [String: Int] = [:]
            var ports: [String: (Int, String)] = [:]
            for (i, node) in nodes.enumerated() {
                if let first = names[node.name] {
                    problem("\(path(i)).name", nil, "duplicate node \"\(node.name)\" (first at \(path(first)))")
                } else {
                    names[node.name] = i
                }
                var used = [("pub", node.pubPort), ("rep", node.repPort)]
                if let r = node.replayPort { used.append(("replay", r)) }
                for (role, port) in used {
                    let key = "\(node.host):\(port)"
                    if let (other, otherRole) = ports[key] {
                        problem("\(path(i)).ports.\(role)", nil, "port \(port) on \(node.host) is already used by \(path(other)).ports.\(otherRole)")
                    } else {
                        ports[key] = (i, role)
                    }
                }
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
