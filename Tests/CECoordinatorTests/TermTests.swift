import CECore
import CECoordinator
import Foundation
import Testing

/// Terms, fences and the pools' vote, as values: what every node takes, and when a standby
/// takes over. The processes that carry them out are tested on hosts (CENodeTests).
@Suite("Standby coordinator: terms and the vote")
struct TermTests {
    static let yaml = """
        version: 1
        settings: { heartbeat_ms: 200, coordinator_failover_ms: 2000 }
        coordinator:
          name: coord-a
          host: 127.0.0.1
          ports: { pub: 7100, rep: 7101 }
          standby: { name: coord-b, host: 127.0.0.1, ports: { pub: 7102, rep: 7103 } }
        nodes:
          - { name: planner-1, pool: planner, host: 127.0.0.1, ports: { pub: 7110, rep: 7111 } }
          - { name: builder-1, pool: builder, host: 127.0.0.1, ports: { pub: 7120, rep: 7121 } }
          - { name: reviewer-1, pool: reviewer, host: 127.0.0.1, ports: { pub: 7140, rep: 7141 } }
        """
    let topology = try! TopologyLoader.parse(yaml: yaml)
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    func decision(_ origin: String, seq: UInt64, _ type: EventType, _ payload: [String: JSONValue], epoch: String = "ea") -> Event {
        Event(id: "\(origin)-\(seq)", origin: origin, epoch: epoch, seq: seq, stream: "coordinator", type: type, timestamp: t0, payload: .object(payload))
    }

    func passed(_ origin: String, seq: UInt64, round: Int, term: Int, epoch: String = "ea") -> Event {
        decision(origin, seq: seq, .gatePassed, ["gate": "release", "round": .number(Double(round)), "term": .number(Double(term))], epoch: epoch)
    }

    @Test func aGateRoundIsTakenOnceWhoeverDecidesIt() {
        var ledger = DecisionLedger(topology: topology)
        #expect(ledger.active == "coord-a" && ledger.term == 0)
        #expect(ledger.take(passed("coord-a", seq: 1, round: 1, term: 0)) == .take)
        // The same round again, from either coordinator: stored, not handed over.
        guard case .drop(let why) = ledger.take(passed("coord-b", seq: 1, round: 1, term: 0)) else {
            Issue.record("a second gate_passed for round 1 was taken")
            return
        }
        #expect(why.contains("gate_passed/release/1 was decided already"))
        #expect(ledger.take(passed("coord-a", seq: 2, round: 2, term: 0)) == .take)
        // Escalation levels: each once.
        let ask = { (origin: String, seq: UInt64, level: Int) in
            decision(origin, seq: seq, .resolutionNeeded, ["conflict_id": "c1", "level": .number(Double(level))])
        }
        #expect(ledger.take(ask("coord-a", 3, 0)) == .take)
        #expect(ledger.take(ask("coord-b", 2, 0)) != .take)
        #expect(ledger.take(ask("coord-b", 3, 1)) == .take)
    }

    @Test func onlyACoordinatorDecides() {
        var ledger = DecisionLedger(topology: topology)
        #expect(ledger.take(passed("planner-1", seq: 1, round: 1, term: 0)) != .take)
        // ...and the round is still open for the coordinator's own decision.
        #expect(ledger.take(passed("coord-a", seq: 1, round: 1, term: 0)) == .take)
        // Other types are not the ledger's business.
        let note = Event(id: "n", origin: "planner-1", seq: 1, stream: "planner", type: .planReady, timestamp: t0, payload: .null)
        #expect(ledger.take(note) == .take)
    }

    @Test func aTakeoverFencesWhatTheOldActiveDecidesAfterIt() {
        var ledger = DecisionLedger(topology: topology)
        #expect(ledger.take(passed("coord-a", seq: 4, round: 1, term: 0)) == .take)
        // coord-b takes over, counting coord-a's line up to seq 5.
        let claim = decision("coord-b", seq: 1, .coordinatorActive, [
            "term": 1, "node": "coord-b", "previous": "coord-a", "reason": "silent",
            "fence": ["origin": "coord-a", "epoch": "ea", "seq": 5],
        ], epoch: "eb")
        #expect(ledger.take(claim) == .take)
        #expect(ledger.term == 1 && ledger.active == "coord-b" && ledger.lastClaim?.reason == "silent")
        // Made before the takeover (seq 5 <= fence), arriving late: taken.
        #expect(ledger.take(passed("coord-a", seq: 5, round: 2, term: 0)) == .take)
        // Made after it, by the coordinator that did not know: fenced, even for a new round.
        guard case .drop(let why) = ledger.take(passed("coord-a", seq: 6, round: 3, term: 0)) else {
            Issue.record("a decision past the fence was taken")
            return
        }
        #expect(why.contains("after term 1 began"))
        // The new active coordinator decides round 3.
        #expect(ledger.take(passed("coord-b", seq: 2, round: 3, term: 1, epoch: "eb")) == .take)
    }

    @Test func aHandoverFencesTheOldActiveAfterItsOwnHandoverEvent() {
        var ledger = DecisionLedger(topology: topology)
        let handover = decision("coord-a", seq: 10, .coordinatorActive, ["term": 1, "node": "coord-b", "previous": "coord-a", "reason": "handover", "fence": .null])
        #expect(ledger.take(passed("coord-a", seq: 9, round: 1, term: 0)) == .take)
        #expect(ledger.take(handover) == .take)
        #expect(ledger.active == "coord-b" && ledger.term == 1)
        #expect(ledger.take(passed("coord-a", seq: 11, round: 2, term: 0)) != .take)
        #expect(ledger.take(passed("coord-b", seq: 1, round: 2, term: 1, epoch: "eb")) == .take)
    }

    @Test func aNewerTermIsBelievedFromTheCoordinatorItself() {
        var ledger = DecisionLedger(topology: topology)
        // coord-b's first decision of term 1 arrives before coord-a's handover event.
        #expect(ledger.take(passed("coord-b", seq: 1, round: 1, term: 1, epoch: "eb")) == .take)
        #expect(ledger.term == 1 && ledger.active == "coord-b")
        // A heartbeat of an older term changes nothing; a newer one from a coordinator does.
        ledger.heard(active: "coord-a", term: 1)
        #expect(ledger.active == "coord-b")
        ledger.heard(active: "planner-1", term: 7)
        #expect(ledger.term == 1)
        ledger.heard(active: "coord-a", term: 2)
        #expect(ledger.term == 2 && ledger.active == "coord-a")
        // A claim that is not newer does not move the term back.
        let stale = decision("coord-b", seq: 2, .coordinatorActive, ["term": 1, "node": "coord-b", "previous": "coord-a", "reason": "late"], epoch: "eb")
        #expect(ledger.take(stale) == .take)
        #expect(ledger.term == 2 && ledger.active == "coord-a")
    }

    // MARK: The vote

    func heard(_ hears: [String: [String]], ago: TimeInterval = 0.1, now: Date) -> [String: Election.Heard] {
        hears.mapValues { Election.Heard(at: now - ago, hears: Set($0)) }
    }

    @Test func theStandbyTakesOverOnlyWhenMostPoolsHearTheActiveOneDownToo() {
        let election = Election(me: "coord-b", topology: topology)
        let now = t0 + 100
        #expect(election.majority == 2)
        let allDown = heard(["planner-1": ["coord-b"], "builder-1": ["coord-b"], "reviewer-1": ["coord-b"]], now: now)
        // Silent for the failover time and all pools agree: over.
        let reason = election.takeover(from: "coord-a", lastHeardActive: now - 2.1, since: t0, heard: allDown, now: now)
        #expect(reason?.contains("coord-a silent for 2.1 s; 3 of 3 pool nodes hear it down") == true)
        // Not silent long enough.
        #expect(election.takeover(from: "coord-a", lastHeardActive: now - 1.9, since: t0, heard: allDown, now: now) == nil)
        // Cut off from the active one only: the pools still hear it.
        let poolsHearIt = heard(["planner-1": ["coord-a", "coord-b"], "builder-1": ["coord-a"], "reviewer-1": ["coord-b"]], now: now)
        #expect(election.takeover(from: "coord-a", lastHeardActive: now - 30, since: t0, heard: poolsHearIt, now: now) == nil)
        // Cut off from everyone: the standby hears no pool node, so no vote.
        #expect(election.takeover(from: "coord-a", lastHeardActive: now - 30, since: t0, heard: [:], now: now) == nil)
        // Votes older than three heartbeats do not count.
        let old = heard(["planner-1": [], "builder-1": [], "reviewer-1": []], ago: 0.7, now: now)
        #expect(election.takeover(from: "coord-a", lastHeardActive: now - 30, since: t0, heard: old, now: now) == nil)
        // Never heard since it started: the silence runs from the start.
        #expect(election.takeover(from: "coord-a", lastHeardActive: nil, since: now - 2.5, heard: allDown, now: now) != nil)
        // The active one never takes over from itself.
        #expect(Election(me: "coord-a", topology: topology).takeover(from: "coord-a", lastHeardActive: nil, since: t0, heard: allDown, now: now) == nil)
    }

    @Test func anActiveCoordinatorInTheMinorityHoldsItsDecisions() {
        let election = Election(me: "coord-a", topology: topology)
        let now = t0 + 100
        #expect(election.mayDecide(heard(["planner-1": [], "builder-1": []], now: now), now: now))
        #expect(!election.mayDecide(heard(["planner-1": []], now: now), now: now))
        // Failover off: the one coordinator decides whatever it hears.
        let off = try! TopologyLoader.parse(yaml: Self.yaml.replacingOccurrences(of: "coordinator_failover_ms: 2000", with: "coordinator_failover_ms: 0"))
        let alone = Election(me: "coord-a", topology: off)
        #expect(alone.mayDecide([:], now: now))
        #expect(Election(me: "coord-b", topology: off).takeover(from: "coord-a", lastHeardActive: nil, since: t0, heard: heard(["planner-1": [], "builder-1": [], "reviewer-1": []], now: now), now: now) == nil)
    }
}
