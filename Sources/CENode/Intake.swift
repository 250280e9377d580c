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

/// The subscriber side of the delivery guarantees: the decisions (``Delivery``, a value)
/// behind a lock, and what carries them out. Events are stored and handed over (feed,
/// in-process listeners, event folder) by one holder of `turn` at a time, in per-origin
/// sequence order, each once.
final class Intake: Sendable {
    /// Live events held back behind a gap, per origin; beyond it they are dropped and
    /// come back by replay, so a stalled subscriber never holds more than this.
    static let maxPending = 10_000
    /// And at most this many envelope bytes.
    static let maxPendingBytes = 16 << 20

    typealias Held = Delivery.Held

    let state: Mutex<Delivery>
    /// When cursors moved by heartbeats alone were last saved: they are saved with the next
    /// events, or on their own at most every few seconds (losing them costs only a replay
    /// that finds nothing).
    let lastSaved = Mutex(ContinuousClock.now)
    let turn = AsyncLock()
    /// The types this node subscribes to; nil: all.
    let types: Set<String>?
    /// Origins to replay from, for the node's replay loop.
    let replayRequests = BatchQueue<String>()

    init(types: [EventType]?) {
        self.types = types.map { Set($0.map(\.rawValue)) }
        state = Mutex(Delivery(types: self.types, maxPending: Self.maxPending, maxPendingBytes: Self.maxPendingBytes))
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
        var tracks: [String: Delivery.Track] = [:]
        for peer in topology.peers(of: spec.name) {
            var track = Delivery.Track()
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

    /// A batch from the SUB socket of one peer: heartbeats, then events in the order they
    /// came. Only the peer's own events and heartbeats are taken (its SUB dials it alone).
    func takeLive(_ batch: [Message], from peer: String, feed: Socket) async throws {
        try await intake.turn.run {
            var arrivals: [Intake.Held] = []
            var heartbeats: [Delivery.Beat] = []
            for message in batch {
                if message.count == 2, message[0].bytes.starts(with: Array("_hb/".utf8)) {
                    if let beat = heard(heartbeat: message, from: peer) {
                        heartbeats.append(Delivery.Beat(origin: beat.origin, seq: beat.seq, marks: beat.marks))
                    }
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
                if event.origin != peer {
                    forged("event \(event.id) (seq \(event.seq))", claimed: event.origin, sender: peer)
                    continue
                }
                let marks = message.count == 3 ? Self.parseMarks(message[2].bytes) : nil
                arrivals.append(Intake.Held(event: event, envelope: message[1].bytes, marks: marks))
            }
            // One pass under the lock for the whole batch: events first, then heartbeats.
            let live = intake.state.withLock { $0.receive(arrivals, beats: heartbeats) }
            state.withLock { s in
                s.counters.duplicates += live.duplicates
                s.counters.pendingDropped += live.dropped
            }
            metrics.duplicates.increment(by: live.duplicates)
            metrics.pendingDropped.increment(by: live.dropped)
            let regressions = live.regressions
            let accepted = live.take
            let wanted = live.replayFrom
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
        let now = ContinuousClock.now
        let force = intake.lastSaved.withLock { last -> Bool in
            guard !held.isEmpty || now - last >= .seconds(5) else { return false }
            last = now
            return true
        }
        let cursors = intake.state.withLock { $0.cursorsToSave(for: held, force: force) }
        if held.isEmpty && cursors.isEmpty { return }
        let received = Date()
        let records = held.map { StoredEvent(event: $0.event, envelope: $0.envelope, receivedAt: received) }
        let fresh = try await writer.append(records, advancing: cursors)
        var duplicates = 0
        var local: [Message] = []
        local.reserveCapacity(held.count)
        for (index, isNew) in fresh.enumerated() {
            guard isNew else {
                duplicates += 1
                continue
            }
            let event = held[index].event
            local.append(Message([Frame(Topic.bytes(type: event.type, stream: event.stream)), Frame(held[index].envelope)]))
        }
        try? await feed.send(batch: local)
        for (index, isNew) in fresh.enumerated() where isNew {
            broadcast(held[index].event)
            eventFolder?.deliver(held[index].event)
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
        let start = intake.state.withLock { $0.startReplay(of: origin) }
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
        let timeout = Duration.milliseconds(max(1000, topology.settings.askTimeoutMilliseconds))
        /// The next page, asked for while the one before was being stored.
        var ahead: Replay.Reply?
        while !Task.isCancelled {
            let (after, since) = intake.state.withLock { $0.replayPoint(of: origin.name) }
            let request = Replay.Request(
                origin: origin.name, after: after, types: intake.types.map { $0.sorted() }, since: since, fromNode: spec.name)
            let reply: Replay.Reply
            do {
                if let prefetched = ahead {
                    reply = prefetched
                    ahead = nil
                } else {
                    state.withLock { $0.counters.replayRequests += 1 }
                    metrics.replayRequestsMade.increment()
                    reply = try await fetchReplay(from: origin, request, timeout: timeout)
                }
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
                if reply.through < reply.lastSeq {
                    // Pipelined: the page after this one travels while this one is stored. It
                    // starts at this page's end; whatever the store step moves the cursor past
                    // is filtered out when it is taken.
                    let next = Replay.Request(
                        origin: origin.name, after: reply.through, types: intake.types.map { $0.sorted() }, since: nil, fromNode: spec.name)
                    state.withLock { $0.counters.replayRequests += 1 }
                    metrics.replayRequestsMade.increment()
                    async let prefetch = try? fetchReplay(from: origin, next, timeout: timeout)
                    more = try await intake.turn.run { try await self.takeReplayed(reply, from: origin.name, feed: feed) }
                    ahead = more ? await prefetch : nil
                } else {
                    more = try await intake.turn.run { try await self.takeReplayed(reply, from: origin.name, feed: feed) }
                }
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
        let page = Delivery.Page(
            lastSeq: reply.lastSeq, through: reply.through,
            events: reply.events.map { Intake.Held(event: $0.0, envelope: $0.1, marks: nil) })
        let accepted = intake.state.withLock { $0.takePage(page, from: origin) }
        state.withLock { $0.counters.replayedIn += reply.events.count }
        metrics.replayedIn.increment(by: reply.events.count)
        try await storeAndHandOver(accepted, feed: feed)
        return intake.state.withLock { $0.pageStored(page, from: origin) }
    }

    /// Gives up on replay from an origin: its waiting events are stored in sequence order.
    private func takeWithoutReplay(from origin: String, feed: Socket) async throws -> Int {
        let accepted = intake.state.withLock { $0.giveUp(on: origin) }
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
