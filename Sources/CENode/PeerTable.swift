import CECore
import Foundation
import Synchronization
import ZeroMQ

/// Every peer's newest heartbeat, and the one rule for whether a peer is up: heard within
/// three heartbeat intervals. Status, the replay's choice of source, the survey, the log's
/// peer watch and the coordinators' vote all ask it here, with the time they pass in.
final class PeerTable: Sendable {
    struct Peer: Sendable {
        var pool: String
        var lastSeen: Date
        var epoch: String
        var lastSeq: UInt64
        /// What its heartbeat said of the coordinators: the highest term it knows, the
        /// coordinators it hears, and (a coordinator's) whether it is the active one.
        var term = 0
        var hears: Set<String> = []
        var role: String? = nil
        /// The digest of the topology it runs (``Topology/digest``); nil from a node that says none.
        var topology: String? = nil
        /// The sequence per event type it sent with its heartbeat, if any.
        var marks: [String: UInt64]? = nil
    }

    /// A heartbeat refused, with what the node counts and logs for it.
    enum Refusal: Error, Equatable {
        case malformed(String)
        case forged(claimed: String)
    }

    private let peers = Mutex<[String: Peer]>([:])
    /// Three heartbeat intervals, in seconds: a peer silent longer is down.
    let staleAfter: TimeInterval
    /// When the node started: peers never heard are not taken for down before three intervals.
    let startedAt: Date

    init(heartbeatMilliseconds: Int, startedAt: Date = Date()) {
        staleAfter = Double(heartbeatMilliseconds) * 3 / 1000
        self.startedAt = startedAt
    }

    /// Reads a heartbeat's body as heard at `now` from `sender` (the peer whose SUB it came on).
    static func parse(heartbeat body: [UInt8], from sender: String, at now: Date) -> Result<(origin: String, peer: Peer), Refusal> {
        guard let object = try? JSONValue(parsing: body), let origin = object["origin"]?.stringValue else {
            return .failure(.malformed("malformed heartbeat"))
        }
        guard origin == sender else { return .failure(.forged(claimed: origin)) }
        let epoch = object["epoch"]?.stringValue ?? ""
        guard epoch.isEmpty || Epoch.isValid(epoch) else { return .failure(.malformed("heartbeat with a malformed epoch")) }
        var peer = Peer(pool: object["pool"]?.stringValue ?? "?", lastSeen: now, epoch: epoch, lastSeq: UInt64(max(0, object["seq"]?.intValue ?? 0)))
        peer.term = max(0, object["term"]?.intValue ?? 0)
        peer.hears = Set((object["coordinators"]?.arrayValue ?? []).compactMap(\.stringValue))
        peer.role = object["role"]?.stringValue
        peer.topology = object["topology"]?.stringValue
        peer.marks = object["marks"].flatMap(Marks.from)
        return .success((origin, peer))
    }

    func heard(_ name: String, _ peer: Peer) { peers.withLock { $0[name] = peer } }
    func forget(_ name: String) { peers.withLock { _ = $0.removeValue(forKey: name) } }

    var all: [String: Peer] { peers.withLock { $0 } }
    subscript(name: String) -> Peer? { peers.withLock { $0[name] } }

    /// Whether `name` was heard within three heartbeat intervals of `now`.
    func isUp(_ name: String, now: Date = Date()) -> Bool {
        guard let seen = self[name]?.lastSeen else { return false }
        return now.timeIntervalSince(seen) < staleAfter
    }

    /// Whether a peer is known to be down: silent for three intervals, or never heard
    /// although this node has run that long (right after a start, peers are not down merely
    /// because none was heard yet).
    func looksDown(_ name: String, now: Date = Date()) -> Bool {
        guard let seen = self[name]?.lastSeen else { return now.timeIntervalSince(startedAt) >= staleAfter }
        return now.timeIntervalSince(seen) >= staleAfter
    }

    /// The coordinators among `names` heard within `window` seconds of `now` (`me` always).
    func heard(_ names: [String], within window: TimeInterval, me: String, now: Date = Date()) -> [String] {
        let table = all
        return names.filter { name in name == me || table[name].map { now.timeIntervalSince($0.lastSeen) < window } ?? false }
    }

    /// The peers whose newest heartbeat names another topology digest than `mine`.
    func drifting(from mine: String) -> [String] {
        peers.withLock { p in p.filter { $0.value.topology.map { $0 != mine } ?? false }.keys.sorted() }
    }
}

// Heartbeats: each interval a node tells its peers its line (epoch, last sequence, marks),
// what it knows of the coordinators and the digest of its topology; what it hears goes into
// the peer table.
extension Node {
    func heard(heartbeat message: Message, from sender: String) -> (origin: String, epoch: String, seq: UInt64, marks: [String: UInt64]?)? {
        switch PeerTable.parse(heartbeat: message[1].bytes, from: sender, at: Date()) {
        case .failure(.malformed(let why)):
            reject(why, .heartbeat)
            return nil
        case .failure(.forged(let claimed)):
            forged("heartbeat", claimed: claimed, sender: sender)
            return nil
        case .success(let (origin, peer)):
            peers.heard(origin, peer)
            // A coordinator says it is active in a newer term: believed at once (its own word).
            if peer.role == "active" { ledgers.withLock { $0.decisions.heard(active: origin, term: peer.term) } }
            return (origin, peer.epoch, peer.lastSeq, peer.marks)
        }
    }

    func heartbeatLoop(pub: Socket) async throws {
        let interval = Duration.milliseconds(topology.settings.heartbeatMilliseconds)
        let topic = Frame(Array("_hb/\(spec.name)".utf8))
        var watch = PeerWatch()
        while true {
            saveInboxMark()
            _ = try? await reloading.run { await rotateKeyIfReady() }
            for line in watch.check(self) {
                if line.warning { logger.warning("\(line.text)") } else { logger.notice("\(line.text)") }
            }
            try await publisher.sending.run {
                let (line, coordination) = (publisher.current, coordinatorWord())
                let (seq, marks) = (line.lastSeq, line.marks)
                var body: [String: JSONValue] = [
                    "origin": .string(spec.name), "pool": .string(spec.pool), "epoch": .string(store.epoch), "seq": .number(Double(seq)),
                    "marks": Marks.value(marks),
                    "timestamp": .string(Timestamp.format(Date())),
                    "topology": .string(topology.digest),
                ]
                body.merge(coordination) { a, _ in a }
                try await pub.send(Message([topic, Frame(JSONValue.object(body).serialized())]))
            }
            try await Task.sleep(for: interval)
        }
    }

    /// What this node's heartbeat says of the coordinators: the highest term it knows, the
    /// coordinators it heard within the failover time (its vote), and on a coordinator
    /// whether it is the active one.
    func coordinatorWord() -> [String: JSONValue] {
        guard !topology.coordinators.isEmpty else { return [:] }
        let failover = topology.settings.coordinatorFailoverMilliseconds
        let window = Double(failover > 0 ? failover : topology.settings.heartbeatMilliseconds * 3) / 1000
        let heard = peers.heard(topology.coordinators.map(\.name), within: window, me: spec.name)
        let (term, active) = ledgers.withLock { ($0.decisions.term, $0.decisions.active) }
        var word: [String: JSONValue] = ["term": .number(Double(term)), "coordinators": .array(heard.map(JSONValue.string))]
        if spec.isCoordinator { word["role"] = .string(active == spec.name ? "active" : "standby") }
        return word
    }
}
