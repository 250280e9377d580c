import CECluster
import CECore
import CENode
import CEStore
import Foundation
import Synchronization
import Testing
import ZeroMQ

// What the cluster tests count: the stores read directly, every pool emitting through its
// control endpoint, every node's feed watched, and the census that compares them.

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

    /// Waits until every node's cursor for every origin reaches that origin's last sequence
    /// (read from its store when it is down for good) and every refill and replay has ended,
    /// then checks every store against every origin's: each running node holds exactly the
    /// events of its subscribed types of every line, none twice, in sequence order per line.
    /// `seconds` bounds the wait for the stores to catch up. `reloads`: what reloads of the
    /// topology changed meanwhile (nodes removed, types taken up), for what each store must hold.
    func census(streams: Streams, down: Set<String> = [], reloads: Reloads = Reloads(), seconds: Double = 90) async throws {
        let names = processes.keys.sorted()
        // A removed node hears nobody any more: what it holds of the others is not counted.
        let running = names.filter { !down.contains($0) && reloads.removed[$0] == nil }
        var behind: [String] = []
        try await eventually(seconds, "every node catches up with every origin (\(behind.joined(separator: "; ")))") {
            behind = []
            var last: [String: Int] = [:]
            var statuses: [String: JSONValue] = [:]
            for name in running {
                statuses[name] = try await status(name)
                last[name] = statuses[name]!["last_seq"]?.intValue ?? -1
            }
            for name in down {
                let store = try EventStore(directory: data(name), durability: .normal)
                last[name] = Int(try store.maxSeq(origin: name, epoch: store.epoch))
            }
            for (name, through) in reloads.removed { last[name] = Int(through) }
            for name in running {
                let status = statuses[name]!
                if let refill = status["refill"], refill != .null, refill["done"]?.boolValue != true { behind.append("\(name) refills its store") }
                for line in status["lines"]?.arrayValue ?? [] where line["replaying"]?.boolValue == true {
                    behind.append("\(name) replays \(line["origin"]?.stringValue ?? "?")'s line")
                }
                for peer in status["peers"]?.arrayValue ?? [] {
                    guard let origin = peer["name"]?.stringValue, let target = last[origin] else { continue }
                    if peer["cursor"]?.intValue != target {
                        behind.append("\(name) holds \(origin)'s line through \(peer["cursor"]?.intValue.map(String.init) ?? "nothing"), \(origin) is at \(target)")
                    }
                }
            }
            return behind.isEmpty
        }
        var checked = 0
        for origin in names {
            let sent = try storedEvents(origin, origin: origin)
            for name in running where name != origin {
                let types = Node.subscribedTypes(pool: topology.node(named: name)!.pool, topology: topology)
                let subscribed = sent.filter { types?.contains($0.type) ?? true }
                let expectation = reloads.expectation(of: name, from: origin, subscribed)
                let expected = expectation.held.map(\.id)
                let held = try storedEvents(name, origin: origin)
                let heldIDs = Set(held.map(\.id))
                let expectedIDs = Set(expected)
                let allowedIDs = expectedIDs.union(expectation.either.map(\.id))
                let missing = sent.filter { expectedIDs.contains($0.id) && !heldIDs.contains($0.id) }.map { "\($0.type.rawValue)#\($0.seq)" }
                let extra = held.filter { !allowedIDs.contains($0.id) }.map { "\($0.type.rawValue)#\($0.seq)@\($0.epoch.prefix(8))" }
                // On a mismatch, what the origin's own store holds, by epoch, to tell a
                // store that lost events from one that was replaced.
                let epochs = Dictionary(grouping: sent, by: { String($0.epoch.prefix(8)) }).mapValues(\.count)
                #expect(missing.isEmpty && extra.isEmpty, "\(name) holds \(held.count) of \(origin)'s events, expected \(expected.count): missing \(missing.prefix(10)), extra \(extra.prefix(10)); \(origin)'s store holds \(sent.count) of its own events, by epoch \(epochs)")
                #expect(held.count == heldIDs.count)
                for (epoch, events) in Dictionary(grouping: held, by: \.epoch) {
                    let seqs = events.map(\.seq)
                    #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "\(name) stored \(origin)@\(epoch)'s events out of order")
                }
                checked += held.count
            }
        }
        #expect(checked > 0)
        // Every event acknowledged to an emitter is in its origin's store with that sequence.
        for (origin, acked) in streams.acknowledged() {
            let stored = Dictionary(uniqueKeysWithValues: try storedEvents(origin, origin: origin).map { ($0.id, $0.seq) })
            let lost = acked.filter { stored[$0.key] != $0.value }
            #expect(lost.isEmpty, "\(origin) lost or renumbered \(lost.count) acknowledged events")
        }
        let doubled = streams.handedOverTwice()
        #expect(doubled.isEmpty, "handed over twice: \(doubled.prefix(5))")
        // Every type of every stream was emitted (a type the nodes refuse would leave its
        // stream empty, and the census would find nothing missing of it).
        for (origin, types) in streams.kinds.withLock({ $0 }) {
            let stored = Set(try storedEvents(origin, origin: origin).map(\.type.rawValue))
            let never = Set(types).subtracting(stored)
            #expect(never.isEmpty, "\(origin) never emitted \(never.sorted()): refused?")
        }
        print("census: \(checked) events checked across \(running.count) stores; \(streams.acknowledged().values.map(\.count).reduce(0, +)) acknowledged emits")
    }
}

/// What reloads of the topology changed while the pools emitted, as the census counts it.
struct Reloads: Sendable {
    /// Nodes removed from the topology, each with its last sequence when it was removed (its
    /// emitter paused until every node held it): the others hold its events through that one
    /// and none after it.
    var removed: [String: UInt64] = [:]
    /// Types nodes subscribed to by a reload.
    var takenUp: [TakenUp] = []

    /// Types a node subscribed to by a reload, which it takes from then on: per origin, the
    /// events of them up to `before` (the node's cursor for that origin before the reload)
    /// came earlier and are not held; those past `after` (the origin's last sequence once the
    /// reload had returned) came later and are held; in between the reload was under way.
    struct TakenUp: Sendable {
        var node: String
        var types: Set<String>
        var before: [String: UInt64]
        var after: [String: UInt64]
    }

    /// Of the events of `origin` that `node` subscribes to by the topology it runs now: those
    /// it must hold, and those it may hold or not.
    func expectation(of node: String, from origin: String, _ subscribed: [Event]) -> (held: [Event], either: [Event]) {
        var events = subscribed
        if let through = removed[origin] { events = events.filter { $0.seq <= through } }
        var either: [Event] = []
        for change in takenUp where change.node == node {
            let (before, after) = (change.before[origin] ?? 0, change.after[origin] ?? 0)
            either += events.filter { change.types.contains($0.type.rawValue) && $0.seq > before && $0.seq <= after }
            events = events.filter { !change.types.contains($0.type.rawValue) || $0.seq > after }
        }
        return (events, either)
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
        /// Emitters that skip their rounds for now, and those in the middle of one.
        let paused = Mutex<Set<String>>([])
        let busy = Mutex<Set<String>>([])
        /// The coordinator decisions each node handed over, in the order its watcher read them.
        let taken = Mutex<[Taken]>([])
    }

    /// A coordinator decision a node handed over, and when its feed watcher read it.
    struct Taken: Sendable {
        let node: String
        let event: Event
        let at: ContinuousClock.Instant
        var key: String? { Streams.decisionKey(event) }
        var term: Int? { event.payload["term"]?.intValue }
    }

    /// The event types only a coordinator publishes.
    static let decisionTypes: Set<String> = [
        "gate_passed", "gate_timed_out", "gate_rejected", "resolution_needed", "conflict_closed", "pool_up", "pool_down",
    ]

    /// What makes a decision one of a kind: a node takes each key once, whichever coordinator
    /// published it. Nil for the liveness reports, which are not keyed.
    static func decisionKey(_ event: Event) -> String? {
        let payload = event.payload
        func text(_ field: String) -> String { payload[field]?.stringValue ?? payload[field]?.intValue.map(String.init) ?? "?" }
        switch event.type.rawValue {
        case "gate_passed", "gate_timed_out": return "\(event.type.rawValue)/\(text("gate"))/\(text("round"))"
        case "resolution_needed": return "resolution_needed/\(payload["conflict_id"]?.stringValue ?? event.correlationID ?? "?")/\(text("level"))"
        case "conflict_closed": return "conflict_closed/\(payload["conflict_id"]?.stringValue ?? event.correlationID ?? "?")"
        case "gate_rejected": return "gate_rejected/\(event.correlationID ?? "?")"
        default: return nil
        }
    }
    let context: Context
    let record = Record()
    /// One emitter per streaming node; a node that joins later adds its own.
    let emitters = Mutex<[Task<Void, Never>]>([])
    /// One feed watcher per node (a task reading a SUB on its feed).
    let watchers = Mutex<[String: Task<Void, Never>]>([:])
    /// The types each emitter sends in turn.
    let kinds = Mutex<[String: [String]]>([:])
    let cluster: Cluster

    static func watch(_ name: String, cluster: Cluster, context: Context, record: Record) throws -> Task<Void, Never> {
        let feed = try context.socket(.sub)
        try feed.set(.subscribe([]))
        try feed.connect("ipc://" + cluster.data(name) + "/feed.sock")
        return Task {
            do {
                for try await message in feed.messages {
                    guard message.count == 2, let event = try? EnvelopeCodec.decode(message[1].bytes), event.origin != name else { continue }
                    record.fed.withLock { $0[name, default: [:]][event.id, default: 0] += 1 }
                    if Self.decisionTypes.contains(event.type.rawValue) {
                        let taken = Taken(node: name, event: event, at: .now)
                        record.taken.withLock { $0.append(taken) }
                    }
                }
            } catch {}
            feed.close()
        }
    }

    init(cluster: Cluster, types: [String: [String]]) throws {
        let context = try Context()
        self.context = context
        self.cluster = cluster
        let record = self.record
        for name in cluster.topology.nodes.map(\.name) {
            let watcher = try Self.watch(name, cluster: cluster, context: context, record: record)
            watchers.withLock { $0[name] = watcher }
        }
        for (name, kinds) in types { add(name, kinds) }
    }

    /// A node that joined the cluster after the streams began: its feed is watched and,
    /// with `kinds`, it emits a stream of them as the others do.
    func join(_ name: String, emitting kinds: [String]?) throws {
        let watcher = try Self.watch(name, cluster: cluster, context: context, record: record)
        watchers.withLock { $0[name] = watcher }
        if let kinds { add(name, kinds) }
    }

    /// Starts the node's emitter: a batch of two events of `kinds` in turn every 25 ms.
    private func add(_ name: String, _ kinds: [String]) {
        self.kinds.withLock { $0[name] = kinds }
        let (context, record) = (self.context, self.record)
        let endpoint = "ipc://" + cluster.data(name) + "/control.sock"
        let emitter = Task {
            var round = 0
            var socket: Socket?
            while !record.stopping.load(ordering: .relaxed) && !Task.isCancelled {
                let skip = record.paused.withLock { paused in
                    record.busy.withLock { busy in
                        if paused.contains(name) { busy.remove(name) } else { busy.insert(name) }
                    }
                    return paused.contains(name)
                }
                if skip {
                    try? await Task.sleep(for: .milliseconds(25))
                    continue
                }
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
        }
        emitters.withLock { $0.append(emitter) }
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

    /// Stops one node's emitter after the round it is in (waits until that round ended).
    func pause(_ name: String) async throws {
        record.paused.withLock { _ = $0.insert(name) }
        try await eventually(10, "\(name)'s emitter pauses") { !self.record.busy.withLock { $0.contains(name) } }
    }

    func resume(_ name: String) { record.paused.withLock { _ = $0.remove(name) } }

    /// A node whose store is replaced hands its history over again (it cannot know what its
    /// agents had): "never twice" is counted per store from here on.
    /// The node's watcher is replaced (what its old one had queued is dropped with it).
    func forget(_ name: String) async throws {
        let old = watchers.withLock { $0.removeValue(forKey: name) }
        old?.cancel()
        await old?.value
        record.fed.withLock { $0[name] = [:] }
        record.taken.withLock { $0.removeAll { $0.node == name } }
        let fresh = try Self.watch(name, cluster: cluster, context: context, record: record)
        watchers.withLock { $0[name] = fresh }
    }

    /// The coordinator decisions the nodes handed over (all of them, or those of one node).
    func taken(at node: String? = nil) -> [Taken] {
        record.taken.withLock { all in node.map { node in all.filter { $0.node == node } } ?? all }
    }

    /// How often each decision key was handed over at a node.
    func takenKeys(at node: String) -> [String: Int] {
        taken(at: node).reduce(into: [:]) { counts, taken in
            if let key = taken.key { counts[key, default: 0] += 1 }
        }
    }

    /// The first time one of `nodes` handed the decision `key` over, if any did.
    func firstTaken(_ key: String, at nodes: [String]) -> Taken? {
        taken().filter { nodes.contains($0.node) && $0.key == key }.min { $0.at < $1.at }
    }

    func handedOverTwice() -> [String] {
        record.fed.withLock { $0.flatMap { node, ids in ids.filter { $0.value > 1 }.map { "\(node): \($0.key)" } } }
    }

    func stopEmitting() async {
        record.stopping.store(true, ordering: .relaxed)
        for task in emitters.withLock({ $0 }) { await task.value }
    }

    func finish() async {
        await stopEmitting()
        for task in watchers.withLock({ Array($0.values) }) { task.cancel() }
        await context.shutdown()
    }
}
