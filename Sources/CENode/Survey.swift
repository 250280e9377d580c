import CECore
import Foundation

// The survey, the refill of a new store and the saving of cursors, as decisions of
// ``Delivery``: they take the peers' answers and the time and return what to do (lines to
// take on and replay, whether the refill is done, which cursors to write); the node's loops
// only ask the peers, store and log.

extension Delivery {
    /// Refilling a new store from the peers: what is wanted, and how far it got.
    struct Refill: Sendable {
        /// False: this store was not new (or refill is off): nothing to refill.
        var wanted = false
        var started = ContinuousClock.now
        /// Peers that answered a survey since the start.
        var answered: Set<String> = []
        /// Lines replayed (found at peers, or known and behind) since the start.
        var lines: Set<Line> = []
        /// Events stored by replay since the start.
        var events = 0
        /// How far each line is to be held: what the peers held at the first survey every
        /// peer that is up answered (fixed then, so live traffic does not move the goal).
        var targets: [Line: UInt64]?
        var done = false

        var open: Bool { wanted && !done }
    }

    /// What the node knows of the cluster when it reads a survey's answers.
    struct SurveyContext: Sendable {
        /// This node, and the epoch of its own current line.
        var me: String
        var epoch: String
        /// The origins of the topology (lines of others are not taken on).
        var origins: Set<String>
        /// Whether this node keeps history from the beginning (catch-up `beginning`).
        var fromTheBeginning: Bool
        /// The peers up now (heard within three heartbeats).
        var up: [String]
    }

    /// What a survey's answers call for.
    struct SurveyOutcome: Sendable, Equatable {
        /// Lines this node had none of, taken on (from sequence 1).
        var added: [Line] = []
        /// Lines a peer holds further than this node: to replay.
        var replay: [Line] = []
    }

    /// How long cursors moved by heartbeats alone may wait to be written (they are written
    /// with the next events, or on their own after this; losing them costs only a replay
    /// that finds nothing).
    static let cursorFlush = Duration.seconds(5)

    /// How long a refill waits for the peers before it ends with what it has.
    static let refillLimit = Duration.seconds(60)

    /// Whether to survey the peers now: at the first round, while refilling, while a peer is
    /// down, or while an older line is short of what a peer said it holds (a replay of it
    /// gave up early).
    func surveyDue(first: Bool, anyDown: Bool) -> Bool {
        first || refill.open || anyDown || behind(holders).contains { tracks[$0]?.retired == true }
    }

    /// Takes the answers of a survey (peer -> line -> how far it holds it).
    mutating func surveyed(_ answers: [String: [Line: UInt64]], _ context: SurveyContext) -> SurveyOutcome {
        var byLine: [Line: [String: UInt64]] = [:]
        for (peer, lines) in answers { for (line, through) in lines { byLine[line, default: [:]][peer] = through } }
        holders = byLine
        refill.answered.formUnion(answers.keys)
        // Lines this node has none of are taken on: every one (this node's own earlier ones
        // too, its audit trail) when it keeps history from the beginning, as a refill does;
        // otherwise only an origin's newer epoch.
        let everything = refill.open || context.fromTheBeginning
        let known = current
        let candidates = byLine.keys.filter { line in
            if line.origin == context.me { return everything && line.epoch != context.epoch }
            guard context.origins.contains(line.origin) else { return false }
            if everything { return true }
            return known[line.origin].map { line.epoch > $0 } ?? false
        }
        var outcome = SurveyOutcome()
        outcome.added = adopt(candidates, own: context.me)
        outcome.replay = behind(byLine)
        // The refill's goal: the first survey that every peer that is up answered.
        if refill.open, refill.targets == nil, !answers.isEmpty, context.up.allSatisfy(answers.keys.contains) {
            let followed = Set(tracks.keys)
            refill.targets = byLine.filter { followed.contains($0.key) }.mapValues { $0.values.max() ?? 0 }
        }
        return outcome
    }

    /// Where a refill stands.
    enum RefillStep: Sendable, Equatable {
        /// Nothing to refill, or it ended before.
        case none
        /// Still going: lines short of their goal (none listed while the goal is not set yet:
        /// not every peer that is up has answered a survey).
        case going(short: [String])
        /// Ended now.
        case done
    }

    /// Ends the refill once every line is held as far as the peers held it when all those
    /// that were up first answered a survey, or once ``refillLimit`` passed. A retired line
    /// (an older epoch, or this node's own) whose replay ended holds what its peers could
    /// relay; lines of origins that go on emitting are not chased.
    mutating func checkRefill(now: ContinuousClock.Instant) -> RefillStep {
        guard refill.open else { return .none }
        let short = (refill.targets ?? [:]).compactMap { line, target -> String? in
            guard let track = tracks[line], (track.cursor ?? 0) < target, !(track.retired && !track.replaying) else { return nil }
            return "\(line) (\(track.cursor ?? 0) of \(target))"
        }.sorted()
        guard (refill.targets != nil && short.isEmpty) || now - refill.started > Self.refillLimit else {
            return .going(short: short)
        }
        refill.done = true
        return .done
    }

    /// The cursors to write with events being stored at `now`: those of the origins they
    /// come from, and, with them or once ``cursorFlush`` passed since the last write, the
    /// cursors heartbeats moved.
    mutating func cursorsToSave(for stored: [Held], now: ContinuousClock.Instant) -> [Line: UInt64] {
        var lines = Set(stored.map(\.event.line))
        if !stored.isEmpty || now - cursorsSaved >= Self.cursorFlush {
            cursorsSaved = now
            lines.formUnion(unsaved.keys)
            unsaved.removeAll()
        }
        var cursors: [Line: UInt64] = [:]
        for line in lines { if let cursor = tracks[line]?.cursor { cursors[line] = cursor } }
        return cursors
    }
}
