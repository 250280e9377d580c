import CECore
@testable import CENode
import Foundation
import Testing

/// The survey, the refill and the cursor flush as delivery decisions: answers and the time
/// in, directives out, without sockets or a store.
@Suite("Survey and refill decisions")
struct SurveyTests {
    static let a1 = Line("a", "e1"), a2 = Line("a", "e2"), b1 = Line("b", "e1"), mine = Line("me", "old")

    static func context(fromTheBeginning: Bool = true, up: [String] = ["a", "b"]) -> Delivery.SurveyContext {
        Delivery.SurveyContext(me: "me", epoch: "now", origins: ["me", "a", "b"], fromTheBeginning: fromTheBeginning, up: up)
    }

    static func delivery() -> Delivery {
        var d = Delivery(types: nil)
        d.tracks[a1] = Delivery.Track(cursor: 10)
        d.current["a"] = "e1"
        d.unheard["b"] = Delivery.Track(cursor: 0)  // followed, never heard
        return d
    }

    @Test func aSurveyTakesOnLinesItLacksAndReplaysThoseItIsBehindOn() {
        var d = Self.delivery()
        let answers: [String: [Line: UInt64]] = [
            "a": [Self.a1: 12, Self.mine: 3],
            "b": [Self.a1: 11, Self.b1: 7, Line("stranger", "x"): 9],
        ]
        let outcome = d.surveyed(answers, Self.context())
        #expect(Set(outcome.added) == [Self.b1, Self.mine], "every line of the topology it has none of, its own older one too; none of a stranger")
        #expect(Set(outcome.replay) == [Self.a1, Self.b1, Self.mine], "a1 is held further by a peer; the new lines from their start")
        #expect(d.holders[Self.a1] == ["a": 12, "b": 11])
        #expect(d.tracks[Line("stranger", "x")] == nil)
    }

    @Test func withoutHistoryFromTheBeginningOnlyANewerEpochIsTakenOn() {
        var d = Self.delivery()
        let outcome = d.surveyed(["b": [Self.a2: 4, Self.b1: 7, Self.mine: 3]], Self.context(fromTheBeginning: false))
        #expect(outcome.added == [Self.a2])
        #expect(outcome.replay == [Self.a2])
    }

    @Test func theRefillsGoalIsSetByTheFirstSurveyEveryPeerUpAnsweredAndItEndsThere() {
        var d = Self.delivery()
        d.refill.wanted = true
        let start = ContinuousClock.now
        _ = d.surveyed(["a": [Self.a1: 12]], Self.context(up: ["a", "b"]))
        #expect(d.refill.targets == nil, "b is up and did not answer")
        #expect(d.checkRefill(now: start) == .going(short: []))
        #expect(d.surveyDue(first: false, anyDown: false), "surveys go on while refilling")
        _ = d.surveyed(["a": [Self.a1: 12], "b": [Self.b1: 5]], Self.context(up: ["a", "b"]))
        #expect(d.refill.targets == [Self.a1: 12, Self.b1: 5])
        #expect(d.refill.answered == ["a", "b"])
        // Later answers do not move the goal.
        _ = d.surveyed(["a": [Self.a1: 40], "b": [Self.b1: 50]], Self.context(up: ["a", "b"]))
        #expect(d.refill.targets == [Self.a1: 12, Self.b1: 5])
        d.tracks[Self.a1]!.cursor = 12
        #expect(d.checkRefill(now: start) == .going(short: ["b@e1 (0 of 5)"]))
        d.tracks[Self.b1]!.cursor = 5
        #expect(d.checkRefill(now: start) == .done)
        #expect(d.checkRefill(now: start) == .none, "done once")
        #expect(!d.surveyDue(first: false, anyDown: false))
        #expect(d.surveyDue(first: false, anyDown: true))
    }

    @Test func aRefillEndsAfterItsLimitWithWhatItHas() {
        var d = Self.delivery()
        d.refill.wanted = true
        #expect(d.checkRefill(now: d.refill.started + .seconds(59)) == .going(short: []))
        #expect(d.checkRefill(now: d.refill.started + Delivery.refillLimit + .seconds(1)) == .done)
    }

    @Test func aReplayStartedDuringARefillIsCountedAsItsLine() {
        var d = Self.delivery()
        d.refill.wanted = true
        let started = d.startReplay(of: Self.a1)
        #expect(started)
        d.refilled(3)
        #expect(d.refill.lines == [Self.a1] && d.refill.events == 3)
        d.refill.done = true
        d.refilled(3)
        #expect(d.refill.events == 3, "not counted once the refill ended")
    }

    @Test func cursorsMovedByHeartbeatsAloneWaitForEventsOrTheFlushTime() {
        var d = Self.delivery()
        let start = d.cursorsSaved
        d.tracks[Self.b1] = Delivery.Track(cursor: 3)
        d.unsaved[Self.b1] = 3
        #expect(d.cursorsToSave(for: [], now: start + .seconds(1)) == [:], "not on their own before the flush time")
        #expect(d.cursorsToSave(for: [], now: start + Delivery.cursorFlush) == [Self.b1: 3])
        #expect(d.unsaved.isEmpty)
        d.unsaved[Self.b1] = 3
        let event = Event(id: "x", origin: "a", epoch: "e1", seq: 10, stream: "p", type: .planReady, timestamp: Date(), payload: [:], correlationID: nil, target: nil)
        let held = Delivery.Held(event: event, envelope: EnvelopeCodec.encode(event), marks: nil)
        #expect(d.cursorsToSave(for: [held], now: start + Delivery.cursorFlush + .seconds(1)) == [Self.a1: 10, Self.b1: 3], "with events: theirs and the waiting ones")
        #expect(d.cursorsToSave(for: [], now: start + Delivery.cursorFlush + .seconds(2)) == [:], "the flush time counts from the last write")
    }
}
