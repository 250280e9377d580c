import CECore
import Foundation

/// The subscriber's delivery decisions as a value: per origin, a cursor (every event of a
/// subscribed type with a sequence up to it is stored here), live events held behind a gap,
/// and whether a replay is under way. It does no I/O and keeps no clock: the node feeds it
/// what arrives (live batches with heartbeats, replay pages) and carries out what it returns
/// (events to store in this order, origins to replay from, cursors to save). Its tests drive
/// every ordering of arrivals, losses and replays without processes.
struct Delivery: Sendable {
    /// An event as received, with the bytes to store and the origin's marks sent beside it.
    struct Held: Sendable {
        var event: Event
        var envelope: [UInt8]
        var marks: [String: UInt64]?
    }

    /// What an origin said in a heartbeat: its last sequence, and per type the last sequence.
    struct Beat: Sendable {
        var origin: String
        var seq: UInt64
        var marks: [String: UInt64]?
    }

    /// One page of a replay: events after the request's point, through `through` (every
    /// subscribed event of the origin up to it is in the page), and the origin's last sequence.
    struct Page: Sendable {
        var lastSeq: UInt64
        var through: UInt64
        var events: [Held]
    }

    struct Track: Sendable {
        /// nil: not decided yet (catch-up `now`, before the first contact).
        var cursor: UInt64?
        /// Replay only events stamped at or after this (catch-up from a time).
        var since: Date?
        var pending: [Held] = []
        var pendingBytes = 0
        var replaying = false
        /// Something was missed while a replay ran (a dropped live event, a new gap): go round again.
        var again = false
        /// The origin was heard with a sequence below the cursor (said once).
        var regressed = false
    }

    /// What to do after a live batch.
    struct Live: Sendable {
        /// New to this node, in per-origin order: store them (with ``cursorsToSave(for:force:)``).
        var take: [Held] = []
        var duplicates = 0
        /// Dropped because too much waits behind a gap already; a replay brings them.
        var dropped = 0
        /// Origins to replay from (a gap, a silent tail).
        var replayFrom: Set<String> = []
        /// Origins heard below what this node holds: (origin, heard, cursor).
        var regressions: [(origin: String, seq: UInt64, cursor: UInt64)] = []
    }

    /// What a track decides by: the subscribed types and how much may wait behind a gap.
    struct Rules: Sendable {
        /// The types this node subscribes to; nil: all.
        var types: Set<String>?
        var maxPending: Int
        var maxPendingBytes: Int

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

    let rules: Rules
    var tracks: [String: Track] = [:]
    /// Cursors moved without storing an event (a heartbeat showed nothing was missed).
    var unsaved: [String: UInt64] = [:]

    init(types: Set<String>?, maxPending: Int = 10_000, maxPendingBytes: Int = 16 << 20) {
        rules = Rules(types: types, maxPending: maxPending, maxPendingBytes: maxPendingBytes)
    }

    var types: Set<String>? { rules.types }
    func subscribes(_ type: String) -> Bool { rules.subscribes(type) }

    // MARK: Live traffic

    /// A batch from the SUB socket: its events in the order they came, then its heartbeats
    /// (a heartbeat follows the origin's events on the same connection).
    mutating func receive(_ events: [Held], beats: [Beat] = []) -> Live {
        var live = Live()
        for held in events {
            let origin = held.event.origin
            // Changed in place: a copy of the track would copy its pending events per event.
            guard tracks[origin] != nil else {
                live.take.append(held)  // an origin outside the topology: no sequence to follow
                continue
            }
            switch tracks[origin]!.take(held, rules) {
            case .accept: live.take.append(held)
            case .duplicate: live.duplicates += 1
            case .hold: live.replayFrom.insert(origin)
            case .drop:
                live.dropped += 1
                live.replayFrom.insert(origin)
            }
        }
        for beat in beats {
            guard var track = tracks[beat.origin] else { continue }
            defer { tracks[beat.origin] = track }
            guard let cursor = track.cursor else {
                track.cursor = beat.seq  // catch-up "now": from the origin's next event
                unsaved[beat.origin] = beat.seq
                continue
            }
            if beat.seq < cursor && !track.regressed {
                track.regressed = true
                live.regressions.append((beat.origin, beat.seq, cursor))
            }
            guard beat.seq > cursor, track.pending.isEmpty, !track.replaying else { continue }
            if let marks = beat.marks, !marks.contains(where: { $0.value > cursor && subscribes($0.key) }) {
                // Everything after the cursor is of types this node does not take.
                track.cursor = beat.seq
                unsaved[beat.origin] = beat.seq
            } else {
                live.replayFrom.insert(beat.origin)
            }
        }
        return live
    }

    // MARK: Replay

    /// Marks a replay from `origin` as wanted; true when none runs yet (start one), false when
    /// one runs (it goes round again before it ends).
    mutating func startReplay(of origin: String) -> Bool {
        guard tracks[origin] != nil else { return false }
        if tracks[origin]!.replaying {
            tracks[origin]!.again = true
            return false
        }
        tracks[origin]!.replaying = true
        return true
    }

    /// Where the next replay request for `origin` starts: after its cursor (and since a time,
    /// on the first page of a catch-up from a time).
    func replayPoint(of origin: String) -> (after: UInt64, since: Date?) {
        (tracks[origin]?.cursor ?? 0, tracks[origin]?.since)
    }

    /// A replay page from `origin`: the events to store, in order (those it covers that are
    /// new here, then held live events that no longer wait behind a gap).
    mutating func takePage(_ page: Page, from origin: String) -> [Held] {
        guard var track = tracks[origin] else { return [] }
        defer { tracks[origin] = track }
        var take: [Held] = []
        var cursor = track.cursor ?? 0
        for held in page.events where held.event.seq > cursor && held.event.seq <= page.through {
            take.append(held)
            cursor = held.event.seq
        }
        cursor = max(cursor, page.through)
        track.since = nil
        track.pending.sort { $0.event.seq < $1.event.seq }
        var remaining: [Held] = []
        for held in track.pending where held.event.seq > cursor {
            if remaining.isEmpty && rules.nothingMissed(before: held.event.seq, marks: held.marks, cursor: cursor) {
                take.append(held)
                cursor = held.event.seq
            } else {
                remaining.append(held)
            }
        }
        track.pending = remaining
        track.pendingBytes = remaining.reduce(0) { $0 + $1.envelope.count }
        track.cursor = cursor
        return take
    }

    /// After a page was stored: true when another page is needed (the origin has more, a
    /// live event was dropped meanwhile, or live events still wait); false ends the replay.
    mutating func pageStored(_ page: Page, from origin: String) -> Bool {
        guard var track = tracks[origin] else { return false }
        defer { tracks[origin] = track }
        let more = page.through < page.lastSeq || track.again || !track.pending.isEmpty
        track.again = false
        if !more { track.replaying = false }
        return more
    }

    /// Gives up on replay from an origin that never answers one: its waiting events, in
    /// sequence order, to be stored as they are.
    mutating func giveUp(on origin: String) -> [Held] {
        guard var track = tracks[origin] else { return [] }
        defer { tracks[origin] = track }
        let cursor = track.cursor ?? 0
        let take = track.pending.sorted { $0.event.seq < $1.event.seq }.filter { $0.event.seq > cursor }
        track.cursor = max(cursor, take.last?.event.seq ?? cursor)
        track.pending = []
        track.pendingBytes = 0
        track.replaying = false
        track.again = false
        return take
    }

    // MARK: Cursors

    /// The cursors to write with events being stored: those of the origins they come from,
    /// and, with them or when `force` (a few seconds passed), the cursors heartbeats moved.
    mutating func cursorsToSave(for stored: [Held], force: Bool) -> [String: UInt64] {
        var origins = Set(stored.map(\.event.origin))
        if !stored.isEmpty || force {
            origins.formUnion(unsaved.keys)
            unsaved.removeAll()
        }
        var cursors: [String: UInt64] = [:]
        for origin in origins { if let cursor = tracks[origin]?.cursor { cursors[origin] = cursor } }
        return cursors
    }
}

extension Delivery.Track {
    enum Decision { case accept, duplicate, hold, drop }

    /// A live event from this track's origin: taken (the cursor moves to it), a duplicate,
    /// held behind a gap, or dropped because too much is held already (replay brings it).
    mutating func take(_ held: Delivery.Held, _ rules: Delivery.Rules) -> Decision {
        if cursor == nil { cursor = held.event.seq - 1 }  // catch-up "now": start here
        let current = cursor!
        if held.event.seq <= current { return .duplicate }
        if pending.isEmpty && !replaying && rules.nothingMissed(before: held.event.seq, marks: held.marks, cursor: current) {
            cursor = held.event.seq
            return .accept
        }
        guard pending.count < rules.maxPending && pendingBytes + held.envelope.count <= rules.maxPendingBytes else {
            again = true
            return .drop
        }
        pending.append(held)
        pendingBytes += held.envelope.count
        return .hold
    }
}
