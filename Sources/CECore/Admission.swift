/// The rules an emitted event must meet before a node stamps it, the same for every way in
/// (control socket, CLI, MCP, event folder, HTTP, `Node.emit`). A client may check early for a
/// better message; the node decides with these.
public struct Admission: Sendable {
    /// Types admitted without `allow_custom_type`.
    public let knownTypes: Set<EventType>
    /// Pools and resolvers an event may target.
    public let targets: Set<String>
    /// The largest envelope that travels: libzmq's `ZMQ_MAXMSGSIZE` applies to each frame,
    /// and an event's envelope is one frame, live and in replay pages alike.
    public let maxEnvelopeBytes: Int

    /// `busTypes` are the types the bus itself emits (the coordinator's decisions and the like).
    public init(topology: Topology, busTypes: [EventType]) {
        knownTypes = topology.knownTypes.union(busTypes)
        targets = topology.poolNames.union(topology.conflicts.resolvers).union(["human"])
        maxEnvelopeBytes = topology.settings.maxMessageBytes
    }

    /// Throws unless `type` is known or the caller asked for a custom type on purpose.
    public func check(type: EventType, allowCustom: Bool) throws(AdmissionError) {
        guard !allowCustom, !knownTypes.contains(type) else { return }
        let names = knownTypes.map(\.rawValue)
        throw AdmissionError(
            "unknown event type \"\(type)\""
                + (Self.nearest(type.rawValue, among: names).map { " (did you mean \($0)?)" } ?? "")
                + "; list it under custom_types: in the topology, or emit it with allow_custom_type"
                + " (CLI: --custom-type) to introduce it on purpose")
    }

    /// Throws unless `target` (when given) is a pool or a resolver of the topology.
    public func check(target: String?) throws(AdmissionError) {
        guard let target, !targets.contains(target) else { return }
        let names = targets.sorted()
        throw AdmissionError(
            "target \"\(target)\" is not a pool or resolver of this cluster"
                + (Self.nearest(target, among: names).map { " (did you mean \($0)?)" } ?? "")
                + " (targets: \(names.joined(separator: ", ")))")
    }

    /// Throws unless the correlation id (when given) is 1-128 bytes.
    public func check(correlationID: String?) throws(AdmissionError) {
        guard let correlationID, !(1...128).contains(correlationID.utf8.count) else { return }
        throw AdmissionError("correlation_id must be 1-128 bytes (got \(correlationID.utf8.count))")
    }

    /// Throws when the encoded envelope is larger than what every node of the cluster takes.
    public func check(envelopeBytes: Int) throws(AdmissionError) {
        guard envelopeBytes > maxEnvelopeBytes else { return }
        throw AdmissionError(
            "the event is \(envelopeBytes) bytes as it goes on the wire, more than the cluster's limit of \(maxEnvelopeBytes)"
                + " (settings.max_message_bytes); send a smaller payload, e.g. a path or a summary instead of the content")
    }

    /// The name closest to `name` by edit distance, if one is close enough to be a slip.
    public static func nearest(_ name: String, among names: some Sequence<String>) -> String? {
        let a = Array(name.utf8)
        var best: (name: String, distance: Int)?
        for candidate in names {
            let d = distance(a, Array(candidate.utf8))
            if d < (best?.distance ?? Int.max) { best = (candidate, d) }
        }
        guard let best, best.distance <= max(2, a.count / 3) else { return nil }
        return best.name
    }

    /// Levenshtein distance over bytes.
    static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = Array(repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}

/// Why a node refused an event, in a sentence that says what to change.
public struct AdmissionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
