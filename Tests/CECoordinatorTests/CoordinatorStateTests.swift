import CECore
import CECoordinator
import Foundation
import Testing

@Suite("Coordinator state machines")
struct CoordinatorStateTests {
    static let yaml = """
        version: 1
        coordinator: { name: coordinator, host: 127.0.0.1, ports: { pub: 7100, rep: 7101 } }
        nodes:
          - { name: planner-1, pool: planner, host: 127.0.0.1, ports: { pub: 7110, rep: 7111 } }
          - { name: builder-1, pool: builder, host: 127.0.0.1, ports: { pub: 7120, rep: 7121 } }
          - { name: builder-2, pool: builder, host: 127.0.0.1, ports: { pub: 7130, rep: 7131 } }
          - { name: reviewer-1, pool: reviewer, host: 127.0.0.1, ports: { pub: 7140, rep: 7141 } }
        gates:
          - { name: architecture_approval, pools: [planner, builder, reviewer], require_events: [architecture_complete], deadline_s: 60, subject: architecture }
          - { name: all_builders, pools: [builder], every_node: true }
        conflicts: { resolvers: [planner, human], escalate_after_s: 30 }
        """
    let topology = try! TopologyLoader.parse(yaml: yaml)
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    var seq: UInt64 = 0

    mutating func event(_ node: String, _ type: EventType, _ payload: JSONValue = .null, at: TimeInterval = 0) -> Event {
        seq += 1
        let pool = topology.node(named: node)!.pool
        return Event(id: "e\(seq)", origin: node, seq: seq, stream: pool, type: type, timestamp: t0 + at, payload: payload)
    }

    mutating func sync(_ node: String, _ gate: String, at: TimeInterval = 0, round: Int? = nil) -> Event {
        var payload: [String: JSONValue] = ["gate": .string(gate)]
        if let round { payload["round"] = .number(Double(round)) }
        return event(node, .syncPointReached, .object(payload), at: at)
    }

    @Test mutating func gatePassesWhenEveryPoolReportedAndRequiredEventsSeenThenReArms() {
        var state = CoordinatorState(topology: topology)
        #expect(state.handle(sync("planner-1", "architecture_approval"), now: t0).isEmpty)
        #expect(state.handle(sync("builder-2", "architecture_approval"), now: t0).isEmpty)
        #expect(state.handle(sync("reviewer-1", "architecture_approval"), now: t0).isEmpty)  // architecture_complete not seen yet
        #expect(state.gates.missing("architecture_approval").isEmpty)
        let out = state.handle(event("planner-1", .architectureComplete, at: 5), now: t0 + 5)
        #expect(out.map(\.type) == [.gatePassed])
        #expect(out[0].payload["gate"]?.stringValue == "architecture_approval")
        #expect(out[0].payload["round"]?.intValue == 1)
        #expect(out[0].payload["waited_s"]?.doubleValue == 5)
        // Round 2: nobody has reported again.
        #expect(state.gates.rounds["architecture_approval"]?.number == 2)
        #expect(state.gates.missing("architecture_approval") == ["planner", "builder", "reviewer"])
    }

    @Test mutating func aReloadKeepsTheOpenRoundAndAPoolAddedToAGateMustReport() throws {
        var state = CoordinatorState(topology: topology)
        _ = state.handle(sync("planner-1", "architecture_approval"), now: t0)
        _ = state.handle(sync("builder-1", "architecture_approval"), now: t0 + 1)
        // A tester pool joins and the gate now needs it; the reviewer leaves the gate.
        let grown = try TopologyLoader.parse(yaml: Self.yaml
            .replacingOccurrences(of: "nodes:\n", with: "nodes:\n  - { name: tester-1, pool: tester, host: 127.0.0.1, ports: { pub: 7150, rep: 7151 } }\n")
            .replacingOccurrences(of: "pools: [planner, builder, reviewer], require_events", with: "pools: [planner, builder, tester], require_events")
            .replacingOccurrences(of: "every_node: true }", with: "every_node: true }\n  - { name: new_gate, pools: [tester] }"))
        state.reconfigure(grown)
        let round = state.gates.rounds["architecture_approval"]!
        #expect(round.number == 1 && round.openedAt == t0)
        #expect(Set(round.reported.keys) == ["planner", "builder"])
        #expect(state.gates.missing("architecture_approval") == ["tester"])
        #expect(state.gates.rounds["new_gate"]?.isIdle == true)
        _ = state.handle(event("planner-1", .architectureComplete), now: t0 + 2)
        // The tester's reports (its node is not in the first topology the helpers read).
        let at = t0
        let tester = { (gate: String, seq: UInt64) in
            Event(id: "t\(seq)", origin: "tester-1", seq: seq, stream: "tester", type: .syncPointReached, timestamp: at, payload: ["gate": .string(gate)])
        }
        #expect(state.handle(tester("new_gate", 1), now: t0 + 2).map(\.type) == [.gatePassed])
        let passed = state.handle(tester("architecture_approval", 2), now: t0 + 3)
        #expect(passed.map(\.type) == [.gatePassed])
        #expect(passed.first?.payload["round"]?.intValue == 1)
    }

    @Test mutating func everyNodeGateWaitsForEachNodeOfThePool() {
        var state = CoordinatorState(topology: topology)
        #expect(state.handle(sync("builder-1", "all_builders"), now: t0).isEmpty)
        let out = state.handle(sync("builder-2", "all_builders"), now: t0)
        #expect(out.map(\.type) == [.gatePassed])
    }

    @Test mutating func rejectionsForDuplicatesUnknownGatesOutsidersAndWrongRounds() {
        var state = CoordinatorState(topology: topology)
        _ = state.handle(sync("builder-1", "architecture_approval"), now: t0)
        let twice = state.handle(sync("builder-2", "architecture_approval"), now: t0)  // same pool
        #expect(twice.map(\.type) == [.gateRejected])
        #expect(twice[0].payload["reason"]?.stringValue?.contains("already reported") == true)
        #expect(twice[0].target == "builder")
        let unknown = state.handle(sync("planner-1", "no_such_gate"), now: t0)
        #expect(unknown[0].payload["reason"]?.stringValue?.contains("unknown gate") == true)
        let outsider = state.handle(sync("planner-1", "all_builders"), now: t0)
        #expect(outsider[0].payload["reason"]?.stringValue?.contains("not part of gate") == true)
        let stale = state.handle(sync("reviewer-1", "architecture_approval", round: 7), now: t0)
        #expect(stale[0].payload["reason"]?.stringValue?.contains("round 7") == true)
        let noGate = state.handle(event("reviewer-1", .syncPointReached, ["x": 1]), now: t0)
        #expect(noGate[0].type == .gateRejected)
        let sameNodeTwice = state.handle(sync("builder-1", "all_builders"), now: t0) + state.handle(sync("builder-1", "all_builders"), now: t0)
        #expect(sameNodeTwice.map(\.type) == [.gateRejected])
    }

    @Test mutating func deadlineNamesTheMissingPoolsOnceAndStatusSaysTheyAreDown() {
        var state = CoordinatorState(topology: topology)
        _ = state.handle(sync("planner-1", "architecture_approval"), now: t0)
        state.heard(node: "planner-1", at: t0 + 59)
        state.heard(node: "builder-1", at: t0 + 59)
        #expect(state.tick(now: t0 + 30).filter { $0.type == .gateTimedOut }.isEmpty)
        let late = state.tick(now: t0 + 60)
        let timedOut = late.filter { $0.type == .gateTimedOut }
        #expect(timedOut.count == 1)
        #expect(timedOut[0].payload["missing"] == ["builder", "reviewer"])
        #expect(state.tick(now: t0 + 61).filter { $0.type == .gateTimedOut }.isEmpty)  // said once
        let status = state.status(now: t0 + 61)
        let missing = status["gates"]?[0]?["missing"]?.arrayValue ?? []
        #expect(missing.first { $0["pool"]?.stringValue == "reviewer" }?["up"] == false)
        #expect(missing.first { $0["pool"]?.stringValue == "builder" }?["up"] == true)
    }

    @Test mutating func conflictsOpenMergeEscalateAndClose() {
        var state = CoordinatorState(topology: topology)
        let detected = event("reviewer-1", .conflictDetected, ["subject": "architecture", "parties": ["builder"], "description": "no tests"])
        let asked = state.handle(detected, now: t0)
        #expect(asked.map(\.type) == [.resolutionNeeded])
        #expect(asked[0].target == "planner")
        #expect(asked[0].payload["conflict_id"]?.stringValue == detected.id)
        #expect(asked[0].payload["parties"] == ["builder", "reviewer"])
        // The same subject again: merged, not asked twice.
        let again = state.handle(event("builder-1", .conflictDetected, ["subject": "architecture", "parties": ["reviewer"], "description": "tests exist"]), now: t0 + 1)
        #expect(again.isEmpty)
        #expect(state.conflicts.open[detected.id]?.descriptions.count == 2)
        // Waits too long: escalated to the next resolver, once.
        #expect(state.tick(now: t0 + 10).filter { $0.type == .resolutionNeeded }.isEmpty)
        let escalated = state.tick(now: t0 + 31).filter { $0.type == .resolutionNeeded }
        #expect(escalated.map(\.target) == ["human"])
        #expect(escalated[0].payload["level"]?.intValue == 1)
        #expect(state.tick(now: t0 + 100).filter { $0.type == .resolutionNeeded }.isEmpty)  // end of the chain
        // Resolved: closed and told to the parties.
        let closed = state.handle(event("planner-1", .conflictResolved, ["conflict_id": .string(detected.id), "decision": "add tests"]), now: t0 + 101)
        #expect(closed.map(\.type) == [.conflictClosed])
        #expect(closed[0].payload["decision"]?.stringValue == "add tests")
        #expect(state.conflicts.open.isEmpty)
        // A resolution for an unknown or closed conflict does nothing.
        #expect(state.handle(event("planner-1", .conflictResolved, ["conflict_id": .string(detected.id)]), now: t0 + 102).isEmpty)
    }

    @Test mutating func aGateStaysShutWhileAConflictOnItsSubjectIsOpen() {
        var state = CoordinatorState(topology: topology)
        let conflict = event("reviewer-1", .conflictDetected, ["subject": "architecture", "parties": ["builder"]])
        _ = state.handle(conflict, now: t0)
        _ = state.handle(event("planner-1", .architectureComplete), now: t0)
        for node in ["planner-1", "builder-1", "reviewer-1"] { _ = state.handle(sync(node, "architecture_approval"), now: t0) }
        #expect(state.tick(now: t0 + 1).filter { $0.type == .gatePassed }.isEmpty)
        #expect(state.status(now: t0 + 1)["gates"]?[0]?["blocked_by_conflict"] == true)
        let closed = state.handle(event("planner-1", .conflictResolved, ["conflict_id": .string(conflict.id), "decision": "ok"]), now: t0 + 2)
        #expect(closed.map(\.type) == [.conflictClosed, .gatePassed])
    }

    @Test mutating func livenessReportsChangesOnlyAndIgnoresOutOfOrderAndClockJumps() {
        var state = CoordinatorState(topology: topology)
        state.heard(node: "planner-1", at: t0)
        let first = state.tick(now: t0 + 0.1)
        #expect(first.map(\.type) == [.poolUp])
        #expect(state.tick(now: t0 + 0.2).isEmpty)
        state.heard(node: "planner-1", at: t0 - 100)  // late, older heartbeat: ignored
        // The clock jumps far ahead: the pool is down, once.
        let down = state.tick(now: t0 + 3600).filter { $0.type == .poolDown || $0.type == .poolUp }
        #expect(down.map(\.type) == [.poolDown])
        #expect(down[0].payload["pool"]?.stringValue == "planner")
        #expect(state.tick(now: t0 + 3601).isEmpty)
        // The clock jumps back: nothing is said twice.
        #expect(state.tick(now: t0 + 1).count <= 1)
    }

    @Test mutating func replayingTheSameEventsRebuildsTheSameState() {
        var events: [Event] = []
        events.append(event("reviewer-1", .conflictDetected, ["subject": "api", "parties": ["builder"]], at: 1))
        events.append(sync("planner-1", "architecture_approval", at: 2))
        events.append(sync("builder-1", "architecture_approval", at: 3))
        var live = CoordinatorState(topology: topology)
        var emitted: [Emission] = []
        for e in events { emitted += live.handle(e, now: e.timestamp) }
        var rebuilt = CoordinatorState(topology: topology)
        for e in events { _ = rebuilt.handle(e, now: e.timestamp) }
        #expect(rebuilt.gates.rounds == live.gates.rounds)
        #expect(rebuilt.conflicts.open == live.conflicts.open)
        // After the restart the last pool reports and the gate opens; the conflict still escalates.
        _ = rebuilt.handle(event("planner-1", .architectureComplete, at: 4), now: t0 + 4)
        let passed = rebuilt.handle(sync("reviewer-1", "architecture_approval", at: 5), now: t0 + 5)
        #expect(passed.map(\.type) == [.gatePassed])
        #expect(rebuilt.tick(now: t0 + 40).contains { $0.type == .resolutionNeeded && $0.target == "human" })
        #expect(emitted.map(\.type) == [.resolutionNeeded])
    }

    /// A rebuilt state reads the coordinator's own escalations back: the conflict is at that
    /// level since then, and the next tick does not escalate to it again.
    @Test mutating func escalationsReadBackAreNotMadeAgain() {
        let detected = event("reviewer-1", .conflictDetected, ["subject": "api", "parties": ["builder"]], at: 1)
        var live = CoordinatorState(topology: topology)
        _ = live.handle(detected, now: detected.timestamp)
        let escalations = live.tick(now: t0 + 40)
        #expect(escalations.map(\.target) == ["human"])
        var rebuilt = CoordinatorState(topology: topology)
        _ = rebuilt.handle(detected, now: detected.timestamp)
        let published = Event(id: "esc", origin: "coordinator", seq: 9, stream: "coordinator", type: .resolutionNeeded,
                              timestamp: t0 + 40, payload: escalations[0].payload, correlationID: escalations[0].correlationID)
        _ = rebuilt.handle(published, now: published.timestamp)
        #expect(rebuilt.conflicts.open == live.conflicts.open)
        #expect(!rebuilt.tick(now: t0 + 100).contains { $0.type == .resolutionNeeded }, "escalated once, not again")
        var forgetful = CoordinatorState(topology: topology)
        _ = forgetful.handle(detected, now: detected.timestamp)
        #expect(forgetful.tick(now: t0 + 100).contains { $0.type == .resolutionNeeded }, "without the escalation read back, it is escalated (the test can fail)")
    }

    /// A round nobody has started has no clock: it never times out, and status says it is idle.
    @Test mutating func anIdleRoundNeverTimesOut() {
        var state = CoordinatorState(topology: topology)
        #expect(state.status(now: t0 + 10)["gates"]?[0]?["state"] == "idle")
        #expect(!state.tick(now: t0 + 3600).contains { $0.type == .gateTimedOut }, "round 1 before anybody started")
        // Work starts late: the required event opens round 1, and it passes five seconds later.
        let start = 4000.0
        _ = state.handle(event("planner-1", .architectureComplete, at: start), now: t0 + start)
        var passed: [Emission] = []
        for node in ["planner-1", "builder-1", "reviewer-1"] {
            passed += state.handle(sync(node, "architecture_approval", at: start + 5), now: t0 + start + 5)
        }
        #expect(passed.map(\.type) == [.gatePassed])
        #expect(passed.first?.payload["waited_s"]?.doubleValue == 5, "counted from the opening, not from the start")
        // Round 2: nobody works on it, however long.
        for later in [60.0, 600, 86_400] {
            #expect(!state.tick(now: t0 + start + 5 + later).contains { $0.type == .gateTimedOut }, "round 2, \(later) s after the pass")
        }
        let gate = state.status(now: t0 + start + 90_000)["gates"]?[0]
        #expect(gate?["round"]?.intValue == 2)
        #expect(gate?["state"] == "idle")
        #expect(gate?["opened_at"] == .null)
        #expect(gate?["waiting_s"]?.doubleValue == 0)
    }

    /// The first report opens the round: its deadline, `waited_s` and status run from then.
    @Test mutating func theDeadlineRunsFromTheFirstReport() {
        var state = CoordinatorState(topology: topology)
        // A refused report (a round that is not the current one) does not open the round.
        #expect(state.handle(sync("builder-1", "architecture_approval", at: 900, round: 2), now: t0 + 900).map(\.type) == [.gateRejected])
        #expect(state.gates.rounds["architecture_approval"]?.isIdle == true)
        _ = state.handle(sync("builder-1", "architecture_approval", at: 1000), now: t0 + 1000)
        #expect(state.gates.rounds["architecture_approval"]?.openedAt == t0 + 1000)
        #expect(state.gates.rounds["all_builders"]?.isIdle == true, "a report opens its own gate only")
        let waiting = state.status(now: t0 + 1030)["gates"]?[0]
        #expect(waiting?["state"] == "waiting")
        #expect(waiting?["opened_at"]?.stringValue == Timestamp.format(t0 + 1000))
        #expect(waiting?["waiting_s"]?.doubleValue == 30)
        #expect(!state.tick(now: t0 + 1059).contains { $0.type == .gateTimedOut })
        let late = state.tick(now: t0 + 1060).filter { $0.type == .gateTimedOut }
        #expect(late.count == 1)
        #expect(late.first?.payload["waited_s"]?.doubleValue == 60)
        #expect(late.first?.payload["missing"] == ["planner", "reviewer"])
        #expect(state.status(now: t0 + 1061)["gates"]?[0]?["state"] == "timed_out")
    }

    /// Rebuilt from the store long after, a stored report opened its round at its own time.
    @Test mutating func aReplayedReportOpensTheRoundAtItsOwnTime() {
        let report = sync("planner-1", "architecture_approval", at: 500)
        var rebuilt = CoordinatorState(topology: topology)
        _ = rebuilt.handle(report, now: report.timestamp)
        #expect(rebuilt.gates.rounds["architecture_approval"]?.openedAt == t0 + 500)
        #expect(rebuilt.status(now: t0 + 530)["gates"]?[0]?["waiting_s"]?.doubleValue == 30)
        #expect(rebuilt.tick(now: t0 + 560).contains { $0.type == .gateTimedOut })
    }
}
