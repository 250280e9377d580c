import CECore
import Foundation
import Testing

@testable import CENode

/// `Node.emit(_:)` with several events, on a node in this process: the events are stored
/// together, as its documentation says.
@Suite("Batch emits") struct EmitBatchTests {
    @Test func aBatchEmittedToAnIdleNodeIsStoredInOneTransaction() async throws {
        let cluster = try await Cluster.make([.init(name: "planner-1", pool: "planner")], pools: "", settings: "security: none\n  heartbeat_ms: 200")
        let node = try Node(options: try Node.Options(topology: cluster.topology, name: "planner-1"))
        let running = Task { try await node.run() }
        do {
            _ = try await node.emit(.planReady)
            // Idle: the emit loop waits for the next batch.
            try await eventually(10, "the emit loop waits again") { node.emits.takerWaits }
            let before = node.writer.counts
            let events = try await node.emit((0..<1000).map { Node.Emission(.planReady, payload: ["n": .number(Double($0))]) })
            let after = node.writer.counts
            #expect(events.map(\.payload) == (0..<1000).map { ["n": .number(Double($0))] })
            #expect(events.map(\.seq) == Array(events[0].seq..<events[0].seq + 1000))
            #expect(after.events - before.events == 1000)
            #expect(after.transactions - before.transactions == 1, "1000 events emitted together took \(after.transactions - before.transactions) transactions")
        } catch {
            running.cancel()
            _ = try? await running.value
            await cluster.tearDown()
            throw error
        }
        running.cancel()
        _ = try? await running.value
        await cluster.tearDown()
    }
}
