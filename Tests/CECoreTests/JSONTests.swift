import Foundation
import CECore
import Testing

@Suite("JSON parsing and serialization")
struct JSONTests {
    @Test func roundTripsAndIsDeterministic() throws {
        let text = #"{"b":[1,2.5,-3e2,true,false,null],"a":"x\"y\\z\n\u00e9\ud83d\ude00\/","c":{},"d":[]}"#
        let value = try JSONValue(parsing: text)
        #expect(value["a"]?.stringValue == "x\"y\\z\né😀/")
        #expect(value["b"]?[2]?.doubleValue == -300)
        #expect(value["b"]?[1]?.intValue == nil)
        #expect(value["b"]?[3]?.boolValue == true)
        #expect(value["c"]?.objectValue == [:])
        #expect(value["d"]?.arrayValue == [])
        #expect(value["b"]?[9] == nil && value["zz"] == nil && value[0] == nil)
        #expect(value.serializedString == #"{"a":"x\"y\\z\né😀/","b":[1,2.5,-300,true,false,null],"c":{},"d":[]}"#)
        #expect(try JSONValue(parsing: value.serialized()) == value)
        // Same value, keys in another order: same bytes.
        let shuffled = try JSONValue(parsing: #"{"d":[],"c":{},"a":"x\"y\\z\né😀/","b":[1,2.5,-300,true,false,null]}"#)
        #expect(shuffled.serialized() == value.serialized())
    }

    @Test func numbers() throws {
        let cases: [(String, String)] = [
            ("0", "0"), ("-0", "0"), ("3", "3"), ("3.0", "3"), ("1e3", "1000"), ("-12.5", "-12.5"), ("0.1", "0.1"),
            ("9007199254740993", "9007199254740992"), ("1.5e300", "1.5e+300"), ("123456789012345", "123456789012345"),
        ]
        for (input, output) in cases {
            #expect(try JSONValue(parsing: input).serializedString == output, "\(input)")
        }
        #expect(try JSONValue(parsing: "42").intValue == 42)
        #expect(JSONValue.number(.nan).serializedString == "null")
        #expect(throws: JSONError.self) { try JSONValue(parsing: "1e999") }
    }

    @Test func literals() {
        let value: JSONValue = ["s": "text", "i": 7, "f": 0.5, "b": false, "a": [1, nil], "n": nil]
        #expect(value["s"]?.stringValue == "text")
        #expect(value["i"]?.intValue == 7)
        #expect(value["f"]?.doubleValue == 0.5)
        #expect(value["b"]?.boolValue == false)
        #expect(value["a"]?[1] == .null)
        #expect(value.serializedString == #"{"a":[1,null],"b":false,"f":0.5,"i":7,"n":null,"s":"text"}"#)
    }

    @Test func controlCharactersAreEscaped() throws {
        let value = JSONValue.string("a\u{1}b\tc\r\"")
        #expect(value.serializedString == #""a\u0001b\tc\r\"""#)
        #expect(try JSONValue(parsing: value.serialized()) == value)
    }

    @Test(arguments: [
        ("", 0, "unexpected end"),
        ("{", 1, "end of input"),
        (#"{"a":1} x"#, 8, "after the JSON value"),
        (#"{"a":1"#, 6, "end of input in an object"),
        (#"["abc"#, 1, "unterminated string"),
        (#""\q""#, 2, "invalid escape"),
        (#""\u12G4""#, 5, "invalid hex digit"),
        (#""\ud800""#, 7, "lone high surrogate"),
        (#""\ud800\u0041""#, 13, "invalid low surrogate"),
        (#""\udc00""#, 7, "lone low surrogate"),
        ("[1,]", 3, "unexpected character"),
        ("01", 1, "after the JSON value"),
        ("1.", 2, "digit expected after '.'"),
        ("1e+", 3, "digit expected in exponent"),
        ("-", 1, "end of input in a number"),
        ("\"a\nb\"", 2, "control character"),
        ("nul", 0, "unexpected end"),
        ("nulL", 0, "invalid literal"),
        ("{\"a\" 1}", 5, "expected ':'"),
        ("{1:2}", 1, "expected a string key"),
        ("[1 2]", 3, "expected ',' or ']'"),
    ])
    func rejects(text: String, offset: Int, reason: String) {
        do {
            let value = try JSONValue(parsing: text)
            Issue.record("parsed \(text) as \(value)")
        } catch {
            #expect(error.reason.contains(reason), "\(error)")
            #expect(error.offset == offset, "\(error)")
            #expect(error.description.contains("at byte \(offset)"))
        }
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: JSONError.self) { try JSONValue(parsing: [0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONError.self) { try JSONValue(parsing: [0x22, 0xFF, 0x22]) }
    }

    @Test func depthIsBounded() throws {
        func nested(_ n: Int) -> String { String(repeating: "[", count: n) + String(repeating: "]", count: n) }
        _ = try JSONValue(parsing: nested(JSONValue.maxDepth))
        #expect { _ = try JSONValue(parsing: nested(JSONValue.maxDepth + 1)) } throws: {
            ($0 as? JSONError)?.reason.contains("nesting deeper than 128") == true
        }
        let objects = String(repeating: #"{"a":"#, count: 129) + "1" + String(repeating: "}", count: 129)
        #expect(throws: JSONError.self) { try JSONValue(parsing: objects) }
        // Deep input fails fast instead of overflowing the stack.
        #expect(throws: JSONError.self) { try JSONValue(parsing: nested(100_000)) }
    }

    @Test func parsesNonContiguousCollections() throws {
        let bytes = Array(#"{"k":[1,2]}"#.utf8)
        #expect(try JSONValue(parsing: bytes.lazy.map { $0 }) == ["k": [1, 2]])
        #expect(try JSONValue(parsing: bytes[0...]) == ["k": [1, 2]])
    }
}

@Suite("Event ids")
struct EventIDTests {
    @Test func idsAreVersion7UUIDsThatSortInTheOrderMade() {
        let start = Date()
        let ids = (0..<20_000).map { _ in EventID.make(now: start) } + (0..<100).map { _ in EventID.make() }
        #expect(ids == ids.sorted(), "ids made later sort later, within one millisecond too")
        #expect(Set(ids).count == ids.count)
        for id in ids.prefix(50) {
            #expect(UUID(uuidString: id) != nil, "\(id) is a UUID")
            #expect(Array(id)[14] == "7", "\(id) is version 7")
            #expect("89ab".contains(Array(id)[19]), "\(id) has the RFC 9562 variant")
        }
        // The first 48 bits are the time in milliseconds.
        let millis = UInt64(id: ids[0])
        #expect(millis == UInt64(start.timeIntervalSince1970 * 1000))
    }
}

private extension UInt64 {
    init(id: String) {
        let hex = id.replacingOccurrences(of: "-", with: "").prefix(12)
        self = UInt64(hex, radix: 16)!
    }
}
