import CECore
import Foundation

/// Everything the coordinator decides, as one value: feed it every event (in store order)
/// and a clock tick now and then; publish what it returns. Rebuilding after a restart is
/// feeding it the stored events again (with their own timestamps as the clock), so a stored
/// report opens its gate's round at the report's time again.
public struct CoordinatorState: Sendable {
    public private(set) var gates: Gates
    public private(set) var conflicts: Conflicts
    public private(set) var liveness: Liveness

    /// Every gate in round 1, idle; no conflict open; every pool unheard.
    public init(topology: Topology) {
        var nodesByPool: [String: Set<String>] = [:]
        for node in topology.nodes where !node.isCoordinator { nodesByPool[node.pool, default: []].insert(node.name) }
        gates = Gates(specs: topology.gates, nodesByPool: nodesByPool)
        conflicts = Conflicts(resolvers: topology.conflicts.resolvers, escalateAfter: topology.conflicts.escalateAfterSeconds)
        liveness = Liveness(nodesByPool: nodesByPool, timeout: Double(topology.settings.heartbeatMilliseconds) * 3 / 1000)
    }

    /// The clock is not read: gate rounds open with their first report, not when the state is made.
    public mutating func handle(_ event: Event, now: Date) -> [Emission] {
        if event.type == .poolUp || event.type == .poolDown { liveness.observe(event) }
        var out = conflicts.handle(event, now: now)
        out += gates.handle(event, now: now, openSubjects: conflicts.openSubjects)
        return out
    }

    public mutating func heard(node: String, at: Date) { liveness.heard(node: node, at: at) }

    /// Takes a reloaded topology, keeping what is under way: a gate that stays keeps its
    /// round and the reports of pools still in it (a pool added to it must report in the
    /// current round), a gate added starts idle in round 1; open conflicts stay open at their
    /// level under the new resolver chain; liveness keeps what it heard.
    public mutating func reconfigure(_ topology: Topology) {
        let next = CoordinatorState(topology: topology)
        gates.reconfigure(specs: next.gates.specs, nodesByPool: next.gates.nodesByPool)
        conflicts.reconfigure(resolvers: next.conflicts.resolvers, escalateAfter: next.conflicts.escalateAfter)
        liveness.reconfigure(nodesByPool: next.liveness.nodesByPool)
    }

    /// Deadlines, escalations and (with `liveness`) pool liveness changes due at `now`. A
    /// standby leaves liveness to the active coordinator's `pool_up`/`pool_down` (it follows
    /// them), so that on taking over it says only what changed since.
    public mutating func tick(now: Date, liveness tickLiveness: Bool = true) -> [Emission] {
        (tickLiveness ? liveness.tick(now: now) : []) + conflicts.tick(now: now) + gates.tick(now: now, openSubjects: conflicts.openSubjects)
    }

    /// Gates and conflicts as JSON: who aligned, who is missing (and whether it is down), how long.
    ///
    /// Per gate, `state` is `idle` (nobody has started the round: `opened_at` is null and
    /// `waiting_s` 0), `waiting` (open: `opened_at` is when, `waiting_s` how long since) or
    /// `timed_out` (open past its deadline, `gate_timed_out` said).
    public func status(now: Date) -> JSONValue {
        let gateList: [JSONValue] = gates.specs.map { spec in
            let round = gates.rounds[spec.name]!
            let missing = gates.missing(spec.name)
            let state = round.isIdle ? "idle" : round.timedOut ? "timed_out" : "waiting"
            return [
                "gate": .string(spec.name), "round": .number(Double(round.number)), "state": .string(state),
                "aligned": .array(round.reported.keys.sorted().map(JSONValue.string)),
                "missing": .array(missing.map { pool in
                    ["pool": .string(pool), "up": .bool(liveness.isUp(pool: pool, now: now))]
                }),
                "opened_at": round.openedAt.map { .string(Timestamp.format($0)) } ?? .null,
                "waiting_s": .number(round.openedAt.map { now.timeIntervalSince($0).rounded() } ?? 0),
                "blocked_by_conflict": .bool(spec.subject.map { conflicts.openSubjects.contains($0) } ?? false),
            ]
        }
        let conflictList: [JSONValue] = conflicts.open.values.sorted { $0.openedAt < $1.openedAt }.map { c in
            [
                "conflict_id": .string(c.id), "subject": .string(c.subject), "parties": .array(c.parties.map(JSONValue.string)),
                "resolver": .string(conflicts.resolvers[c.level]), "level": .number(Double(c.level)),
                "open_s": .number(now.timeIntervalSince(c.openedAt).rounded()),
                "reports": .number(Double(c.reportedBy.count)),
            ]
        }
        return ["gates": .array(gateList), "conflicts": .array(conflictList)]
    }
}
