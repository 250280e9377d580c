import CECore
import CEStore
import Foundation
import Testing

@testable import CENode

/// `Node.emit(_:)` with several events, on a node in this process: the events are stored
/// together, as its documentation says.
@Suite("Batch emits") struct EmitBatchTests {
    @Test func aBatchEmittedToAnIdleNodeIsStoredInOneTransaction() async throws {
        try await withNodeInProcess { node in
            _ = try await node.emit(.planReady)
            // Idle: the emit loop waits for the next batch.
            try await eventually(10, "the emit loop waits again") { node.publisher.queue.takerWaits }
            let before = node.writer.counts
            let events = try await node.emit((0..<1000).map { Node.Emission(.planReady, payload: ["n": .number(Double($0))]) })
            let after = node.writer.counts
            #expect(events.map(\.payload) == (0..<1000).map { ["n": .number(Double($0))] })
            #expect(events.map(\.seq) == Array(events[0].seq..<events[0].seq + 1000))
            #expect(after.events - before.events == 1000)
            #expect(after.transactions - before.transactions == 1, "1000 events emitted together took \(after.transactions - before.transactions) transactions")
        }
    }

    @Test func aRefusedEventFailsAloneAndTheRestOfItsBatchIsStored() async throws {
        try await withNodeInProcess { node in
            _ = try await node.emit(.planReady)
            // An event of another origin, held here, whose id an emit then tries to take.
            let foreign = Event(id: "taken-id", origin: "builder-1", seq: 1, stream: "builder", type: .buildReady, timestamp: Date(), payload: .null)
            _ = try await node.writer.append(StoredEvent(event: foreign, envelope: EnvelopeCodec.encode(foreign)))
            try await eventually(10, "the emit loop waits again") { node.publisher.queue.takerWaits }
            let before = node.writer.counts.transactions
            let outcomes = await node.emitEach([
                Node.Emission(.planReady, payload: 1),
                Node.Emission(.planReady, payload: 2, id: "taken-id"),
                Node.Emission(.planReady, payload: 3, stream: "not a name"),
                Node.Emission(.planReady, payload: 4, id: "mine-1"),
                Node.Emission(.planReady, payload: 5, id: "mine-1"),
            ])
            #expect(node.writer.counts.transactions - before == 1)
            let stored = outcomes.map { (try? $0.get())?.payload }
            #expect(stored == [1, nil, nil, 4, 4], "the repeated id gets the event stored under it")
            #expect("\(outcomes[1])".contains("taken by an event of builder-1"))
            #expect("\(outcomes[2])".contains("not a valid name"))
            let seqs = outcomes.compactMap { try? $0.get().seq }
            #expect(seqs == [seqs[0], seqs[0] + 1, seqs[0] + 1], "two events stored, numbered one after the other")
            // emit([...]) over the same: the first failure, after all of them finished.
            await #expect(throws: NodeError.self) { try await node.emit([Node.Emission(.planReady, payload: 6), Node.Emission(.planReady, id: "taken-id")]) }
            #expect(try await node.emit([Node.Emission(.planReady, payload: 7)]).map(\.payload) == [7])
        }
    }
}
