import CECore
import Foundation
import Synchronization
import Testing

@testable import CENode

/// Questions answered by a Swift handler (`Node.answerQuestions`), on a node in this process
/// that asks its own pool.
@Suite("Swift question handlers") struct AskHandlerTests {
    @Test func aHandlerThatBlocksItsThreadHoldsUpNoOtherQuestion() async throws {
        try await withNodeInProcess { node in
            let release = DispatchSemaphore(value: 0)
            defer { release.signal() }  // also when the test fails before it lets the handler go
            let holding = Flag()
            node.answerQuestions { question in
                if question.question == "hold" {
                    holding.set()
                    // Blocks its thread (bounded), as a handler doing long synchronous work would.
                    _ = release.wait(timeout: .now() + 20)
                }
                return ["echo": question.question]
            }
            let held = Task { try await node.ask(pool: "planner", question: "hold", timeout: .seconds(30), retries: 0) }
            try await eventually(10, "the first question reaches the handler") { holding.isSet }

            // The answer loop and the sockets go on while that handler holds its thread.
            let answer = try await node.ask(pool: "planner", question: "ping", timeout: .seconds(5), retries: 0)
            #expect(answer == ["echo": "ping"])
            #expect(holding.isSet)

            release.signal()
            #expect(try await held.value == ["echo": "hold"])
            #expect(node.counters.questionsAnswered == 2)
        }
    }
}

private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
}
