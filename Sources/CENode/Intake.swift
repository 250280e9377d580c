import CECore
import CEStore
import Foundation
import Synchronization
import ZeroMQ

/// Where a node starts on an origin it holds nothing from (a new node, a node added to the
/// topology, an origin that is new to it): the origin's first event, its next live event,
/// an origin sequence, or the first event stamped at or after a time.
public enum CatchUp: Sendable, Equatable, CustomStringConvertible {
    case beginning, now
    case sequence(UInt64)
    case time(Date)

    /// `beginning`, `now`, a sequence number, or a timestamp (`2026-11-25T08:00:00Z`).
    public init(parsing text: String) throws(NodeError) {
        switch text {
        case "beginning": self = .beginning
        case "now": self = .now
        default:
            if let seq = UInt64(text) {
                self = .sequence(seq)
            } else if let date = Timestamp.parse(text) {
                self = .time(date)
            } else {
                throw NodeError("catch-up point \"\(text)\" is not beginning, now, a sequence number or a timestamp like 2026-11-25T08:00:00Z")
            }
        }
    }

    public var description: String {
        switch self {
        case .beginning: "beginning"
        case .now: "now"
        case .sequence(let seq): "\(seq)"
        case .time(let date): Timestamp.format(date)
        }
    }
}

/// The subscriber side of the delivery guarantees: per origin, a cursor (every event of a
/// subscribed type with a sequence up to it is stored here), live events that arrived
/// ahead of a gap, and whether a replay is under way. Events are stored and handed over
/// (feed, in-process listeners, event folder) by one holder of `turn` at a time, in
/// per-origin sequence order, each once.
final class Intake: Sendable {
    /// Live events held back behind a gap, per origin; beyond it they are dropped and
    /// come back by replay, so a stalled subscriber never holds more than this.
    static let maxPending = 10_000
    /// And at most this many envelope bytes.
    static let maxPendingBytes = 16 << 20

    struct Held: Sendable {
        var event: Event
        var envelope: [UInt8]
        var marks: [String: UInt64]?
    }

    struct Track: Sendable {
        /// nil: not decided yet (catch-up `now`, before the first contact).
        var cursor: UInt64?
        var since: Date?
        var pending: [Held] = []
        var pendingBytes = 0
        var replaying = false
        var again = false
        /// The origin was heard with a sequence below the cursor (said once in the log).
        var regressed = false
    }

    struct State: Sendable {
        var tracks: [String: Track] = [:]
        /// Cursors moved without storing an event (a heartbeat showed nothing was missed).
        /// Saved with the next events, or on their own at most every few seconds: losing
        /// them costs only a replay that finds nothing.
        var unsaved: [String: UInt64] = [:]
        var lastSaved = ContinuousClock.now
    }

    let state = Mutex(State())
    let turn = AsyncLock()
    /// The types this node subscribes to; nil: all.
    let types: Set<String>?
    /// Origins to replay from, for the node's replay loop.
    let replayRequests = BatchQueue<String>()

    init(types: [EventType]?) {
        self.types = types.map { Set($0.map(\.rawValue)) }
    }

    func subscribes(_ type: String) -> Bool { types?.contains(type) ?? true }

    /// True when nothing this node subscribes to was sent by the origin between `cursor`
    /// and this event: `marks` is the origin's last sequence per type before it.
    func nothingMissed(before seq: UInt64, marks: [String: UInt64]?, cursor: UInt64) -> Bool {
        if seq == cursor + 1 { return true }
        guard let marks else { return false }
        for (type, last) in marks where last > cursor && subscribes(type) { return false }
        return true
    }
}

/// A lock for async code: one holder at a time, others wait their turn in order.
final class AsyncLock: Sendable {
    private struct State {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func run<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { s -> Bool in
                if !s.held {
                    s.held = true
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.held = false
                return nil
            }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

extension Node {
    /// Cursors from the store; origins it has none for start at the catch-up point.
    func loadCursors() throws {
        let saved = try store.cursors()
        let stored = try store.origins()
        var tracks: [String: Intake.Track] = [:]
        for peer in topology.peers(of: spec.name) {
            var track = Intake.Track()
            if let cursor = saved[peer.name] ?? stored[peer.name] {
                track.cursor = cursor
            } else {
                switch options.catchUp {
                case .beginning: track.cursor = 0
                case .now: track.cursor = nil
                case .sequence(let seq): track.cursor = seq
                case .time(let date):
                    track.cursor = 0
                    track.since = date
                }
            }
            tracks[peer.name] = track
        }
        intake.state.withLock { $0.tracks = tracks }
    }

    /// A batch from the SUB socket: heartbeats, then events in the order they came.
    func takeLive(_ batch: [Message], feed: Socket) async throws {
        try await intake.turn.run {
            var arrivals: [Intake.Held] = []
            var accepted: [Intake.Held] = []
            var heartbeats: [(origin: String, seq: UInt64, marks: [String: UInt64]?)] = []
            var duplicates = 0
            var dropped = 0
            var wanted: Set<String> = []
            var regressions: [(String, UInt64, UInt64)] = []
            for message in batch {
                if message.count == 2, message[0].bytes.starts(with: Array("_hb/".utf8)) {
                    if let beat = heard(heartbeat: message) { heartbeats.append(beat) }
                    continue
                }
                guard message.count == 2 || message.count == 3 else {
                    reject("expected 2 or 3 frames (topic, envelope, marks), got \(message.count)", .frames)
                    continue
                }
                let event: Event
                do {
                    event = try EnvelopeCodec.decode(topic: message[0].bytes, body: message[1].bytes)
                } catch {
                    reject("\(error)", .envelope)
                    continue
                }
                if event.origin == spec.name {
                    reject("event \(event.id) claims this node (\(spec.name)) as its origin", .ownOrigin)
                    continue
                }
                let marks = message.count == 3 ? Self.parseMarks(message[2].bytes) : nil
                arrivals.append(Intake.Held(event: event, envelope: message[1].bytes, marks: marks))
            }
            // One pass under the lock for the whole batch: events first, then heartbeats.
            intake.state.withLock { s in
                for held in arrivals {
                    let event = held.event
                    guard var track = s.tracks[event.origin] else {
                        accepted.append(held)  // an origin outside the topology: no sequence to follow
                        continue
                    }
                    if track.cursor == nil { track.cursor = event.seq - 1 }  // catch-up "now": start here
                    let cursor = track.cursor!
                    if event.seq <= cursor {
                        duplicates += 1
                    } else if !track.pending.isEmpty || track.replaying
                        || !intake.nothingMissed(before: event.seq, marks: held.marks, cursor: cursor)
                    {
                        if track.pending.count < Intake.maxPending && track.pendingBytes + held.envelope.count <= Intake.maxPendingBytes {
                            track.pending.append(held)
                            track.pendingBytes += held.envelope.count
                        } else {
                            dropped += 1
                            track.again = true
                        }
                        wanted.insert(event.origin)
                    } else {
                        track.cursor = event.seq
                        accepted.append(held)
                    }
                    s.tracks[event.origin] = track
                }
                // A heartbeat follows the origin's events on the same connection: if it shows
                // an event this node subscribes to beyond the cursor, that event was lost.
                for beat in heartbeats {
                    guard var track = s.tracks[beat.origin] else { continue }
                    defer { s.tracks[beat.origin] = track }
                    guard let cursor = track.cursor else {
                        track.cursor = beat.seq  // catch-up "now": from the origin's next event
                        s.unsaved[beat.origin] = beat.seq
                        continue
                    }
                    if beat.seq < cursor && !track.regressed {
                        track.regressed = true
                        regressions.append((beat.origin, beat.seq, cursor))
                    }
                    guard beat.seq > cursor, track.pending.isEmpty, !track.replaying else { continue }
                    if let marks = beat.marks, !marks.contains(where: { $0.value > cursor && intake.subscribes($0.key) }) {
                        track.cursor = beat.seq
                        s.unsaved[beat.origin] = beat.seq
                    } else {
                        wanted.insert(beat.origin)
                    }
                }
            }
            state.withLock { s in
                s.counters.duplicates += duplicates
                s.counters.pendingDropped += dropped
            }
            metrics.duplicates.increment(by: duplicates)
            metrics.pendingDropped.increment(by: dropped)
            for (origin, seq, cursor) in regressions {
                logger.error("""
                    \(origin) says its last sequence is \(seq), but this node holds its events up to \(cursor): \
                    its store was replaced while no peer could tell it where it was; its events \(seq + 1)...\(cursor) \
                    will be refused here as already held
                    """)
            }
            try await storeAndHandOver(accepted, feed: feed)
            for origin in wanted { startReplay(of: origin, feed: feed) }
        }
    }

    /// Stores events (with the cursors they move, in one transaction) and hands the new ones
    /// over to the feed, listeners and the event folder.
    func storeAndHandOver(_ held: [Intake.Held], feed: Socket) async throws {
        // The cursors of the origins these events come from (already moved past them, and
        // perhaps further by a heartbeat), with those moved by heartbeats alone.
        let cursors = intake.state.withLock { s -> [String: UInt64] in
            var origins = Set(held.map(\.event.origin))
            if !held.isEmpty || ContinuousClock.now - s.lastSaved >= .seconds(5) {
                s.lastSaved = ContinuousClock.now
                origins.formUnion(s.unsaved.keys)
                s.unsaved.removeAll()
            }
            var cursors: [String: UInt64] = [:]
            for origin in origins { if let cursor = s.tracks[origin]?.cursor { cursors[origin] = cursor } }
            return cursors
        }
        if held.isEmpty && cursors.isEmpty { return }
        let now = Date()
        let records = held.map { StoredEvent(event: $0.event, envelope: $0.envelope, receivedAt: now) }
        let fresh = try await writer.append(records, advancing: cursors)
        var duplicates = 0
        for (index, isNew) in fresh.enumerated() {
            guard isNew else {
                duplicates += 1
                continue
            }
            let event = held[index].event
            try? await feed.send(Message([Frame(Topic.bytes(type: event.type, stream: event.stream)), Frame(held[index].envelope)]))
            broadcast(event)
            eventFolder?.deliver(event)
        }
        if eventFolder != nil, fresh.contains(true), let mark = try? store.lastRowID() {
            state.withLock { $0.inboxMark = mark }
        }
        state.withLock { s in
            s.counters.received += records.count - duplicates
            s.counters.duplicates += duplicates
        }
        metrics.duplicates.increment(by: duplicates)
        metrics.delivered.increment(by: records.count - duplicates)
        metrics.stored(zip(held, fresh).lazy.filter(\.1).map(\.0.event))
    }

    /// Starts the replay loop for an origin, or tells the running one to go round again.
    func startReplay(of origin: String, feed: Socket) {
        let start = intake.state.withLock { s -> Bool in
            guard var track = s.tracks[origin] else { return false }
            defer { s.tracks[origin] = track }
            if track.replaying {
                track.again = true
                return false
            }
            track.replaying = true
            return true
        }
        if start { state.withLock { $0.counters.replays += 1 } }
        if start { intake.replayRequests.put(origin) }
    }

    /// Runs a replay loop per origin that needs one, as child tasks: they end with the node.
    func replaySupervisor(feed: Socket) async {
        await withTaskGroup(of: Void.self) { group in
            while let origins = await intake.replayRequests.take() {
                for origin in origins {
                    guard let peer = topology.node(named: origin) else { continue }
                    group.addTask { await self.replayLoop(peer, feed: feed) }
                }
            }
            group.cancelAll()
        }
    }

    /// Fetches pages from the origin until this node has everything up to the origin's last
    /// sequence and no live event waits behind a gap. Retries while the origin is away.
    func replayLoop(_ origin: NodeSpec, feed: Socket) async {
        var backoff = Duration.milliseconds(100)
        var failures = 0
        while !Task.isCancelled {
            let (after, since) = intake.state.withLock { ($0.tracks[origin.name]?.cursor ?? 0, $0.tracks[origin.name]?.since) }
            let request = Replay.Request(
                origin: origin.name, after: after, types: intake.types.map { $0.sorted() }, since: since, fromNode: spec.name)
            let reply: Replay.Reply
            do {
                state.withLock { $0.counters.replayRequests += 1 }
                metrics.replayRequestsMade.increment()
                reply = try await fetchReplay(from: origin, request, timeout: .milliseconds(max(1000, topology.settings.askTimeoutMilliseconds)))
                failures = 0
                backoff = .milliseconds(100)
            } catch {
                if Task.isCancelled { return }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.notice("replay from \(origin.name) failed (\(failures) times so far), retrying: \(error)")
                }
                // An origin that is alive (its heartbeats arrive) but never answers a replay
                // (a publisher of another make, a replay port that is wrong): take its events
                // as they come rather than hold them forever.
                let interval = Double(topology.settings.heartbeatMilliseconds) / 1000
                if failures >= 5, let heard = peerHeartbeats[origin.name], Date().timeIntervalSince(heard) < interval * 3 {
                    do {
                        let taken = try await intake.turn.run { try await self.takeWithoutReplay(from: origin.name, feed: feed) }
                        logger.warning("\(origin.name) is alive but answers no replay (\(error)): took \(taken) waiting events as they came; events it published in gaps before them may be missing here")
                        return
                    } catch {
                        logger.error("storing \(origin.name)'s waiting events failed: \(error)")
                    }
                }
                try? await Task.sleep(for: backoff)
                backoff = min(backoff * 2, .seconds(2))
                continue
            }
            let more: Bool
            do {
                more = try await intake.turn.run { try await self.takeReplayed(reply, from: origin.name, feed: feed) }
            } catch {
                if Task.isCancelled { return }
                logger.error("storing replayed events of \(origin.name) failed, retrying: \(error)")
                try? await Task.sleep(for: backoff)
                continue
            }
            if !more { return }
        }
    }

    /// Stores a replay page and whatever live events it unblocks; true if another page is needed.
    private func takeReplayed(_ reply: Replay.Reply, from origin: String, feed: Socket) async throws -> Bool {
        var accepted: [Intake.Held] = []
        intake.state.withLock { s in
            guard var track = s.tracks[origin] else { return }
            defer { s.tracks[origin] = track }
            var cursor = track.cursor ?? 0
            for (event, envelope) in reply.events where event.seq > cursor && event.seq <= reply.through {
                accepted.append(Intake.Held(event: event, envelope: envelope, marks: nil))
                cursor = event.seq
            }
            cursor = max(cursor, reply.through)
            track.since = nil
            // Live events that waited: those the page covered go; the rest follow in order
            // as long as nothing is missing before them.
            track.pending.sort { $0.event.seq < $1.event.seq }
            var remaining: [Intake.Held] = []
            for held in track.pending where held.event.seq > cursor {
                if remaining.isEmpty && intake.nothingMissed(before: held.event.seq, marks: held.marks, cursor: cursor) {
                    accepted.append(held)
                    cursor = held.event.seq
                } else {
                    remaining.append(held)
                }
            }
            track.pending = remaining
            track.pendingBytes = remaining.reduce(0) { $0 + $1.envelope.count }
            track.cursor = cursor
        }
        state.withLock { $0.counters.replayedIn += reply.events.count }
        metrics.replayedIn.increment(by: reply.events.count)
        try await storeAndHandOver(accepted, feed: feed)
        return intake.state.withLock { s in
            guard var track = s.tracks[origin] else { return false }
            defer { s.tracks[origin] = track }
            let more = reply.through < reply.lastSeq || track.again || !track.pending.isEmpty
            track.again = false
            if !more {
                track.replaying = false
            }
            return more
        }
    }

    /// Gives up on replay from an origin: its waiting events are stored in sequence order.
    private func takeWithoutReplay(from origin: String, feed: Socket) async throws -> Int {
        let accepted = intake.state.withLock { s -> [Intake.Held] in
            guard var track = s.tracks[origin] else { return [] }
            defer { s.tracks[origin] = track }
            let cursor = track.cursor ?? 0
            let taken = track.pending.sorted { $0.event.seq < $1.event.seq }.filter { $0.event.seq > cursor }
            track.cursor = max(cursor, taken.last?.event.seq ?? cursor)
            track.pending = []
            track.pendingBytes = 0
            track.replaying = false
            track.again = false
            return taken
        }
        try await storeAndHandOver(accepted, feed: feed)
        return accepted.count
    }

    static func parseMarks(_ bytes: [UInt8]) -> [String: UInt64]? {
        (try? JSONValue(parsing: bytes)).flatMap(marks(from:))
    }

    static func marks(from value: JSONValue) -> [String: UInt64]? {
        guard case .object(let object) = value else { return nil }
        var marks: [String: UInt64] = [:]
        for (key, value) in object {
            guard let n = value.intValue, n >= 0 else { return nil }
            marks[key] = UInt64(n)
        }
        return marks
    }

    static func marksValue(_ marks: [String: UInt64]) -> JSONValue {
        .object(marks.mapValues { .number(Double($0)) })
    }
}
