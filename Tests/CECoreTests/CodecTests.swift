import CECore
import Foundation
import Testing

@Suite("JSON, envelope, topics, event types")
struct CodecTests {
    @Test func jsonRoundTripsAndIsDeterministic() throws {
        let text = #"{"b":[1,2.5,-3e2,true,false,null],"a":"x\"y\\z\n\u00e9\ud83d\ude00","c":{}}"#
        let value = try JSONValue(parsing: text)
        #expect(value["a"]?.stringValue == "x\"y\\z\né😀")
        #expect(value["b"]?[2]?.doubleValue == -300)
        let again = try JSONValue(parsing: value.serialized())
        #expect(again == value)
        #expect(value.serializedString.hasPrefix(#"{"a":"#))  // keys sorted
        #expect(JSONValue.number(3).serializedString == "3")
        #expect(JSONValue.number(0.5).serializedString == "0.5")
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "end of input"), (#"{"a":1} x"#, "after the JSON value"), (#""\q""#, "invalid escape"),
        (#""\ud800""#, "lone high surrogate"), (#""\udc00""#, "lone low surrogate"), ("[1,]", "unexpected character"),
        ("01", "after the JSON value"), ("\"a\nb\"", "control character"), ("nul", "unexpected end"), ("{\"a\" 1}", "expected ':'"),
    ])
    func jsonRejects(text: String, reason: String) {
        #expect {
            _ = try JSONValue(parsing: text)
        } throws: { ($0 as? JSONError)?.reason.contains(reason) == true }
    }

    @Test func jsonDepthIsBounded() throws {
        let deep = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect { _ = try JSONValue(parsing: deep) } throws: { "\($0)".contains("nesting") }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        _ = try JSONValue(parsing: ok)
    }

    func sample() -> Event {
        Event(id: "e-1", origin: "planner-1", seq: 7, stream: "planner", type: .planReady,
              timestamp: Timestamp.parse("2026-11-25T03:40:14.123Z")!, payload: ["tasks": ["a", "b"]],
              correlationID: "c-9", target: "builder")
    }

    @Test func envelopeRoundTrip() throws {
        let event = sample()
        let bytes = EnvelopeCodec.encode(event)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.contains(#""timestamp":"2026-11-25T03:40:14.123Z""#))
        #expect(text.contains(#""event_type":"plan_ready""#))
        #expect(try EnvelopeCodec.decode(bytes) == event)
        #expect(try EnvelopeCodec.decode(topic: Topic.bytes(type: .planReady, stream: "planner"), body: bytes) == event)
    }

    @Test func envelopeErrorsNameWhatIsWrong() throws {
        func fails(_ body: String, _ expected: String, topic: String = "plan_ready/planner") {
            #expect(throws: EnvelopeError.self, "\(body)") { _ = try EnvelopeCodec.decode(topic: Array(topic.utf8), body: Array(body.utf8)) }
            do { _ = try EnvelopeCodec.decode(topic: Array(topic.utf8), body: Array(body.utf8)) } catch {
                #expect(error.description.contains(expected), "\(error) should mention \(expected)")
            }
        }
        let good = String(decoding: EnvelopeCodec.encode(sample()), as: UTF8.self)
        fails("{not json", "not valid JSON")
        fails("[1]", "must be a JSON object")
        fails(good.replacingOccurrences(of: #""v":1,"#, with: ""), "missing field \"v\"")
        fails(good.replacingOccurrences(of: #""v":1"#, with: #""v":2"#), "unknown envelope version 2")
        fails(good.replacingOccurrences(of: #""seq":7"#, with: #""seq":"7""#), "\"seq\" must be an integer")
        fails(good.replacingOccurrences(of: #""seq":7"#, with: #""seq":0"#), "at least 1")
        fails(good.replacingOccurrences(of: #""origin":"planner-1","#, with: ""), "missing field \"origin\"")
        fails(good.replacingOccurrences(of: "plan_ready\"", with: "Plan Ready\""), "event_type")
        fails(good.replacingOccurrences(of: "2026-11-25T03:40:14.123Z", with: "yesterday"), "timestamp")
        fails(good, "topic \"build_ready/planner\" but envelope says \"plan_ready/planner\"", topic: "build_ready/planner")
        fails(good, "topic \"plan_ready\" is not <event_type>/<stream>", topic: "plan_ready")
        #expect(throws: EnvelopeError.self) { _ = try Topic.parse([0xFF, 0x2F, 0x61]) }
    }

    @Test func timestampsParseOffsetsAndFractions() {
        let utc = Timestamp.parse("2026-11-25T03:40:14Z")!
        #expect(Timestamp.parse("2026-11-25T05:40:14+02:00") == utc)
        #expect(Timestamp.parse("2026-11-24T22:40:14-05:00") == utc)
        #expect(Timestamp.format(Timestamp.parse("2026-11-25T03:40:14.5Z")!) == "2026-11-25T03:40:14.500Z")
        #expect(Timestamp.format(utc) == "2026-11-25T03:40:14.000Z")
        for bad in ["2026-13-01T00:00:00Z", "2026-11-25", "2026-11-25T03:40:14", "2026-11-25T03:40:14Zjunk", "2026-11-25T03:40:14.Z"] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func topicsArePrefixSafe() throws {
        let prefix = Topic.subscriptionPrefix(for: .planReady)
        #expect(Topic.bytes(type: .planReady, stream: "planner").starts(with: prefix))
        let v2 = try EventType(validating: "plan_ready_v2")
        #expect(!Topic.bytes(type: v2, stream: "planner").starts(with: prefix))
        let (type, stream) = try Topic.parse(Array("schema_v1/planner".utf8))
        #expect(type.rawValue == "schema_v1" && stream == "planner")
    }

    @Test func eventTypeCatalogAndCustomTypes() throws {
        #expect(EventType.catalog.count == 12)
        for category in EventType.Category.allCases { #expect(EventType.standard(in: category).count == 3) }
        #expect(EventType.syncPointReached.category == .coordination)
        let custom = try EventType(validating: "early_feedback")
        #expect(!custom.isStandard)
        #expect(throws: EventTypeError.reserved("_hb")) { try EventType(validating: "_hb") }
        #expect(throws: EventTypeError.badCharacter("Plan")) { try EventType(validating: "Plan") }
        #expect(throws: EventTypeError.empty) { try EventType(validating: "") }
        #expect(throws: EventTypeError.self) { try EventType(validating: String(repeating: "a", count: 65)) }
    }

    @Test func agentEventFiles() throws {
        let file = try AgentEventFile.parse(Array(#"{"stream":"builder","event_type":"build_ready","payload":{"ok":true}}"#.utf8))
        #expect(file.stream == "builder" && file.type == .buildReady && file.timestamp == nil)
        #expect { _ = try AgentEventFile.parse(Array(#"{"stream":"builder","payload":1}"#.utf8)) } throws: {
            "\($0)".contains("missing field \"event_type\"")
        }
        #expect { _ = try AgentEventFile.parse(Array(#"{"stream":"b","event_type":"x","payload":1"#.utf8)) } throws: {
            "\($0)".contains("not valid JSON")
        }
        let name = AgentEventFile.fileName(for: sample())
        #expect(name == "planner_plan_ready_20261125T034014.123Z_planner-1-7.json")
        let back = try AgentEventFile.parse(AgentEventFile(event: sample()).json())
        #expect(back.id == "e-1" && back.seq == 7 && back.payload == sample().payload)
    }
}
