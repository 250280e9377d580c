import CECore
import Foundation

/// The subscriber's delivery decisions as a value: per line (an origin's events in one epoch
/// of its store), a cursor (every event of a subscribed type with a sequence up to it is
/// stored here), live events held behind a gap, and whether a replay is under way. Per
/// origin, the epoch its live events are numbered in: an event or heartbeat of a newer epoch
/// (the origin's store was replaced) starts a new line from sequence 1 and retires the old
/// one, whose missing tail only peers that hold it can bring. It does no I/O and keeps no clock: the node feeds it
/// what arrives (live batches with heartbeats, replay pages) and carries out what it returns
/// (events to store in this order, origins to replay from, cursors to save). Its tests drive
/// every ordering of arrivals, losses and replays without processes.
struct Delivery: Sendable {
    /// An event as received, with the bytes to store and the origin's marks sent beside it.
    /// Immutable and shared: a batch passes through several arrays (held, taken, stored,
    /// handed over), and a struct of this many references cost a retain and a release per
    /// field at every step (about 8 % of a subscriber's samples in the bus benchmark).
    final class Held: Sendable {
        let event: Event
        let envelope: [UInt8]
        let marks: [String: UInt64]?

        init(event: Event, envelope: [UInt8], marks: [String: UInt64]?) {
            self.event = event
            self.envelope = envelope
            self.marks = marks
        }
    }

    /// What an origin said in a heartbeat: its last sequence, and per type the last sequence.
    struct Beat: Sendable {
        var origin: String
        var epoch: String = ""
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
        /// The origin numbers its events in a newer epoch now: nothing more comes live.
        var retired = false
        /// The line of this node's own events from an earlier store (refilled from peers):
        /// every type, not only the subscribed ones.
        var own = false
    }

    /// What to do after a live batch.
    struct Live: Sendable {
        /// New to this node, in per-origin order: store them (with ``cursorsToSave(for:force:)``).
        var take: [Held] = []
        var duplicates = 0
        /// Dropped because too much waits behind a gap already; a replay brings them.
        var dropped = 0
        /// Lines to replay (a gap, a silent tail, a retired line).
        var replayFrom: Set<Line> = []
        /// Lines heard below what this node holds: (line, heard, cursor).
        var regressions: [(line: Line, seq: UInt64, cursor: UInt64)] = []
        /// Origins heard in a newer epoch than before: (old line, new line).
        var newEpochs: [(old: Line, new: Line)] = []
        /// Events and heartbeats of an epoch older than the origin's current one (ignored).
        var stale = 0

        mutating func merge(_ other: Live) {
            take += other.take
            duplicates += other.duplicates
            dropped += other.dropped
            replayFrom.formUnion(other.replayFrom)
            regressions += other.regressions
            newEpochs += other.newEpochs
            stale += other.stale
        }
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

    private(set) var rules: Rules
    var tracks: [Line: Track] = [:]
    /// Per origin followed: the epoch its live events are numbered in, as far as heard.
    var current: [String: String] = [:]
    /// Per origin followed but never heard and held nothing from: the track its first line
    /// starts with (the catch-up point).
    var unheard: [String: Track] = [:]
    /// Origins whose current epoch is only claimed: taken from the peers' survey (or read back
    /// at start), not yet heard from the origin itself. The origin's own word wins: an event or
    /// heartbeat of it in another epoch makes that epoch current, older or not, so a peer that
    /// claims a newer epoch for an origin cannot make this node ignore the origin's live events.
    var claimed: Set<String> = []
    /// Cursors moved without storing an event (a heartbeat showed nothing was missed).
    var unsaved: [Line: UInt64] = [:]
    /// When cursors were last written (Survey.swift: ``cursorsToSave(for:now:)``).
    var cursorsSaved = ContinuousClock.now
    /// What the peers said they hold at the last survey, per line: peer -> through.
    var holders: [Line: [String: UInt64]] = [:]
    /// Refilling a new store from the peers (Survey.swift).
    var refill = Refill()

    init(types: Set<String>?, maxPending: Int = 10_000, maxPendingBytes: Int = 16 << 20) {
        rules = Rules(types: types, maxPending: maxPending, maxPendingBytes: maxPendingBytes)
    }

    var types: Set<String>? { rules.types }

    /// The types this node subscribed to before a reload added some (nil: none added): the
    /// added ones are held only from then on, so it relays no other (a relay answers for
    /// every event of a type up to its cursor).
    private(set) var relayable: Set<String>?

    /// A reload changed the subscribed types: what comes from now is taken by the new list.
    mutating func subscribe(to types: Set<String>?) {
        if let before = rules.types, types.map({ !$0.isSubset(of: before) }) ?? true {
            relayable = relayable.map { $0.intersection(before) } ?? before
        }
        rules.types = types
    }
    func subscribes(_ type: String) -> Bool { rules.subscribes(type) }

    // MARK: Live traffic

    /// A batch from the SUB socket: its events in the order they came, then its heartbeats
    /// (a heartbeat follows the origin's events on the same connection).
    mutating func receive(_ events: [Held], beats: [Beat] = []) -> Live {
        var live = Live()
        for held in events {
            guard let line = liveLine(held.event.origin, held.event.epoch, &live) else {
                if isFollowed(held.event.origin) { live.stale += 1 } else { live.take.append(held) }  // outside the topology: no sequence to follow
                continue
            }
            // Changed in place: a copy of the track would copy its pending events per event.
            switch tracks[line]!.take(held, rules) {
            case .accept: live.take.append(held)
            case .duplicate: live.duplicates += 1
            case .hold: live.replayFrom.insert(line)
            case .drop:
                live.dropped += 1
                live.replayFrom.insert(line)
            }
        }
        for beat in beats {
            guard let line = liveLine(beat.origin, beat.epoch, &live) else {
                if isFollowed(beat.origin) { live.stale += 1 }
                continue
            }
            // Taken out and put back: a copy left in the dictionary would make the first
            // change to `pending` copy every event held.
            var track = tracks.removeValue(forKey: line)!
            defer { tracks[line] = track }
            guard let cursor = track.cursor else {
                track.cursor = beat.seq  // catch-up "now": from the origin's next event
                unsaved[line] = beat.seq
                continue
            }
            if beat.seq < cursor && !track.regressed {
                track.regressed = true
                live.regressions.append((line, beat.seq, cursor))
            }
            guard beat.seq > cursor, track.pending.isEmpty, !track.replaying else { continue }
            if let marks = beat.marks, !marks.contains(where: { $0.value > cursor && subscribes($0.key) }) {
                // Everything after the cursor is of types this node does not take.
                track.cursor = beat.seq
                unsaved[line] = beat.seq
            } else {
                live.replayFrom.insert(line)
            }
        }
        return live
    }

    func isFollowed(_ origin: String) -> Bool { current[origin] != nil || unheard[origin] != nil }

    /// The line a live event or heartbeat of `origin` in `epoch` belongs to: the current one,
    /// a new one (the first contact, or a newer epoch: the old line is retired and its
    /// tail wanted from peers), or nil (an origin not followed, or an older epoch).
    mutating func liveLine(_ origin: String, _ epoch: String, _ live: inout Live) -> Line? {
        let line = Line(origin, epoch)
        if let now = current[origin] {
            if epoch == now {
                if !claimed.isEmpty { claimed.remove(origin) }
                return line
            }
            if epoch < now && !claimed.contains(origin) { return nil }
            claimed.remove(origin)
            let old = Line(origin, now)
            tracks[old]?.retired = true
            if tracks[old]?.replaying == false { live.replayFrom.insert(old) }
            if tracks[line] == nil {
                tracks[line] = Track(cursor: 0)  // a new store numbers from 1
            } else {
                tracks[line]!.retired = false
            }
            current[origin] = epoch
            live.newEpochs.append((old, line))
            return line
        }
        guard let first = unheard.removeValue(forKey: origin) else { return nil }
        tracks[line] = first
        current[origin] = epoch
        return line
    }

    /// Lines a peer holds further than this node and no replay is fetching: `holders` is, per
    /// line, how far each peer holds it (the survey).
    func behind(_ holders: [Line: [String: UInt64]]) -> [Line] {
        holders.compactMap { line, byPeer in
            guard let track = tracks[line], !track.replaying, let cursor = track.cursor,
                  let best = byPeer.values.max(), best > cursor else { return nil }
            return line
        }
    }

    /// Lines peers hold that this node has no track for (a refill, or a line missed while
    /// away): each starts at 0 and is to be replayed. A line newer than the origin's current
    /// one becomes current (the old one is retired), as a claim until the origin speaks
    /// (``claimed``). Returns the lines added.
    mutating func adopt(_ lines: [Line], own: String) -> [Line] {
        var added: [Line] = []
        for line in lines.sorted() where tracks[line] == nil {
            var track = Track(cursor: 0)
            if line.origin == own {
                track.own = true
                track.retired = true
            } else if let now = current[line.origin] {
                if line.epoch > now {
                    tracks[Line(line.origin, now)]?.retired = true
                    current[line.origin] = line.epoch
                    claimed.insert(line.origin)
                } else {
                    track.retired = true
                }
            } else if unheard.removeValue(forKey: line.origin) != nil {
                current[line.origin] = line.epoch
                claimed.insert(line.origin)
            } else {
                continue  // an origin this node does not follow
            }
            tracks[line] = track
            added.append(line)
        }
        return added
    }

    // MARK: Replay

    /// Marks a replay from `origin` as wanted; true when none runs yet (start one), false when
    /// one runs (it goes round again before it ends).
    mutating func startReplay(of line: Line) -> Bool {
        guard tracks[line] != nil else { return false }
        if tracks[line]!.replaying {
            tracks[line]!.again = true
            return false
        }
        tracks[line]!.replaying = true
        if refill.open { refill.lines.insert(line) }
        return true
    }

    /// Events of a refill's replay were stored.
    mutating func refilled(_ count: Int) { if refill.open { refill.events += count } }

    /// Where the next replay request for `origin` starts: after its cursor (and since a time,
    /// on the first page of a catch-up from a time).
    func replayPoint(of line: Line) -> (after: UInt64, since: Date?) {
        (tracks[line]?.cursor ?? 0, tracks[line]?.since)
    }

    /// A replay page from `origin`: the events to store, in order (those it covers that are
    /// new here, then held live events that no longer wait behind a gap).
    mutating func takePage(_ page: Page, from line: Line) -> [Held] {
        guard var track = tracks.removeValue(forKey: line) else { return [] }  // unshared: see receive
        defer { tracks[line] = track }
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
    mutating func pageStored(_ page: Page, from line: Line) -> Bool {
        guard var track = tracks.removeValue(forKey: line) else { return false }
        defer { tracks[line] = track }
        // The origin had more when it answered, unless live events took the cursor there since.
        let ahead = page.through < page.lastSeq && (track.cursor ?? 0) < page.lastSeq
        let more = ahead || track.again || !track.pending.isEmpty
        track.again = false
        if !more { track.replaying = false }
        return more
    }

    /// Events it said to store (from `receive`, `takePage` or `giveUp`) that the store refused
    /// (a full disk, an I/O error): none of them was stored or handed over. Each of their
    /// lines goes back to just before its first one (every event up to there is stored), to
    /// be replayed from there once the store takes writes again. Returns those lines; one
    /// already replaying goes round again. (Lines it does not track are left out.)
    mutating func notStored(_ held: [Held]) -> [Line] {
        var first: [Line: UInt64] = [:]
        for h in held { first[h.event.line] = min(first[h.event.line] ?? h.event.seq, h.event.seq) }
        var lines: [Line] = []
        for (line, seq) in first {
            guard var track = tracks.removeValue(forKey: line) else { continue }  // unshared: see receive
            defer { tracks[line] = track }
            track.cursor = min(track.cursor ?? 0, seq - 1)
            if track.replaying { track.again = true }
            lines.append(line)
        }
        return lines
    }

    /// Gives up on replay from an origin that never answers one: its waiting events, in
    /// sequence order, to be stored as they are.
    mutating func giveUp(on line: Line) -> [Held] {
        guard var track = tracks.removeValue(forKey: line) else { return [] }
        defer { tracks[line] = track }
        let cursor = track.cursor ?? 0
        let take = track.pending.sorted { $0.event.seq < $1.event.seq }.filter { $0.event.seq > cursor }
        track.cursor = max(cursor, take.last?.event.seq ?? cursor)
        track.pending = []
        track.pendingBytes = 0
        track.replaying = false
        track.again = false
        return take
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
        // Next in line: taken, even while a replay runs (its pages skip what the cursor
        // passed), so a subscriber that catches up does not hold and drop the live stream.
        if pending.isEmpty && rules.nothingMissed(before: held.event.seq, marks: held.marks, cursor: current) {
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
