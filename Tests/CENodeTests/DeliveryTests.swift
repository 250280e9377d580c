import CECore
@testable import CENode
import Foundation
import Testing

/// The delivery decisions, driven without processes: every pattern of lost live events,
/// with replay pages served from the origin's log (live events arriving between pages), a
/// silent tail caught by a heartbeat, a small wait budget that forces drops. In each, the
/// subscriber ends with exactly the events it subscribes to, in the origin's order, once.
@Suite("Delivery decisions")
struct DeliveryTests {
    /// An origin's log: events with the marks it sends beside each (last seq per type before it).
    struct Origin {
        var log: [Delivery.Held] = []
        var marks: [String: UInt64] = [:]

        init(types: [String]) {
            for (index, type) in types.enumerated() {
                let seq = UInt64(index + 1)
                let event = Event(id: "o-\(seq)", origin: "o", seq: seq, stream: "s", type: try! EventType(validating: type),
                                  timestamp: Date(timeIntervalSince1970: 1_800_000_000), payload: .null)
                log.append(Delivery.Held(event: event, envelope: Array("e\(seq)".utf8), marks: marks))
                marks[type] = seq
            }
        }

        var beat: Delivery.Beat { Delivery.Beat(origin: "o", seq: UInt64(log.count), marks: marks) }

        /// A replay page: subscribed events after `after`, at most `limit`.
        func page(after: UInt64, subscribed: Set<String>, limit: Int) -> Delivery.Page {
            let events = log.filter { $0.event.seq > after && subscribed.contains($0.event.type.rawValue) }
            let taken = Array(events.prefix(limit))
            let through = events.count > limit ? taken.last!.event.seq : UInt64(log.count)
            return Delivery.Page(lastSeq: UInt64(log.count), through: through, events: taken)
        }
    }

    /// The subscriber side: a delivery and what it stored, with replay carried out as a node would.
    struct Subscriber {
        var delivery: Delivery
        var stored: [UInt64] = []
        var replaying = false
        let subscribed: Set<String>

        init(subscribed: Set<String>, maxPending: Int = 10_000) {
            self.subscribed = subscribed
            delivery = Delivery(types: subscribed, maxPending: maxPending)
            delivery.tracks[DeliveryTests.line] = Delivery.Track(cursor: 0)
            delivery.current["o"] = ""
        }

        mutating func apply(_ live: Delivery.Live) {
            stored += live.take.map(\.event.seq)
            for origin in live.replayFrom where delivery.startReplay(of: origin) { replaying = true }
        }

        mutating func pageStep(_ origin: Origin, limit: Int) {
            guard replaying else { return }
            let page = origin.page(after: delivery.replayPoint(of: DeliveryTests.line).after, subscribed: subscribed, limit: limit)
            stored += delivery.takePage(page, from: DeliveryTests.line).map(\.event.seq)
            if !delivery.pageStored(page, from: DeliveryTests.line) { replaying = false }
        }
    }

    static let line = Line("o", "")
    static let types = ["plan_ready", "note", "schema_v1", "note", "plan_ready", "note", "plan_ready"]
    static let subscribed: Set<String> = ["plan_ready", "schema_v1"]

    /// A subscriber catching up by replay takes live events that come next in line instead of
    /// holding them (it once held, then dropped, the whole live stream of a busy origin while
    /// its first pages came), and its replay ends once live events took it to the origin's end.
    @Test func aReplayingTrackTakesTheLiveStreamInLine() {
        let all = ["plan_ready", "plan_ready", "plan_ready", "plan_ready", "plan_ready", "plan_ready", "plan_ready", "plan_ready"]
        let origin = Origin(types: all)
        var subscriber = Subscriber(subscribed: ["plan_ready"])
        let started = subscriber.delivery.startReplay(of: Self.line)
        #expect(started)
        let page = origin.page(after: 0, subscribed: ["plan_ready"], limit: 3)
        subscriber.stored += subscriber.delivery.takePage(page, from: Self.line).map(\.event.seq)
        let live = subscriber.delivery.receive(Array(origin.log[3...]))
        #expect(live.take.map(\.event.seq) == [4, 5, 6, 7, 8])
        #expect(live.dropped == 0 && live.replayFrom.isEmpty)
        subscriber.apply(live)
        #expect(subscriber.delivery.tracks[Self.line]?.pending.isEmpty == true)
        let more = subscriber.delivery.pageStored(page, from: Self.line)
        #expect(!more, "the replay goes on although live events reached the origin's end")
        #expect(subscriber.stored == Array(1...8))
        // A gap behind the cursor still holds what follows it, replay or not.
        let later = Origin(types: all + ["plan_ready", "plan_ready"])
        let held = subscriber.delivery.receive([later.log[9]])
        #expect(held.take.isEmpty && held.replayFrom == [Self.line])
    }

    /// Every subset of the subscribed live events lost on the wire, replay pages of 1 or 2
    /// events, live events arriving between pages at every point.
    @Test(arguments: [1, 2])
    func everyLossPatternEndsWithEverySubscribedEventOnceInOrder(pageLimit: Int) {
        let origin = Origin(types: Self.types)
        let wire = origin.log.filter { Self.subscribed.contains($0.event.type.rawValue) }  // the SUB filter
        let expected = wire.map(\.event.seq)
        var cases = 0
        for mask in 0..<(1 << wire.count) {
            for pagesBetween in 0...2 {
                var subscriber = Subscriber(subscribed: Self.subscribed)
                for (index, held) in wire.enumerated() {
                    if mask & (1 << index) == 0 { subscriber.apply(subscriber.delivery.receive([held])) }
                    for _ in 0..<pagesBetween { subscriber.pageStep(origin, limit: pageLimit) }
                }
                subscriber.apply(subscriber.delivery.receive([], beats: [origin.beat]))
                var steps = 0
                while subscriber.replaying && steps < 100 {
                    subscriber.pageStep(origin, limit: pageLimit)
                    steps += 1
                }
                #expect(!subscriber.replaying, "mask \(mask): replay did not end")
                #expect(subscriber.stored == expected, "mask \(mask), \(pagesBetween) pages between: stored \(subscriber.stored)")
                #expect(subscriber.delivery.tracks[DeliveryTests.line]?.cursor == UInt64(origin.log.count), "mask \(mask)")
                #expect(subscriber.delivery.tracks[DeliveryTests.line]?.pending.isEmpty == true)
                cases += 1
            }
        }
        #expect(cases == (1 << wire.count) * 3)
    }

    /// With room for one waiting event, the rest behind a gap are dropped, and replay still
    /// brings every one of them.
    @Test func eventsDroppedBehindAGapComeBackByReplay() {
        let origin = Origin(types: Self.types)
        let wire = origin.log.filter { Self.subscribed.contains($0.event.type.rawValue) }
        var subscriber = Subscriber(subscribed: Self.subscribed, maxPending: 1)
        let live = subscriber.delivery.receive(Array(wire.dropFirst()))  // the first is lost
        #expect(live.take.isEmpty)
        #expect(live.dropped == wire.count - 2, "one waits, the others are dropped")
        #expect(live.replayFrom == [Self.line])
        subscriber.apply(live)
        var steps = 0
        while subscriber.replaying && steps < 50 {
            subscriber.pageStep(origin, limit: 1)
            steps += 1
        }
        #expect(subscriber.stored == wire.map(\.event.seq))
    }

    /// Events the store refused (a full disk) at every point of a stream, live or from a
    /// replay page: the line goes back to before them, what comes after waits behind the gap,
    /// and replay brings every event once the store takes writes again.
    @Test(arguments: [1, 2])
    func eventsTheStoreRefusedComeBackByReplay(pageLimit: Int) {
        let origin = Origin(types: Self.types)
        let wire = origin.log.filter { Self.subscribed.contains($0.event.type.rawValue) }
        for failing in wire.indices {
            var subscriber = Subscriber(subscribed: Self.subscribed)
            // Live up to the failing event: it and the one after it are taken, then refused.
            subscriber.apply(subscriber.delivery.receive(Array(wire[..<failing])))
            let refused = subscriber.delivery.receive(Array(wire[failing...].prefix(2)))
            #expect(refused.take.map(\.event.seq) == wire[failing...].prefix(2).map(\.event.seq))
            let lines = subscriber.delivery.notStored(refused.take)
            #expect(lines == [Self.line])
            #expect(subscriber.delivery.tracks[Self.line]?.cursor == wire[failing].event.seq - 1, "refused at \(failing): the cursor goes back")
            // Later live events wait behind the gap the refusal left.
            let after = subscriber.delivery.receive(Array(wire[failing...].dropFirst(2)))
            #expect(after.take.isEmpty)
            subscriber.apply(Delivery.Live(replayFrom: Set(lines)))
            subscriber.apply(after)
            // The first replay page is refused too: the replay goes round again from the same point.
            let page = origin.page(after: subscriber.delivery.replayPoint(of: Self.line).after, subscribed: Self.subscribed, limit: pageLimit)
            let taken = subscriber.delivery.takePage(page, from: Self.line)
            _ = subscriber.delivery.notStored(taken)
            #expect(subscriber.delivery.replayPoint(of: Self.line).after == wire[failing].event.seq - 1)
            #expect(subscriber.delivery.tracks[Self.line]?.again == true)
            var steps = 0
            while subscriber.replaying && steps < 50 {
                subscriber.pageStep(origin, limit: pageLimit)
                steps += 1
            }
            #expect(subscriber.stored == wire.map(\.event.seq), "refused at \(failing): stored \(subscriber.stored)")
        }
    }

    /// Filtered gaps are not losses: events whose marks show only unsubscribed types in
    /// between are taken at once; a heartbeat moves the cursor past an unsubscribed tail.
    @Test func filteredGapsPassWithoutReplay() {
        let origin = Origin(types: Self.types + ["note"])  // an unsubscribed tail
        let wire = origin.log.filter { Self.subscribed.contains($0.event.type.rawValue) }
        var subscriber = Subscriber(subscribed: Self.subscribed)
        let live = subscriber.delivery.receive(wire, beats: [origin.beat])
        #expect(live.take.map(\.event.seq) == wire.map(\.event.seq))
        #expect(live.replayFrom.isEmpty)
        #expect(subscriber.delivery.tracks[DeliveryTests.line]?.cursor == UInt64(origin.log.count))
        #expect(subscriber.delivery.cursorsToSave(for: [], now: .now + .seconds(6)) == [Self.line: UInt64(origin.log.count)])
    }

    /// Duplicates (a replayed event arriving live again) are counted, not taken; an origin
    /// heard below the cursor is reported once.
    @Test func duplicatesAndRegressions() {
        let origin = Origin(types: ["plan_ready", "plan_ready"])
        var subscriber = Subscriber(subscribed: ["plan_ready"])
        _ = subscriber.delivery.receive(origin.log)
        let again = subscriber.delivery.receive(origin.log, beats: [Delivery.Beat(origin: "o", seq: 1, marks: nil)])
        #expect(again.take.isEmpty)
        #expect(again.duplicates == 2)
        #expect(again.regressions.count == 1 && again.regressions[0].seq == 1 && again.regressions[0].cursor == 2)
        let once = subscriber.delivery.receive([], beats: [Delivery.Beat(origin: "o", seq: 1, marks: nil)])
        #expect(once.regressions.isEmpty, "said once")
    }

    /// Catch-up "now": no cursor until the first contact, which sets it.
    @Test func catchUpNowStartsAtTheFirstContact() {
        let origin = Origin(types: ["plan_ready", "plan_ready", "plan_ready"])
        var delivery = Delivery(types: nil)
        delivery.unheard["o"] = Delivery.Track(cursor: nil)
        let live = delivery.receive(Array(origin.log.dropFirst(1)))
        #expect(live.take.map(\.event.seq) == [2, 3], "starts at the first event heard")
        var fresh = Delivery(types: nil)
        fresh.unheard["o"] = Delivery.Track(cursor: nil)
        _ = fresh.receive([], beats: [origin.beat])
        #expect(fresh.tracks[DeliveryTests.line]?.cursor == 3, "a heartbeat first: from the origin's next event")
    }

    /// An origin whose store was replaced numbers from 1 in a new epoch: its new events are
    /// taken from sequence 1, the old line is kept (retired, its tail wanted from peers), and
    /// an event of the old epoch arriving late is not taken as new.
    @Test func aNewEpochStartsAtOneAndKeepsTheOldLine() {
        let old = Origin(types: ["plan_ready", "plan_ready", "plan_ready"])
        var subscriber = Subscriber(subscribed: ["plan_ready"])
        subscriber.apply(subscriber.delivery.receive(Array(old.log.prefix(2))))
        let fresh = Event(id: "n-1", origin: "o", epoch: "e2", seq: 1, stream: "s", type: .planReady,
                          timestamp: Date(timeIntervalSince1970: 1_800_000_100), payload: .null)
        let live = subscriber.delivery.receive([Delivery.Held(event: fresh, envelope: [1], marks: [:])])
        #expect(live.take.map(\.event.id) == ["n-1"], "sequence 1 of the new epoch is taken, not refused as held")
        #expect(live.newEpochs.count == 1 && live.newEpochs[0].old == Self.line && live.newEpochs[0].new == Line("o", "e2"))
        #expect(live.replayFrom == [Self.line], "the old line's tail is wanted from peers")
        #expect(subscriber.delivery.tracks[Self.line]?.retired == true)
        #expect(subscriber.delivery.tracks[Self.line]?.cursor == 2, "the old line keeps what it holds")
        #expect(subscriber.delivery.current["o"] == "e2")
        let late = subscriber.delivery.receive([old.log[2]], beats: [old.beat])
        #expect(late.take.isEmpty && late.stale == 2, "the old epoch's event and heartbeat are not live any more")
        // A heartbeat of the new epoch past what is held asks for replay of the new line.
        let beat = subscriber.delivery.receive([], beats: [Delivery.Beat(origin: "o", epoch: "e2", seq: 3, marks: ["plan_ready": 3])])
        #expect(beat.replayFrom == [Line("o", "e2")])
        #expect(subscriber.delivery.cursorsToSave(for: live.take, now: .now) == [Line("o", "e2"): 1])
    }

    /// A newer epoch that a peer claims for an origin in the survey is believed only until the
    /// origin speaks: its next live event, in the epoch it really numbers in, is taken, and the
    /// claimed line is retired. Without a claim, an older epoch stays stale.
    @Test func aClaimedEpochGivesWayWhenTheOriginSpeaks() {
        let origin = Origin(types: ["plan_ready", "plan_ready", "plan_ready"])
        var subscriber = Subscriber(subscribed: ["plan_ready"])
        subscriber.apply(subscriber.delivery.receive(Array(origin.log.prefix(1))))
        let heard = Self.line
        // The survey: a listed peer says it holds the origin in a newer epoch "zz".
        let claim = Line("o", "zz")
        #expect(subscriber.delivery.adopt([claim], own: "me") == [claim])
        #expect(subscriber.delivery.current["o"] == "zz" && subscriber.delivery.claimed == ["o"])
        // The origin goes on in the epoch it numbers in: taken at once, the claim retired.
        let live = subscriber.delivery.receive([origin.log[1]])
        #expect(live.take.map(\.event.seq) == [2], "the origin's own live event is taken")
        #expect(subscriber.delivery.current["o"] == heard.epoch && subscriber.delivery.claimed.isEmpty)
        #expect(subscriber.delivery.tracks[claim]?.retired == true)
        #expect(subscriber.delivery.tracks[heard]?.retired == false && subscriber.delivery.tracks[heard]?.cursor == 2)
    }

    /// A refilled store (the origin never heard) takes the newest surveyed epoch as current, but
    /// the origin speaking in another one makes that one current, keeping what was refilled.
    @Test func aRefillsNewestEpochIsOnlyClaimedUntilTheOriginSpeaks() {
        var delivery = Delivery(types: nil)
        delivery.unheard["o"] = Delivery.Track(cursor: 0)
        _ = delivery.adopt([Line("o", "e1"), Line("o", "e9")], own: "me")
        #expect(delivery.current["o"] == "e9" && delivery.claimed == ["o"])
        delivery.tracks[Line("o", "e1")]!.cursor = 4  // refilled up to 4 from relays
        let event = Event(id: "o-5", origin: "o", epoch: "e1", seq: 5, stream: "s", type: .planReady,
                          timestamp: Date(timeIntervalSince1970: 1_800_000_000), payload: .null)
        let live = delivery.receive([Delivery.Held(event: event, envelope: [1], marks: [:])])
        #expect(live.take.map(\.event.id) == ["o-5"], "the origin's event after the refilled ones is taken")
        #expect(delivery.current["o"] == "e1" && delivery.tracks[Line("o", "e9")]?.retired == true)
    }

    /// A refill takes on every line peers hold: the newest epoch of an origin becomes its
    /// current one, older ones and this node's own earlier lines are retired (replayed from
    /// relays only); origins not followed are left out.
    @Test func adoptedLinesOfARefill() {
        var delivery = Delivery(types: nil)
        delivery.unheard["o"] = Delivery.Track(cursor: 0)
        let added = delivery.adopt([Line("o", "e1"), Line("o", "e2"), Line("me", "e0"), Line("stranger", "x")], own: "me")
        #expect(Set(added) == [Line("o", "e1"), Line("o", "e2"), Line("me", "e0")])
        #expect(delivery.current["o"] == "e2")
        #expect(delivery.tracks[Line("o", "e1")]?.retired == true)
        #expect(delivery.tracks[Line("o", "e2")]?.retired == false)
        #expect(delivery.tracks[Line("me", "e0")]?.own == true)
        #expect(delivery.tracks[Line("stranger", "x")] == nil)
        #expect(delivery.adopt([Line("o", "e2")], own: "me").isEmpty, "a line is taken on once")
    }
}
