import CECore
import CECoordinator
import Foundation

// What `ce-node status` shows: every figure read from the part that keeps it (the tally's
// counters, which the metrics count too; the peer table; the delivery state; the ledgers).

extension Node {
    /// The node's state as JSON: peers, subscriptions, counters, endpoints.
    public func status() -> JSONValue {
        let (counters, heardPeers, lastSeq) = (tally.snapshot, peers.all, publisher.lastSeq)
        let delivery = intake.state.withLock { $0 }
        let now = Date()
        let peerList: [JSONValue] = topology.peers(of: spec.name).map { node in
            let heard = heardPeers[node.name]
            var object: [String: JSONValue] = ["name": .string(node.name), "pool": .string(node.pool), "endpoint": .string(node.pubEndpoint)]
            if let heard {
                let age = now.timeIntervalSince(heard.lastSeen)
                object["topology"] = heard.topology.map(JSONValue.string) ?? .null
                object["last_heard_ms"] = .number((age * 1000).rounded())
                object["last_seq"] = .number(Double(heard.lastSeq))
                object["epoch"] = .string(heard.epoch)
                object["up"] = .bool(peers.isUp(node.name, now: now))
            } else {
                object["up"] = false
            }
            if let epoch = delivery.current[node.name], let track = delivery.tracks[Line(node.name, epoch)] {
                object["cursor"] = track.cursor.map { .number(Double($0)) } ?? .null
                object["waiting"] = .number(Double(track.pending.count))
                object["replaying"] = .bool(track.replaying)
            }
            return .object(object)
        }
        // Every line held here (an origin's events in one epoch), and how far the peers that
        // answered the last survey hold it.
        let holders = delivery.holders
        var lineList: [JSONValue] = [["origin": .string(spec.name), "epoch": .string(store.epoch), "through": .number(Double(lastSeq)), "current": true]]
        for (line, track) in delivery.tracks.sorted(by: { $0.key < $1.key }) {
            var object: [String: JSONValue] = [
                "origin": .string(line.origin), "epoch": .string(line.epoch), "through": track.cursor.map { .number(Double($0)) } ?? .null,
                "current": .bool(delivery.current[line.origin] == line.epoch), "replaying": .bool(track.replaying),
            ]
            if let byPeer = holders[line] { object["held_by"] = .object(byPeer.mapValues { .number(Double($0)) }) }
            lineList.append(.object(object))
        }
        let r = delivery.refill
        let refillStatus: JSONValue = r.wanted ? [
            "done": .bool(r.done), "events": .number(Double(r.events)), "lines": .number(Double(r.lines.count)),
            "peers_answered": .number(Double(r.answered.count)),
        ] : .null
        let subscriptions: JSONValue = topology.subscriptions(forPool: spec.pool).map { .array($0.map { .string($0.rawValue) }) } ?? "all"
        return [
            "node": .string(spec.name), "pool": .string(spec.pool), "epoch": .string(store.epoch), "last_seq": .number(Double(lastSeq)),
            "subscriptions": subscriptions, "peers": .array(peerList), "lines": .array(lineList), "refill": refillStatus,
            "counters": [
                "emitted": .number(Double(counters.emitted)), "received": .number(Double(counters.received)),
                "duplicates": .number(Double(counters.duplicates)), "rejected": .number(Double(counters.rejected)),
                "questions_answered": .number(Double(counters.questionsAnswered)),
                "repeated_questions": .number(Double(counters.repeatedQuestions)),
                "asks_sent": .number(Double(counters.asksSent)), "asks_failed": .number(Double(counters.asksFailed)),
                "listener_drops": .number(Double(counters.listenerDrops)),
                "replays": .number(Double(counters.replays)), "replay_requests": .number(Double(counters.replayRequests)),
                "replayed_in": .number(Double(counters.replayedIn)), "replayed_out": .number(Double(counters.replayedOut)),
                "pending_dropped": .number(Double(counters.pendingDropped)),
                "live_pauses": .number(Double(counters.livePauses)), "skipped": .number(Double(counters.skipped)),
                "forged": .number(Double(counters.forged)), "handshakes_refused": .number(Double(counters.handshakesRefused)),
                "decisions_dropped": .number(Double(counters.decisionsDropped)),
            ],
            "coordinator": coordinatorStatus(),
            "topology": [
                "file": .string(topology.file), "digest": .string(topology.digest),
                "differing": .array(driftingPeers().map(JSONValue.string)),
            ],
            "endpoints": [
                "pub": .string(spec.bindPubEndpoint), "rep": .string(spec.bindRepEndpoint),
                "control": .string(controlEndpoint), "feed": .string(feedEndpoint),
            ],
            "store": .string(NodePaths(dataDirectory: options.dataDirectory).store),
            "index": indexStatus(),
            "security": .string(topology.settings.security.rawValue),
            "key": keyStatus(),
        ]
    }

    /// The CURVE key this node uses, the next one the topology names, and whom a rotation
    /// waits for (peers not yet running this topology). Null without CURVE.
    func keyStatus() -> JSONValue {
        guard let inUse = security.keys?.publicKey else { return .null }
        let next = topology.node(named: spec.name)?.nextPublicKey
        let waiting = rotation.withLock { $0.waitingFor }
        return [
            "public_key": .string(inUse), "next_public_key": next.map(JSONValue.string) ?? .null,
            "rotation": next == nil || next == inUse ? .null : .array((waiting ?? []).map(JSONValue.string)),
        ]
    }

    /// Who decides, as this node knows it: the term, the active coordinator, and the last
    /// takeover or handover (when, why). Null without a coordinator section.
    func coordinatorStatus() -> JSONValue {
        guard !topology.coordinators.isEmpty else { return .null }
        let d = ledgers.withLock { $0.decisions }
        return [
            "term": .number(Double(d.term)), "active": d.active.map(JSONValue.string) ?? .null,
            "since": d.lastClaim.map { .string(Timestamp.format($0.at)) } ?? .null,
            "reason": d.lastClaim.map { .string($0.reason) } ?? .null,
            "previous": d.lastClaim?.previous.map(JSONValue.string) ?? .null,
            "standby": topology.standby.map { .string($0.name) } ?? .null,
        ]
    }

    /// The peers whose newest heartbeat names another topology than this node runs.
    public func driftingPeers() -> [String] {
        peers.drifting(from: topology.digest)
    }

    /// What a peer's newest heartbeat said of the coordinators, and when it was heard.
    public struct PeerWord: Sendable {
        public var at: Date
        public var term: Int
        /// The coordinators it heard within the failover time.
        public var hears: Set<String>
        /// A coordinator's: "active" or "standby".
        public var role: String?
    }

    /// Every peer's newest heartbeat, by name (a coordinator's election reads them).
    public var peerWords: [String: PeerWord] {
        peers.all.mapValues { PeerWord(at: $0.lastSeen, term: $0.term, hears: $0.hears, role: $0.role) }
    }

    /// The coordinators' term and the active one, as this node's ledger says.
    public var coordinatorTerm: (term: Int, active: String?, lastClaim: DecisionLedger.Claim?) {
        ledgers.withLock { ($0.decisions.term, $0.decisions.active, $0.decisions.lastClaim) }
    }

    /// Whether a decision with this key was taken here.
    public func decided(_ key: String) -> Bool { ledgers.withLock { $0.decisions.taken.contains(key) } }

    /// How far this node holds an origin's current line (its last stored sequence there).
    public func held(origin: String) -> (epoch: String, seq: UInt64)? {
        intake.state.withLock { d in
            d.current[origin].flatMap { epoch in d.tracks[Line(origin, epoch)]?.cursor.map { (epoch, $0) } }
        }
    }

    /// How far the store's index file (by type, by stream) has read the event table; queries
    /// read the rest from the event table, so this is about speed, never about answers.
    func indexStatus() -> JSONValue {
        var index: [String: JSONValue] = ["read_up_to": .number(Double(store.indexedUpTo))]
        if let last = try? store.lastRowID() { index["stored_up_to"] = .number(Double(last)) }
        if let failure = store.indexFailure { index["error"] = .string(failure) }
        return .object(index)
    }
}
