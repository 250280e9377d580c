import CECore
import CECoordinator
import CENode
import Foundation
import Logging
import NIOCore
import Synchronization

/// The dashboard's picture of the cluster: every node of the topology (up or down, lag,
/// rates, counters), a timeline of events across pools, the coordinator's gates and open
/// conflicts. Fed by the nodes' HTTP servers (`/status.json` polled, `/events` followed) and,
/// when it runs inside a node, by that node directly. Updates go out through ``hub``.
public final class ClusterView: Sendable {
    public let topology: Topology
    let local: LocalNode?
    let logger: Logger
    /// Dashboard updates: `snapshot` (the whole picture) and `ev` (one event of the timeline).
    public let hub: Hub
    let state = Mutex(State())
    let pollInterval: Duration
    static let timelineLength = 400

    /// The node this view runs in, if any (the coordinator's HTTP server).
    struct LocalNode: Sendable {
        var node: Node
        var coordinator: CoordinatorService?
    }

    struct NodeState: Sendable {
        var status: JSONValue?
        var reachable = false
        var error: String?
        var coordination: JSONValue?
        var rate: (at: Date, emitted: Int, received: Int, emitRate: Double, receiveRate: Double)?
        /// Events taken from this node's `recent` list so far.
        var after = 0
    }

    struct State: Sendable {
        var nodes: [String: NodeState] = [:]
        var timeline: [JSONValue] = []
        var seen: Set<String> = []
        var seenOrder: [String] = []
    }

    public convenience init(topology: Topology, pollInterval: Duration = .seconds(1), logger: Logger = Logger(label: "ce.dashboard")) {
        self.init(topology: topology, local: nil, pollInterval: pollInterval, logger: logger)
    }

    init(topology: Topology, local: LocalNode?, pollInterval: Duration = .seconds(1), logger: Logger) {
        self.topology = topology
        self.local = local
        self.pollInterval = pollInterval
        self.logger = logger
        self.hub = Hub(buffer: 512)
    }

    // MARK: Sources

    /// Polls and follows every node until cancelled; publishes a snapshot twice a second.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for spec in topology.nodes {
                if spec.name == local?.node.spec.name {
                    group.addTask { await self.pollLocal() }
                } else if let url = spec.metricsURL {
                    group.addTask { await self.poll(spec.name, url) }
                    group.addTask { await self.follow(spec.name, url) }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    self.hub.publish(Hub.frame("snapshot", self.snapshot(timeline: false).serializedString))
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            await group.waitForAll()
        }
    }

    private func pollLocal() async {
        guard let local else { return }
        while !Task.isCancelled {
            let status = local.node.status()
            let coordination = local.coordinator?.status()
            update(local.node.spec.name) { n in
                n.reachable = true
                n.error = nil
                n.status = status
                n.coordination = coordination
            }
            try? await Task.sleep(for: pollInterval)
        }
    }

    private func poll(_ name: String, _ url: String) async {
        while !Task.isCancelled {
            let after = state.withLock { $0.nodes[name]?.after ?? 0 }
            do {
                let (status, body) = try await HTTPClient.fetch(.GET, url + "/status.json?after=\(after)")
                guard status == .ok else { throw NodeError("\(url)/status.json answered \(status.code)") }
                let value = try JSONValue(parsing: body)
                for event in value["recent"]?.arrayValue ?? [] { ingest(event) }
                update(name) { n in
                    n.reachable = true
                    n.error = nil
                    n.status = value["node"]
                    n.coordination = value["coordinator"]
                    n.after = value["taken"]?.intValue ?? n.after
                }
            } catch {
                if Task.isCancelled { return }
                update(name) { n in
                    n.reachable = false
                    n.error = "\(error)"
                }
            }
            try? await Task.sleep(for: pollInterval)
        }
    }

    /// Follows the node's `/events` stream; reconnects after a pause when it ends.
    private func follow(_ name: String, _ url: String) async {
        final class Lines: Sendable { let pending = Mutex<[UInt8]>([]) }
        while !Task.isCancelled {
            let lines = Lines()
            _ = try? await HTTPClient.request(.GET, url + "/events") { buffer in
                let frames = lines.pending.withLock { pending -> [[UInt8]] in
                    pending += buffer.readableBytesView
                    var frames: [[UInt8]] = []
                    while let end = Self.frameEnd(pending) {
                        frames.append(Array(pending[..<end]))
                        pending.removeFirst(end + 2)
                    }
                    return frames
                }
                for frame in frames {
                    for line in frame.split(separator: UInt8(ascii: "\n")) where line.starts(with: Array("data: ".utf8)) {
                        if let event = try? JSONValue(parsing: Array(line.dropFirst(6))) { self.ingest(event) }
                    }
                }
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    static func frameEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for i in 0..<(bytes.count - 1) where bytes[i] == 10 && bytes[i + 1] == 10 { return i }
        return nil
    }

    func update(_ name: String, _ body: (inout NodeState) -> Void) {
        state.withLock { s in
            var n = s.nodes[name] ?? NodeState()
            body(&n)
            if let counters = n.status?["counters"] {
                let now = Date()
                let emitted = counters["emitted"]?.intValue ?? 0, received = counters["received"]?.intValue ?? 0
                if let r = n.rate, now.timeIntervalSince(r.at) >= 0.9 {
                    let dt = now.timeIntervalSince(r.at)
                    n.rate = (now, emitted, received, Double(max(0, emitted - r.emitted)) / dt, Double(max(0, received - r.received)) / dt)
                } else if n.rate == nil {
                    n.rate = (now, emitted, received, 0, 0)
                }
            }
            s.nodes[name] = n
        }
    }

    /// Takes an event summary (from any node); each event once, by id.
    func ingest(_ event: JSONValue) {
        guard let id = event["id"]?.stringValue else { return }
        let fresh = state.withLock { s -> Bool in
            guard s.seen.insert(id).inserted else { return false }
            s.seenOrder.append(id)
            if s.seenOrder.count > 20_000 {
                for old in s.seenOrder.prefix(10_000) { s.seen.remove(old) }
                s.seenOrder.removeFirst(10_000)
            }
            s.timeline.append(event)
            if s.timeline.count > Self.timelineLength { s.timeline.removeFirst(s.timeline.count - Self.timelineLength) }
            return true
        }
        if fresh && hub.clientCount > 0 { hub.publish(Hub.frame("ev", event.serializedString)) }
    }

    /// Feeds events stored by the local node.
    func ingestLocal(_ event: Event) {
        ingest(NodeFeed.summary(event, pool: topology.node(named: event.origin)?.pool))
    }

    // MARK: The picture

    /// Everything the dashboard shows, as JSON.
    public func snapshot(timeline: Bool = true) -> JSONValue {
        let s = state.withLock { $0 }
        // Whether some node hears a node's heartbeats, and the coordinator's view of gates.
        var heardUp: Set<String> = []
        var coordination: JSONValue?
        for (name, n) in s.nodes {
            for peer in n.status?["peers"]?.arrayValue ?? [] where peer["up"]?.boolValue == true {
                if let p = peer["name"]?.stringValue { heardUp.insert(p) }
            }
            // With a standby, the active coordinator's view (the standby's follows it).
            if topology.node(named: name)?.isCoordinator == true, n.reachable, let c = n.coordination,
               coordination == nil || c["role"]?.stringValue?.hasPrefix("active") == true {
                coordination = c
            }
        }
        let nodes: [JSONValue] = topology.nodes.map { spec in
            let n = s.nodes[spec.name]
            let status = n?.status
            let counters = status?["counters"]
            let peers = status?["peers"]?.arrayValue ?? []
            let lag = peers.compactMap { p -> Int? in
                guard let last = p["last_seq"]?.intValue, let cursor = p["cursor"]?.intValue else { return nil }
                return max(0, last - cursor)
            }.max()
            let observed = spec.metricsPort != nil || spec.name == local?.node.spec.name
            var object: [String: JSONValue] = [
                "name": .string(spec.name), "pool": .string(spec.pool), "host": .string(spec.host),
                "observed": .bool(observed), "reachable": .bool(n?.reachable ?? false),
                "up": .bool((n?.reachable ?? false) || heardUp.contains(spec.name)),
            ]
            if let status, n?.reachable == true {
                object["last_seq"] = status["last_seq"] ?? .null
                object["lag"] = lag.map { .number(Double($0)) } ?? .null
                object["held"] = .number(Double(peers.compactMap { $0["waiting"]?.intValue }.reduce(0, +)))
                object["peers_up"] = .number(Double(peers.filter { $0["up"]?.boolValue == true }.count))
                object["peers"] = .number(Double(peers.count))
                for key in ["emitted", "received", "duplicates", "rejected", "replays", "replayed_in"] {
                    object[key] = counters?[key] ?? .null
                }
                if let rate = n?.rate {
                    object["emit_rate"] = .number((rate.emitRate * 10).rounded() / 10)
                    object["receive_rate"] = .number((rate.receiveRate * 10).rounded() / 10)
                }
            }
            if let error = n?.error { object["error"] = .string(error) }
            return .object(object)
        }
        var pools: [String: [String]] = [:]
        for spec in topology.nodes { pools[spec.pool, default: []].append(spec.name) }
        var out: [String: JSONValue] = [
            "cluster": .string(topology.cluster), "generated": .string(Timestamp.format(Date())),
            "nodes": .array(nodes),
            "pools": .array(pools.keys.sorted().map { ["pool": .string($0), "nodes": .array(pools[$0]!.map(JSONValue.string))] }),
            "gates": coordination?["gates"] ?? .array([]), "conflicts": coordination?["conflicts"] ?? .array([]),
            "coordinator": (coordination?["active"]?.stringValue ?? topology.coordinator?.name).map(JSONValue.string) ?? .null,
            "coordinator_reachable": .bool(coordination != nil),
            // Who decides: the term, the standby, the last takeover or handover (when, why).
            "term": coordination?["term"] ?? .null,
            "standby": topology.standby == nil ? .null : topology.coordinators.map(\.name).first { $0 != (coordination?["active"]?.stringValue ?? topology.coordinator?.name) }.map(JSONValue.string) ?? .null,
            "last_takeover": coordination?["last_takeover"] ?? .null,
            "resolvers": .array((topology.conflicts.resolvers.isEmpty ? ["human"] : topology.conflicts.resolvers).map(JSONValue.string)),
            // What the page may do: "token" (resolve, sending the token a person types in) or
            // "read_only" (no settings.http_token_file: POST /resolve is refused).
            "resolve": topology.settings.httpTokenFile == nil ? "read_only" : "token",
            "clients": .number(Double(hub.clientCount)), "dropped": .number(Double(hub.droppedCount)),
        ]
        if timeline { out["timeline"] = .array(s.timeline) }
        return .object(out)
    }

    // MARK: Acting

    /// Closes a conflict as the human resolver (what `ce-node resolve` does): through the
    /// coordinator in this process, or the coordinator's HTTP server, which is sent
    /// `authorization` (the header of the request that asked for this) to check.
    public func resolve(conflictID: String, decision: JSONValue, authorization: String? = nil) async throws -> JSONValue {
        if let local, local.node.spec.isCoordinator {
            return try await Self.resolve(on: local.node, conflictID: conflictID, decision: decision)
        }
        guard let coordinator = topology.coordinator, let url = coordinator.metricsURL else {
            throw NodeError("the topology's coordinator has no ports.metrics, so the dashboard cannot reach it to resolve")
        }
        let body: JSONValue = ["conflict_id": .string(conflictID), "decision": decision]
        let (status, reply) = try await HTTPClient.fetch(
            .POST, url + "/resolve", body: body.serialized(), headers: authorization.map { [("Authorization", $0)] } ?? [])
        let value = (try? JSONValue(parsing: reply)) ?? .null
        guard status == .ok else {
            let message = value["error"]?.stringValue ?? "the coordinator answered \(status.code)"
            // The coordinator's refusal of the request (a bad token, a bad body) is the asker's to see as it is.
            if (400..<500).contains(Int(status.code)) { throw CoordinatorRefusal(status: Int(status.code), message: message) }
            throw NodeError(message)
        }
        return value
    }

    /// The coordinator refused a request passed on to it (4xx): its status and its reason.
    struct CoordinatorRefusal: Error, CustomStringConvertible {
        let status: Int
        let message: String
        var description: String { message }
    }

    static func resolve(on node: Node, conflictID: String, decision: JSONValue) async throws -> JSONValue {
        let event = try await node.emit(
            .conflictResolved, payload: ["conflict_id": .string(conflictID), "decision": decision, "resolved_by": "human"])
        return ["ok": true, "event": ["id": .string(event.id), "seq": .number(Double(event.seq))]]
    }
}
