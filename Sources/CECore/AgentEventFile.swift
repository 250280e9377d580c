import Foundation

/// The JSON that file-only agents write into `.ce-events/` (and read from its inbox).
///
/// Keys: `stream`, `event_type`, `payload` (required), `timestamp` (optional: the node uses the
/// time it picks the file up), `correlation_id`, `target` (optional). Files the node writes
/// for events it received also carry `id`, `origin` and `seq`. Unknown keys are ignored.
public struct AgentEventFile: Sendable, Hashable {
    public var stream: String
    public var type: EventType
    public var payload: JSONValue
    public var timestamp: Date?
    public var correlationID: String?
    public var target: String?
    /// Set on files written by the node for events it received.
    public var id: String?
    public var origin: String?
    public var seq: UInt64?

    public init(
        stream: String, type: EventType, payload: JSONValue, timestamp: Date? = nil, correlationID: String? = nil,
        target: String? = nil
    ) {
        self.stream = stream
        self.type = type
        self.payload = payload
        self.timestamp = timestamp
        self.correlationID = correlationID
        self.target = target
    }

    /// The file for an event that reached a node: every field of the event.
    public init(event: Event) {
        self.init(
            stream: event.stream, type: event.type, payload: event.payload, timestamp: event.timestamp,
            correlationID: event.correlationID, target: event.target)
        id = event.id
        origin = event.origin
        seq = event.seq
    }

    /// Parses and checks a file's content; errors name the key and what is wrong with it.
    public static func parse(_ bytes: [UInt8]) throws(EnvelopeError) -> AgentEventFile {
        let fields = try EnvelopeFields(parsing: bytes)
        var file = AgentEventFile(
            stream: try fields.name(.stream),
            type: try fields.eventType(),
            payload: try fields.required(.payload),
            timestamp: try fields.optionalTimestamp(),
            correlationID: try fields.optionalID(.correlationID),
            target: try fields.optionalName(.target))
        file.id = try fields.optionalID(.id)
        file.origin = try fields.optionalName(.origin)
        file.seq = try fields.optionalSeq()
        return file
    }

    /// The file's content: compact JSON, keys sorted.
    public func json() -> [UInt8] {
        var o: [String: JSONValue] = ["stream": .string(stream), "event_type": .string(type.rawValue), "payload": payload]
        if let timestamp { o["timestamp"] = .string(Timestamp.format(timestamp)) }
        if let correlationID { o["correlation_id"] = .string(correlationID) }
        if let target { o["target"] = .string(target) }
        if let id { o["id"] = .string(id) }
        if let origin { o["origin"] = .string(origin) }
        if let seq { o["seq"] = .number(Double(seq)) }
        return JSONValue.object(o).serialized()
    }

    /// The event an origin node emits for this file, stamped with its id, origin and sequence
    /// number; a file without a timestamp gets `now`.
    public func event(id: String, origin: String, seq: UInt64, now: Date) -> Event {
        Event(
            id: id, origin: origin, seq: seq, stream: stream, type: type, timestamp: timestamp ?? now, payload: payload,
            correlationID: correlationID, target: target)
    }

    /// `{stream}_{event_type}_{timestamp}_{origin}-{seq}.json`, with a file-safe timestamp
    /// (`20261125T034014.123Z`): unique per event, and sorted by time within a stream and type.
    public static func fileName(for event: Event) -> String {
        "\(event.stream)_\(event.type.rawValue)_\(Timestamp.formatCompact(event.timestamp))_\(event.origin)-\(event.seq).json"
    }
}
