import CECluster
import CECore
import CENode
import Foundation
import Testing

/// The control commands `ce-node mcp` uses, on real node processes.
@Suite("Agent control commands", .serialized)
struct AgentControlTests {
    static let nodes: [Cluster.NodeDef] = [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]

    @Test func eventsAfterACursorAreEachReturnedOnceAndALongPollWakesUp() async throws {
        try await withCluster(Self.nodes) { cluster in
            let start = try await cluster.control("builder-1", ["cmd": "events_after", "after": "now"])["cursor"]!
            for n in 0..<3 { try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(n))]) }
            try await cluster.emit("planner-1", "schema_v1", ["v": 1])
            var cursor = start
            var seen: [Int] = []
            try await eventually(10, "builder-1 stores the three plan_ready") {
                let reply = try await cluster.control("builder-1", ["cmd": "events_after", "after": cursor, "types": ["plan_ready"], "limit": 2])
                seen += (reply["events"]?.arrayValue ?? []).compactMap { $0["payload"]?["n"]?.intValue }
                cursor = reply["cursor"]!
                return seen.count >= 3
            }
            #expect(seen == [0, 1, 2])
            let none = try await cluster.control("builder-1", ["cmd": "events_after", "after": cursor, "types": ["plan_ready"]])
            #expect(none["events"]?.arrayValue?.isEmpty == true)
            // A wait that starts before the event returns it, well before its deadline.
            let started = ContinuousClock.now
            async let waited = cluster.control(
                "builder-1", ["cmd": "events_after", "after": cursor, "types": ["plan_ready"], "wait_ms": 20000], timeout: .seconds(30))
            try await Task.sleep(for: .milliseconds(300))
            try await cluster.emit("planner-1", "plan_ready", ["n": 3])
            let reply = try await waited
            #expect(reply["events"]?.arrayValue?.first?["payload"]?["n"]?.intValue == 3)
            #expect(ContinuousClock.now - started < .seconds(10))
            let bad = await #expect(throws: NodeError.self) {
                try await cluster.control("builder-1", ["cmd": "events_after", "wait_ms": 700_000])
            }
            #expect(bad?.description.contains("wait_ms") == true)
        }
    }

    @Test func aQuestionIsHeldForAnAttachedAnswererAndAnsweredOnce() async throws {
        try await withCluster(Self.nodes) { cluster in
            // Nobody attached and no workspace: refused at once, as before.
            let refused = await #expect(throws: NodeError.self) {
                try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "?"])
            }
            #expect(refused?.description.contains("nobody answers questions on planner-1") == true, "\(refused?.description ?? "")")
            // An answerer waits for questions; builder-1 asks meanwhile.
            async let pending = cluster.control("planner-1", ["cmd": "questions", "wait_ms": 15000], timeout: .seconds(20))
            try await Task.sleep(for: .milliseconds(200))
            async let answer = cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "cookie or token?", "timeout_ms": 10000], timeout: .seconds(30))
            let question = try await pending["questions"]?.arrayValue?.first
            #expect(question?["question"]?.stringValue == "cookie or token?")
            #expect(question?["from_pool"]?.stringValue == "builder")
            let id = try #require(question?["request_id"]?.stringValue)
            _ = try await cluster.control("planner-1", ["cmd": "answer", "request_id": .string(id), "answer": "token"])
            #expect(try await answer["answer"]?.stringValue == "token")
            let twice = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "answer", "request_id": .string(id), "answer": "cookie"])
            }
            #expect(twice?.description.contains("already answered") == true, "\(twice?.description ?? "")")
            #expect(try await cluster.status("planner-1")["counters"]?["questions_answered"]?.intValue == 1)
        }
    }

    /// A question held for an attached answerer expires with its asker: it leaves the
    /// pending list, and an answer given after that is refused as late, not delivered.
    @Test func aQuestionWhoseAskerGaveUpLeavesThePendingListAndALateAnswerIsRefused() async throws {
        try await withCluster(Self.nodes) { cluster in
            async let pending = cluster.control("planner-1", ["cmd": "questions", "wait_ms": 15000], timeout: .seconds(20))
            // A questions call attaches an answerer (for a lease): once one returned, a
            // question is held for it rather than refused at once.
            try await eventually(10, "an answerer is attached") {
                (try? await cluster.control("planner-1", ["cmd": "questions"])) != nil
            }
            let asked = await #expect(throws: NodeError.self) {
                try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "still there?", "timeout_ms": 1000], timeout: .seconds(30))
            }
            #expect(asked?.description.contains("did not answer") == true || asked?.description.contains("no answer") == true, "\(asked?.description ?? "")")
            let held = try await pending["questions"]?.arrayValue?.first
            let id = try #require(held?["request_id"]?.stringValue)
            try await eventually(10, "the expired question leaves the pending list") {
                try await cluster.control("planner-1", ["cmd": "questions"])["questions"]?.arrayValue?.isEmpty == true
            }
            let late = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "answer", "request_id": .string(id), "answer": "yes"])
            }
            #expect(late?.description.contains("expired") == true, "\(late?.description ?? "")")
            #expect(try await cluster.status("planner-1")["counters"]?["questions_answered"]?.intValue == 0)
        }
    }
}
