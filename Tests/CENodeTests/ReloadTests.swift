import CECluster
import CECore
import CENode
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Live topology changes: the fault tests' coordinator and four pool nodes, and a sixth host
/// that the first topology leaves out. Every pool emits a steady stream while the topology
/// file is rewritten and the running nodes take it (`ce-node reload`, or SIGHUP): a host joins
/// with a new pool that a gate then waits for, a builder is removed, a subscription list
/// grows, broken files are refused, and nodes that have not taken the new file yet show.
/// Each ends with the census of every store (as in the fault tests, counting what the reloads
/// changed) and checks that every node that ran at the start still runs in the same process.
@Suite("Live topology changes, six hosts", .serialized)
struct ReloadTests {
    static let nodes = FaultTests.nodes
    /// The sixth host's node, in no topology until it joins.
    static let tester = Cluster.NodeDef(name: "tester-1", pool: "tester")
    static let names = nodes.map(\.name)
    /// The nodes whose pools report to gates and take the coordinator's decisions.
    static let poolNodes = ["planner-1", "builder-1", "builder-2", "reviewer-1"]
    static let plannerTypes = ["build_ready", "review_complete", "conflict_detected"]

    /// The fault tests' pools and gate; what the scenarios change is a parameter. The streams'
    /// types that no pool subscribes to by name are custom types, or the nodes would refuse them.
    static func pools(planner: [String] = plannerTypes, reviewer: Bool = true, tester: Bool = false,
                      gate: [String] = ["planner", "builder", "reviewer"], escalateAfter: Int = 60) -> String {
        """
        pools:
          planner: { subscribe: [\(planner.joined(separator: ", "))] }
          builder: { subscribe: [plan_ready, schema_v1, review_complete] }
        \(reviewer ? "  reviewer: { subscribe: all }\n" : "")  coordinator: { subscribe: all }
        \(tester ? "  tester: { subscribe: [build_ready] }\n" : "")gates:
          - { name: release, pools: [\(gate.joined(separator: ", "))] }
        conflicts:
          resolvers: [planner, human]
          escalate_after_s: \(escalateAfter)
        custom_types: [schema_v1, early_feedback, build_log, planner_note]

        """
    }

    /// Runs a scenario on the six hosts (five nodes running, the tester's host idle) with every
    /// pool streaming. `body` returns what its reloads changed for the census; then the census,
    /// and every node that ran at the start must run still as the same process.
    func scenario(_ name: String, _ body: (Cluster, Streams) async throws -> Reloads) async throws {
        try await withCluster(Self.nodes, pools: Self.pools(), settings: FaultTests.settings, namespaces: true, later: [Self.tester]) { cluster in
            print("\(name): hosts on \(cluster.hosts.mode.rawValue)\(cluster.hosts.reason.isEmpty ? "" : " (\(cluster.hosts.reason))")")
            let started = ContinuousClock.now
            let pids = cluster.processes.mapValues(\.processIdentifier)
            let streams = try Streams(cluster: cluster, types: FaultTests.streams)
            do {
                let reloads = try await body(cluster, streams)
                await streams.stopEmitting()
                try await cluster.census(streams: streams, reloads: reloads)
                try expectEveryStreamEmitted(cluster)
                expectSameProcesses(cluster, pids)
            } catch {
                cluster.keepLogs(name)
                await streams.finish()
                throw error
            }
            cluster.keepLogs(name)
            await streams.finish()
            print("\(name): \(ContinuousClock.now - started) from the start of the streams to the end of the census")
        }
    }

    // MARK: A host joins

    /// A sixth host joins with a new pool, `tester`, which the `release` gate then includes,
    /// while a round of that gate is open: the round keeps the two reports it had, waits for the
    /// tester once the other pools reported, and passes when the tester reports. The tester
    /// stores the build_ready events (the census: every one, from the beginning).
    @Test func aHostJoinsWithANewPoolAndTheOpenGateWaitsForIt() async throws {
        try await scenario("a host joins") { cluster, streams in
            try await streams.waitForEvents(100)
            try await report(cluster, "planner-1", "builder-1")
            try await eventually(10, "the coordinator holds the planner's and the builder's reports") {
                await release(cluster)?.aligned == ["builder", "planner"]
            }
            let running = cluster.processes.keys.sorted()
            try cluster.rewrite(Self.names + [Self.tester.name], pools: Self.pools(tester: true, gate: ["planner", "builder", "reviewer", "tester"]))
            for node in running {
                let (status, output) = try await reload(cluster, node)
                #expect(status == 0 && output.contains("now runs topology \(cluster.topology.digest)")
                        && output.contains("node tester-1 (pool tester") && output.contains("added"), "ce-node reload for \(node): \(output)")
                if node == "coordinator" { #expect(output.contains("gates changed: release"), "ce-node reload for the coordinator: \(output)") }
            }
            // The open round kept its reports and its number; the pool added to it must report in it.
            let kept = await release(cluster)
            #expect(kept?.round == 1 && kept?.state == "waiting" && kept?.aligned == ["builder", "planner"]
                    && kept?.missing.sorted() == ["reviewer", "tester"], "release after the reload: \(kept.map { "\($0)" } ?? "no answer")")

            try streams.join(Self.tester.name, emitting: ["quality_validated"])
            try cluster.start(Self.tester.name)
            try await cluster.waitUntilUp(Self.tester.name)
            try await cluster.waitUntilConnected(cluster.processes.keys.sorted())
            let joinedAt = try await lastSeq(cluster, "builder-1")
            // The nodes that ran before it follow its line as any other's (a cursor each), so
            // what they miss of it is noticed and replayed. Recorded, not thrown: the gate's
            // part of the scenario does not depend on it.
            do { try await waitUntilFollowed(cluster, Self.tester.name, by: running) } catch { Issue.record(error) }

            try await report(cluster, "reviewer-1")
            try await eventually(10, "the gate has every pool's report but the tester's") {
                let now = await release(cluster)
                return now?.aligned == ["builder", "planner", "reviewer"] && now?.missing == ["tester"]
            }
            let (status, output) = try await runCENode(["gates", "--topology", cluster.topologyPath, "--json"])
            let gate = (try? JSONValue(parsing: output))?.arrayValue?.first { $0["gate"]?.stringValue == "release" }
            let missing = gate?["missing"]?.arrayValue ?? []
            #expect(status == 0 && missing.count == 1 && missing.first?["pool"]?.stringValue == "tester" && missing.first?["up"]?.boolValue == true,
                    "ce-node gates --json: \(output)")
            // Three pools of four: the round stays open while the tester has not reported.
            try await holds(3, "the gate waits for the tester") { try cluster.storedEvents("coordinator", type: "gate_passed").isEmpty }

            try await report(cluster, Self.tester.name)
            // The nodes that ran before the tester joined take its events: the coordinator its
            // report, the reviewer (which takes every type) its stream too.
            try await eventually(20, "the coordinator and reviewer-1 store the tester's report and its stream") {
                try ["coordinator", "reviewer-1"].allSatisfy { node in
                    let types = Set(try cluster.storedEvents(node, origin: Self.tester.name).map(\.type.rawValue))
                    return types.isSuperset(of: ["sync_point_reached", "quality_validated"])
                }
            }
            let takers = Self.poolNodes + [Self.tester.name]
            try await eventually(20, "every pool node, the tester too, stores the pass") {
                try takers.allSatisfy { try !cluster.storedEvents($0, type: "gate_passed").isEmpty }
            }
            for node in takers {
                let passes = try cluster.storedEvents(node, type: "gate_passed").map { "\($0.payload["gate"]?.stringValue ?? "?")/\($0.payload["round"]?.intValue ?? -1)" }
                #expect(passes == ["release/1"], "\(node) stored the passes \(passes)")
            }

            try await streams.waitForMoreEvents(400)
            // The build_ready events emitted since the tester joined reach it.
            let since = try cluster.storedEvents("builder-1", origin: "builder-1", type: "build_ready").filter { $0.seq > joinedAt }
            #expect(!since.isEmpty, "builder-1 emitted no build_ready since the tester joined")
            try await eventually(30, "the tester stores builder-1's \(since.count) build_ready events emitted since it joined") {
                let held = Set(try cluster.storedEvents(Self.tester.name, origin: "builder-1", type: "build_ready").map(\.id))
                return since.allSatisfy { held.contains($0.id) }
            }
            return Reloads()
        }
    }

    // MARK: A host removed

    /// builder-2 is taken out of the topology and every other node reloads: from then on what
    /// builder-2 emits reaches nobody, it hears nobody, its handshakes are refused at every
    /// other node, and the events it emitted before stay in every subscriber's store.
    @Test func aRemovedHostIsRefusedAndItsEarlierEventsStay() async throws {
        let removed = "builder-2"
        try await scenario("builder-2 removed") { cluster, streams in
            try await streams.waitForEvents(100)
            // Its last events reach everyone before it goes, so that the line between what the
            // others hold and what they must not is its sequence at the removal.
            try await streams.pause(removed)
            let through = try await waitUntilEveryoneHolds(cluster, removed)
            let others = cluster.processes.keys.filter { $0 != removed }.sorted()
            var refusedBefore: [String: Int] = [:]
            for node in others { refusedBefore[node] = try await counter(cluster, node, "handshakes_refused") }

            try cluster.rewrite(Self.names.filter { $0 != removed }, pools: Self.pools())
            for node in others {
                let (status, output) = try await reload(cluster, node)
                #expect(status == 0 && output.contains("node \(removed) removed"), "ce-node reload for \(node): \(output)")
            }
            // The removed node itself is not in the file: it refuses to take it and runs on.
            let kept = try await digest(cluster, removed)
            let (status, output) = try await reload(cluster, removed, byData: true)
            #expect(status != 0 && output.contains("not in the new file"), "ce-node reload for \(removed): \(output)")
            #expect(try await digest(cluster, removed) == kept)

            streams.resume(removed)
            try await streams.waitForMoreEvents(400)
            try await eventually(20, "\(removed) emits past its removal") { try cluster.storedSeqs(removed, origin: removed).count > Int(through) + 20 }
            try await eventually(20, "\(removed) hears none of the others") {
                let peers = try await cluster.status(removed)["peers"]?.arrayValue ?? []
                return peers.count == others.count && peers.allSatisfy { $0["up"]?.boolValue == false }
            }
            try await waitUntilMoreRefused(cluster, since: refusedBefore, "every other node refuses \(removed)'s handshakes")
            // Its earlier events stay where they were; none of its later ones arrived.
            for node in ["planner-1", "reviewer-1", "coordinator"] {
                let seqs = try cluster.storedSeqs(node, origin: removed)
                #expect(!seqs.isEmpty && seqs.allSatisfy { $0 <= through }, "\(node) holds \(removed)'s events \(seqs.first ?? 0)...\(seqs.last ?? 0), its removal was at \(through)")
            }
            return Reloads(removed: [removed: through])
        }
    }

    // MARK: A subscription list grows

    /// The planner's pool subscribes to build_log too: the build_log events emitted after the
    /// reload reach it, those stored at their origin before it do not (the reload takes added
    /// types from then on).
    @Test func aSubscriptionListThatGrowsTakesTheAddedTypeFromThenOn() async throws {
        let planner = "planner-1", builders = ["builder-1", "builder-2"]
        try await scenario("planner takes up build_log") { cluster, streams in
            try await streams.waitForEvents(150)
            let origins = cluster.processes.keys.filter { $0 != planner }.sorted()
            let before = try await cursors(cluster, planner, of: origins)
            try cluster.rewrite(Self.names, pools: Self.pools(planner: Self.plannerTypes + ["build_log"]))
            let (status, output) = try await reload(cluster, planner)
            #expect(status == 0 && output.contains("this node's subscriptions") && output.contains("build_log"), "ce-node reload for \(planner): \(output)")
            var after: [String: UInt64] = [:]
            for origin in origins { after[origin] = try await lastSeq(cluster, origin) }
            for node in origins {
                let (status, output) = try await reload(cluster, node)
                #expect(status == 0 && output.contains("pool planner's subscriptions changed"), "ce-node reload for \(node): \(output)")
            }

            try await streams.waitForMoreEvents(400)
            for builder in builders {
                let emitted = try cluster.storedEvents(builder, origin: builder, type: "build_log")
                let later = emitted.filter { $0.seq > (after[builder] ?? 0) }
                let earlier = emitted.filter { $0.seq <= (before[builder] ?? 0) }
                #expect(!later.isEmpty && !earlier.isEmpty, "\(builder) emitted \(earlier.count) build_log events before the reload and \(later.count) after")
                try await eventually(30, "\(planner) stores the \(later.count) build_log events \(builder) emitted after the reload") {
                    let held = Set(try cluster.storedEvents(planner, origin: builder, type: "build_log").map(\.id))
                    return later.allSatisfy { held.contains($0.id) }
                }
                let fetched = try cluster.storedEvents(planner, origin: builder, type: "build_log").filter { $0.seq <= (before[builder] ?? 0) }
                #expect(fetched.isEmpty, "\(planner) holds \(fetched.count) build_log events \(builder) emitted before the reload, from #\(fetched.first?.seq ?? 0)")
            }
            return Reloads(takenUp: [.init(node: planner, types: ["build_log"], before: before, after: after)])
        }
    }

    // MARK: Broken files

    /// Files a node must not take: not YAML, values out of range, its own ports and a setting
    /// changed, itself left out. Each is refused whole with every reason, by `ce-node reload`
    /// and by SIGHUP alike; every node keeps the topology it runs and goes on exchanging
    /// events, and the good file back changes nothing.
    @Test func aBrokenTopologyIsRefusedWholeAndNothingChanges() async throws {
        try await scenario("broken topologies refused") { cluster, streams in
            try await streams.waitForEvents(100)
            let running = cluster.processes.keys.sorted()
            let digest = cluster.topology.digest
            for node in running { #expect(try await self.digest(cluster, node) == digest, "\(node) does not run the file it was started with") }
            let good = cluster.text(Self.names, pools: Self.pools())
            #expect(good == (try String(contentsOfFile: cluster.topologyPath, encoding: .utf8)))

            // Not YAML: a flow sequence left open.
            try cluster.writeTopology(good.replacingOccurrences(of: "pools:\n", with: "pools:\n  planner: { subscribe: [build_ready\n"))
            for node in running { try await expectRefused(cluster, node, keeping: digest, naming: ["invalid YAML"]) }

            // Two values out of range, both named.
            let rep = cluster.ports["builder-1"]!.rep
            try cluster.writeTopology(cluster.text(Self.names, pools: Self.pools(escalateAfter: 0), ports: ["builder-1": .init(pub: 70000, rep: rep)]))
            for node in running { try await expectRefused(cluster, node, keeping: digest, naming: ["70000", "escalate_after_s"]) }

            // The node's own ports and a setting changed: each needs a restart, both are named.
            let moved = Cluster.Ports(pub: cluster.hosts.mode == .namespaces ? 7005 : try freePort(), rep: cluster.ports["planner-1"]!.rep)
            try cluster.writeTopology(cluster.text(Self.names, pools: Self.pools(), settings: FaultTests.settings.replacingOccurrences(of: "heartbeat_ms: 200", with: "heartbeat_ms: 300"),
                                                   ports: ["planner-1": moved]))
            try await expectRefused(cluster, "planner-1", keeping: digest, naming: ["planner-1's own ports changed", "settings changed"])

            // A valid file that leaves the node out (and its pool, which has no other node).
            try cluster.writeTopology(cluster.text(Self.names.filter { $0 != "reviewer-1" }, pools: Self.pools(reviewer: false, gate: ["planner", "builder"])))
            try await expectRefused(cluster, "reviewer-1", keeping: digest, naming: ["reviewer-1, is not in the new file"])

            // SIGHUP with a broken file: the node logs why and runs on with what it has.
            try cluster.writeTopology(good.replacingOccurrences(of: "pools:\n", with: "pools:\n  planner: { subscribe: [build_ready\n"))
            let hup = "builder-1"
            kill(cluster.processes[hup]!.processIdentifier, SIGHUP)
            try await eventually(10, "\(hup) logs the refusal of the file it was signalled to take") { cluster.log(hup).contains("SIGHUP: not reloaded, \(hup) keeps running topology \(digest)") }
            #expect(try await self.digest(cluster, hup) == digest)

            // Every node goes on exchanging events: each one's cursor for every peer moves on.
            var seen: [String: [String: UInt64]] = [:]
            for node in running { seen[node] = try await cursors(cluster, node, of: running.filter { $0 != node }) }
            try await streams.waitForMoreEvents(400)
            try await eventually(30, "every node takes new events from every pool node") {
                for node in running {
                    let now = try await cursors(cluster, node, of: running.filter { $0 != node })
                    for origin in FaultTests.streams.keys where origin != node {
                        if (now[origin] ?? 0) <= (seen[node]?[origin] ?? 0) { return false }
                    }
                }
                return true
            }

            // The good file back, byte for byte: a reload finds nothing to change.
            try cluster.rewrite(Self.names, pools: Self.pools())
            #expect(cluster.topology.digest == digest)
            for node in running {
                let (status, output) = try await reload(cluster, node)
                #expect(status == 0 && output.contains("runs topology \(digest): nothing changed for it"), "ce-node reload for \(node): \(output)")
            }
            return Reloads()
        }
    }

    // MARK: Drift

    /// One node takes a new file and the others not yet: each side names the other in its
    /// status (`topology.differing`), and once the others took it too (by SIGHUP, as a service
    /// manager's reload sends) no node names any.
    @Test func nodesThatRunAnotherTopologyShowUntilEveryNodeReloaded() async throws {
        let first = "builder-1"
        try await scenario("drift") { cluster, streams in
            try await streams.waitForEvents(100)
            let running = cluster.processes.keys.sorted()
            let others = running.filter { $0 != first }
            let old = cluster.topology.digest
            try await eventually(10, "no node names another as differing") { try await differing(cluster, running).values.allSatisfy(\.isEmpty) }

            try cluster.rewrite(Self.names, pools: Self.pools(escalateAfter: 120))
            let new = cluster.topology.digest
            #expect(new != old)
            let (status, output) = try await reload(cluster, first)
            #expect(status == 0 && output.contains("now runs topology \(new)"), "ce-node reload for \(first): \(output)")
            var runs = [first: new], differs = [first: others]
            for node in others { (runs[node], differs[node]) = (old, [first]) }
            try await waitUntilTopologies(cluster, running: runs, differing: differs, "\(first) names every other node as differing, and each of them names \(first)")
            let heard = try await cluster.status("reviewer-1")["peers"]?.arrayValue?.first { $0["name"]?.stringValue == first }?["topology"]?.stringValue
            #expect(heard == new, "reviewer-1 hears \(first) run topology \(heard ?? "none"), it runs \(new)")

            for node in others { kill(cluster.processes[node]!.processIdentifier, SIGHUP) }
            try await waitUntilTopologies(cluster, running: Dictionary(uniqueKeysWithValues: running.map { ($0, new) }),
                                          differing: Dictionary(uniqueKeysWithValues: running.map { ($0, []) }), "every node runs \(new) and none names another as differing")
            for node in others { #expect(cluster.log(node).contains("(topology \(old) -> \(new))"), "\(node) logged no reload to \(new)") }
            try await streams.waitForMoreEvents(400)
            return Reloads()
        }
    }

    // MARK: Reloads, reports and what nodes say

    /// Runs `ce-node reload` for a running node, naming it by the topology file, or by its
    /// data folder when the file on disk cannot name it (a broken file, or one without it).
    func reload(_ cluster: Cluster, _ node: String, byData: Bool = false) async throws -> (status: Int32, output: String) {
        let selection = byData ? ["--data", cluster.data(node), "--node", node] : ["--topology", cluster.topologyPath, "--node", node]
        return try await runCENode(["reload"] + selection, seconds: 60)
    }

    /// Runs `ce-node reload` for a node with a file it must refuse: the command fails naming
    /// every one of `reasons`, and the node still runs the topology `digest`.
    func expectRefused(_ cluster: Cluster, _ node: String, keeping digest: String, naming reasons: [String]) async throws {
        let (status, output) = try await reload(cluster, node, byData: true)
        #expect(status != 0 && output.contains("not reloaded, \(node) keeps running topology \(digest)")
                && reasons.allSatisfy { output.contains($0) }, "ce-node reload for \(node) should name \(reasons): \(output)")
        let running = try await self.digest(cluster, node)
        #expect(running == digest, "\(node) runs topology \(running ?? "none") after refusing a file; it ran \(digest)")
    }

    /// Each pool reports to the `release` gate through the named node.
    func report(_ cluster: Cluster, _ nodes: String...) async throws {
        for node in nodes { try await cluster.emit(node, "sync_point_reached", ["gate": "release"]) }
    }

    /// The current round of the `release` gate, as the coordinator tells it; nil while it does not answer.
    struct Round: CustomStringConvertible {
        var round: Int
        var state: String
        var aligned: [String]
        var missing: [String]
        var description: String { "round \(round), \(state), aligned \(aligned), missing \(missing)" }
    }

    func release(_ cluster: Cluster) async -> Round? {
        guard let reply = try? await cluster.control("coordinator", ["cmd": "gates"], timeout: .seconds(2)),
              let gate = reply["coordinator"]?["gates"]?.arrayValue?.first(where: { $0["gate"]?.stringValue == "release" })
        else { return nil }
        return Round(round: gate["round"]?.intValue ?? -1, state: gate["state"]?.stringValue ?? "?",
                     aligned: (gate["aligned"]?.arrayValue ?? []).compactMap(\.stringValue).sorted(),
                     missing: (gate["missing"]?.arrayValue ?? []).compactMap { $0["pool"]?.stringValue })
    }

    /// Holds `condition` for `seconds`, looking every 50 ms; fails as soon as it does not hold.
    func holds(_ seconds: Double, _ what: String, _ condition: () async throws -> Bool) async throws {
        let end = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < end {
            guard try await condition() else { throw TestFailure("\(what): it stopped holding") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    func lastSeq(_ cluster: Cluster, _ node: String) async throws -> UInt64 {
        UInt64(try await cluster.status(node)["last_seq"]?.intValue ?? 0)
    }

    func digest(_ cluster: Cluster, _ node: String) async throws -> String? {
        try await cluster.status(node)["topology"]?["digest"]?.stringValue
    }

    func counter(_ cluster: Cluster, _ node: String, _ name: String) async throws -> Int {
        try await cluster.status(node)["counters"]?[name]?.intValue ?? 0
    }

    /// How far `node` holds each origin's line (its cursors); an origin it has no cursor for is left out.
    func cursors(_ cluster: Cluster, _ node: String, of origins: [String]) async throws -> [String: UInt64] {
        let peers = try await cluster.status(node)["peers"]?.arrayValue ?? []
        var cursors: [String: UInt64] = [:]
        for origin in origins {
            if let cursor = peers.first(where: { $0["name"]?.stringValue == origin })?["cursor"]?.intValue { cursors[origin] = UInt64(cursor) }
        }
        return cursors
    }

    /// The peers each node names in `topology.differing`.
    func differing(_ cluster: Cluster, _ nodes: [String]) async throws -> [String: [String]] {
        var said: [String: [String]] = [:]
        for node in nodes {
            said[node] = (try await cluster.status(node)["topology"]?["differing"]?.arrayValue ?? []).compactMap(\.stringValue).sorted()
        }
        return said
    }

    /// Waits until each node runs the topology `running` gives it and names the peers
    /// `differing` gives it as running another one.
    func waitUntilTopologies(_ cluster: Cluster, running: [String: String], differing expected: [String: [String]], _ what: String) async throws {
        var said = ""
        try await eventually(20, "\(what); they say \(said)") {
            let now = try await differing(cluster, expected.keys.sorted())
            var digests: [String: String] = [:]
            for node in running.keys { digests[node] = try await digest(cluster, node) ?? "none" }
            said = "running \(digests.sorted { $0.key < $1.key }), differing \(now.sorted { $0.key < $1.key })"
            return digests == running && now == expected
        }
    }

    /// Waits until each node of `before` counts more refused handshakes than it did then.
    func waitUntilMoreRefused(_ cluster: Cluster, since before: [String: Int], _ what: String) async throws {
        var now: [String: Int] = [:]
        try await eventually(30, "\(what) (refused handshakes before: \(before.sorted { $0.key < $1.key }), now: \(now.sorted { $0.key < $1.key }))") {
            for node in before.keys { now[node] = try await counter(cluster, node, "handshakes_refused") }
            return before.allSatisfy { now[$0.key]! > $0.value }
        }
    }

    /// Waits until each of `nodes` follows `origin`'s line: its status gives a cursor for it.
    func waitUntilFollowed(_ cluster: Cluster, _ origin: String, by nodes: [String]) async throws {
        var not: [String] = []
        try await eventually(10, "every node that ran before \(origin) joined follows its line; these have no cursor for it: \(not)") {
            not = []
            for node in nodes where try await cursors(cluster, node, of: [origin])[origin] == nil { not.append(node) }
            return not.isEmpty
        }
    }

    /// Waits until every other running node holds `origin`'s line through its last sequence; returns it.
    func waitUntilEveryoneHolds(_ cluster: Cluster, _ origin: String) async throws -> UInt64 {
        var last: UInt64 = 0
        try await eventually(30, "every node holds \(origin)'s events through #\(last)") {
            last = try await lastSeq(cluster, origin)
            for node in cluster.processes.keys where node != origin {
                if try await cursors(cluster, node, of: [origin])[origin] != last { return false }
            }
            return true
        }
        return last
    }

    /// Each stream's types are in its origin's store: a type the nodes refused would leave a
    /// stream half silent and the census would count nothing of it.
    func expectEveryStreamEmitted(_ cluster: Cluster) throws {
        for (origin, kinds) in FaultTests.streams.sorted(by: { $0.key < $1.key }) {
            let emitted = Set(try cluster.storedEvents(origin, origin: origin).map(\.type.rawValue))
            let silent = kinds.filter { !emitted.contains($0) }
            #expect(silent.isEmpty, "\(origin) emitted no \(silent)")
        }
    }

    /// Every node that ran at the start runs still, as the same process: nothing was restarted.
    func expectSameProcesses(_ cluster: Cluster, _ pids: [String: Int32]) {
        for (node, pid) in pids.sorted(by: { $0.key < $1.key }) {
            let process = cluster.processes[node]
            #expect(process?.processIdentifier == pid && process?.isRunning == true,
                    "\(node) ran as process \(pid) at the start; at the end \(process.map { "\($0.processIdentifier), \($0.isRunning ? "running" : "exited")" } ?? "none")")
        }
    }
}
