import CECore
import Foundation
import Synchronization

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
    let heartbeatMilliseconds: Int
    /// When the node started: peers never heard are not taken for down before three intervals.
    let startedAt: Date

    init(heartbeatMilliseconds: Int, startedAt: Date = Date()) {
        self.heartbeatMilliseconds = heartbeatMilliseconds
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
