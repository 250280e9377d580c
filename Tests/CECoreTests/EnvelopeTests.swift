import CECore
import Foundation
import Testing

func sampleEvent() -> Event {
    Event(
        id: "e-1", origin: "planner-1", seq: 7, stream: "planner", type: .planReady,
        timestamp: Timestamp.parse("2026-11-25T03:40:14.123Z")!, payload: ["tasks": ["a", "b"], "n": 3],
        correlationID: "c-9", target: "builder")
}

@Suite("Envelope codec")
struct EnvelopeTests {
    @Test func encodesTheDocumentedEnvelope() {
        let text = String(decoding: EnvelopeCodec.encode(sampleEvent()), as: UTF8.self)
        #expect(
            text == #"{"v":1,"id":"e-1","origin":"planner-1","seq":7,"stream":"planner","event_type":"plan_ready","#
                + #""timestamp":"2026-11-25T03:40:14.123Z","payload":{"n":3,"tasks":["a","b"]},"correlation_id":"c-9","target":"builder"}"#)
        var bare = sampleEvent()
        bare.correlationID = nil
        bare.target = nil
        let bareText = String(decoding: EnvelopeCodec.encode(bare), as: UTF8.self)
        #expect(!bareText.contains("correlation_id") && !bareText.contains("target"))
    }

    @Test func roundTrips() throws {
        let event = sampleEvent()
        #expect(try EnvelopeCodec.decode(EnvelopeCodec.encode(event)) == event)
        #expect(try EnvelopeCodec.decode(topic: Topic.bytes(type: .planReady, stream: "planner"), body: EnvelopeCodec.encode(event)) == event)
        var odd = event
        odd.id = "quote\"back\\slash\nnew line é"
        odd.payload = .null
        odd.seq = 9_007_199_254_740_992
        odd.correlationID = nil
        #expect(try EnvelopeCodec.decode(EnvelopeCodec.encode(odd)) == odd)
    }

    @Test func acceptsUnknownKeysAndOtherTimestampForms() throws {
        let body = #"{"v":1,"id":"x","origin":"o","seq":1,"stream":"s","event_type":"schema_v1","#
            + #""timestamp":"2026-11-25T05:40:14+02:00","payload":[],"future_key":{"a":1},"target":null}"#
        let event = try EnvelopeCodec.decode(Array(body.utf8))
        #expect(event.timestamp == Timestamp.parse("2026-11-25T03:40:14Z"))
        #expect(event.type.rawValue == "schema_v1" && event.target == nil)
    }

    /// The envelope's keys are looked up in the members as written, not in a dictionary: a
    /// key written twice reads as the last one, as a JSON object does everywhere else here.
    @Test func aKeyWrittenTwiceReadsAsTheLast() throws {
        let body = #"{"v":1,"id":"x","origin":"o","seq":1,"stream":"s","event_type":"plan_ready","seq":7,"#
            + #""timestamp":"2026-11-25T05:40:14Z","payload":{"n":1,"n":2},"origin":"p"}"#
        let event = try EnvelopeCodec.decode(Array(body.utf8))
        let object = try JSONValue(parsing: body)
        #expect(event.seq == 7 && object["seq"]?.intValue == 7)
        #expect(event.origin == "p" && object["origin"]?.stringValue == "p")
        #expect(event.payload == ["n": 2])
        #expect(failure(Array(#"[1,2]"#.utf8))?.code == .notAnObject)
        #expect(failure(Array(#"{"v":1} x"#.utf8))?.code == .invalidJSON)
    }

    /// A decoded event keeps its payload as the envelope's bytes and parses them when read:
    /// the value is the one the envelope holds, the event equals (and hashes as) the one
    /// encoded, and encoding it again writes the same bytes. A payload that is not valid JSON
    /// fails the envelope as before, with the same error.
    @Test func aPayloadIsReadFromItsBytesWhenAsked() throws {
        let payloads: [JSONValue] = [
            .null, true, 0, -2.5, "", "line\nbreak \"quoted\" \\ é 😀 \u{01}",
            ["nested": ["list": [1, "two", ["three": 3.5]], "empty": [:], "none": .null]],
            .array((0..<50).map { .number(Double($0)) }),
        ]
        for payload in payloads {
            var event = sampleEvent()
            event.payload = payload
            let bytes = EnvelopeCodec.encode(event)
            let decoded = try EnvelopeCodec.decode(bytes)
            let fromSlice = try EnvelopeCodec.decode(bytes[...])
            #expect(decoded.payload == payload && fromSlice.payload == payload)
            #expect(decoded == event && fromSlice == event && decoded == fromSlice)
            #expect(Set([decoded, event, fromSlice]).count == 1)
            #expect(EnvelopeCodec.encode(decoded) == bytes)
            // Written with other spacing and key order: still the same event.
            let spaced = try JSONValue(parsing: bytes)
            let loose = Array(#"{"payload" : "#.utf8) + payload.serialized() + Array(#" , "#.utf8) + spaced.serialized().dropFirst()
            #expect(try EnvelopeCodec.decode(loose) == event)
        }
        var other = sampleEvent()
        other.payload = ["tasks": ["a", "c"], "n": 3]
        #expect(try EnvelopeCodec.decode(EnvelopeCodec.encode(other)) != sampleEvent())
        let broken = Array(String(decoding: EnvelopeCodec.encode(sampleEvent()), as: UTF8.self)
            .replacingOccurrences(of: #""a","b""#, with: #""a","\udc00""#).utf8)
        let error = try #require(failure(broken))
        #expect(error.code == .invalidJSON && error.description.contains("lone low surrogate"))
        #expect(failure(Array(#"{"v":1,"payload":[1,}"#.utf8))?.code == .invalidJSON)
    }

    /// The envelope reader builds only the values of the keys it knows, and compares keys as
    /// written: it fails on exactly the bytes the JSON parser fails on, with the same error,
    /// and reads the same fields from the rest (20 000 random edits of envelopes, some with
    /// escaped keys, unknown keys and repeated keys).
    @Test func theEnvelopeReaderAgreesWithTheParser() throws {
        let seeds = [
            String(decoding: EnvelopeCodec.encode(sampleEvent()), as: UTF8.self),
            #"{"\u0076":1,"i\u0064":"x","origin":"o","seq":2,"stream":"s","event_type":"plan_ready","timestamp":"2026-11-25T05:40:14Z","payload":{"a":[1,{"b":null}]},"extra":{"deep":[true,false,"\ud83d\ude00"]},"origin":"p"}"#,
            #"{"v":1,"id":"é","origin":"o","seq":1,"stream":"s","event_type":"plan_ready","timestamp":"2026-11-25T05:40:14Z","payload":"text with \"quotes\" and é","ünknown":[1,2,3]}"#,
        ].map { Array($0.utf8) }
        var random = Seeded(3)
        func next() -> UInt64 { random.next() }
        let alphabet = Array(#"{}[]:,"\u0123456789abcdefvnlx. "#.utf8) + [0x00, 0x1F, 0xC3, 0xA9, 0xFF]
        var disagreements: [String] = []
        for round in 0..<20_000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0...(next() % 3) {
                let at = Int(next() % UInt64(bytes.count + 1))
                let byte = alphabet[Int(next() % UInt64(alphabet.count))]
                switch next() % 3 {
                case 0: bytes.insert(byte, at: at)
                case 1 where at < bytes.count: bytes[at] = byte
                default: if at < bytes.count { bytes.remove(at: at) }
                }
            }
            let parsed = Result { () throws(JSONError) in try JSONValue(parsing: bytes) }
            let decoded = Result { () throws(EnvelopeError) in try EnvelopeCodec.decode(bytes) }
            let agrees: Bool
            switch (parsed, decoded) {
            case (.failure(let json), .failure(let envelope)):
                agrees = envelope.code == .invalidJSON && envelope.offset == json.offset && envelope.description.contains(json.reason)
            case (.success, .failure(let envelope)):
                agrees = envelope.code != .invalidJSON
            case (.success(let object), .success(let event)):
                agrees = object["id"]?.stringValue == event.id && object["origin"]?.stringValue == event.origin
                    && object["seq"]?.intValue == Int(event.seq) && object["stream"]?.stringValue == event.stream
                    && object["event_type"]?.stringValue == event.type.rawValue && object["payload"] == event.payload
            case (.failure, .success):
                agrees = false
            }
            if !agrees { disagreements.append(String(decoding: bytes, as: UTF8.self)) }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(3))")
    }

    /// A topic is checked on its bytes where it can be: `Topic.isWellFormed` says yes exactly
    /// where `Topic.parse` accepts (hand-picked and 20 000 random topics).
    @Test func topicsAreCheckedOnTheirBytes() {
        let picked = ["plan_ready/planner", "a/b", "_hb/x", "plan_ready/", "/planner", "Plan/x", "plan_ready/plan/ner", "p-x/s",
                      String(repeating: "a", count: 64) + "/s", String(repeating: "a", count: 65) + "/s",
                      "t/" + String(repeating: "s", count: 64), "t/" + String(repeating: "s", count: 65), "t/é", "t/a.b-c_D9", ""]
        for topic in picked.map({ Array($0.utf8) }) + [[0x74, 0x2F, 0xFF], [0x74, 0x2F, 0x00]] {
            #expect(Topic.isWellFormed(topic) == ((try? Topic.parse(topic)) != nil), "\(String(decoding: topic, as: UTF8.self))")
        }
        var random = Seeded(5)
        func next() -> UInt64 { random.next() }
        let alphabet = Array("az09_/.-AZ é".utf8) + [0x00, 0xFF]
        var disagreements: [[UInt8]] = []
        for _ in 0..<20_000 {
            let topic = (0..<Int(next() % 12)).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] }
            if Topic.isWellFormed(topic) != ((try? Topic.parse(topic)) != nil) { disagreements.append(topic) }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    }

    /// The sample envelope with one key replaced (or removed, with nil).
    func mutated(_ key: String, _ value: JSONValue?) -> [UInt8] {
        var object = try! JSONValue(parsing: EnvelopeCodec.encode(sampleEvent())).objectValue!
        object[key] = value
        return JSONValue.object(object).serialized()
    }

    func failure(_ body: [UInt8], topic: String? = nil, maxBytes: Int = .max) -> EnvelopeError? {
        do {
            if let topic {
                _ = try EnvelopeCodec.decode(topic: Array(topic.utf8), body: body, maxBytes: maxBytes)
            } else {
                _ = try EnvelopeCodec.decode(body, maxBytes: maxBytes)
            }
            return nil
        } catch { return error }
    }

    @Test func everyErrorNamesWhatIsWrong() {
        let cases: [([UInt8], EnvelopeError.Code, String)] = [
            (Array(#"{"v":1,"id""#.utf8), .invalidJSON, "invalid JSON at byte 11: expected ':' after a key"),
            (Array("[1]".utf8), .notAnObject, "not a JSON object (got an array)"),
            (mutated("v", nil), .missingField, #"missing field "v""#),
            (mutated("v", 2), .unknownVersion, "unknown version 2 (this node reads version 1)"),
            (mutated("v", "1"), .wrongType, #"field "v" has wrong type (expected an integer, got a string)"#),
            (mutated("id", nil), .missingField, #"missing field "id""#),
            (mutated("id", ""), .badID, #"field "id" must be 1-128 bytes (got 0)"#),
            (mutated("id", 5), .wrongType, #"field "id" has wrong type (expected a string, got the number 5)"#),
            (mutated("origin", nil), .missingField, #"missing field "origin""#),
            (mutated("origin", "planner 1"), .badName, #"field "origin": name "planner 1" may only contain"#),
            (mutated("seq", "7"), .wrongType, #"field "seq" has wrong type (expected an integer, got a string)"#),
            (mutated("seq", 1.5), .wrongType, "got a number with a fraction"),
            (mutated("seq", 0), .badSequence, "seq must be ≥ 1 (got 0)"),
            (mutated("seq", -3), .badSequence, "seq must be ≥ 1 (got -3)"),
            (mutated("seq", 1e17), .badSequence, "seq must be at most 2^53"),
            (mutated("stream", ""), .badName, #"field "stream": name is empty"#),
            (mutated("stream", .string(String(repeating: "s", count: 65))), .badName, "longer than 64 bytes"),
            (mutated("event_type", "Plan Ready"), .badEventType, "bad event type: event type 'Plan Ready' may only contain a-z, 0-9 and _"),
            (mutated("event_type", "_hb"), .badEventType, "reserved"),
            (mutated("event_type", [1]), .wrongType, #"field "event_type" has wrong type (expected a string, got an array)"#),
            (mutated("timestamp", "yesterday"), .badTimestamp, #"field "timestamp" is not an ISO 8601 date-time"#),
            (mutated("timestamp", "2026-11-25T03:40:14"), .badTimestamp, "\"2026-11-25T03:40:14\""),
            (mutated("payload", nil), .missingField, #"missing field "payload""#),
            (mutated("target", "two words"), .badName, #"field "target""#),
            (mutated("target", true), .wrongType, #"field "target" has wrong type (expected a string, got a boolean)"#),
            (mutated("correlation_id", ["x": 1]), .wrongType, #"field "correlation_id" has wrong type (expected a string, got an object)"#),
        ]
        for (body, code, message) in cases {
            let error = failure(body)
            #expect(error?.code == code, "\(String(decoding: body, as: UTF8.self)): \(String(describing: error))")
            #expect(error?.description.contains(message) == true, "\(String(describing: error)) should say \(message)")
        }
        #expect(failure(mutated("seq", "7"))?.field == "seq")
        #expect(failure(Array(#"{"v":1,"id""#.utf8))?.offset == 11)
    }

    @Test func topicErrors() {
        let good = EnvelopeCodec.encode(sampleEvent())
        let mismatch = failure(good, topic: "build_ready/planner")
        #expect(mismatch?.code == .topicMismatch)
        #expect(mismatch?.description == #"topic "build_ready/planner" but envelope says "plan_ready/planner""#)
        #expect(failure(good, topic: "plan_ready/builder")?.code == .topicMismatch)
        #expect(failure(good, topic: "plan_ready")?.description == #"topic "plan_ready" is not <event_type>/<stream>"#)
        #expect(failure(good, topic: "Plan/planner")?.code == .badTopic)
        #expect(failure(good, topic: "plan_ready/")?.code == .badTopic)
        #expect(failure(good, topic: "plan_ready/a/b")?.code == .badTopic)
        do {
            _ = try EnvelopeCodec.decode(topic: [0xFF, 0x2F, 0x61], body: good)
            Issue.record("accepted a topic that is not UTF-8")
        } catch {
            #expect(error.code == .topicNotUTF8 && error.description == "topic is not UTF-8")
        }
    }

    @Test func sizeLimit() {
        let good = EnvelopeCodec.encode(sampleEvent())
        let error = failure(good, maxBytes: 100)
        #expect(error?.code == .tooLarge)
        #expect(error?.description == "envelope is \(good.count) bytes, more than the limit of 100")
        #expect(failure(good, maxBytes: good.count) == nil)
        #expect(failure(good, topic: "plan_ready/planner", maxBytes: 10)?.code == .tooLarge)
    }
}

@Suite("Timestamps, topics, names, event types")
struct WireBasicsTests {
    @Test func timestampsFormatWithMilliseconds() {
        let utc = Timestamp.parse("2026-11-25T03:40:14Z")!
        #expect(utc.timeIntervalSince1970 == 1_795_578_014)
        #expect(Timestamp.format(utc) == "2026-11-25T03:40:14.000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: -0.001)) == "1969-12-31T23:59:59.999Z")
        #expect(Timestamp.format(Date(timeIntervalSince1970: 951_782_400.9996)) == "2000-02-29T00:00:01.000Z")
        #expect(Timestamp.formatCompact(utc.addingTimeInterval(0.123)) == "20261125T034014.123Z")
        // Every millisecond survives format -> parse -> format.
        for ms in stride(from: 0, to: 1000, by: 7) {
            let text = "2026-11-25T03:40:14.\(String(ms + 1000).dropFirst())Z"
            #expect(Timestamp.format(Timestamp.parse(text)!) == text)
        }
    }

    @Test func timestampsParseOffsetsAndFractions() {
        let utc = Timestamp.parse("2026-11-25T03:40:14Z")!
        #expect(Timestamp.parse("2026-11-25T05:40:14+02:00") == utc)
        #expect(Timestamp.parse("2026-11-24T22:40:14-05:00") == utc)
        #expect(Timestamp.parse("2026-11-25t03:40:14z") == utc)
        #expect(Timestamp.format(Timestamp.parse("2026-11-25T03:40:14.5Z")!) == "2026-11-25T03:40:14.500Z")
        #expect(Timestamp.format(Timestamp.parse("2026-11-25T03:40:14.123456789123Z")!) == "2026-11-25T03:40:14.123Z")
        #expect(Timestamp.parse("2024-02-29T00:00:00Z") != nil)
        for bad in [
            "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-25", "2026-11-25T03:40:14",
            "2026-11-25T03:40:14Zjunk", "2026-11-25T03:40:14.Z", "2026-11-25T24:00:00Z", "2026-11-25T03:40:14+0200",
            "2026-11-25 03:40:14Z", "", "yesterday",
        ] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func topicsArePrefixSafe() throws {
        let prefix = Topic.subscriptionPrefix(for: .planReady)
        #expect(prefix == Array("plan_ready/".utf8))
        #expect(Topic.bytes(type: .planReady, stream: "planner").starts(with: prefix))
        let v2 = try EventType(validating: "plan_ready_v2")
        #expect(!Topic.bytes(type: v2, stream: "planner").starts(with: prefix))
        let (type, stream) = try Topic.parse(Array("schema_v1/planner".utf8))
        #expect(type.rawValue == "schema_v1" && stream == "planner")
        // Reserved topics never match an event type's prefix, and are recognised as such.
        let heartbeat = Topic.heartbeat(origin: "planner-1")
        #expect(heartbeat == Array("_hb/planner-1".utf8) && Topic.isReserved(heartbeat))
        #expect(!Topic.isReserved(Topic.bytes(type: .planReady, stream: "planner")))
        #expect(throws: EnvelopeError.self) { try Topic.parse(heartbeat) }
    }

    @Test func names() {
        for good in ["planner-1", "a", "A.b_c-9", String(repeating: "x", count: 64)] { #expect(Name.isValid(good), "\(good)") }
        for bad in ["", "two words", "a/b", "é", "x:y", String(repeating: "x", count: 65)] { #expect(!Name.isValid(bad), "\(bad)") }
        #expect(throws: NameError(name: "a/b", problem: .badCharacter)) { try Name.validate("a/b") }
        #expect(throws: NameError(name: "", problem: .empty)) { try Name.validate("") }
    }

    @Test func eventTypeCatalogAndCustomTypes() throws {
        #expect(EventType.catalog.count == 12)
        for category in EventType.Category.allCases { #expect(EventType.standard(in: category).count == 3) }
        #expect(EventType.syncPointReached.category == .coordination)
        let custom = try EventType(validating: "early_feedback")
        #expect(!custom.isStandard && custom.category == nil)
        #expect(throws: EventTypeError.reserved("_hb")) { try EventType(validating: "_hb") }
        #expect(throws: EventTypeError.reserved("_")) { try EventType(validating: "_") }
        #expect(throws: EventTypeError.badCharacter("Plan")) { try EventType(validating: "Plan") }
        #expect(throws: EventTypeError.badCharacter("plan/ready")) { try EventType(validating: "plan/ready") }
        #expect(throws: EventTypeError.empty) { try EventType(validating: "") }
        _ = try EventType(validating: String(repeating: "a", count: 64))
        #expect(throws: EventTypeError.self) { try EventType(validating: String(repeating: "a", count: 65)) }
    }
}

@Suite("Agent event files")
struct AgentEventFileTests {
    func parse(_ text: String) throws(EnvelopeError) -> AgentEventFile { try AgentEventFile.parse(Array(text.utf8)) }

    @Test func minimalFile() throws {
        let file = try parse(#"{"stream":"builder","event_type":"build_ready","payload":{"ok":true},"note":"extra keys are fine"}"#)
        #expect(file.stream == "builder" && file.type == .buildReady && file.timestamp == nil && file.payload == ["ok": true])
        let now = Date(timeIntervalSince1970: 1_795_578_014)
        let event = file.event(id: "i", origin: "builder-1", seq: 3, now: now)
        #expect(event.timestamp == now && event.origin == "builder-1" && event.seq == 3 && event.stream == "builder")
    }

    @Test func fullFile() throws {
        let file = try parse(
            #"{"stream":"reviewer","event_type":"review_complete","payload":null,"timestamp":"2026-11-25T03:40:14.250+01:00","#
                + #""correlation_id":"c-1","target":"builder"}"#)
        #expect(file.timestamp == Timestamp.parse("2026-11-25T02:40:14.250Z"))
        #expect(file.correlationID == "c-1" && file.target == "builder" && file.payload == .null)
        let event = file.event(id: "i", origin: "reviewer-1", seq: 1, now: Date())
        #expect(event.timestamp == file.timestamp && event.target == "builder")
    }

    @Test(arguments: [
        (#"{"stream":"builder","payload":1}"#, #"missing field "event_type""#),
        (#"{"event_type":"build_ready","payload":1}"#, #"missing field "stream""#),
        (#"{"stream":"builder","event_type":"build_ready"}"#, #"missing field "payload""#),
        (#"{"stream":"b","event_type":"x","payload":1"#, "invalid JSON at byte 42"),
        (#""just a string""#, "not a JSON object (got a string)"),
        (#"{"stream":"b c","event_type":"x","payload":1}"#, #"field "stream": name "b c""#),
        (#"{"stream":"b","event_type":"X","payload":1}"#, "bad event type"),
        (#"{"stream":"b","event_type":"x","payload":1,"timestamp":"now"}"#, #"field "timestamp" is not an ISO 8601"#),
        (#"{"stream":"b","event_type":"x","payload":1,"timestamp":12}"#, #"field "timestamp" has wrong type"#),
        (#"{"stream":"b","event_type":"x","payload":1,"target":"a/b"}"#, #"field "target""#),
        (#"{"stream":"b","event_type":"x","payload":1,"seq":0}"#, "seq must be ≥ 1"),
    ])
    func rejects(text: String, message: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.description.contains(message), "\(error) should say \(message)")
        }
    }

    @Test func receivedEventsRoundTripThroughFiles() throws {
        let event = sampleEvent()
        #expect(AgentEventFile.fileName(for: event) == "planner_plan_ready_20261125T034014.123Z_planner-1-7.json")
        let json = AgentEventFile(event: event).json()
        let object = try JSONValue(parsing: json)
        #expect(object["origin"] == "planner-1" && object["seq"] == 7 && object["timestamp"] == "2026-11-25T03:40:14.123Z")
        let back = try AgentEventFile.parse(json)
        #expect(back.id == "e-1" && back.origin == "planner-1" && back.seq == 7)
        #expect(back.event(id: back.id!, origin: back.origin!, seq: back.seq!, now: Date()) == event)
    }
}
