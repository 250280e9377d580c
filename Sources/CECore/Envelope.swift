import Foundation

/// Why a message or an event file is not a valid event: a code to act on and a sentence that
/// names the field and what is wrong with it.
public struct EnvelopeError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// The bytes are not JSON; ``EnvelopeError/offset`` says where it went wrong.
        case invalidJSON
        /// The JSON is not an object.
        case notAnObject
        case missingField
        case wrongType
        /// `v` is not a version this code reads.
        case unknownVersion
        case badEventType
        /// A stream, origin or target that is not a valid ``Name``.
        case badName
        case badID
        case badTimestamp
        /// `seq` below 1 or above 2^53.
        case badSequence
        case topicNotUTF8
        /// A topic that is not `<event_type>/<stream>` with a valid type and stream.
        case badTopic
        /// The topic's type or stream differs from the envelope's.
        case topicMismatch
        case tooLarge
    }

    public var code: Code
    /// The envelope key at fault (`seq`, `stream`, ...), when there is one.
    public var field: String?
    /// For ``Code/invalidJSON``: the byte offset where parsing failed.
    public var offset: Int?
    public var description: String

    public init(_ code: Code, field: String? = nil, offset: Int? = nil, _ description: String) {
        self.code = code
        self.field = field
        self.offset = offset
        self.description = description
    }

    static func invalidJSON(_ error: JSONError) -> EnvelopeError {
        EnvelopeError(.invalidJSON, offset: error.offset, "invalid JSON at byte \(error.offset): \(error.reason)")
    }

    static func missing(_ field: String) -> EnvelopeError {
        EnvelopeError(.missingField, field: field, "missing field \"\(field)\"")
    }

    static func wrongType(_ field: String, expected: String, got value: JSONValue) -> EnvelopeError {
        EnvelopeError(.wrongType, field: field, "field \"\(field)\" has wrong type (expected \(expected), got \(value.kind))")
    }
}

extension JSONValue {
    /// "a string", "an object", ...: for error messages.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number(let n): n == n.rounded() ? "the number \(JSONValue.number(n).serializedString)" : "a number with a fraction"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// The top-level keys an envelope or event file is read for; others are ignored.
enum EnvelopeKey: Int {
    case v, id, origin, epoch, seq, stream, eventType, timestamp, payload, correlationID, target

    /// As written in the JSON.
    static let written: [StaticString] = [
        "v", "id", "origin", "epoch", "seq", "stream", "event_type", "timestamp", "payload", "correlation_id", "target",
    ]

    var name: String { Self.written[rawValue].description }
}

/// Typed access to the keys of an envelope or event file, each failure an ``EnvelopeError``.
struct EnvelopeFields {
    /// The value of each ``EnvelopeKey``, by its number (of a key written twice, the last, as a
    /// JSON object reads); other keys are checked as JSON but not built.
    let values: [JSONValue?]
    /// With `keepingPayload`: where the payload's bytes are (nil when there is no payload).
    let payloadRange: Range<Int>?

    /// `keepingPayload`: the payload is checked but not built (``payloadRange`` says where it is).
    init(parsing bytes: some Collection<UInt8>, keepingPayload: Bool = false) throws(EnvelopeError) {
        let parsed: (values: [JSONValue?], skipped: Range<Int>?, other: JSONValue?)
        do {
            parsed = try JSONValue.knownMembers(
                parsing: bytes, keys: EnvelopeKey.written, skipping: keepingPayload ? EnvelopeKey.payload.rawValue : nil)
        } catch { throw .invalidJSON(error) }
        if let other = parsed.other {
            throw EnvelopeError(.notAnObject, "not a JSON object (got \(other.kind))")
        }
        values = parsed.values
        payloadRange = parsed.skipped
    }

    func value(_ key: EnvelopeKey) -> JSONValue? {
        values[key.rawValue]
    }

    /// A present, non-null value.
    func optional(_ key: EnvelopeKey) -> JSONValue? {
        guard let value = value(key), value != .null else { return nil }
        return value
    }

    func required(_ key: EnvelopeKey) throws(EnvelopeError) -> JSONValue {
        guard let value = value(key) else { throw .missing(key.name) }
        return value
    }

    func string(_ key: EnvelopeKey) throws(EnvelopeError) -> String {
        let value = try required(key)
        guard case .string(let s) = value else { throw .wrongType(key.name, expected: "a string", got: value) }
        return s
    }

    func optionalString(_ key: EnvelopeKey) throws(EnvelopeError) -> String? {
        guard let value = optional(key) else { return nil }
        guard case .string(let s) = value else { throw .wrongType(key.name, expected: "a string", got: value) }
        return s
    }

    func name(_ key: EnvelopeKey) throws(EnvelopeError) -> String {
        try checkName(key, try string(key))
    }

    func optionalName(_ key: EnvelopeKey) throws(EnvelopeError) -> String? {
        guard let s = try optionalString(key) else { return nil }
        return try checkName(key, s)
    }

    func checkName(_ key: EnvelopeKey, _ s: String) throws(EnvelopeError) -> String {
        do { try Name.validate(s) } catch { throw EnvelopeError(.badName, field: key.name, "field \"\(key.name)\": \(error)") }
        return s
    }

    func id(_ key: EnvelopeKey) throws(EnvelopeError) -> String {
        try checkID(key, try string(key))
    }

    func optionalID(_ key: EnvelopeKey) throws(EnvelopeError) -> String? {
        guard let s = try optionalString(key) else { return nil }
        return try checkID(key, s)
    }

    func checkID(_ key: EnvelopeKey, _ s: String) throws(EnvelopeError) -> String {
        guard !s.isEmpty, s.utf8.count <= EnvelopeCodec.maxIDLength else {
            throw EnvelopeError(.badID, field: key.name, "field \"\(key.name)\" must be 1-\(EnvelopeCodec.maxIDLength) bytes (got \(s.utf8.count))")
        }
        return s
    }

    func eventType() throws(EnvelopeError) -> EventType {
        let s = try string(.eventType)
        do { return try EventType(validating: s) } catch {
            throw EnvelopeError(.badEventType, field: EnvelopeKey.eventType.name, "bad event type: \(error)")
        }
    }

    func timestamp() throws(EnvelopeError) -> Date {
        try checkTimestamp(try string(.timestamp))
    }

    func optionalTimestamp() throws(EnvelopeError) -> Date? {
        guard let s = try optionalString(.timestamp) else { return nil }
        return try checkTimestamp(s)
    }

    func checkTimestamp(_ s: String) throws(EnvelopeError) -> Date {
        guard let date = Timestamp.parse(s) else {
            throw EnvelopeError(
                .badTimestamp, field: "timestamp",
                "field \"timestamp\" is not an ISO 8601 date-time with an offset (like 2026-11-25T03:40:14.123Z): \"\(s.prefix(80))\"")
        }
        return date
    }

    /// The origin's store epoch; absent (or empty) for events of stores older than epochs.
    func epoch() throws(EnvelopeError) -> String {
        guard let text = try optionalString(.epoch), !text.isEmpty else { return "" }
        guard Epoch.isValid(text) else {
            throw EnvelopeError(.badName, field: EnvelopeKey.epoch.name, "field \"epoch\" must be 1-64 bytes of letters, digits and dashes (got \"\(text.prefix(80))\")")
        }
        return text
    }

    func seq() throws(EnvelopeError) -> UInt64 {
        try checkSeq(try required(.seq))
    }

    func optionalSeq() throws(EnvelopeError) -> UInt64? {
        guard let value = optional(.seq) else { return nil }
        return try checkSeq(value)
    }

    func checkSeq(_ value: JSONValue) throws(EnvelopeError) -> UInt64 {
        guard case .number(let n) = value, n == n.rounded() else {
            throw .wrongType("seq", expected: "an integer", got: value)
        }
        guard n >= 1 else { throw EnvelopeError(.badSequence, field: "seq", "seq must be ≥ 1 (got \(JSONValue.number(n)))") }
        guard n <= 9_007_199_254_740_992 else {
            throw EnvelopeError(.badSequence, field: "seq", "seq must be at most 2^53 (got \(JSONValue.number(n)))")
        }
        return UInt64(n)
    }
}

/// The wire envelope of an event: a JSON object (frame 2 of an event message).
///
///     {"v":1,"id":"…","origin":"planner-1","epoch":"019abc…","seq":12,"stream":"planner","event_type":"plan_ready",
///      "timestamp":"2026-11-25T03:40:14.123Z","payload":{…},"correlation_id":"…","target":"builder"}
///
/// `epoch`, `correlation_id` and `target` are left out when absent. Unknown keys are ignored; a `v`
/// other than 1 is refused. docs/PROTOCOL.md describes every field.
public enum EnvelopeCodec {
    /// The envelope version this code writes and reads.
    public static let version = 1
    /// The longest event id (and correlation id), in bytes.
    public static let maxIDLength = 128

    /// Encodes an event; keys in a fixed order, the payload's object keys sorted.
    public static func encode(_ event: Event) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(192 + event.id.utf8.count)
        out.append(ascii: #"{"v":1,"id":"#)
        JSONValue.writeString(event.id, to: &out)
        out.append(ascii: #","origin":"#)
        JSONValue.writeString(event.origin, to: &out)
        if !event.epoch.isEmpty {
            out.append(ascii: #","epoch":""#)
            out.append(contentsOf: event.epoch.utf8)  // [A-Za-z0-9-]: nothing to escape
            out.append(0x22)
        }
        out.append(ascii: #","seq":"#)
        JSONValue.writeInteger(Int64(clamping: event.seq), to: &out)
        out.append(ascii: #","stream":"#)
        JSONValue.writeString(event.stream, to: &out)
        out.append(ascii: #","event_type":""#)
        out.append(contentsOf: event.type.rawValue.utf8)  // [a-z0-9_]: nothing to escape
        out.append(ascii: #"","timestamp":""#)
        Timestamp.write(event.timestamp, to: &out)
        out.append(ascii: #"","payload":"#)
        event.payload.write(to: &out)
        if let c = event.correlationID {
            out.append(ascii: #","correlation_id":"#)
            JSONValue.writeString(c, to: &out)
        }
        if let t = event.target {
            out.append(ascii: #","target":"#)
            JSONValue.writeString(t, to: &out)
        }
        out.append(0x7D)
        return out
    }

    /// Decodes an envelope, checking every field.
    public static func decode(_ bytes: some Collection<UInt8>) throws(EnvelopeError) -> Event {
        try decode(bytes, maxBytes: .max)
    }

    /// ``decode(_:)`` of an array, whose payload bytes the event shares.
    public static func decode(_ bytes: [UInt8]) throws(EnvelopeError) -> Event {
        try decode(bytes, maxBytes: .max)
    }

    /// Decodes an envelope of at most `maxBytes` bytes (nodes pass the topology's
    /// `max_message_bytes`); a larger one is refused before parsing (``EnvelopeError/Code/tooLarge``).
    /// The payload is checked, and kept as bytes until it is read (``Event/payload``).
    public static func decode(_ bytes: some Collection<UInt8>, maxBytes: Int) throws(EnvelopeError) -> Event {
        try decode(bytes, maxBytes: maxBytes) { range in
            let kept = Array(bytes.dropFirst(range.lowerBound).prefix(range.count))
            return (kept, 0..<kept.count)
        }
    }

    /// ``decode(_:maxBytes:)`` of an array, whose payload bytes the event shares (no copy).
    public static func decode(_ bytes: [UInt8], maxBytes: Int) throws(EnvelopeError) -> Event {
        try decode(bytes, maxBytes: maxBytes) { range in (bytes, range) }
    }

    /// `keep`: the bytes the event holds for its payload, given where the payload is in `bytes`
    /// (counted from its start).
    private static func decode(_ bytes: some Collection<UInt8>, maxBytes: Int, keep: (Range<Int>) -> ([UInt8], Range<Int>)) throws(EnvelopeError) -> Event {
        guard bytes.count <= maxBytes else {
            throw EnvelopeError(.tooLarge, "envelope is \(bytes.count) bytes, more than the limit of \(maxBytes)")
        }
        let fields = try EnvelopeFields(parsing: bytes, keepingPayload: true)
        let v = try fields.required(.v)
        guard case .number(let n) = v, n == n.rounded(), abs(n) < 1e15 else {
            throw .wrongType(EnvelopeKey.v.name, expected: "an integer", got: v)
        }
        guard Int(n) == version else {
            throw EnvelopeError(.unknownVersion, field: EnvelopeKey.v.name, "unknown version \(Int(n)) (this node reads version \(version))")
        }
        let id = try fields.id(.id)
        let origin = try fields.name(.origin)
        let epoch = try fields.epoch()
        let seq = try fields.seq()
        let stream = try fields.name(.stream)
        let type = try fields.eventType()
        let timestamp = try fields.timestamp()
        guard let range = fields.payloadRange else { throw .missing(EnvelopeKey.payload.name) }
        let (payload, within) = keep(range)
        return Event(
            id: id, origin: origin, epoch: epoch, seq: seq, stream: stream, type: type, timestamp: timestamp,
            payloadBytes: payload, range: within,
            correlationID: try fields.optionalID(.correlationID),
            target: try fields.optionalName(.target))
    }

    /// Decodes a two-frame event message and checks that the topic agrees with the envelope.
    public static func decode(topic: [UInt8], body: [UInt8]) throws(EnvelopeError) -> Event {
        try decode(topic: topic, body: body, maxBytes: .max)
    }

    /// ``decode(topic:body:)`` with a size limit on the envelope.
    public static func decode(topic: [UInt8], body: [UInt8], maxBytes: Int) throws(EnvelopeError) -> Event {
        // A well-formed topic is checked on its bytes and compared with the envelope's type and
        // stream as written (no strings made); any other goes through ``Topic/parse(_:)`` for
        // the error that names what is wrong.
        if !Topic.isWellFormed(topic) { _ = try Topic.parse(topic) }
        let event = try decode(body, maxBytes: maxBytes)
        let type = event.type.rawValue.utf8
        let stream = event.stream.utf8
        guard topic.count == type.count + 1 + stream.count, topic[type.count] == 0x2F,
              topic[..<type.count].elementsEqual(type), topic[(type.count + 1)...].elementsEqual(stream)
        else {
            throw EnvelopeError(
                .topicMismatch, "topic \"\(String(decoding: topic, as: UTF8.self))\" but envelope says \"\(event.type.rawValue)/\(event.stream)\"")
        }
        return event
    }
}
