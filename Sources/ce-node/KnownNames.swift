import ArgumentParser
import CECore
import CENode

/// The names a command's flags refer to (event types, pools, nodes), read from the
/// topology, so that a slip is an error naming the nearest known name instead of an empty
/// answer or a wait. The rules are CECore's (``Admission``), the ones the node admits by.
struct KnownNames {
    let topology: Topology
    let admission: Admission

    init(_ topology: Topology) {
        self.topology = topology
        admission = Admission(topology: topology, busTypes: Node.busTypes)
    }

    /// Why `name` is not an event type of this cluster, or nil when it is one. `where`
    /// says where else it was looked for ("nor in the store").
    func unknownType(_ name: String, where also: String = "") -> String? {
        guard !admission.knownTypes.contains(where: { $0.rawValue == name }) else { return nil }
        return unknown("--type", name, "event type", admission.knownTypes.map(\.rawValue), also)
    }

    /// Why `name` is not a pool of this cluster, or nil when it is one.
    func unknownPool(_ name: String) -> String? {
        guard !topology.poolNames.contains(name) else { return nil }
        return unknown("--pool", name, "pool", topology.poolNames)
    }

    /// Why `name` is not a node of this cluster (an event's origin), or nil when it is one.
    func unknownNode(_ name: String, flag: String = "--origin", where also: String = "") -> String? {
        guard topology.node(named: name) == nil else { return nil }
        return unknown(flag, name, "node", topology.nodes.map(\.name), also)
    }

    /// `--pool buildr: no pool "buildr" in FILE (did you mean builder?; pools: a, b)`.
    private func unknown(_ flag: String, _ name: String, _ what: String, _ names: some Sequence<String>, _ also: String = "") -> String {
        let sorted = names.sorted()
        let hint = Admission.nearest(name, among: sorted).map { "did you mean \($0)?; " } ?? ""
        let elsewhere = also.isEmpty ? "" : " " + also
        return "\(flag) \(name): no \(what) \"\(name)\" in \(topology.file)\(elsewhere) (\(hint)known: \(sorted.joined(separator: ", ")))"
    }
}

extension NodeSelection {
    /// The names of the topology the user named, or nil when none was named (only `--data`).
    func knownNames() throws -> KnownNames? {
        namesTopology ? KnownNames(try load()) : nil
    }
}
