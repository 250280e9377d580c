import CECore
import Foundation
import Testing

/// The control protocol's one codec: every request survives the wire, every malformed one is
/// refused naming what is wrong, and PROTOCOL.md lists exactly the commands the codec reads.
@Suite("Control protocol")
struct ControlProtocolTests {
    static let samples: [ControlRequest] = {
        var after = ControlRequest.EventsAfter()
        after.after = .now
        after.types = [.planReady]
        after.origin = "planner-1"
        after.since = Timestamp.parse("2026-11-25T03:40:14.123Z")
        after.limit = 7
        after.waitMilliseconds = 1500
        var history = ControlRequest.HistoryQuery()
        history.types = [.buildReady, .planReady]
        history.origin = "builder-1"
        history.afterSeq = 3
        history.limit = 5000
        history.newestFirst = true
        return [
            .status, .gates,
            .emit(.init(.planReady, payload: ["a": 1], stream: "planner", correlationID: "c-1", target: "builder", id: "x.1", allowCustomType: true)),
            .emitBatch([.init(.planReady), .init(try! EventType(validating: "schema_v1"), payload: "s")]),
            .ask(pool: "planner", question: ["text": "?"], timeoutMilliseconds: 500),
            .eventsAfter(after), .eventsAfter(.init()),
            .questions(waitMilliseconds: 20_000, known: ["r1", "r2"]),
            .answer(requestID: "r1", answer: "yes"),
            .history(history),
        ]
    }()

    @Test func everyRequestSurvivesTheWire() throws {
        for request in Self.samples {
            let wire = try JSONValue(parsing: request.json.serialized())
            #expect(try ControlRequest(json: wire) == request, "\(wire.serializedString)")
            #expect(wire["v"]?.intValue == ControlRequest.version)
        }
    }

    @Test func everyReplySurvivesTheWire() throws {
        let cases: [(ControlRequest, ControlReply)] = [
            (.status, .status(["node": "a"])),
            (Self.samples[2], .event(["id": "x"])),
            (Self.samples[3], .events([.init(id: "a", seq: 1), .init(id: "b", seq: 2)])),
            (Self.samples[4], .answer("token")),
            (Self.samples[5], .eventsAfter(events: [["id": "e"]], cursor: 42)),
            (Self.samples[7], .questions([.init(requestID: "r", fromNode: "b-1", fromPool: "builder", question: "?", askedAt: Timestamp.parse("2026-11-25T03:40:14.123Z")!, waitingMilliseconds: 12)])),
            (Self.samples[8], .answered(requestID: "r1")),
            (Self.samples[9], .history(events: [["id": "h"]], truncated: true)),
            (.gates, .gates(["gates": []])),
            (.status, .failure("no")),
        ]
        for (request, reply) in cases {
            let wire = try JSONValue(parsing: reply.json.serialized())
            #expect(try ControlReply(json: wire, answering: request) == reply, "\(wire.serializedString)")
        }
    }

    @Test func malformedRequestsAreRefusedNamingWhatIsWrong() {
        func refusal(_ json: JSONValue) -> String {
            do {
                _ = try ControlRequest(json: json)
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(refusal(["cmd": "statsu"]).contains("unknown command \"statsu\" (did you mean status?)"))
        #expect(refusal(["v": 2, "cmd": "status"]).contains("version 2 is not spoken here (this node speaks 1)"))
        #expect(refusal(["no": "cmd"]).contains("needs \"cmd\""))
        #expect(refusal("status").contains("a JSON object"))
        #expect(refusal(["cmd": "emit"]).contains("emit: needs \"event_type\""))
        #expect(refusal(["cmd": "emit", "event_type": "Plan"]).contains("may only contain a-z"))
        #expect(refusal(["cmd": "emit", "event_type": "plan_ready", "stream": 3]).contains("\"stream\" must be a string"))
        #expect(refusal(["cmd": "emit", "event_type": "plan_ready", "id": "../x"]).contains("\"id\""))
        #expect(refusal(["cmd": "emit", "event_type": "plan_ready", "allow_custom_type": "yes"]).contains("must be true or false"))
        #expect(refusal(["cmd": "emit", "events": []]).contains("1 to 10000 events"))
        #expect(refusal(["cmd": "emit", "events": [["event_type": "plan_ready"], 5]]).contains("events[1] must be an object"))
        #expect(refusal(["cmd": "ask", "question": "?"]).contains("ask: needs \"pool\""))
        #expect(refusal(["cmd": "events_after", "after": -1]).contains("\"after\" must be a cursor"))
        #expect(refusal(["cmd": "events_after", "wait_ms": 700_000]).contains("\"wait_ms\" must be an integer from 0 to 600000"))
        #expect(refusal(["cmd": "events_after", "types": []]).contains("non-empty array"))
        #expect(refusal(["cmd": "events_after", "since": "yesterday"]).contains("ISO 8601"))
        #expect(refusal(["cmd": "answer", "request_id": "r"]).contains("needs \"answer\""))
        #expect(refusal(["cmd": "history", "after_seq": 3]).contains("give \"origin\" too"))
        #expect(refusal(["cmd": "history", "limit": 0]).contains("\"limit\" must be an integer from 1"))
        #expect(refusal(["cmd": "history", "origin": "a b"]).contains("\"origin\" must be a name"))
    }

    /// PROTOCOL.md's control table names exactly the commands the codec reads, and each of its
    /// example requests that is plain JSON decodes.
    @Test func theProtocolPageListsTheCommandsTheCodecReads() throws {
        let page = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/PROTOCOL.md").standardizedFileURL
        let text = try String(contentsOf: page, encoding: .utf8)
        let start = try #require(text.range(of: "## Control endpoint"))
        let section = text[start.upperBound...].prefix { _ in true }
        let end = section.range(of: "\n## ").map { section[..<$0.lowerBound] } ?? section
        let regex = /`\{"cmd":"([a-z_]+)"/
        let documented = Set(end.matches(of: regex).map { String($0.output.1) })
        let spoken = Set(ControlRequest.Command.allCases.map(\.rawValue))
        #expect(documented == spoken, "documented \(documented.sorted()), spoken \(spoken.sorted())")
    }
}
