import CECore

/// The marks an event and a heartbeat carry: its origin's last sequence number of each event
/// type so far, a JSON object `{"type": seq, ...}` with its keys sorted. A subscriber that
/// filters by type tells a gap of filtered events from lost ones by them (PROTOCOL.md).
/// Written for every emitted event and read for every received one, so both have a direct
/// path beside the general JSON one.
enum Marks {
    /// The marks as a JSON value (heartbeats).
    static func value(_ marks: [String: UInt64]) -> JSONValue {
        .object(marks.mapValues { .number(Double($0)) })
    }

    /// The marks in a JSON value; nil unless it is an object of whole numbers >= 0.
    static func from(_ value: JSONValue) -> [String: UInt64]? {
        guard case .object(let object) = value else { return nil }
        var marks: [String: UInt64] = [:]
        for (key, value) in object {
            guard let n = value.intValue, n >= 0 else { return nil }
            marks[key] = UInt64(n)
        }
        return marks
    }

    /// The marks in an event's third frame; nil when it is not such an object.
    ///
    /// The form a node writes (no spaces, plain ASCII keys, whole numbers of at most 15
    /// digits) is read directly; anything else goes through the JSON parser, so the result
    /// is the same as `from(JSONValue(parsing:))` for every input.
    static func parse(_ bytes: [UInt8]) -> [String: UInt64]? {
        if let marks = parseWritten(bytes) { return marks }
        return (try? JSONValue(parsing: bytes)).flatMap(from)
    }

    /// The direct path of ``parse(_:)``: nil whenever the input is not in the written form.
    static func parseWritten(_ bytes: [UInt8]) -> [String: UInt64]? {
        bytes.withUnsafeBufferPointer(parseWritten)
    }

    private static func parseWritten(_ b: UnsafeBufferPointer<UInt8>) -> [String: UInt64]? {
        guard b.count >= 2, b[0] == UInt8(ascii: "{"), b[b.count - 1] == UInt8(ascii: "}") else { return nil }
        var marks: [String: UInt64] = [:]
        var i = 1
        if b.count == 2 { return marks }
        while true {
            // "key"
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let keyStart = i
            while i < b.count, b[i] != UInt8(ascii: "\"") {
                // Escapes, control characters and non-ASCII: the JSON parser's business.
                guard b[i] >= 0x20, b[i] < 0x80, b[i] != UInt8(ascii: "\\") else { return nil }
                i += 1
            }
            guard i < b.count else { return nil }
            let key = String(decoding: UnsafeBufferPointer(rebasing: b[keyStart..<i]), as: UTF8.self)
            i += 1
            guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            // A whole number: no sign, no leading zero, no fraction or exponent, at most 15 digits.
            let digitsStart = i
            var n: UInt64 = 0
            while i < b.count, b[i] >= UInt8(ascii: "0"), b[i] <= UInt8(ascii: "9") {
                n = n * 10 + UInt64(b[i] - UInt8(ascii: "0"))
                i += 1
            }
            let digits = i - digitsStart
            guard digits >= 1, digits <= 15, digits == 1 || b[digitsStart] != UInt8(ascii: "0") else { return nil }
            // A key given twice: which one counts is the JSON parser's rule.
            guard marks.updateValue(n, forKey: key) == nil else { return nil }
            guard i < b.count else { return nil }
            if b[i] == UInt8(ascii: "}") { return i == b.count - 1 ? marks : nil }
            guard b[i] == UInt8(ascii: ",") else { return nil }
            i += 1
        }
    }

    /// The marks through the events of one emitted batch, one after another, written as the
    /// bytes `value(marks).serialized()` gives, without building a JSON value and sorting its
    /// keys for every event.
    struct Writer {
        /// Sorted by key, each key already written as JSON.
        private var entries: [(key: String, json: [UInt8], seq: UInt64)]

        init(_ marks: [String: UInt64]) {
            entries = marks.map { (key: $0.key, json: Self.json($0.key), seq: $0.value) }.sorted { $0.key < $1.key }
        }

        private static func json(_ key: String) -> [UInt8] {
            var out: [UInt8] = []
            JSONValue.writeString(key, to: &out)
            return out
        }

        /// The marks as they stand, as a dictionary.
        var marks: [String: UInt64] { Dictionary(uniqueKeysWithValues: entries.map { ($0.key, $0.seq) }) }

        /// The marks as they stand, as JSON.
        func bytes() -> [UInt8] {
            var out: [UInt8] = [UInt8(ascii: "{")]
            out.reserveCapacity(2 + entries.count * 32)
            for (index, entry) in entries.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: entry.json)
                out.append(UInt8(ascii: ":"))
                JSONValue.writeNumber(Double(entry.seq), to: &out)
            }
            out.append(UInt8(ascii: "}"))
            return out
        }

        /// Records an event of `type` numbered `seq`.
        mutating func advance(type: String, seq: UInt64) {
            if let index = entries.firstIndex(where: { $0.key == type }) {
                entries[index].seq = seq
            } else {
                let at = entries.firstIndex { $0.key > type } ?? entries.count
                entries.insert((key: type, json: Self.json(type), seq: seq), at: at)
            }
        }
    }
}
