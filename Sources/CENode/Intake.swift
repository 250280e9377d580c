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
    /// Live events held back behind a gap, per origin, are at most `maxHeld` (see
    /// ``Node/Options/maxHeld``) and at most this many envelope bytes.
    static let maxPendingBytes = 16 << 20

    typealias Held = Delivery.Held

    let state: Mutex<Delivery>
    let turn = AsyncLock()
    /// The types this node subscribes to; nil: all. A reload may change them.
    var types: Set<String>? { state.withLock { $0.types } }
    /// Lines to replay, for the node's replay loop.
    let replayRequests = BatchQueue<Line>()

    init(types: [EventType]?, maxHeld: Int) {
        state = Mutex(Delivery(types: types.map { Set($0.map(\.rawValue)) }, maxPending: maxHeld, maxPendingBytes: Self.maxPendingBytes))
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
    /// Cursors from the store, per line; an origin's newest epoch held is its current one.
    /// Origins it holds nothing from start at the catch-up point.
    func loadCursors() throws {
        var held = try store.lines()
        for (line, cursor) in try store.cursors() { held[line] = cursor }  // saved cursors first
        var delivery = intake.state.withLock { $0 }
        delivery.tracks = [:]
        delivery.current = [:]
        delivery.unheard = [:]
        for (line, cursor) in held {
            let own = line.origin == spec.name
            if own && line.epoch == store.epoch { continue }  // this node's own line: it numbers it
            guard own || topology.node(named: line.origin).map({ $0.name != spec.name }) == true else { continue }
            var track = Delivery.Track(cursor: cursor)
            track.own = own
            track.retired = own
            delivery.tracks[line] = track
            if !own, line.epoch >= delivery.current[line.origin] ?? line.epoch { delivery.current[line.origin] = line.epoch }
        }
        for (line, _) in delivery.tracks where !line.origin.isEmpty && line.origin != spec.name && delivery.current[line.origin] != line.epoch {
            delivery.tracks[line]!.retired = true
        }
        // Read back, not heard: the origin's own word decides once it speaks.
        delivery.claimed = Set(delivery.current.keys)
        for peer in topology.peers(of: spec.name) where delivery.current[peer.name] == nil {
            var track = Delivery.Track()
            switch options.catchUp {
            case .beginning: track.cursor = 0
            case .now: track.cursor = nil
            case .sequence(let seq): track.cursor = seq
            case .time(let date):
                track.cursor = 0
                track.since = date
            }
            delivery.unheard[peer.name] = track
        }
        intake.state.withLock { $0 = delivery }
    }

    /// A batch from the SUB socket of one peer: heartbeats, then events in the order they
    /// came. Only the peer's own events and heartbeats are taken (its SUB dials it alone).
    func takeLive(_ batch: [Message], from peer: String, feed: Socket) async throws {
        try await intake.turn.run {
            // In the order they came: a heartbeat speaks of the events sent before it.
            var arrivals: [Intake.Held] = []
            var segments: [(events: [Intake.Held], beat: Delivery.Beat?)] = []
            for message in batch {
                if message.count == 2, message[0].bytes.starts(with: Self.heartbeatPrefix) {
                    if let beat = heard(heartbeat: message, from: peer) {
                        segments.append((arrivals, Delivery.Beat(origin: beat.origin, epoch: beat.epoch, seq: beat.seq, marks: beat.marks)))
                        arrivals = []
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
                let marks = message.count == 3 ? Marks.parse(message[2].bytes) : nil
                arrivals.append(Intake.Held(event: event, envelope: message[1].bytes, marks: marks))
            }
            if !arrivals.isEmpty { segments.append((arrivals, nil)) }
            // One pass under the lock for the whole batch.
            let live = intake.state.withLock { delivery in
                var live = Delivery.Live()
                for (events, beat) in segments { live.merge(delivery.receive(events, beats: beat.map { [$0] } ?? [])) }
                return live
            }
            if live.duplicates + live.stale > 0 { count(.duplicates(live.duplicates + live.stale)) }
            if live.dropped > 0 { count(.pendingDropped(live.dropped)) }
            for (line, seq, cursor) in live.regressions {
                logger.error("""
                    \(line.origin) says its last sequence in epoch \(line.epoch) is \(seq), but this node holds its events \
                    up to \(cursor): its store went back to an older copy of the same epoch; its events \(seq + 1)...\(cursor) \
                    will be refused here as already held
                    """)
            }
            for (old, new) in live.newEpochs {
                logger.notice("\(new.origin) numbers its events in a new epoch \(new.epoch) (its store was replaced): taking them from sequence 1; its epoch \(old.epoch.isEmpty ? "(none)" : old.epoch) is kept, held here up to \(intake.state.withLock { $0.tracks[old]?.cursor ?? 0 })")
            }
            var replayFrom = live.replayFrom
            do {
                try await storeAndHandOver(live.take, feed: feed)
            } catch {
                // The node keeps serving what it holds; the refused events come back by replay.
                replayFrom.formUnion(live.take.map(\.event.line))
            }
            for line in replayFrom { startReplay(of: line) }
            if live.dropped > 0 { pauseLive(from: peer) }
        }
    }

    /// Stores events (with the cursors they move, in one transaction) and hands the new ones
    /// over to the feed, listeners and the event folder.
    ///
    /// When the store refuses them (a full disk, an I/O error), none is stored or handed over:
    /// their lines go back to just before them (``Delivery/notStored(_:)``), so a replay brings
    /// them once the store takes writes again, not later events past them; then it throws.
    func storeAndHandOver(_ held: [Intake.Held], feed: Socket) async throws {
        // The cursors of the origins these events come from (already moved past them, and
        // perhaps further by a heartbeat), with those moved by heartbeats alone.
        let now = ContinuousClock.now
        let cursors = intake.state.withLock { $0.cursorsToSave(for: held, now: now) }
        if held.isEmpty && cursors.isEmpty { return }
        // An event larger than this node takes (its limit is smaller than the origin's) is a
        // hole: its line moves past it, so what follows is taken in order, and it is said.
        let limit = topology.settings.maxMessageBytes
        var holes: [Intake.Held] = []
        var held = held
        if held.contains(where: { $0.envelope.count > limit }) {
            holes = held.filter { $0.envelope.count > limit }
            held.removeAll { $0.envelope.count > limit }
        }
        let received = Date()
        let records = held.map { StoredEvent(event: $0.event, envelope: $0.envelope, receivedAt: received) }
        let fresh: [Bool]
        do {
            fresh = try await writer.append(records, advancing: cursors)
        } catch {
            if !held.isEmpty {
                intake.state.withLock { _ = $0.notStored(held) }
                logger.error("the store refused \(held.count) received events (\(error)); they are replayed once it takes writes again")
            }
            throw error
        }
        let duplicates = fresh.lazy.filter { !$0 }.count
        // New events, except this node's own earlier ones refilled from peers (handed over
        // when they were emitted).
        let handed = takeDecisions(zip(held, fresh).compactMap { held, isNew in isNew ? held : nil }).filter { $0.event.origin != spec.name }
        try? await feed.send(batch: handed.map { Message([Frame(Topic.bytes(type: $0.event.type, stream: $0.event.stream)), Frame($0.envelope)]) })
        let events = handed.map(\.event)
        broadcast(events)
        for event in events { eventFolder?.deliver(event) }
        if eventFolder != nil, fresh.contains(true), let mark = try? store.lastRowID() {
            fanout.markInbox(mark)
        }
        count(.received(records.count - duplicates))
        if duplicates > 0 { count(.duplicates(duplicates)) }
        metrics.stored(origins: zip(held, fresh).lazy.filter(\.1).map(\.0.event.origin))
        if !holes.isEmpty { await recordHoles(holes, limit: limit) }
    }

    /// Says each skipped event where an operator sees it: the status counter and a metric,
    /// the log, and an `event_skipped` event of this node (stored here and sent to its peers).
    private func recordHoles(_ holes: [Intake.Held], limit: Int) async {
        count(.skipped(holes.count))
        var emissions: [Emission] = []
        for hole in holes {
            let e = hole.event
            logger.error("""
                skipped \(e.origin)'s event \(e.id) (seq \(e.seq), \(e.type)): it is \(hole.envelope.count) bytes, more than this node's \
                limit of \(limit) (settings.max_message_bytes; the origin's topology allows more): not stored here, the line goes on after it
                """)
            emissions.append(Emission(.eventSkipped, payload: [
                "origin": .string(e.origin), "epoch": .string(e.epoch), "seq": .number(Double(e.seq)), "id": .string(e.id),
                "event_type": .string(e.type.rawValue), "bytes": .number(Double(hole.envelope.count)), "limit": .number(Double(limit)),
            ]))
        }
        for case .failure(let error) in await emitEach(emissions) {
            logger.error("could not store the event_skipped record: \(error)")
        }
    }

    /// Starts the replay loop for a line, or tells the running one to go round again.
    func startReplay(of line: Line) {
        let start = intake.state.withLock { $0.startReplay(of: line) }
        guard start else { return }
        count(.replayStarted)
        intake.replayRequests.put(line)
    }

    /// Runs a replay loop per line that needs one, as child tasks: they end with the node.
    func replaySupervisor(feed: Socket) async {
        await withTaskGroup(of: Void.self) { group in
            while let lines = await intake.replayRequests.take() {
                for line in lines { group.addTask { await self.replayLoop(line, feed: feed) } }
            }
            group.cancelAll()
        }
    }

    /// The peers that can relay a line's events to this node: they follow its origin and
    /// subscribe to every type this node asks for (all types, for this node's own line).
    /// Those known to hold the most come first.
    func relays(for line: Line, types: Set<String>?) -> [NodeSpec] {
        let holders = intake.state.withLock { $0.holders[line] ?? [:] }
        let candidates = topology.peers(of: spec.name).filter { peer in
            guard peer.name != line.origin else { return false }
            guard let theirs = Self.subscribedTypes(pool: peer.pool, topology: topology).map({ Set($0.map(\.rawValue)) }) else { return true }
            guard let types else { return false }
            return types.isSubset(of: theirs)
        }
        return candidates.sorted { (holders[$0.name] ?? 0, $1.name) > (holders[$1.name] ?? 0, $0.name) }
    }

    /// Fetches pages until this node has everything the sources hold and no live event waits
    /// behind a gap. The origin serves its current line; while it is down (or the line is an
    /// older epoch, or this node's own), peers that hold the line relay it. A current line
    /// whose sources all fail is retried while the origin is away; an older line ends once
    /// every peer reachable was asked.
    func replayLoop(_ line: Line, feed: Socket) async {
        var plan = ReplayPlan(askTimeoutMilliseconds: topology.settings.askTimeoutMilliseconds)
        let types = intake.state.withLock { $0.tracks[line]?.own == true } ? nil : intake.types.map { $0.sorted() }
        /// The next page, asked for while the one before was being stored, and decoded.
        var ahead: (reply: Replay.Reply, source: NodeSpec)?
        /// The page after `ahead`, asked for before `ahead` was decoded (not decoded yet).
        var rawAhead: Task<Replay.RawPage?, Never>?
        /// The socket to the source pages come from, kept across requests.
        let connection = KeptSockets(limit: 1)
        defer {
            rawAhead?.cancel()
            connection.closeAll()
            // The origin's live stream, if it was paused while this replay ran, comes back
            // (a drop after this pauses it again, and starts a replay that resumes it).
            resumeLive(from: line.origin)
        }
        while !Task.isCancelled {
            let (after, since, retired) = intake.state.withLock { d in
                let point = d.replayPoint(of: line)
                return (point.after, point.since, d.tracks[line]?.retired ?? true)
            }
            let request = Replay.Request(line: line, after: after, types: types, since: since, fromNode: spec.name)
            let origin = topology.node(named: line.origin)
            let sources = ReplayPlan.sources(
                origin: origin, retired: retired, originDown: !retired && peers.looksDown(line.origin),
                relays: relays(for: line, types: types.map(Set.init)))
            var got: (reply: Replay.Reply, source: NodeSpec)?
            var reasons: [String] = []
            /// Sources that could not be asked (down, refused, timed out), as opposed to those
            /// that answered with nothing more.
            var unreachable = 0
            if let prefetched = ahead {
                got = prefetched
                ahead = nil
            } else {
                for source in sources {
                    count(.replayRequest)
                    do {
                        let reply = try await fetchReplay(from: source, request, timeout: plan.timeout, kept: connection)
                        // A relay that holds nothing past this node's cursor: try the next one.
                        if source.name != line.origin && reply.through <= after && reply.events.isEmpty {
                            reasons.append("\(source.name) holds nothing after \(after)")
                            continue
                        }
                        got = (reply, source)
                        break
                    } catch {
                        if Task.isCancelled { return }
                        reasons.append("\(source.name): \(error)")
                        unreachable += 1
                    }
                }
            }
            guard let (reply, source) = got else {
                switch plan.failed(unreachable: unreachable, originServes: !retired && origin != nil, originUp: peers.isUp(line.origin)) {
                case .end:
                    // What is held behind a gap is taken as it is.
                    let taken = (try? await intake.turn.run { try await self.takeWithoutReplay(line, feed: feed) }) ?? 0
                    if taken > 0 || unreachable > 0 {
                        logger.notice("replay of \(line) ended (\(reasons.isEmpty ? "no peer can relay it" : reasons.joined(separator: "; ")))\(taken > 0 ? ": took \(taken) waiting events as they came" : "")")
                    }
                    return
                case .takeAsTheyCame:
                    do {
                        let taken = try await intake.turn.run { try await self.takeWithoutReplay(line, feed: feed) }
                        logger.warning("\(line.origin) is alive but answers no replay (\(reasons.joined(separator: "; "))): took \(taken) waiting events as they came; events it published in gaps before them may be missing here")
                        return
                    } catch {
                        logger.error("storing \(line.origin)'s waiting events failed: \(error)")
                        try? await Task.sleep(for: plan.storeFailed())
                    }
                case .retry(let wait, let log):
                    if log { logger.notice("replay of \(line) failed (\(plan.failures) times so far), retrying: \(reasons.joined(separator: "; "))") }
                    try? await Task.sleep(for: wait)
                }
                continue
            }
            plan.gotPage()
            let more: Bool
            do {
                if reply.through < reply.lastSeq {
                    // Pipelined three deep: while this page is stored, the next one arrives (it
                    // may have been asked for already), the one after it is asked for, and the
                    // next one is decoded. Each starts at the end of the page before it;
                    // whatever the store step moves the cursor past is filtered out when taken.
                    let wait = plan.timeout
                    let next = rawAhead ?? pageTask(line, after: reply.through, types: types, from: source, timeout: wait, kept: connection)
                    rawAhead = nil
                    async let prefetch: (reply: Replay.Reply, following: Task<Replay.RawPage?, Never>?)? = {
                        guard let page = await next.value else { return nil }
                        let following = page.through < page.lastSeq
                            ? self.pageTask(line, after: page.through, types: types, from: source, timeout: wait, kept: connection) : nil
                        guard let decoded = try? self.decode(page) else {
                            following?.cancel()
                            return nil
                        }
                        return (decoded, following)
                    }()
                    more = try await intake.turn.run { try await self.takeReplayed(reply, line, feed: feed) }
                    let fetched = await prefetch
                    if more, let fetched {
                        ahead = (fetched.reply, source)
                        rawAhead = fetched.following
                    } else {
                        fetched?.following?.cancel()
                    }
                } else {
                    more = try await intake.turn.run { try await self.takeReplayed(reply, line, feed: feed) }
                }
            } catch {
                if Task.isCancelled { return }
                logger.error("storing replayed events of \(line) failed, retrying: \(error)")
                try? await Task.sleep(for: plan.storeFailed())
                continue
            }
            if !more {
                // A relay may hold less than another: an older line goes round the peers again
                // (those with nothing past the cursor are passed over) until none has more.
                guard retired else { return }
                let again = intake.state.withLock { d -> Bool in
                    guard d.tracks[line] != nil else { return false }
                    d.tracks[line]!.replaying = true
                    return true
                }
                if !again { return }
            }
        }
    }

    /// A peer whose live events this node had to drop (too many held behind a gap) stops
    /// sending them: its SUB keeps only heartbeats until the replay that brings those events
    /// ends. Live events sent meanwhile would be encrypted, sent, decrypted and decoded only
    /// to be dropped; the replay reads them from the origin's store in pages instead.
    /// Unsubscribing takes effect at the publisher a little later: what is already on its
    /// way is taken or dropped as before.
    func pauseLive(from peer: String) {
        guard let sub = links.pause(peer) else { return }
        do {
            // Subscriptions count: the heartbeat prefix once more, then each event prefix once less.
            try sub.set(.subscribe(Self.heartbeatPrefix))
            for prefix in subscriptionPrefixes where prefix != Self.heartbeatPrefix { try sub.set(.unsubscribe(prefix)) }
        } catch {
            // Only a socket that is closing refuses; nothing is left for a resume to undo.
            _ = links.resume(peer)
            logger.warning("pausing \(peer)'s live events failed (they are taken or dropped as they come): \(error)")
            return
        }
        count(.livePause)
        logger.info("\(peer)'s live events paused: this node fell too far behind, it reads them by replay")
    }

    /// Undoes ``pauseLive(from:)``: the peer's events come live again.
    func resumeLive(from peer: String) {
        guard let sub = links.resume(peer) else { return }
        do {
            for prefix in subscriptionPrefixes where prefix != Self.heartbeatPrefix { try sub.set(.subscribe(prefix)) }
            try sub.set(.unsubscribe(Self.heartbeatPrefix))
        } catch {
            logger.error("resuming \(peer)'s live events failed: \(error)")
            return
        }
        logger.info("\(peer)'s live events resumed")
    }

    /// Asks `source` for the page of `line` after `after` on a task of its own; nil when that
    /// fails (the replay loop then asks again as it does after any failure).
    func pageTask(_ line: Line, after: UInt64, types: [String]?, from source: NodeSpec, timeout: Duration, kept: KeptSockets) -> Task<Replay.RawPage?, Never> {
        let request = Replay.Request(line: line, after: after, types: types, since: nil, fromNode: spec.name)
        count(.replayRequest)
        return Task { try? await self.requestPage(from: source, request, timeout: timeout, kept: kept) }
    }

    /// Stores a replay page and whatever live events it unblocks; true if another page is needed.
    private func takeReplayed(_ reply: Replay.Reply, _ line: Line, feed: Socket) async throws -> Bool {
        let page = Delivery.Page(lastSeq: reply.lastSeq, through: reply.through, events: reply.events)
        let accepted = intake.state.withLock { $0.takePage(page, from: line) }
        count(.replayedIn(reply.events.count))
        try await storeAndHandOver(accepted, feed: feed)
        intake.state.withLock { $0.refilled(accepted.count) }
        return intake.state.withLock { $0.pageStored(page, from: line) }
    }

    /// Gives up on replay of a line: its waiting events are stored in sequence order.
    private func takeWithoutReplay(_ line: Line, feed: Socket) async throws -> Int {
        let accepted = intake.state.withLock { $0.giveUp(on: line) }
        try await storeAndHandOver(accepted, feed: feed)
        return accepted.count
    }

}
