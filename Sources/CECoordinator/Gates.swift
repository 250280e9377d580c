import CECore
import Foundation

/// Quality gates as sync points: pools report `sync_point_reached` with `{"gate": NAME}`; when
/// every required pool has (and the required event types were seen, and no conflict on the
/// gate's subject is open), the gate passes, publishes `gate_passed` and re-arms for the next
/// round. A value type: no I/O, the clock comes in with each call.
///
/// A round is idle until work on it starts: it opens with its first accepted report, or with
/// the first of the gate's required events, whichever comes first (a refused report does not
/// open it). Its deadline and the `waited_s` of its `gate_passed` run from that moment; an
/// idle round never times out, however long nobody works.
public struct Gates: Sendable {
    public struct Round: Sendable, Hashable {
        public var number = 1
        /// When the round opened (the clock of the call that opened it); nil while it is idle.
        public var openedAt: Date? = nil
        /// Pool -> nodes of that pool that reported this round.
        public var reported: [String: Set<String>] = [:]
        public var seen: Set<EventType> = []
        public var timedOut = false

        /// Nobody has reported for the round, nor was a required event seen: no clock runs.
        public var isIdle: Bool { openedAt == nil }

        mutating func open(at now: Date) {
            if openedAt == nil { openedAt = now }
        }
    }

    public private(set) var specs: [GateSpec]
    /// Nodes of each pool (for gates that ask every node).
    public private(set) var nodesByPool: [String: Set<String>]
    public private(set) var rounds: [String: Round]

    /// Every gate starts in round 1, idle.
    public init(specs: [GateSpec], nodesByPool: [String: Set<String>]) {
        self.specs = specs
        self.nodesByPool = nodesByPool
        self.rounds = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, Round()) })
    }

    func spec(_ name: String) -> GateSpec? { specs.first { $0.name == name } }

    /// New gate definitions: a gate that stays keeps its round, its opening time and the
    /// reports of the pools (and nodes) still in it; a new gate starts idle in round 1.
    public mutating func reconfigure(specs: [GateSpec], nodesByPool: [String: Set<String>]) {
        var next: [String: Round] = [:]
        for spec in specs {
            guard var round = rounds[spec.name] else {
                next[spec.name] = Round()
                continue
            }
            round.reported = round.reported.filter { spec.pools.contains($0.key) }
            next[spec.name] = round
        }
        self.specs = specs
        self.nodesByPool = nodesByPool
        rounds = next
    }

    /// Pools of the gate not yet aligned this round (for every-node gates: pools with a node missing).
    public func missing(_ gate: String) -> [String] {
        guard let spec = spec(gate), let round = rounds[gate] else { return [] }
        return spec.pools.filter { pool in
            let got = round.reported[pool] ?? []
            return spec.everyNode ? !(nodesByPool[pool] ?? []).isSubset(of: got) : got.isEmpty
        }
    }

    /// Takes one event; `openSubjects` are the subjects of open conflicts.
    public mutating func handle(_ event: Event, now: Date, openSubjects: Set<String>) -> [Emission] {
        var out: [Emission] = []
        if event.type == .syncPointReached {
            out += report(event, now: now)
        } else if event.type == .gateTimedOut {
            // Said already (read back when the state is rebuilt): not said again this round.
            if let gate = event.payload["gate"]?.stringValue, let round = event.payload["round"]?.intValue,
               rounds[gate]?.number == round {
                rounds[gate]!.timedOut = true
            }
        } else {
            for spec in specs where spec.requireEvents.contains(event.type) {
                rounds[spec.name]?.seen.insert(event.type)
                rounds[spec.name]?.open(at: now)
            }
        }
        out += passReady(now: now, openSubjects: openSubjects)
        return out
    }

    private mutating func report(_ event: Event, now: Date) -> [Emission] {
        func reject(_ gate: String, _ reason: String) -> [Emission] {
            [Emission(.gateRejected, ["gate": .string(gate), "pool": .string(event.stream), "node": .string(event.origin), "reason": .string(reason)],
                      target: event.stream, correlationID: event.id)]
        }
        guard let gate = event.payload["gate"]?.stringValue else {
            return reject("", "sync_point_reached needs a payload with \"gate\"")
        }
        guard let spec = spec(gate), var round = rounds[gate] else {
            return reject(gate, "unknown gate \"\(gate)\" (gates: \(specs.map(\.name).joined(separator: ", ")))")
        }
        guard spec.pools.contains(event.stream) else {
            return reject(gate, "pool \(event.stream) is not part of gate \(gate) (pools: \(spec.pools.joined(separator: ", ")))")
        }
        if let asked = event.payload["round"]?.intValue, asked != round.number {
            return reject(gate, "report for round \(asked), but gate \(gate) is in round \(round.number)")
        }
        let already = round.reported[event.stream] ?? []
        if spec.everyNode ? already.contains(event.origin) : !already.isEmpty {
            return reject(gate, "\(spec.everyNode ? event.origin : "pool " + event.stream) already reported for round \(round.number)")
        }
        round.reported[event.stream, default: []].insert(event.origin)
        round.open(at: now)
        rounds[gate] = round
        return []
    }

    private mutating func passReady(now: Date, openSubjects: Set<String>) -> [Emission] {
        var out: [Emission] = []
        for spec in specs {
            guard let round = rounds[spec.name], missing(spec.name).isEmpty,
                Set(spec.requireEvents).isSubset(of: round.seen)
            else { continue }
            if let subject = spec.subject, openSubjects.contains(subject) { continue }
            // A round that passes has had a report, so it is open.
            let openedAt = round.openedAt ?? now
            out.append(Emission(.gatePassed, [
                "gate": .string(spec.name), "round": .number(Double(round.number)),
                "pools": .array(spec.pools.map(JSONValue.string)),
                "waited_s": .number((now.timeIntervalSince(openedAt) * 1000).rounded() / 1000),
            ]))
            rounds[spec.name] = Round(number: round.number + 1)
        }
        return out
    }

    /// Re-checks gates (a conflict closed) and the deadlines of open rounds.
    public mutating func tick(now: Date, openSubjects: Set<String>) -> [Emission] {
        var out = passReady(now: now, openSubjects: openSubjects)
        for spec in specs {
            guard let deadline = spec.deadlineSeconds, var round = rounds[spec.name], !round.timedOut,
                let openedAt = round.openedAt, now.timeIntervalSince(openedAt) >= deadline
            else { continue }
            round.timedOut = true
            rounds[spec.name] = round
            out.append(Emission(.gateTimedOut, [
                "gate": .string(spec.name), "round": .number(Double(round.number)),
                "missing": .array(missing(spec.name).map(JSONValue.string)),
                "waited_s": .number(now.timeIntervalSince(openedAt).rounded()),
            ]))
        }
        return out
    }
}
