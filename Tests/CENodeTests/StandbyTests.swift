import CECluster
import CECore
import CENode
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The standby coordinator: a coordinator and its standby beside four pool nodes, every pool
/// emitting a steady stream while the active coordinator is killed, cut off, or hands its role
/// over; then the census of every store (as in the fault tests) and of the decisions each pool
/// node handed over: every (gate, round) and (conflict, level) exactly once.
///
/// Each fault runs twice: with failover on, where the property must hold, and with failover
/// off (`coordinator_failover_ms: 0`), where it must not: without the standby acting, the
/// same measurement shows the pipeline stuck, so the property is the standby's doing.
@Suite("Standby coordinator, six hosts", .serialized)
struct StandbyTests {
    static let nodes: [Cluster.NodeDef] = [
        .init(name: "coordinator", pool: "coordinator"),
        .init(name: "coordinator-2", pool: "coordinator"),
        .init(name: "planner-1", pool: "planner"),
        .init(name: "builder-1", pool: "builder"),
        .init(name: "builder-2", pool: "builder"),
        .init(name: "reviewer-1", pool: "reviewer"),
    ]
    /// The nodes that vote on a takeover and whose hand-overs the census counts.
    static let poolNodes = ["planner-1", "builder-1", "builder-2", "reviewer-1"]
    /// `coordinator_failover_ms` when failover is on.
    static let failover = 2000
    /// How soon after the active coordinator dies a decision that is due must be made.
    static let bound = Duration.milliseconds(failover + 1000)
    /// How long past the bound a run keeps looking before it says "not made".
    static let grace = Duration.seconds(3)

    static func settings(failover: Bool) -> String {
        FaultTests.settings + "\n  coordinator_failover_ms: \(failover ? Self.failover : 0)"
    }

    /// The fault tests' pools, with the escalation delay of the scenario.
    static func pools(escalateAfter seconds: Int) -> String { FaultTests.pools(escalateAfter: seconds) }

    /// Runs a scenario on the six hosts with every pool streaming. `body` returns what it
    /// measured and the decision keys every pool node must have handed over; then the census
    /// of the stores and of the decisions.
    func scenario<T>(_ name: String, failover: Bool, escalateAfter: Int = 60,
                     _ body: (Cluster, Streams) async throws -> (measured: T, decided: [String])) async throws -> T {
        var measured: T?
        let label = "\(name), failover \(failover ? "\(Self.failover) ms" : "off")"
        try await withCluster(Self.nodes, pools: Self.pools(escalateAfter: escalateAfter), settings: Self.settings(failover: failover),
                              namespaces: true) { cluster in
            print("\(label): hosts on \(cluster.hosts.mode.rawValue)\(cluster.hosts.reason.isEmpty ? "" : " (\(cluster.hosts.reason))")")
            let streams = try Streams(cluster: cluster, types: FaultTests.streams)
            do {
                // Both coordinators agree who acts before anything is asked of them.
                try await expectRoles(cluster, active: "coordinator", term: 0)
                let run = try await body(cluster, streams)
                measured = run.measured
                await streams.stopEmitting()
                try await cluster.census(streams: streams)
                await expectEachDecisionOnce(streams, run.decided)
            } catch {
                keepLogs(cluster, label)
                await streams.finish()
                throw error
            }
            keepLogs(cluster, label)
            await streams.finish()
        }
        return measured!
    }

    // MARK: The active coordinator killed after two of three reports

    /// Kills the active coordinator once two of the gate's three pools reported (and both
    /// coordinators hold those reports); the third reports right after the kill. Returns how
    /// long after the kill a pool node took the pass, if one did within the bound and the grace.
    func killAfterTwoReports(failover: Bool) async throws -> Duration? {
        try await scenario("kill -9 mid-gate", failover: failover) { cluster, streams in
            try await streams.waitForEvents(50)
            try await report(cluster, "planner-1", "builder-1")
            try await eventually(10, "both coordinators hold the two reports") {
                let first = await aligned(cluster, "coordinator"), second = await aligned(cluster, "coordinator-2")
                return first == ["builder", "planner"] && second == ["builder", "planner"]
            }
            cluster.kill("coordinator")
            let killed = ContinuousClock.now
            try await report(cluster, "reviewer-1")
            let passed = try await firstTaken("gate_passed/release/1", streams, within: Self.bound + Self.grace, since: killed)
            if failover, let passed {
                #expect(passed.event.origin == "coordinator-2" && passed.term == 1,
                        "the pass came from \(passed.event.origin) in term \(passed.term.map(String.init) ?? "none")")
                let first = streams.taken().filter { Self.poolNodes.contains($0.node) && $0.event.origin == "coordinator-2" && $0.at > killed }
                if let at = first.map(\.at).min() { print("failover: kill -> first decision \(milliseconds(at - killed)) ms") }
            }
            try await restartTheKilled(cluster, failover: failover)
            return (passed.map { $0.at - killed }, ["gate_passed/release/1"])
        }
    }

    @Test func activeKilledAfterTwoReportsTheStandbyPassesTheGateOnceInTime() async throws {
        let passed = try await killAfterTwoReports(failover: true)
        #expect(passed.map { $0 <= Self.bound } == true,
                "the gate passed \(describe(passed)) after the kill; the bound is the failover time + 1 s = \(milliseconds(Self.bound)) ms")
    }

    @Test func activeKilledAfterTwoReportsWithoutFailoverTheGateWaits() async throws {
        let passed = try await killAfterTwoReports(failover: false)
        #expect(passed == nil, "with failover off the gate passed \(describe(passed)) after its coordinator was killed")
    }

    // MARK: The active coordinator killed with an escalation due

    /// Opens a conflict (escalation after 3 s), kills the active coordinator as soon as every
    /// pool node took the first ask. Returns how long after the kill a pool node took the
    /// escalation, if one did before it was due plus the bound and the grace.
    func killBeforeAnEscalation(failover: Bool) async throws -> Duration? {
        let escalateAfter = 3
        return try await scenario("kill -9 before an escalation", failover: failover, escalateAfter: escalateAfter) { cluster, streams in
            try await streams.waitForEvents(50)
            let conflict = try await openConflict(cluster, streams)
            try await eventually(10, "the standby holds the open conflict") { await openConflicts(cluster, "coordinator-2").contains(conflict) }
            cluster.kill("coordinator")
            let killed = ContinuousClock.now
            let escalated = try await firstTaken(
                "resolution_needed/\(conflict)/1", streams, within: .seconds(escalateAfter) + Self.bound + Self.grace, since: killed)
            if failover, let escalated {
                #expect(escalated.event.origin == "coordinator-2" && escalated.term == 1,
                        "the escalation came from \(escalated.event.origin) in term \(escalated.term.map(String.init) ?? "none")")
                // What was due is done when it is due, not sooner: the timer survived the takeover.
                if let asked = streams.firstTaken("resolution_needed/\(conflict)/0", at: Self.poolNodes) {
                    let waited = escalated.event.timestamp.timeIntervalSince(asked.event.timestamp)
                    #expect(waited >= Double(escalateAfter) - 0.05, "escalated \(waited) s after the first ask, due after \(escalateAfter) s")
                }
            }
            try await restartTheKilled(cluster, failover: failover)
            // Overdue by now if it was not made: the coordinator that acts makes it once.
            try await waitUntilTaken("resolution_needed/\(conflict)/1", streams)
            try await resolve(conflict, cluster, streams, through: failover ? "coordinator-2" : "coordinator")
            return (escalated.map { $0.at - killed },
                    ["resolution_needed/\(conflict)/0", "resolution_needed/\(conflict)/1", "conflict_closed/\(conflict)"])
        }
    }

    @Test func activeKilledWithAnEscalationDueTheStandbyEscalatesOnce() async throws {
        let escalated = try await killBeforeAnEscalation(failover: true)
        #expect(escalated != nil, "no pool node took the escalation while the killed coordinator was down")
    }

    @Test func activeKilledWithAnEscalationDueWithoutFailoverNothingEscalates() async throws {
        let escalated = try await killBeforeAnEscalation(failover: false)
        #expect(escalated == nil, "with failover off the conflict escalated \(describe(escalated)) after its coordinator was killed")
    }

    // MARK: The two coordinators cut off from each other only

    /// What the run with the coordinators cut off from each other saw.
    struct SplitBrain {
        /// The highest term any node knew at the end of the cut, and the takeover claims stored anywhere.
        var term: Int
        var claims: Int
        /// Decisions the standby published during the cut.
        var byStandby: Int
        /// How long after the active one was then killed (still cut off) a pool node took the next pass.
        var passedAfterKill: Duration?
    }

    /// Cuts the link between the two coordinators for three failover times while a gate
    /// round, an ask and its escalation fall due; the pools hear both, so the standby must not
    /// take over. Then the active one is killed (the link still cut): the pools hear it down
    /// too, and the standby must take over and pass the next round. That second half tells a
    /// standby held back by the pools' vote from one that would never act.
    func coordinatorsCutFromEachOther(failover: Bool) async throws -> SplitBrain {
        try await scenario("coordinators cut from each other", failover: failover, escalateAfter: 2) { cluster, streams in
            try #require(cluster.hosts.mode == .namespaces, "a cut between two hosts needs network namespaces (\(cluster.hosts.reason))")
            try await streams.waitForEvents(50)
            try await cluster.cutLink("coordinator", "coordinator-2")
            let cut = ContinuousClock.now
            try await report(cluster, "planner-1", "builder-1", "reviewer-1")
            let conflict = try await openConflict(cluster, streams)
            try await waitUntilTaken("gate_passed/release/1", streams)
            try await waitUntilTaken("resolution_needed/\(conflict)/1", streams)
            // Long enough for a takeover to have happened three times over.
            let hold = Duration.milliseconds(3 * Self.failover)
            try await eventually(30, "the cut lasts \(milliseconds(hold)) ms") { ContinuousClock.now - cut >= hold }
            // The cut holds between the two coordinators only.
            #expect(try await hears(cluster, "coordinator-2", "coordinator") == false, "the standby still hears the active one through the cut")
            #expect(try await hears(cluster, "coordinator", "coordinator-2") == false, "the active one still hears the standby through the cut")
            for node in Self.poolNodes {
                let active = try await hears(cluster, node, "coordinator"), standby = try await hears(cluster, node, "coordinator-2")
                #expect(active == true && standby == true, "\(node) does not hear both coordinators")
            }
            var split = SplitBrain(term: 0, claims: 0, byStandby: 0)
            for node in cluster.processes.keys.sorted() {
                split.term = max(split.term, try await view(cluster, node).term)
                split.claims = max(split.claims, try cluster.storedEvents(node, type: "coordinator_active").count)
            }
            split.byStandby = try cluster.storedEvents("coordinator-2", origin: "coordinator-2")
                .filter { Streams.decisionTypes.contains($0.type.rawValue) }.count

            try await report(cluster, "planner-1", "builder-1")
            try await eventually(10, "the standby holds the two reports") { await aligned(cluster, "coordinator-2") == ["builder", "planner"] }
            cluster.kill("coordinator")
            let killed = ContinuousClock.now
            try await report(cluster, "reviewer-1")
            let passed = try await firstTaken("gate_passed/release/2", streams, within: Self.bound + Self.grace, since: killed)
            split.passedAfterKill = passed.map { $0.at - killed }
            try await cluster.healLink("coordinator", "coordinator-2")
            try await restartTheKilled(cluster, failover: failover)
            try await resolve(conflict, cluster, streams, through: failover ? "coordinator-2" : "coordinator")
            return (split, ["gate_passed/release/1", "gate_passed/release/2", "resolution_needed/\(conflict)/0",
                            "resolution_needed/\(conflict)/1", "conflict_closed/\(conflict)"])
        }
    }

    @Test(.enabled(if: Hosts.linksCanBeCut, "a cut between two hosts needs network namespaces and iptables"))
    func coordinatorsCutFromEachOtherNoTakeoverUntilThePoolsHearTheActiveDown() async throws {
        let split = try await coordinatorsCutFromEachOther(failover: true)
        #expect(split.term == 0 && split.claims == 0, "a takeover while the pools heard the active one: term \(split.term), \(split.claims) claims")
        #expect(split.byStandby == 0, "the standby published \(split.byStandby) decisions while the active one was deciding")
        #expect(split.passedAfterKill.map { $0 <= Self.bound } == true,
                "once the active one was killed, the next round passed \(describe(split.passedAfterKill)) after the kill")
    }

    @Test(.enabled(if: Hosts.linksCanBeCut, "a cut between two hosts needs network namespaces and iptables"))
    func coordinatorsCutFromEachOtherWithoutFailoverTheStandbyNeverActs() async throws {
        let split = try await coordinatorsCutFromEachOther(failover: false)
        #expect(split.term == 0 && split.claims == 0 && split.byStandby == 0)
        #expect(split.passedAfterKill == nil, "with failover off the next round passed \(describe(split.passedAfterKill)) after the kill")
    }

    // MARK: The active coordinator cut off from everyone

    /// What the run with the active coordinator cut off saw while it was cut off.
    struct CutOff {
        /// The highest term the pool nodes knew.
        var term: Int
        var passed: Bool
        var escalated: Bool
        /// Escalations the cut-off one published itself (a coordinator that hears no majority holds them).
        var escalatedByTheCutOff: Int
    }

    /// Passes a gate round and opens a conflict (escalation after 4 s), then cuts the active
    /// coordinator's host off everyone (on loopback: freezes it) and starts the next round.
    /// The standby must take over, pass the round and escalate when due; at heal the old one
    /// must step down, leaving every decision made once.
    func activeCutOff(failover: Bool) async throws -> CutOff {
        try await scenario("active cut off", failover: failover, escalateAfter: 4) { cluster, streams in
            try await streams.waitForEvents(50)
            try await report(cluster, "planner-1", "builder-1", "reviewer-1")
            try await waitUntilTaken("gate_passed/release/1", streams)
            let conflict = try await openConflict(cluster, streams)
            try await cutOff(cluster, "coordinator")
            let cut = ContinuousClock.now
            try await report(cluster, "planner-1", "builder-1", "reviewer-1")
            let passed = try await firstTaken("gate_passed/release/2", streams, within: Self.bound + Self.grace, since: cut)
            let escalated = try await firstTaken(
                "resolution_needed/\(conflict)/1", streams, within: .seconds(4) + Self.bound + Self.grace, since: cut)
            var term = 0
            for node in Self.poolNodes {
                term = max(term, try await view(cluster, node).term)
                #expect(try await hears(cluster, node, "coordinator") == false, "\(node) still hears the coordinator that was cut off")
            }
            try await reconnect(cluster, "coordinator")
            // At heal the old one hears the newer term and steps down (with failover off it
            // was never replaced, and goes on deciding).
            try await expectRoles(cluster, active: failover ? "coordinator-2" : "coordinator", term: failover ? 1 : 0)
            if failover {
                // The new active one says when and from whom it took over.
                let takeover = try await cluster.control("coordinator-2", ["cmd": "gates"])["coordinator"]?["last_takeover"]
                #expect(takeover?["from"]?.stringValue == "coordinator" && takeover?["to"]?.stringValue == "coordinator-2"
                        && takeover?["term"]?.intValue == 1, "last_takeover: \(takeover.map { "\($0)" } ?? "none")")
            }
            try await waitUntilTaken("resolution_needed/\(conflict)/1", streams)
            try await resolve(conflict, cluster, streams, through: failover ? "coordinator-2" : "coordinator")
            let byTheCutOff = try cluster.storedEvents("coordinator", origin: "coordinator", type: "resolution_needed")
                .filter { $0.payload["level"]?.intValue == 1 }.count
            return (CutOff(term: term, passed: passed != nil, escalated: escalated != nil, escalatedByTheCutOff: byTheCutOff),
                    ["gate_passed/release/1", "gate_passed/release/2", "resolution_needed/\(conflict)/0",
                     "resolution_needed/\(conflict)/1", "conflict_closed/\(conflict)"])
        }
    }

    @Test func activeCutOffTheStandbyTakesOverAndTheOldOneStepsDownAtHeal() async throws {
        let cut = try await activeCutOff(failover: true)
        #expect(cut.term == 1, "the pool nodes knew term \(cut.term) while the active one was cut off")
        #expect(cut.passed, "the gate round did not pass while the active one was cut off")
        #expect(cut.escalated, "the conflict did not escalate while the active one was cut off")
        #expect(cut.escalatedByTheCutOff == 0, "the cut-off coordinator escalated too, \(cut.escalatedByTheCutOff) times")
    }

    @Test func activeCutOffWithoutFailoverNothingIsDecidedUntilHeal() async throws {
        let cut = try await activeCutOff(failover: false)
        #expect(cut.term == 0)
        #expect(!cut.passed, "with failover off the gate round passed while its coordinator was cut off")
        #expect(!cut.escalated, "with failover off the conflict escalated while its coordinator was cut off")
        // Alone in charge, it escalated on its own side of the cut: the pools took that at heal.
        #expect(cut.escalatedByTheCutOff == 1)
    }

    // MARK: Handover under load

    /// Runs twelve gate rounds back to back, with a conflict waiting to escalate, and hands
    /// the active role over (`ce-node coordinator handover`) once three rounds have passed.
    ///
    /// No failover-off variant: a handover is the operator's move and works with failover off,
    /// so that run would hold the same property. The test can still fail: a round lost or
    /// decided twice fails the census, and the later rounds must come from the new active
    /// coordinator in term 1.
    @Test func handoverUnderLoadLosesNoDecisionAndDoublesNone() async throws {
        let rounds = 12
        let last: Streams.Taken? = try await scenario("handover under load", failover: true, escalateAfter: 3) { cluster, streams in
            try await streams.waitForEvents(50)
            // Asked of the standby, a handover is refused and nothing moves.
            var refusal: String?
            do { _ = try await cluster.control("coordinator-2", ["cmd": "handover"]) } catch { refusal = "\(error)" }
            #expect(refusal != nil, "the standby agreed to hand over a role it does not have")
            try await expectRoles(cluster, active: "coordinator", term: 0)
            let conflict = try await openConflict(cluster, streams)
            let handover = try await withThrowingTaskGroup(of: (status: Int32, output: String)?.self) { group in
                group.addTask {
                    for round in 1...rounds {
                        try await report(cluster, "planner-1", "builder-1", "reviewer-1")
                        try await waitUntilTaken("gate_passed/release/\(round)", streams)
                    }
                    return nil
                }
                group.addTask {
                    try await waitUntilTaken("gate_passed/release/3", streams, seconds: 60)
                    return try await runCENode(["coordinator", "handover", "--topology", cluster.topologyPath, "--node", "coordinator"], seconds: 60)
                }
                var handover: (status: Int32, output: String)?
                for try await result in group { if let result { handover = result } }
                return handover!
            }
            #expect(handover.status == 0 && handover.output.contains("coordinator-2"), "ce-node coordinator handover: \(handover.output)")
            try await expectRoles(cluster, active: "coordinator-2", term: 1)
            for node in Self.poolNodes {
                let known = try await view(cluster, node)
                #expect(known.term == 1 && known.active == "coordinator-2", "\(node) knows term \(known.term), active \(known.active ?? "none")")
            }
            try await waitUntilTaken("resolution_needed/\(conflict)/1", streams)
            try await resolve(conflict, cluster, streams, through: "coordinator-2")
            let keys = (1...rounds).map { "gate_passed/release/\($0)" }
                + ["resolution_needed/\(conflict)/0", "resolution_needed/\(conflict)/1", "conflict_closed/\(conflict)"]
            return (streams.firstTaken("gate_passed/release/\(rounds)", at: Self.poolNodes), keys)
        }
        #expect(last?.event.origin == "coordinator-2" && last?.term == 1,
                "the last round was passed by \(last?.event.origin ?? "nobody") in term \(last?.term.map(String.init) ?? "none")")
    }

    // MARK: Reports, decisions and roles

    /// Each pool reports to the `release` gate through the named node.
    func report(_ cluster: Cluster, _ nodes: String...) async throws {
        for node in nodes { try await cluster.emit(node, "sync_point_reached", ["gate": "release"]) }
    }

    /// Opens a conflict and waits until every pool node took the first ask; returns its id.
    func openConflict(_ cluster: Cluster, _ streams: Streams) async throws -> String {
        try await cluster.emit("reviewer-1", "conflict_detected", ["subject": "api", "parties": ["builder"], "description": "no tests"])
        var conflict: String?
        try await eventually(10, "every pool node takes the conflict's first ask") {
            let asks = Self.poolNodes.map { node in streams.taken(at: node).first { $0.event.type.rawValue == "resolution_needed" } }
            conflict = asks.first??.event.payload["conflict_id"]?.stringValue
            return conflict != nil && asks.allSatisfy { $0 != nil }
        }
        return conflict!
    }

    /// Closes the conflict as a human would, through the named coordinator's node, and waits
    /// until every pool node took the close.
    func resolve(_ conflict: String, _ cluster: Cluster, _ streams: Streams, through coordinator: String) async throws {
        let (status, output) = try await runCENode(["resolve", conflict, "--decision", "add the tests", "--data", cluster.data(coordinator)])
        #expect(status == 0, "ce-node resolve: \(output)")
        try await waitUntilTaken("conflict_closed/\(conflict)", streams)
    }

    /// Waits until every pool node handed the decision `key` over.
    func waitUntilTaken(_ key: String, _ streams: Streams, seconds: Double = 20) async throws {
        try await eventually(seconds, "every pool node hands over \(key)") {
            Self.poolNodes.allSatisfy { streams.takenKeys(at: $0)[key] != nil }
        }
    }

    /// Waits until a pool node hands the decision `key` over, until `within` after `since`;
    /// nil if none did by then (so a run where it must not happen watches the whole time).
    func firstTaken(_ key: String, _ streams: Streams, within: Duration, since: ContinuousClock.Instant) async throws -> Streams.Taken? {
        let deadline = since + within
        while ContinuousClock.now < deadline {
            if let taken = streams.firstTaken(key, at: Self.poolNodes) { return taken }
            try await Task.sleep(for: .milliseconds(20))
        }
        return streams.firstTaken(key, at: Self.poolNodes)
    }

    /// Every pool node handed each decision key over at most once, and each of `decided` once.
    func expectEachDecisionOnce(_ streams: Streams, _ decided: [String]) async {
        // The census waited for the stores; a feed trails its store by a moment.
        try? await eventually(10, "every pool node hands over \(decided)") {
            Self.poolNodes.allSatisfy { node in
                let keys = streams.takenKeys(at: node)
                return decided.allSatisfy { keys[$0] != nil }
            }
        }
        for node in Self.poolNodes {
            let keys = streams.takenKeys(at: node)
            let twice = keys.filter { $0.value > 1 }
            #expect(twice.isEmpty, "\(node) handed decisions over more than once: \(twice)")
            let missing = decided.filter { keys[$0] == nil }
            #expect(missing.isEmpty, "\(node) never handed over \(missing); it handed over \(keys.keys.sorted())")
        }
        print("decisions: \(decided.count) each handed over once at each of \(Self.poolNodes.count) pool nodes")
    }

    /// Starts the killed coordinator again and waits for the roles to settle: after a
    /// takeover it must come back as the standby of the newer term, else as the active one.
    func restartTheKilled(_ cluster: Cluster, failover: Bool) async throws {
        try cluster.start("coordinator")
        try await cluster.waitUntilUp("coordinator")
        try await expectRoles(cluster, active: failover ? "coordinator-2" : "coordinator", term: failover ? 1 : 0)
    }

    /// Waits until `active` says it is the active coordinator and the other one that it is
    /// the standby, both in `term` (their `gates` replies).
    func expectRoles(_ cluster: Cluster, active: String, term: Int, seconds: Double = 30) async throws {
        let standby = active == "coordinator" ? "coordinator-2" : "coordinator"
        var said = ""
        try await eventually(seconds, "\(active) is active and \(standby) its standby in term \(term); they say \(said)") {
            let a = await role(cluster, active), s = await role(cluster, standby)
            said = "\(active): \(a.map { "\($0.role), term \($0.term)" } ?? "no answer"); \(standby): \(s.map { "\($0.role), term \($0.term)" } ?? "no answer")"
            return a?.role == "active" && a?.term == term && s?.role == "standby" && s?.term == term
        }
    }

    /// A coordinator's word on its role and term; nil while it does not answer.
    func role(_ cluster: Cluster, _ coordinator: String) async -> (role: String, term: Int)? {
        guard let reply = try? await cluster.control(coordinator, ["cmd": "gates"], timeout: .seconds(2)),
              let role = reply["coordinator"]?["role"]?.stringValue, let term = reply["coordinator"]?["term"]?.intValue
        else { return nil }
        return (role, term)
    }

    /// The term and the active coordinator as a node knows them (its `status`).
    func view(_ cluster: Cluster, _ node: String) async throws -> (term: Int, active: String?) {
        let known = try await cluster.status(node)["coordinator"]
        return (known?["term"]?.intValue ?? -1, known?["active"]?.stringValue)
    }

    /// Whether `node` hears `peer` (its status says the peer is up); nil if it does not know it.
    func hears(_ cluster: Cluster, _ node: String, _ peer: String) async throws -> Bool? {
        let peers = try await cluster.status(node)["peers"]?.arrayValue ?? []
        return peers.first { $0["name"]?.stringValue == peer }?["up"]?.boolValue
    }

    /// The pools a coordinator holds reports from for the current round of `release`.
    func aligned(_ cluster: Cluster, _ coordinator: String) async -> [String] {
        let reply = try? await cluster.control(coordinator, ["cmd": "gates"], timeout: .seconds(2))
        let release = reply?["coordinator"]?["gates"]?.arrayValue?.first { $0["gate"]?.stringValue == "release" }
        return release?["aligned"]?.arrayValue?.compactMap(\.stringValue).sorted() ?? []
    }

    /// The ids of the conflicts a coordinator holds open.
    func openConflicts(_ cluster: Cluster, _ coordinator: String) async -> [String] {
        let reply = try? await cluster.control(coordinator, ["cmd": "gates"], timeout: .seconds(2))
        return (reply?["coordinator"]?["conflicts"]?.arrayValue ?? []).compactMap { $0["conflict_id"]?.stringValue }
    }

    /// Cuts the node's host off everyone; on loopback, where there are no links, freezes its process.
    func cutOff(_ cluster: Cluster, _ node: String) async throws {
        if cluster.hosts.mode == .namespaces {
            try await cluster.cut(node)
        } else {
            kill(cluster.processes[node]!.processIdentifier, SIGSTOP)
        }
    }

    func reconnect(_ cluster: Cluster, _ node: String) async throws {
        if cluster.hosts.mode == .namespaces {
            try await cluster.heal(node)
        } else {
            kill(cluster.processes[node]!.processIdentifier, SIGCONT)
        }
    }

    /// With `CE_KEEP_LOGS` naming a folder, each run's node logs and topology are copied there
    /// (the cluster's own folder is removed when it is torn down).
    func keepLogs(_ cluster: Cluster, _ label: String) {
        guard let folder = ProcessInfo.processInfo.environment["CE_KEEP_LOGS"] else { return }
        let run = folder + "/" + String(label.map { $0.isLetter || $0.isNumber ? $0 : "-" })
        try? FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        for name in cluster.processes.keys { try? cluster.log(name).write(toFile: run + "/\(name).log", atomically: true, encoding: .utf8) }
        try? FileManager.default.removeItem(atPath: run + "/topology.yaml")
        try? FileManager.default.copyItem(atPath: cluster.topologyPath, toPath: run + "/topology.yaml")
    }

    func describe(_ duration: Duration?) -> String { duration.map { "\(milliseconds($0)) ms" } ?? "never" }

    func milliseconds(_ duration: Duration) -> Int {
        Int(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000)
    }
}
