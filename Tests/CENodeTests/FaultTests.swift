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
    static let pools = """
        pools:
          planner: { subscribe: [build_ready, review_complete, conflict_detected] }
          builder: { subscribe: [plan_ready, schema_v1, review_complete] }
          reviewer: { subscribe: all }
          coordinator: { subscribe: all }
        gates:
          - { name: release, pools: [planner, builder, reviewer] }
        conflicts:
          resolvers: [planner, human]
          escalate_after_s: 1

        """
    static let streams: [String: [String]] = [
        "planner-1": ["plan_ready", "planner_note", "schema_v1"],
        "builder-1": ["build_ready", "build_log"],
        "builder-2": ["build_log", "build_ready"],
        "reviewer-1": ["review_complete"],
    ]
    static let settings = "heartbeat_ms: 200\n  ask_timeout_ms: 1000\n  ask_retries: 1"

    /// Runs a scenario on the five hosts with every pool streaming, then takes the census.
    func scenario(_ name: String, extraNodes: [Cluster.NodeDef] = [], start: [String]? = nil,
                  _ body: (Cluster, Streams) async throws -> Void) async throws {
        try await withCluster(Self.nodes + extraNodes, pools: Self.pools, settings: Self.settings,
                              start: start ?? Self.nodes.map(\.name), namespaces: true) { cluster in
            print("\(name): hosts on \(cluster.hosts.mode.rawValue)\(cluster.hosts.reason.isEmpty ? "" : " (\(cluster.hosts.reason))")")
            let streams = try Streams(cluster: cluster, types: Self.streams)
            do {
                try await body(cluster, streams)
                await streams.stopEmitting()
                try await census(cluster, streams: streams)
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
                try cluster.hosts.cut("builder-2")
            } else {
                kill(cluster.processes["builder-2"]!.processIdentifier, SIGSTOP)  // no links on loopback: a frozen host
            }
            let cutAt = ContinuousClock.now
            // While cut off, the host's own pool keeps emitting (its agents write locally).
            try await eventually(seconds + 20, "the partition lasts \(seconds) s") { ContinuousClock.now - cutAt >= .seconds(seconds) }
            if cluster.hosts.mode == .namespaces {
                let peers = try await cluster.status("reviewer-1")["peers"]!.arrayValue!
                #expect(peers.first { $0["name"]?.stringValue == "builder-2" }?["up"]?.boolValue == false)
                try cluster.hosts.heal("builder-2")
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
            try await cluster.emit("reviewer-1", "sync_point_reached", ["gate": "release"])
            try await eventually(20, "every pool hears the gate pass") {
                try ["planner-1", "builder-1", "builder-2", "reviewer-1"].allSatisfy { try cluster.storedEvents($0, type: "gate_passed").count == 1 }
            }
            // Still open after the restart: it escalates to the human; a decision closes it.
            var conflictID: String?
            try await eventually(20, "the conflict escalates to the human") {
                let asks = try cluster.storedEvents("coordinator", type: "resolution_needed")
                conflictID = asks.first { $0.payload["resolver"]?.stringValue == "human" }?.payload["conflict_id"]?.stringValue
                return conflictID != nil
            }
            _ = try cluster.run(["resolve", conflictID!, "--decision", "add the tests", "--topology", cluster.topologyPath])
            try await eventually(20, "the parties hear the conflict closed") {
                try cluster.storedEvents("builder-1", type: "conflict_closed").count == 1
            }
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

    /// Waits until every node's cursor for every origin reaches that origin's last sequence,
    /// then checks every store against every origin's.
    func census(_ cluster: Cluster, streams: Streams) async throws {
        let names = cluster.processes.keys.sorted()
        try await eventually(Self.soak ? 300 : 60, "every node catches up with every origin") {
            var last: [String: Int] = [:]
            for name in names { last[name] = try await cluster.status(name)["last_seq"]?.intValue ?? -1 }
            for name in names {
                for peer in try await cluster.status(name)["peers"]?.arrayValue ?? [] {
                    guard let origin = peer["name"]?.stringValue, let target = last[origin] else { continue }
                    if peer["cursor"]?.intValue != target { return false }
                }
            }
            return true
        }
        var checked = 0
        for origin in names {
            let sent = try cluster.storedEvents(origin, origin: origin)
            for name in names where name != origin {
                let types = Node.subscribedTypes(pool: cluster.topology.node(named: name)!.pool, topology: cluster.topology)
                let expected = sent.filter { types?.contains($0.type) ?? true }.map(\.id)
                let held = try cluster.storedEvents(name, origin: origin)
                let heldIDs = Set(held.map(\.id))
                let expectedIDs = Set(expected)
                let missing = sent.filter { expectedIDs.contains($0.id) && !heldIDs.contains($0.id) }.map { "\($0.type.rawValue)#\($0.seq)" }
                let extra = held.filter { !expectedIDs.contains($0.id) }.map { "\($0.type.rawValue)#\($0.seq)" }
                #expect(missing.isEmpty && extra.isEmpty, "\(name) holds \(held.count) of \(origin)'s events, expected \(expected.count): missing \(missing.prefix(10)), extra \(extra.prefix(10))")
                #expect(held.count == Set(held.map(\.id)).count)
                let seqs = held.map(\.seq)
                #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "\(name) stored \(origin)'s events out of order")
                checked += held.count
            }
        }
        #expect(checked > 0)
        // Every event acknowledged to an emitter is in its origin's store with that sequence.
        for (origin, acked) in streams.acknowledged() {
            let stored = Dictionary(uniqueKeysWithValues: try cluster.storedEvents(origin, origin: origin).map { ($0.id, $0.seq) })
            let lost = acked.filter { stored[$0.key] != $0.value }
            #expect(lost.isEmpty, "\(origin) lost or renumbered \(lost.count) acknowledged events")
        }
        let doubled = streams.handedOverTwice()
        #expect(doubled.isEmpty, "handed over twice: \(doubled.prefix(5))")
        print("census: \(checked) events checked across \(names.count) stores; \(streams.acknowledged().values.map(\.count).reduce(0, +)) acknowledged emits")
    }
}

extension Cluster {
    func storedEvents(_ name: String, origin: String? = nil, type: String? = nil) throws -> [Event] {
        let store = try EventStore(directory: data(name), durability: .normal)
        var query = EventQuery()
        query.origin = origin
        query.type = type
        query.limit = 10_000_000
        return try store.events(query).map { try $0.decoded() }
    }

    func storedCount(_ name: String, origin: String) throws -> Int {
        var query = EventQuery()
        query.origin = origin
        return try EventStore(directory: data(name), durability: .normal).count(query)
    }

    func storedSeqs(_ name: String, origin: String) throws -> [UInt64] {
        try storedEvents(name, origin: origin).map(\.seq)
    }
}

/// Every pool node emitting a steady stream through its control endpoint (a batch of two
/// events every 25 ms), and every node's feed watched: what was acknowledged, what each
/// node handed over.
final class Streams: Sendable {
    /// What the emitters and the feed watchers saw.
    final class Record: Sendable {
        let acked = Mutex<[String: [String: UInt64]]>([:])
        let fed = Mutex<[String: [String: Int]]>([:])
        let stopping = Atomic<Bool>(false)
    }
    let context: Context
    let record = Record()
    let emitters: [Task<Void, Never>]
    let watchers: [Task<Void, Never>]

    init(cluster: Cluster, types: [String: [String]]) throws {
        let context = try Context()
        self.context = context
        let record = self.record
        var watchers: [Task<Void, Never>] = []
        for name in cluster.topology.nodes.map(\.name) {
            let feed = try context.socket(.sub)
            try feed.set(.subscribe([]))
            try feed.connect("ipc://" + cluster.data(name) + "/feed.sock")
            watchers.append(Task {
                do {
                    for try await message in feed.messages {
                        guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes), event.origin != name else { continue }
                        record.fed.withLock { $0[name, default: [:]][event.id, default: 0] += 1 }
                    }
                } catch {}
            })
        }
        self.watchers = watchers
        var emitters: [Task<Void, Never>] = []
        for (name, kinds) in types {
            let endpoint = "ipc://" + cluster.data(name) + "/control.sock"
            emitters.append(Task {
                var round = 0
                var socket: Socket?
                while !record.stopping.load(ordering: .relaxed) && !Task.isCancelled {
                    round += 1
                    let batch: [JSONValue] = (0..<2).map { i in
                        ["event_type": .string(kinds[(round * 2 + i) % kinds.count]), "payload": ["round": .number(Double(round))]]
                    }
                    do {
                        if socket == nil {
                            let fresh = try context.socket(.req)
                            try fresh.set(.linger(milliseconds: 0))
                            try fresh.connect(endpoint)
                            socket = fresh
                        }
                        try await socket!.send(Message(JSONValue.object(["cmd": "emit", "events": .array(batch)]).serialized()))
                        let reply = try JSONValue(parsing: try await socket!.receive(timeout: .seconds(2))[0].bytes)
                        for event in reply["events"]?.arrayValue ?? [] {
                            if let id = event["id"]?.stringValue, let seq = event["seq"]?.intValue {
                                record.acked.withLock { $0[name, default: [:]][id] = UInt64(seq) }
                            }
                        }
                    } catch {
                        socket?.close()  // the node is down: a fresh socket once it is back
                        socket = nil
                    }
                    try? await Task.sleep(for: .milliseconds(25))
                }
                socket?.close()
            })
        }
        self.emitters = emitters
    }

    var count: Int { record.acked.withLock { $0.values.map(\.count).reduce(0, +) } }

    func waitForEvents(_ n: Int) async throws {
        try await eventually(60, "the pools emit \(n) events") { self.count >= n }
    }

    func waitForMoreEvents(_ n: Int) async throws {
        let target = count + n
        try await eventually(60, "the pools emit \(n) more events") { self.count >= target }
    }

    func acknowledged() -> [String: [String: UInt64]] { record.acked.withLock { $0 } }

    func handedOverTwice() -> [String] {
        record.fed.withLock { $0.flatMap { node, ids in ids.filter { $0.value > 1 }.map { "\(node): \($0.key)" } } }
    }

    func stopEmitting() async {
        record.stopping.store(true, ordering: .relaxed)
        for task in emitters { await task.value }
    }

    func finish() async {
        await stopEmitting()
        for task in watchers { task.cancel() }
        await context.shutdown()
    }
}
