import CECluster
import CECore
import CENode
import Foundation
import Testing

/// A question to a file-only agent lasts as long as its asker waits: then its request file
/// moves to requests/expired/ and a late reply is refused, not delivered.
@Suite("Question expiry in the event folder", .serialized)
struct QuestionExpiryTests {
    static let nodes: [Cluster.NodeDef] = [.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder")]

    /// The question file in requests/ (its name without `.json`) once one appears.
    static func nextQuestion(in folder: String) async throws -> String {
        var name: String?
        try await eventually(10, "a question file appears in \(folder)/requests") {
            name = (try? FileManager.default.contentsOfDirectory(atPath: folder + "/requests"))?.first { $0.hasSuffix(".json") && !$0.hasPrefix(".") }
            return name != nil
        }
        return String(name!.dropLast(5))
    }

    /// Writes a reply as an agent does: into a hidden file, then renamed into replies/.
    static func reply(_ id: String, _ answer: JSONValue, in folder: String) throws {
        let hidden = folder + "/replies/.\(id).json.tmp"
        try Data(JSONValue.object(["answer": answer]).serialized()).write(to: URL(fileURLWithPath: hidden))
        try FileManager.default.moveItem(atPath: hidden, toPath: folder + "/replies/\(id).json")
    }

    static func files(_ directory: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] }

    @Test func aQuestionExpiresWithItsAskerAndALateReplyIsRefused() async throws {
        // The topology's asks wait 500 ms, retried once: about a second in all.
        try await withCluster(Self.nodes) { cluster in
            let folder = cluster.workspace("planner-1") + "/.ce-events"

            // An asker that waits longer than the topology's default says so in its request:
            // an answer written after the default wait but within the asker's still arrives.
            async let patient = cluster.control(
                "builder-1", ["cmd": "ask", "pool": "planner", "question": "take your time", "timeout_ms": 5000], timeout: .seconds(30))
            let first = try await Self.nextQuestion(in: folder)
            let request = try JSONValue(parsing: [UInt8](FileManager.default.contents(atPath: folder + "/requests/\(first).json")!))
            #expect(request["expires_at"]?.stringValue.flatMap(Timestamp.parse) != nil, "\(request)")
            try await Task.sleep(for: .milliseconds(1500))
            try Self.reply(first, "worth the wait", in: folder)
            #expect(try await patient["answer"]?.stringValue == "worth the wait")

            // An asker that gives up: the question moves to requests/expired/.
            let impatient = Task { try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "cookie or token?"]) }
            let id = try await Self.nextQuestion(in: folder)
            let gaveUp = await #expect(throws: NodeError.self) { try await impatient.value }
            #expect(gaveUp?.description.contains("did not answer") == true, "\(gaveUp?.description ?? "")")
            try await eventually(10, "the question moves to requests/expired/") {
                Self.files(folder + "/requests/expired").contains(id + ".json") && !Self.files(folder + "/requests").contains(id + ".json")
            }
            let expired = try JSONValue(parsing: [UInt8](FileManager.default.contents(atPath: folder + "/requests/expired/\(id).json")!))
            #expect(expired["question"]?.stringValue == "cookie or token?")
            let expiresAt = try #require(expired["expires_at"]?.stringValue)

            // A file the agent is still writing is not touched.
            let unfinished = folder + "/replies/.\(id).json.partial"
            try Data("{\"answer\":".utf8).write(to: URL(fileURLWithPath: unfinished))
            // The late answer is refused, with a note saying the question expired, and when.
            try Self.reply(id, "token", in: folder)
            try await eventually(10, "the late reply lands in rejected/") {
                Self.files(folder + "/rejected").contains(id + ".json.error") && !Self.files(folder + "/replies").contains(id + ".json")
            }
            let note = try String(contentsOfFile: folder + "/rejected/\(id).json.error", encoding: .utf8)
            #expect(note.contains("question \(id) expired at \(expiresAt)"), "\(note)")
            #expect(note.contains("not delivered"), "\(note)")
            #expect(try String(contentsOfFile: folder + "/rejected/\(id).json", encoding: .utf8).contains("token"))
            #expect(FileManager.default.fileExists(atPath: unfinished))
            // Logged right after the file moves: wait for the line rather than race it.
            try await eventually(5, "the refusal is logged") { cluster.log("planner-1").contains("reply file \(id).json refused") }

            // Nobody got the late answer: only the patient question was answered.
            let counters = try await cluster.status("planner-1")["counters"]
            #expect(counters?["questions_answered"]?.intValue == 1)
            let asker = try await cluster.status("builder-1")["counters"]
            #expect(asker?["asks_failed"]?.intValue == 1, "\(asker ?? .null)")

            // A reply to a question nobody asked is refused too.
            try Self.reply("never-asked", "?", in: folder)
            try await eventually(10, "the stray reply lands in rejected/") {
                Self.files(folder + "/rejected").contains("never-asked.json.error")
            }
            let stray = try String(contentsOfFile: folder + "/rejected/never-asked.json.error", encoding: .utf8)
            #expect(stray.contains("no question never-asked waits"), "\(stray)")
        }
    }
}
