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

    /// The checker that builds nothing (``JSONValue/validate(_:)``, which reads envelope
    /// payloads) accepts exactly what the parser accepts, with the same error: on hand-picked
    /// inputs and 20 000 random edits of them.
    @Test func theCheckerAgreesWithTheParser() {
        let seeds = [
            #"{"a":[1,-2.5e3,"\u00e9\ud83d\ude00",null,true,{}],"b":{"c":"x\ny"}}"#, #"[]"#, #"{}"#, #""\ud800""#, #""\udc00x""#,
            #""\ud800\u0041""#, #"1e400"#, #"-0.5E-3"#, #"01"#, #"[1,]"#, #"{"a" 1}"#, #""\x""#, "\"a\u{01}\"", #"tru"#, #"nul"#,
            "\"é\"", #" [ 1 , 2 ] "#, #""abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ""#,
            "\"abcdefghijklmné012345678901234567890\"", #"{"abcdefghijklmnop":"qrstuvwxyz\n0123456789abcdefghij\"klm"}"#, #"{"k":"v"} x"#, "", " ", #"""#, #""\"#, #"[[[[[]]]]]"#, #"{"a":{"b":{"c":[]}}}"#,
        ].map { Array($0.utf8) } + [[0x22, 0xC3, 0x28, 0x22], [0x22, 0xFF, 0x22], [0x22, 0xE2, 0x82, 0x22], [0x22, 0xF0, 0x9F, 0x98, 0x80, 0x22]]
        func same(_ bytes: [UInt8]) -> Bool {
            let parsed = Result { () throws(JSONError) in try JSONValue(parsing: bytes) }
            let checked = Result { () throws(JSONError) in try JSONValue.validate(bytes) }
            switch (parsed, checked) {
            case (.success, .success): return true
            case (.failure(let a), .failure(let b)): return a == b
            default: return false
            }
        }
        for seed in seeds { #expect(same(seed), "\(String(decoding: seed, as: UTF8.self))") }
        var random = Seeded(7)
        let alphabet = Array(#"{}[]:,"\/ubfnrt0123456789+-.eEaxlsu "#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xED, 0xA0, 0xFF]
        var disagreements: [String] = []
        for _ in 0..<20_000 {
            var bytes = seeds[Int(random.next() % UInt64(seeds.count))]
            for _ in 0...(random.next() % 3) {
                let at = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count + 1))
                let byte = alphabet[Int(random.next() % UInt64(alphabet.count))]
                switch random.next() % 3 {
                case 0: bytes.insert(byte, at: at)
                case 1 where at < bytes.count: bytes[at] = byte
                default: if at < bytes.count { bytes.remove(at: at) }
                }
            }
            if !same(bytes) { disagreements.append(String(decoding: bytes, as: UTF8.self)) }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5))")
    }

    /// The writer finds what to escape eight bytes at a time: it writes what a byte-by-byte
    /// escaper writes, for 5000 random strings with quotes, backslashes, control characters
    /// and non-ASCII text at every position.
    @Test func stringsAreEscapedAsByteByByte() throws {
        func reference(_ s: String) -> [UInt8] {
            var out: [UInt8] = [0x22]
            for byte in s.utf8 {
                switch byte {
                case 0x22: out += [0x5C, 0x22]
                case 0x5C: out += [0x5C, 0x5C]
                case 0x0A: out += [0x5C, 0x6E]
                case 0x0D: out += [0x5C, 0x72]
                case 0x09: out += [0x5C, 0x74]
                case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
                default: out.append(byte)
                }
            }
            return out + [0x22]
        }
        var random = Seeded(11)
        func next() -> UInt64 { random.next() }
        let pieces = ["a", "b", "0", " ", "\"", "\\", "\n", "\r", "\t", "\u{01}", "\u{1F}", "é", "😀", "/", "\u{7F}"]
        for _ in 0..<5000 {
            let text = (0..<Int(next() % 40)).map { _ in pieces[Int(next() % UInt64(pieces.count))] }.joined()
            var out: [UInt8] = []
            JSONValue.writeString(text, to: &out)
            #expect(out == reference(text), "\(text.debugDescription)")
            #expect(try JSONValue(parsing: out) == .string(text))
        }
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
