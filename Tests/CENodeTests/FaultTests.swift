import CECluster
import CECore
import CENode
import CEStore
import Foundation
import Synchronization
import Testing
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// The delivery guarantees under faults: a coordinator and four pool nodes, each pool
/// emitting a steady stream while a fault happens, then a census of every store: each node
/// holds exactly the events it subscribes to from every origin, in per-origin order, and
/// handed none over twice. Hosts are network namespaces where this machine allows it
/// (loopback otherwise; each test prints which). `CE_SOAK=1` makes the long variants.
@Suite("Delivery under faults, five hosts", .serialized)
struct FaultTests {
    static let soak = ProcessInfo.processInfo.environment["CE_SOAK"] == "1"

    static let nodes: [Cluster.NodeDef] = [
        .init(name: "coordinator", pool: "coordinator"),
        .init(name: "planner-1", pool: "planner"),
        .init(name: "builder-1", pool: "builder"),
        .init(name: "builder-2", pool: "builder"),
        .init(name: "reviewer-1", pool: "reviewer"),
    ]
    /// Builders and planners subscribe to some types only, so their streams have gaps that
    /// are not losses (planner_note and build_log go to reviewers and the coordinator only).
    static let pools = pools(escalateAfter: 1)

    /// The pools, gate and conflict chain of the fault tests, with a conflict's escalation delay.
    static func pools(escalateAfter seconds: Int) -> String {
        """
        pools:
          planner: { subscribe: [build_ready, review_complete, conflict_detected] }
          builder: { subscribe: [plan_ready, schema_v1, review_complete] }
          reviewer: { subscribe: all }
          coordinator: { subscribe: all }
        gates:
          - { name: release, pools: [planner, builder, reviewer] }
        conflicts:
          resolvers: [planner, human]
          escalate_after_s: \(seconds)
        custom_types: [schema_v1, early_feedback, build_log, planner_note]

        """
    }

    static let streams: [String: [String]] = [
        "planner-1": ["plan_ready", "planner_note", "schema_v1"],
        "builder-1": ["build_ready", "build_log"],
        "builder-2": ["build_log", "build_ready"],
        "reviewer-1": ["review_complete"],
    ]
    static let settings = "heartbeat_ms: 200\n  ask_timeout_ms: 1000\n  ask_retries: 1"

    /// Runs a scenario on the five hosts with every pool streaming, then takes the census.
    func scenario(_ name: String, extraNodes: [Cluster.NodeDef] = [], start: [String]? = nil, down: Set<String> = [],
                  _ body: (Cluster, Streams) async throws -> Void) async throws {
        try await withCluster(Self.nodes + extraNodes, pools: Self.pools, settings: Self.settings,
                              start: start ?? Self.nodes.map(\.name), namespaces: true) { cluster in
            print("\(name): hosts on \(cluster.hosts.mode.rawValue)\(cluster.hosts.reason.isEmpty ? "" : " (\(cluster.hosts.reason))")")
            let streams = try Streams(cluster: cluster, types: Self.streams)
            do {
                try await body(cluster, streams)
                await streams.stopEmitting()
                try await cluster.census(streams: streams, down: down, seconds: Self.soak ? 300 : 90)
            } catch {
                await streams.finish()
                throw error
            }
            await streams.finish()
        }
    }

    @Test func subscriberKilledMidStreamAndRestarted() async throws {
        try await scenario("subscriber SIGKILL") { cluster, streams in
            try await streams.waitForEvents(100)
            cluster.kill("builder-1")
            try await streams.waitForMoreEvents(150)
            try cluster.start("builder-1")
            try await cluster.waitUntilUp("builder-1")
            try await streams.waitForMoreEvents(100)
        }
    }

    @Test func publisherKilledMidStreamAndRestartedContinuesItsSequence() async throws {
        try await scenario("publisher SIGKILL") { cluster, streams in
            try await streams.waitForEvents(100)
            let before = try cluster.storedSeqs("planner-1", origin: "planner-1")
            cluster.kill("planner-1")
            try await streams.waitForMoreEvents(100)
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            try await streams.waitForMoreEvents(100)
            let after = try cluster.storedSeqs("planner-1", origin: "planner-1")
            // Nothing acknowledged was lost and no sequence was given twice: 1...n, no holes.
            #expect(after.starts(with: before))
            #expect(after == Array(1...UInt64(after.count)))
        }
    }

    @Test func partitionedHostForTenSecondsThenHealed() async throws {
        try await scenario("partition") { cluster, streams in
            try await streams.waitForEvents(100)
            let seconds = Self.soak ? 60.0 : 10.0
            if cluster.hosts.mode == .namespaces {
                try await cluster.cut("builder-2")
            } else {
                kill(cluster.processes["builder-2"]!.processIdentifier, SIGSTOP)  // no links on loopback: a frozen host
            }
            let cutAt = ContinuousClock.now
            // While cut off, the host's own pool keeps emitting (its agents write locally).
            try await eventually(seconds + 20, "the partition lasts \(seconds) s") { ContinuousClock.now - cutAt >= .seconds(seconds) }
            if cluster.hosts.mode == .namespaces {
                let peers = try await cluster.status("reviewer-1")["peers"]!.arrayValue!
                #expect(peers.first { $0["name"]?.stringValue == "builder-2" }?["up"]?.boolValue == false)
                try await cluster.heal("builder-2")
            } else {
                kill(cluster.processes["builder-2"]!.processIdentifier, SIGCONT)
            }
            try await streams.waitForMoreEvents(100)
        }
    }

    @Test func coordinatorKilledMidGateAndMidConflictThenBothComplete() async throws {
        try await scenario("coordinator SIGKILL") { cluster, streams in
            try await streams.waitForEvents(50)
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "release"])
            try await cluster.emit("builder-1", "sync_point_reached", ["gate": "release"])
            try await cluster.emit("reviewer-1", "conflict_detected", ["subject": "api", "parties": ["builder"], "description": "no tests"])
            try await eventually(10, "the coordinator opens the conflict") {
                try cluster.storedEvents("coordinator", type: "resolution_needed").count >= 1
            }
            cluster.kill("coordinator")
            try await streams.waitForMoreEvents(100)  // pools keep working while it is down
            try cluster.start("coordinator")
            try await cluster.waitUntilUp("coordinator")
            // Still open after the restart: the gate passes, the conflict escalates to the human
            // and a decision closes it.
            try await passTheGateAndCloseTheConflict(cluster, asksSeenAt: "coordinator")
        }
    }

    /// The last pool reports to the `release` gate, which every pool hears pass once; the open
    /// conflict escalates to the human (its asks read at `asksSeenAt`) and `ce-node resolve`
    /// closes it for the parties.
    func passTheGateAndCloseTheConflict(_ cluster: Cluster, asksSeenAt node: String) async throws {
        try await cluster.emit("reviewer-1", "sync_point_reached", ["gate": "release"])
        try await eventually(20, "every pool hears the gate pass") {
            try ["planner-1", "builder-1", "builder-2", "reviewer-1"].allSatisfy { try cluster.storedEvents($0, type: "gate_passed").count == 1 }
        }
        var conflictID: String?
        try await eventually(20, "the conflict escalates to the human") {
            let asks = try cluster.storedEvents(node, type: "resolution_needed")
            conflictID = asks.first { $0.payload["resolver"]?.stringValue == "human" }?.payload["conflict_id"]?.stringValue
            return conflictID != nil
        }
        _ = try await cluster.run(["resolve", conflictID!, "--decision", "add the tests", "--topology", cluster.topologyPath])
        try await eventually(20, "the parties hear the conflict closed") {
            try cluster.storedEvents("builder-1", type: "conflict_closed").count == 1
        }
    }

    @Test func subscriberFarBehindCatchesUpWhileLiveTrafficContinues() async throws {
        let behind = Self.soak ? 100_000 : 20_000
        try await scenario("\(behind) behind") { cluster, streams in
            try await streams.waitForEvents(50)
            cluster.kill("builder-2")
            // The planner emits `behind` events builders subscribe to while builder-2 is down.
            var left = behind
            while left > 0 {
                let n = min(2000, left)
                let batch: [JSONValue] = (0..<n).map { i in ["event_type": "plan_ready", "payload": ["bulk": .number(Double(i))]] }
                _ = try await cluster.control("planner-1", ["cmd": "emit", "events": .array(batch)], timeout: .seconds(60))
                left -= n
            }
            let started = ContinuousClock.now
            try cluster.start("builder-2")
            try await cluster.waitUntilUp("builder-2")
            let target = try cluster.storedEvents("planner-1", origin: "planner-1").filter { ["plan_ready", "schema_v1"].contains($0.type.rawValue) }.count
            try await eventually(Self.soak ? 600 : 120, "builder-2 catches up") {
                try cluster.storedCount("builder-2", origin: "planner-1") >= target
            }
            let d = ContinuousClock.now - started
            let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            print(String(format: "caught up on %d events in %.1f s (%.0f events/s, live traffic running)", target, seconds, Double(target) / seconds))
            let status = try await cluster.status("builder-2")
            #expect((status["counters"]?["replayed_in"]?.intValue ?? 0) >= behind)
        }
    }

    @Test func lateJoinerCatchesUpOnHistoryFromTheBeginning() async throws {
        try await scenario("late joiner", extraNodes: [.init(name: "builder-3", pool: "builder")]) { cluster, streams in
            try await streams.waitForEvents(300)
            try cluster.start("builder-3")
            try await cluster.waitUntilUp("builder-3")
            try await streams.waitForMoreEvents(100)
        }
    }

    // MARK: Lost and damaged stores

    /// The node's store, damaged while it is stopped: its WAL folded in first (opening and
    /// closing the store checkpoints it), so the damage lands on the events themselves.
    func damage(_ cluster: Cluster, _ name: String, _ how: (FileHandle, UInt64) throws -> Void) throws {
        _ = try cluster.storedCount(name, origin: name)
        let path = cluster.data(name) + "/events.sqlite"
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.uint64Value ?? 0
        #expect(size > 64 * 1024, "the store is big enough to damage in its middle (\(size) bytes)")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try how(handle, size)
        try handle.close()
    }

    /// Waits until the node is back with a new store refilled, the damaged file kept beside it.
    func expectRefilledAfterDamage(_ cluster: Cluster, _ name: String) async throws {
        do {
            try await eventually(60, "\(name) finishes its refill") {
                try await cluster.status(name)["refill"]?["done"]?.boolValue == true
            }
        } catch {
            Issue.record("\(error); the end of \(name)'s log:\n\(cluster.log(name).split(separator: "\n").suffix(30).joined(separator: "\n"))")
            throw error
        }
        let kept = try FileManager.default.contentsOfDirectory(atPath: cluster.data(name)).filter { $0.hasPrefix("events.sqlite.damaged-") }
        #expect(kept.contains { !$0.hasSuffix("-wal") && !$0.hasSuffix("-shm") }, "the damaged store is kept on disk: \(kept)")
        #expect(cluster.log(name).contains("moved it aside"))
    }

    /// Waits until every running node other than `origin` holds `origin`'s line through its last sequence.
    func waitUntilEveryoneHolds(_ cluster: Cluster, _ origin: String, except: Set<String> = []) async throws {
        try await eventually(30, "every node holds \(origin)'s events") {
            let last = try await cluster.status(origin)["last_seq"]?.intValue
            for name in cluster.processes.keys where name != origin && !except.contains(name) {
                let peers = try await cluster.status(name)["peers"]?.arrayValue ?? []
                if peers.first(where: { $0["name"]?.stringValue == origin })?["cursor"]?.intValue != last { return false }
            }
            return true
        }
    }

    /// (a) A subscriber's store overwritten in its middle while it is stopped: it is moved
    /// aside, a new store is refilled from the peers (the node's own events too).
    @Test func aStoreOverwrittenInTheMiddleIsMovedAsideAndRefilled() async throws {
        try await scenario("store overwritten") { cluster, streams in
            try await streams.waitForEvents(300)
            cluster.kill("builder-1")
            try await streams.forget("builder-1")
            try damage(cluster, "builder-1") { handle, size in
                try handle.seek(toOffset: size / 2)
                handle.write(Data(repeating: 0xA5, count: 32 * 1024))
            }
            try cluster.start("builder-1")
            try await cluster.waitUntilUp("builder-1")
            try await streams.waitForMoreEvents(100)
            try await expectRefilledAfterDamage(cluster, "builder-1")
        }
    }

    /// (b) A store truncated to half while its node is stopped.
    @Test func aTruncatedStoreIsMovedAsideAndRefilled() async throws {
        try await scenario("store truncated") { cluster, streams in
            try await streams.waitForEvents(300)
            cluster.kill("builder-2")
            try await streams.forget("builder-2")
            try damage(cluster, "builder-2") { handle, size in try handle.truncate(atOffset: size / 2) }
            try cluster.start("builder-2")
            try await cluster.waitUntilUp("builder-2")
            try await streams.waitForMoreEvents(100)
            try await expectRefilledAfterDamage(cluster, "builder-2")
        }
    }

    /// (c) An origin's store deleted while every peer is cut off from it; it starts again
    /// still cut off and emits (a new epoch, from sequence 1), then the cut heals: every peer
    /// holds both lines, and the origin gets its earlier events back.
    @Test func anOriginWipedWhileCutOffEmitsInANewEpoch() async throws {
        try await scenario("origin wiped while cut off") { cluster, streams in
            try await streams.waitForEvents(200)
            // What it acknowledged before the cut reaches its peers (a store lost with events
            // only it held loses them: that is what copies on other hosts are for).
            try await streams.pause("planner-1")
            try await waitUntilEveryoneHolds(cluster, "planner-1")
            let oldEpoch = try await cluster.status("planner-1")["epoch"]!.stringValue!
            if cluster.hosts.mode == .namespaces { try await cluster.cut("planner-1") }
            cluster.kill("planner-1")
            try await streams.forget("planner-1")
            try FileManager.default.removeItem(atPath: cluster.data("planner-1"))
            try cluster.restoreKey("planner-1")
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            streams.resume("planner-1")
            try await streams.waitForMoreEvents(150)
            let status = try await cluster.status("planner-1")
            #expect(status["epoch"]?.stringValue != oldEpoch)
            if cluster.hosts.mode == .namespaces { try await cluster.heal("planner-1") }
            try await streams.waitForMoreEvents(100)
            try await eventually(60, "planner-1 has its earlier events back") {
                try cluster.storedEvents("planner-1", origin: "planner-1").contains { $0.epoch == oldEpoch }
            }
        }
    }

    /// (d) An origin killed for good while a subscriber that missed its last events is cut
    /// off: once healed, the subscriber catches up from the peers that hold them.
    @Test func aSubscriberCatchesUpOnAnOriginThatIsGoneFromItsPeers() async throws {
        try await scenario("origin gone for good", down: ["planner-1"]) { cluster, streams in
            try await streams.waitForEvents(100)
            if cluster.hosts.mode == .namespaces {
                try await cluster.cut("builder-2")
            } else {
                kill(cluster.processes["builder-2"]!.processIdentifier, SIGSTOP)
            }
            try await streams.waitForMoreEvents(150)  // builder-2 misses these
            try await streams.pause("planner-1")
            try await waitUntilEveryoneHolds(cluster, "planner-1", except: ["builder-2"])
            cluster.kill("planner-1")  // for good: its host is gone
            if cluster.hosts.mode == .namespaces {
                try await cluster.heal("builder-2")
            } else {
                kill(cluster.processes["builder-2"]!.processIdentifier, SIGCONT)
            }
            try await streams.waitForMoreEvents(50)
            let target = try cluster.storedEvents("planner-1", origin: "planner-1").filter { ["plan_ready", "schema_v1"].contains($0.type.rawValue) }.count
            try await eventually(60, "builder-2 holds every planner-1 event it subscribes to") {
                try cluster.storedCount("builder-2", origin: "planner-1") >= target
            }
        }
    }

    /// (e) The coordinator's disk lost mid-gate and mid-conflict, and it is started on another
    /// host: it refills from the pools and rebuilds its gates and conflicts from their copies;
    /// the gate passes once, the conflict escalates and closes, and no decision is published twice.
    @Test func theCoordinatorRebuildsFromThePoolsOnANewHost() async throws {
        try await scenario("coordinator rebuilt on a new host") { cluster, streams in
            try await streams.waitForEvents(50)
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "release"])
            try await cluster.emit("builder-1", "sync_point_reached", ["gate": "release"])
            try await cluster.emit("reviewer-1", "conflict_detected", ["subject": "api", "parties": ["builder"], "description": "no tests"])
            try await eventually(10, "the conflict is opened and every pool holds the decision") {
                try ["planner-1", "builder-1", "builder-2", "reviewer-1"].allSatisfy { try cluster.storedEvents($0, type: "resolution_needed").count == 1 }
            }
            try await waitUntilEveryoneHolds(cluster, "coordinator")
            cluster.kill("coordinator")
            try await streams.forget("coordinator")
            try FileManager.default.removeItem(atPath: cluster.data("coordinator"))  // the disk is gone
            let hosts = cluster.hosts
            try await offThePool { try hosts.replace("coordinator") }  // another machine takes its address
            try cluster.restoreKey("coordinator")
            try cluster.start("coordinator")
            try await cluster.waitUntilUp("coordinator")
            try await eventually(60, "the coordinator rebuilds from the pools") { cluster.log("coordinator").contains("rebuilt from the pools' copies") }
            var gates: JSONValue = .null
            try await eventually(30, "the coordinator answers gates") {
                gates = (try? await cluster.control("coordinator", ["cmd": "gates"])) ?? .null  // an error while it rebuilds
                return gates["ok"]?.boolValue == true
            }
            let release = gates["coordinator"]?["gates"]?.arrayValue?.first { $0["gate"]?.stringValue == "release" }
            #expect(release?["aligned"]?.arrayValue?.compactMap(\.stringValue).sorted() == ["builder", "planner"], "the gate's reports came back")
            try await passTheGateAndCloseTheConflict(cluster, asksSeenAt: "reviewer-1")
            // No decision went out twice: one level-0 ask, one escalation, one pass.
            let asks = try cluster.storedEvents("reviewer-1", type: "resolution_needed").map { $0.payload["level"]?.intValue ?? -1 }
            #expect(asks.sorted() == [0, 1], "resolution_needed levels published: \(asks)")
            #expect(try cluster.storedEvents("reviewer-1", type: "gate_passed").count == 1)
        }
    }
}
