import CECore
import Foundation

extension EventType {
    /// A coordinator became the active one: `{"term","node","previous","fence","reason"}`.
    /// Emitted by a standby that takes over, or by the active coordinator handing over.
    public static let coordinatorActive = try! EventType(validating: "coordinator_active")
}

/// Which of a coordinator's published events a node takes, and who the active coordinator is.
///
/// Every node keeps one, fed with every stored event in store order. Terms fence the old
/// active coordinator: each takeover or handover starts a new term with a
/// `coordinator_active` event that names the last event of the previous active coordinator
/// it counts (its fence). A decision is taken when it comes from a coordinator, no newer term
/// fences it (it is not past the fence of a later term), and its key (a gate's round, a
/// conflict's level) was not taken before. So two coordinators that both believe they are
/// active cannot pass a gate twice or escalate a conflict twice at any node.
///
/// A value type: no I/O.
public struct DecisionLedger: Sendable {
    /// The last event of the previous active coordinator that a term counts.
    public struct Fence: Sendable, Hashable {
        public var origin: String
        public var epoch: String
        public var seq: UInt64
        /// The term that starts after it.
        public var term: Int
    }

    /// A term's start, as its `coordinator_active` event says.
    public struct Claim: Sendable, Hashable {
        public var term: Int
        public var node: String
        public var previous: String?
        public var reason: String
        public var at: Date
        /// Who said it (the new active coordinator, or the old one handing over).
        public var by: String
    }

    public enum Verdict: Sendable, Equatable {
        case take
        /// Stored (the history keeps it) but handed to nobody.
        case drop(String)
    }

    /// The coordinator nodes (only they decide).
    public let coordinators: Set<String>
    /// The highest term known, and the coordinator active in it (the primary in term 0).
    public private(set) var term = 0
    public private(set) var active: String?
    /// The newest `coordinator_active` event taken, if any.
    public private(set) var lastClaim: Claim?
    /// Fences per origin, from every claim taken.
    public private(set) var fences: [String: [Fence]] = [:]
    /// The keys of the decisions taken.
    public private(set) var taken: Set<String> = []

    public init(topology: Topology) {
        coordinators = Set(topology.coordinators.map(\.name))
        active = topology.coordinator?.name
    }

    /// The types a coordinator decides (and only a coordinator may emit), with `coordinator_active`.
    public static let types: [EventType] = [
        .gatePassed, .gateTimedOut, .gateRejected, .resolutionNeeded, .conflictClosed, .poolUp, .poolDown, .coordinatorActive,
    ]

    /// What makes a decision the same as another: at most one is taken per key. Liveness
    /// changes (`pool_up`, `pool_down`) repeat legitimately and have none.
    public static func key(_ type: EventType, _ payload: JSONValue, _ correlationID: String?) -> String? {
        switch type {
        case .gatePassed, .gateTimedOut:
            return "\(type)/\(payload["gate"]?.stringValue ?? "")/\(payload["round"]?.intValue ?? 0)"
        case .resolutionNeeded:
            return "\(type)/\(payload["conflict_id"]?.stringValue ?? correlationID ?? "")/\(payload["level"]?.intValue ?? 0)"
        case .conflictClosed, .gateRejected:
            return "\(type)/\(payload["conflict_id"]?.stringValue ?? correlationID ?? "")"
        default:
            return nil
        }
    }

    public static func key(_ event: Event) -> String? { key(event.type, event.payload, event.correlationID) }

    /// The term a decision says it was made in (0 when it says none: before terms, or the primary's first).
    public static func term(of event: Event) -> Int { max(0, event.payload["term"]?.intValue ?? 0) }

    /// Takes one stored event (events of other types are always taken).
    public mutating func take(_ event: Event) -> Verdict {
        guard Self.types.contains(event.type) else { return .take }
        guard coordinators.contains(event.origin) else {
            return .drop("\(event.type) from \(event.origin), which is not a coordinator")
        }
        if event.type == .coordinatorActive { return claim(event) }
        let made = Self.term(of: event)
        if made > term {
            // Its own word: a coordinator that decides in a term this node has not seen begin
            // (the claim is on its way from the coordinator that handed over).
            term = made
            active = event.origin
        }
        if let fence = fences[event.origin]?.first(where: { $0.term > made && $0.epoch == event.epoch && event.seq > $0.seq }) {
            return .drop("\(event.type) of term \(made) made by \(event.origin) after term \(fence.term) began (its seq \(event.seq), fence \(fence.seq))")
        }
        if let key = Self.key(event) {
            guard taken.insert(key).inserted else { return .drop("\(key) was decided already") }
        }
        return .take
    }

    private mutating func claim(_ event: Event) -> Verdict {
        let p = event.payload
        guard let claimed = p["term"]?.intValue, claimed > 0, let node = p["node"]?.stringValue, coordinators.contains(node) else {
            return .drop("coordinator_active from \(event.origin) without a valid term and coordinator node")
        }
        let previous = p["previous"]?.stringValue
        // A handover: the old active coordinator's own events after this one are past the fence.
        if let previous, previous == event.origin {
            fences[previous, default: []].append(Fence(origin: previous, epoch: event.epoch, seq: event.seq, term: claimed))
        } else if let f = p["fence"], let origin = f["origin"]?.stringValue, let epoch = f["epoch"]?.stringValue,
                  let seq = f["seq"]?.intValue, seq >= 0 {
            fences[origin, default: []].append(Fence(origin: origin, epoch: epoch, seq: UInt64(seq), term: claimed))
        }
        let claim = Claim(term: claimed, node: node, previous: previous, reason: p["reason"]?.stringValue ?? "", at: event.timestamp, by: event.origin)
        if claimed > term || (claimed == term && lastClaim == nil) || (claimed == term && node == active) {
            term = claimed
            active = node
            lastClaim = claim
        } else if claimed == term, let last = lastClaim, last.node != node {
            // Two claims of one term (a race between two standbys' views): the smaller name holds it.
            if node < last.node {
                active = node
                lastClaim = claim
            }
        }
        return .take
    }

    /// A coordinator's heartbeat said it is active in `term`: a newer term is believed at
    /// once (it is the coordinator's own word), so an old active coordinator stops deciding
    /// before the claim's event reaches it.
    public mutating func heard(active node: String, term heard: Int) {
        guard coordinators.contains(node), heard > term else { return }
        term = heard
        active = node
    }
}
