import Foundation

/// Why bytes are not valid JSON, with the byte offset where it went wrong.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public let offset: Int
    public let reason: String
    public var description: String { "\(reason) at byte \(offset)" }
}

extension JSONValue {
    /// The deepest nesting of arrays and objects the parser accepts.
    public static let maxDepth = 128

    /// Parses RFC 8259 JSON; trailing garbage, bad escapes and lone surrogates are errors.
    ///
    /// Contiguous inputs (`[UInt8]`, `ArraySlice`, `Data`) are parsed in place, without a copy.
    public init(parsing bytes: some Collection<UInt8>) throws(JSONError) {
        let direct = bytes.withContiguousStorageIfAvailable { JSONValue.parse(buffer: $0) }
        if let direct {
            self = try direct.get()
        } else {
            self = try Array(bytes).withUnsafeBufferPointer { JSONValue.parse(buffer: $0) }.get()
        }
    }

    static func parse(buffer: UnsafeBufferPointer<UInt8>) -> Result<JSONValue, JSONError> {
        var parser = JSONParser(bytes: buffer)
        do throws(JSONError) {
            parser.skipSpace()
            let value = try parser.value(depth: 0)
            parser.skipSpace()
            guard parser.index == buffer.count else { throw parser.error("unexpected data after the JSON value") }
            return .success(value)
        } catch { return .failure(error) }
    }

    /// Checks that `bytes` are what ``init(parsing:)`` accepts, failing with the same error
    /// where it would fail, without building the value.
    public static func validate(_ bytes: some Collection<UInt8>) throws(JSONError) {
        func check(_ buffer: UnsafeBufferPointer<UInt8>) -> JSONError? {
            var parser = JSONParser(bytes: buffer)
            do throws(JSONError) {
                parser.skipSpace()
                try parser.skipValue(depth: 0)
                parser.skipSpace()
                guard parser.index == buffer.count else { throw parser.error("unexpected data after the JSON value") }
                return nil
            } catch { return error }
        }
        let failure = bytes.withContiguousStorageIfAvailable(check) ?? Array(bytes).withUnsafeBufferPointer(check)
        if let failure { throw failure }
    }

    /// Reads a top-level object for the values of `keys` (the value of a key written twice is
    /// the last, as an object reads); the values of other keys are checked as strictly as the
    /// parser would, but not built. The value of `keys[skipping]` is checked, not built:
    /// it reads as `null`, and `skipped` is where its bytes are. `other` is the value when the
    /// input is valid JSON but not an object.
    static func knownMembers(parsing bytes: some Collection<UInt8>, keys: [StaticString], skipping: Int?) throws(JSONError)
        -> (values: [JSONValue?], skipped: Range<Int>?, other: JSONValue?)
    {
        func parse(_ buffer: UnsafeBufferPointer<UInt8>) -> Result<([JSONValue?], Range<Int>?, JSONValue?), JSONError> {
            var parser = JSONParser(bytes: buffer)
            do throws(JSONError) {
                parser.skipSpace()
                var values = [JSONValue?](repeating: nil, count: keys.count)
                var skipped: Range<Int>?
                var other: JSONValue?
                if parser.index < buffer.count, buffer[parser.index] == 0x7B {
                    try parser.knownMembers(keys: keys, skipping: skipping, values: &values, skipped: &skipped)
                } else {
                    other = try parser.value(depth: 0)
                }
                parser.skipSpace()
                guard parser.index == buffer.count else { throw parser.error("unexpected data after the JSON value") }
                return .success((values, skipped, other))
            } catch { return .failure(error) }
        }
        if let direct = bytes.withContiguousStorageIfAvailable(parse) { return try direct.get() }
        return try Array(bytes).withUnsafeBufferPointer(parse).get()
    }

    public init(parsing string: String) throws(JSONError) {
        var string = string
        self = try string.withUTF8 { JSONValue.parse(buffer: $0) }.get()
    }

    /// Compact JSON with object keys sorted, so equal values serialize identically.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        write(to: &out)
        return out
    }

    public var serializedString: String { String(decoding: serialized(), as: UTF8.self) }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(ascii: "null")
        case .bool(let b): out.append(ascii: b ? "true" : "false")
        case .number(let n): JSONValue.writeNumber(n, to: &out)
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let items):
            out.append(0x5B)
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(0x2C) }
                item.write(to: &out)
            }
            out.append(0x5D)
        case .object(let object):
            out.append(0x7B)
            for (i, entry) in object.sorted(by: { $0.key < $1.key }).enumerated() {
                if i > 0 { out.append(0x2C) }
                JSONValue.writeString(entry.key, to: &out)
                out.append(0x3A)
                entry.value.write(to: &out)
            }
            out.append(0x7D)
        }
    }

    /// Writes a number: integral values within ±2^53 without a fraction (`3`, not `3.0`),
    /// others in Swift's shortest round-tripping form; NaN and infinities (which JSON lacks) as `null`.
    public static func writeNumber(_ n: Double, to out: inout [UInt8]) {
        if n.isFinite, n == n.rounded(.towardZero), abs(n) <= 9_007_199_254_740_992 {
            writeInteger(Int64(n), to: &out)
        } else if n.isFinite {
            out.append(contentsOf: n.description.utf8)
        } else {
            out.append(ascii: "null")
        }
    }

    /// Writes a decimal integer without going through `String`.
    public static func writeInteger(_ value: Int64, to out: inout [UInt8]) {
        if value < 0 { out.append(0x2D) }
        var magnitude = value.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes of scratch, enough for 20 digits
        withUnsafeMutableBytes(of: &digits) { scratch in
            var i = scratch.count
            repeat {
                i -= 1
                scratch[i] = UInt8(truncatingIfNeeded: magnitude % 10) &+ 0x30
                magnitude /= 10
            } while magnitude > 0
            out.append(contentsOf: scratch[i...])
        }
    }

    /// Writes a JSON string literal with the escapes RFC 8259 requires.
    public static func writeString(_ s: String, to out: inout [UInt8]) {
        out.append(0x22)
        var s = s
        s.withUTF8 { bytes in
            var runStart = 0
            var high: UInt8 = 0
            while true {
                let i = JSONParser.plainRun(bytes, from: runStart, high: &high)
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
                guard i < bytes.count else { break }
                let byte = bytes[i]
                runStart = i + 1
                switch byte {
                case 0x22: out.append(contentsOf: [0x5C, 0x22])
                case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
                case 0x0A: out.append(contentsOf: [0x5C, 0x6E])
                case 0x0D: out.append(contentsOf: [0x5C, 0x72])
                case 0x09: out.append(contentsOf: [0x5C, 0x74])
                default:
                    let hex: StaticString = "0123456789abcdef"
                    out.append(contentsOf: [0x5C, 0x75, 0x30, 0x30, hex.utf8Start[Int(byte >> 4)], hex.utf8Start[Int(byte & 15)]])
                }
            }
        }
        out.append(0x22)
    }

    // MARK: Access

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public subscript(index: Int) -> JSONValue? {
        if case .array(let a) = self, a.indices.contains(index) { return a[index] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var doubleValue: Double? { if case .number(let n) = self { return n } else { return nil } }
    public var intValue: Int? {
        if case .number(let n) = self, n == n.rounded(), abs(n) < 9.2e18 { return Int(n) }
        return nil
    }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o } else { return nil } }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
    public init(nilLiteral: ()) { self = .null }
}

extension JSONValue: CustomStringConvertible {
    public var description: String { serializedString }
}

/// A recursive-descent parser over a byte buffer.
struct JSONParser {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func error(_ reason: String) -> JSONError { JSONError(offset: index, reason: reason) }

    mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x0A, 0x0D, 0x09: index += 1
            default: return
            }
        }
    }

    mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case 0x7B: return try object(depth: depth + 1)
        case 0x5B: return try array(depth: depth + 1)
        case 0x22: return .string(try string())
        case 0x74: try literal("true"); return .bool(true)
        case 0x66: try literal("false"); return .bool(false)
        case 0x6E: try literal("null"); return .null
        case 0x2D, 0x30...0x39: return .number(try number())
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
        }
    }

    /// Checks one value as ``value(depth:)`` would parse it, with the same errors, without
    /// building it (no strings, arrays or dictionaries made).
    mutating func skipValue(depth: Int) throws(JSONError) {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case 0x7B:
            try forEachMember(depth: depth + 1) { (parser: inout JSONParser) throws(JSONError) in try parser.skipString() } value: {
                (parser: inout JSONParser, _: Void) throws(JSONError) in try parser.skipValue(depth: depth + 1)
            }
        case 0x5B:
            try forEachElement(depth: depth + 1) { (parser: inout JSONParser) throws(JSONError) in try parser.skipValue(depth: depth + 1) }
        case 0x22: try skipString()
        case 0x74: try literal("true")
        case 0x66: try literal("false")
        case 0x6E: try literal("null")
        case 0x2D, 0x30...0x39: _ = try number()
        default: throw error("unexpected character '\(Character(Unicode.Scalar(bytes[index])))'")
        }
    }

    /// A string, as ``string()`` reads it. Escapes are ASCII and decode to whole scalars, so
    /// the bytes as written are valid UTF-8 exactly when the decoded string is.
    private mutating func skipString() throws(JSONError) {
        index += 1
        let start = index
        var high: UInt8 = 0
        while index < bytes.count {
            index = plainRun(from: index, high: &high)
            guard index < bytes.count else { break }
            let b = bytes[index]
            switch b {
            case 0x22:
                if high >= 0x80, String(validating: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self) == nil {
                    throw JSONError(offset: start, reason: "string is not valid UTF-8")
                }
                index += 1
                return
            case 0x5C:
                _ = try escape()
            case 0..<0x20:
                throw error("control character in a string")
            default:
                high |= b
                index += 1
            }
        }
        throw JSONError(offset: start - 1, reason: "unterminated string")
    }

    mutating func literal(_ word: StaticString) throws(JSONError) {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of input") }
        for i in 0..<count where bytes[index + i] != word.utf8Start[i] {
            throw error("invalid literal")
        }
        index += count
    }

    mutating func object(depth: Int) throws(JSONError) -> JSONValue {
        // Members first, then a dictionary made at its size (grown one member at a time, it
        // was rehashed at every doubling).
        var read: [(String, JSONValue)] = []
        try members(depth: depth) { read.append(($0, $1)) }
        var result = [String: JSONValue](minimumCapacity: read.count)
        for (key, value) in read { result[key] = value }
        return .object(result)
    }

    /// Reads an object's members in the order written, handing each to `body`.
    mutating func members(depth: Int, _ body: (String, JSONValue) -> Void) throws(JSONError) {
        try forEachMember(depth: depth) { (parser: inout JSONParser) throws(JSONError) in try parser.string() } value: {
            (parser: inout JSONParser, key: String) throws(JSONError) in body(key, try parser.value(depth: depth))
        }
    }

    /// A top-level object read as ``JSONValue/knownMembers(parsing:keys:skipping:)`` says,
    /// with the errors ``members(depth:_:)`` would throw.
    mutating func knownMembers(keys: [StaticString], skipping: Int?, values: inout [JSONValue?], skipped: inout Range<Int>?) throws(JSONError) {
        try forEachMember(depth: 1) { (parser: inout JSONParser) throws(JSONError) in try parser.keySlot(keys) } value: {
            (parser: inout JSONParser, slot: Int?) throws(JSONError) in
            if let slot, slot != skipping {
                values[slot] = try parser.value(depth: 1)
            } else {
                let start = parser.index
                try parser.skipValue(depth: 1)
                if let slot {
                    values[slot] = .null
                    skipped = start..<parser.index
                }
            }
        }
    }

    /// Walks an object from its '{': `key` reads each key (from its opening quote), `value`
    /// its value (after the ':'); the braces, colons and commas, and their errors, are read here.
    /// Inlined, so each reader's closures are too (called, decoding took 5 % longer).
    @inline(__always)
    mutating func forEachMember<Key>(
        depth: Int, key readKey: (inout JSONParser) throws(JSONError) -> Key, value readValue: (inout JSONParser, Key) throws(JSONError) -> Void
    ) throws(JSONError) {
        guard depth <= JSONValue.maxDepth else { throw error("nesting deeper than \(JSONValue.maxDepth)") }
        index += 1
        skipSpace()
        if index < bytes.count, bytes[index] == 0x7D {
            index += 1
            return
        }
        while true {
            skipSpace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            guard bytes[index] == 0x22 else { throw error("expected a string key") }
            let key = try readKey(&self)
            skipSpace()
            guard index < bytes.count, bytes[index] == 0x3A else { throw error("expected ':' after a key") }
            index += 1
            skipSpace()
            try readValue(&self, key)
            skipSpace()
            guard index < bytes.count else { throw error("unexpected end of input in an object") }
            if bytes[index] == 0x2C { index += 1; continue }
            if bytes[index] == 0x7D { index += 1; return }
            throw error("expected ',' or '}' in an object")
        }
    }

    /// Reads a key (at its opening quote) and returns its position in `keys`, nil for another.
    /// A key of plain ASCII is compared as it is written, without making a string; one with
    /// escapes or other bytes is read (and checked) by ``string()``.
    private mutating func keySlot(_ keys: [StaticString]) throws(JSONError) -> Int? {
        let start = index + 1
        var high: UInt8 = 0
        let end = plainRun(from: start, high: &high)
        func matches(_ key: StaticString, _ written: UnsafeBufferPointer<UInt8>) -> Bool {
            key.utf8CodeUnitCount == written.count && UnsafeBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount).elementsEqual(written)
        }
        if end < bytes.count, bytes[end] == 0x22, high < 0x80 {
            index = end + 1
            let written = UnsafeBufferPointer(rebasing: bytes[start..<end])
            return keys.firstIndex { matches($0, written) }
        }
        var key = try string()
        return key.withUTF8 { written in keys.firstIndex { matches($0, written) } }
    }

    mutating func array(depth: Int) throws(JSONError) -> JSONValue {
        var result: [JSONValue] = []
        try forEachElement(depth: depth) { (parser: inout JSONParser) throws(JSONError) in result.append(try parser.value(depth: depth)) }
        return .array(result)
    }

    /// Walks an array from its '[': `element` reads each element; the brackets and commas,
    /// and their errors, are read here.
    @inline(__always)
    mutating func forEachElement(depth: Int, _ element: (inout JSONParser) throws(JSONError) -> Void) throws(JSONError) {
        guard depth <= JSONValue.maxDepth else { throw error("nesting deeper than \(JSONValue.maxDepth)") }
        index += 1
        skipSpace()
        if index < bytes.count, bytes[index] == 0x5D {
            index += 1
            return
        }
        while true {
            skipSpace()
            try element(&self)
            skipSpace()
            guard index < bytes.count else { throw error("unexpected end of input in an array") }
            if bytes[index] == 0x2C { index += 1; continue }
            if bytes[index] == 0x5D { index += 1; return }
            throw error("expected ',' or ']' in an array")
        }
    }

    mutating func string() throws(JSONError) -> String {
        index += 1
        let start = index
        // Fast path: no escapes.
        var high: UInt8 = 0
        index = plainRun(from: index, high: &high)
        if index < bytes.count, bytes[index] == 0x22 {
            let text = UnsafeBufferPointer(rebasing: bytes[start..<index])
            index += 1
            // ASCII needs no UTF-8 validation: copied as it is (most keys and values).
            if high < 0x80 {
                return String(unsafeUninitializedCapacity: text.count) { target in
                    _ = target.initialize(fromContentsOf: text)
                    return text.count
                }
            }
            guard let s = String(validating: text, as: UTF8.self) else { throw JSONError(offset: start, reason: "string is not valid UTF-8") }
            return s
        }
        var out = Array(bytes[start..<index])
        while index < bytes.count {
            let b = bytes[index]
            switch b {
            case 0x22:
                index += 1
                guard let s = String(validating: out, as: UTF8.self) else { throw JSONError(offset: start, reason: "string is not valid UTF-8") }
                return s
            case 0x5C:
                UTF8.encode(try escape()) { out.append($0) }
            case 0..<0x20:
                throw error("control character in a string")
            default:
                out.append(b)
                index += 1
            }
        }
        throw JSONError(offset: start - 1, reason: "unterminated string")
    }

    /// Where the run of string bytes from `start` that need no attention ends: at a '"', a
    /// '\\', a control character or the end of the input. Read eight bytes at a time. `high`
    /// gets 0x80 when a byte of the run has its high bit set (one that UTF-8 must check).
    func plainRun(from start: Int, high: inout UInt8) -> Int {
        JSONParser.plainRun(bytes, from: start, high: &high)
    }

    /// ``plainRun(from:high:)`` in any buffer: the writer finds the bytes it must escape with it.
    static func plainRun(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int, high: inout UInt8) -> Int {
        guard let base = bytes.baseAddress else { return start }
        let count = bytes.count
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        var i = start
        var seen: UInt64 = 0
        while i + 8 <= count {
            let word = UnsafeRawPointer(base + i).loadUnaligned(as: UInt64.self)
            let quotes = word ^ (ones &* 0x22)
            let backslashes = word ^ (ones &* 0x5C)
            // A byte that is zero in `quotes` or `backslashes`, or below 0x20 in `word` (exact
            // tests for "any byte", bytes of 0x80 and more never counting).
            let special = ((quotes &- ones) & ~quotes) | ((backslashes &- ones) & ~backslashes) | ((word &- ones &* 0x20) & ~word)
            if special & highs != 0 { break }
            seen |= word
            i += 8
        }
        if seen & highs != 0 { high |= 0x80 }
        while i < count {
            let b = base[i]
            if b == 0x22 || b == 0x5C || b < 0x20 { break }
            high |= b
            i += 1
        }
        return i
    }

    /// Reads an escape from its backslash; the character it stands for (a `\\u` pair of
    /// surrogates is one character).
    mutating func escape() throws(JSONError) -> Unicode.Scalar {
        index += 1
        guard index < bytes.count else { throw error("unexpected end of input in an escape") }
        let e = bytes[index]
        index += 1
        switch e {
        case 0x22, 0x5C, 0x2F: return Unicode.Scalar(e)
        case 0x62: return "\u{08}"
        case 0x66: return "\u{0C}"
        case 0x6E: return "\n"
        case 0x72: return "\r"
        case 0x74: return "\t"
        case 0x75:
            var scalar = try hex4()
            if (0xD800...0xDBFF).contains(scalar) {
                guard index + 1 < bytes.count, bytes[index] == 0x5C, bytes[index + 1] == 0x75 else {
                    throw error("lone high surrogate in \\u escape")
                }
                index += 2
                let low = try hex4()
                guard (0xDC00...0xDFFF).contains(low) else { throw error("invalid low surrogate in \\u escape") }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw error("lone low surrogate in \\u escape")
            }
            return Unicode.Scalar(scalar)!
        default:
            index -= 1
            throw error("invalid escape")
        }
    }

    mutating func hex4() throws(JSONError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("unexpected end of input in \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[index]
            let digit: UInt32
            switch b {
            case 0x30...0x39: digit = UInt32(b - 0x30)
            case 0x61...0x66: digit = UInt32(b - 0x61 + 10)
            case 0x41...0x46: digit = UInt32(b - 0x41 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }

    mutating func number() throws(JSONError) -> Double {
        let start = index
        var negative = false
        if bytes[index] == 0x2D {
            negative = true
            index += 1
        }
        guard index < bytes.count else { throw error("unexpected end of input in a number") }
        var integer: UInt64 = 0
        var digits = 0
        if bytes[index] == 0x30 {
            index += 1
            digits = 1
        } else if (0x31...0x39).contains(bytes[index]) {
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) {
                integer = integer &* 10 &+ UInt64(bytes[index] - 0x30)
                digits += 1
                index += 1
            }
        } else {
            throw error("invalid number")
        }
        var isIntegral = true
        if index < bytes.count, bytes[index] == 0x2E {
            isIntegral = false
            index += 1
            guard index < bytes.count, (0x30...0x39).contains(bytes[index]) else { throw error("digit expected after '.'") }
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == 0x65 || bytes[index] == 0x45 {
            isIntegral = false
            index += 1
            if index < bytes.count, bytes[index] == 0x2B || bytes[index] == 0x2D { index += 1 }
            guard index < bytes.count, (0x30...0x39).contains(bytes[index]) else { throw error("digit expected in exponent") }
            while index < bytes.count, (0x30...0x39).contains(bytes[index]) { index += 1 }
        }
        // Up to 15 digits fit a Double exactly: the common case needs no text conversion.
        if isIntegral, digits <= 15 {
            return negative ? -Double(integer) : Double(integer)
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else {
            throw JSONError(offset: start, reason: "number out of range")
        }
        return value
    }
}

extension [UInt8] {
    /// Appends the bytes of a static ASCII string, without building an intermediate array.
    mutating func append(ascii text: StaticString) {
        append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}
