import CECore
import Testing

@testable import CENode

/// The direct paths that write and read marks give exactly what the general JSON route
/// gives: the same bytes for every batch of events, the same marks (or nil) for every input.
@Suite("Marks, written and read directly") struct MarksCodecTests {
    static let types = ["plan_ready", "build_ready", "schema_v1", "a", "review_complete", "x.y-z", "é_type", "quote\"d", "back\\slash"]

    @Test func theWriterWritesWhatTheJSONValueSerializes() {
        var generator = Seeded(11)
        for _ in 0..<300 {
            var marks: [String: UInt64] = [:]
            for _ in 0..<Int(generator.next() % 4) {
                marks[Self.types[Int(generator.next() % UInt64(Self.types.count))]] = generator.next() % 1_000_000
            }
            var writer = Marks.Writer(marks)
            var seq = (marks.values.max() ?? 0) + 1
            for _ in 0..<20 {
                #expect(writer.bytes() == Marks.value(marks).serialized())
                let type = Self.types[Int(generator.next() % UInt64(Self.types.count))]
                writer.advance(type: type, seq: seq)
                marks[type] = seq
                seq += 1 + generator.next() % 3
            }
            #expect(writer.bytes() == Marks.value(marks).serialized())
        }
        // Past 2^53 the JSON writer's number form is kept too.
        let huge: [String: UInt64] = ["plan_ready": 1 << 60]
        #expect(Marks.Writer(huge).bytes() == Marks.value(huge).serialized())
    }

    @Test func theReaderReadsWhatTheJSONParserReads() {
        func general(_ bytes: [UInt8]) -> [String: UInt64]? { (try? JSONValue(parsing: bytes)).flatMap(Marks.from) }
        let written: [String] = [
            #"{}"#, #"{"plan_ready":41}"#, #"{"a":0,"b":1,"plan_ready":123456789012345}"#,
        ]
        let other: [String] = [
            #"{"plan_ready":1234567890123456}"#, #"{"a":01}"#, #"{"a":-1}"#, #"{"a":-0}"#, #"{"a":1.5}"#, #"{"a":1e3}"#,
            #"{"a":1,"a":2}"#, #"{ "a": 1 }"#, #"{"a":1} "#, #"{"a":1,}"#, #"{"a":}"#, #"{"a"1}"#, #"{"a":1"#, #"{"#,
            #"{"\u0061":1}"#, #"{"é":1}"#, #"{"a":"1"}"#, #"{"a":null}"#, #"[1]"#, #"1"#, "", #"{"a":1}}"#, #"{,}"#,
            #"{"a\"b":1}"#, "{\"a\tb\":1}", #"{"a":18446744073709551615}"#, #"{"a":1,"b":2,"c":3}x"#,
        ]
        for text in written + other {
            let bytes = Array(text.utf8)
            #expect(Marks.parse(bytes) == general(bytes), "\(text)")
        }
        // The written form takes the direct path; everything else goes to the JSON parser.
        for text in written { #expect(Marks.parseWritten(Array(text.utf8)) != nil, "\(text)") }
        for text in other { #expect(Marks.parseWritten(Array(text.utf8)) == nil, "\(text)") }
        // Random byte strings over the characters marks are made of.
        var generator = Seeded(5)
        let alphabet = Array(#"{}":,0123456789ab-. "#.utf8)
        for _ in 0..<20_000 {
            let bytes = (0..<Int(generator.next() % 14)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            #expect(Marks.parse(bytes) == general(bytes), "\(String(decoding: bytes, as: UTF8.self))")
        }
    }
}

/// A seeded generator (Knuth's MMIX LCG, the high bits), so a failure repeats.
private struct Seeded {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 33
    }
}
