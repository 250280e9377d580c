import Foundation

/// The JSON that file-only agents write into `.ce-events/` (and read from its inbox):
/// `stream`, `event_type`, `payload`, optional `timestamp`, `correlation_id`, `target`.
/// Files the node writes also carry `id`, `origin` and `seq`; extra keys are ignored.
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

    public init(stream: String, type: EventType, payload: JSONValue, timestamp: Date? = nil, correlationID: String? = nil, target: String? = nil) {
        self.stream = stream
        self.type = type
        self.payload = payload
        self.timestamp = timestamp
        self.correlationID = correlationID
        self.target = target
    }

    /// The file for an event that reached a node.
    public init(event: Event) {
        self.init(stream: event.stream, type: event.type, payload: event.payload, timestamp: event.timestamp,
                  correlationID: event.correlationID, target: event.target)
        id = event.id
        origin = event.origin
        seq = event.seq
    }

    public static func parse(_ bytes: [UInt8]) throws(EnvelopeError) -> AgentEventFile {
        let value: JSONValue
        do { value = try JSONValue(parsing: bytes) } catch { throw EnvelopeError("not valid JSON: \(error)") }
        guard case .object(let o) = value else { throw EnvelopeError("an event file must hold a JSON object") }
        let stream = try EnvelopeCodec.name(o, "stream")
        let type = try EnvelopeCodec.eventType(o)
        guard let payload = o["payload"] else { throw EnvelopeError("missing field \"payload\"") }
        var file = AgentEventFile(
            stream: stream, type: type, payload: payload,
            timestamp: o["timestamp"] == nil || o["timestamp"] == .null ? nil : try EnvelopeCodec.time(o),
            correlationID: try EnvelopeCodec.optionalString(o, "correlation_id"),
            target: try EnvelopeCodec.optionalString(o, "target"))
        if let target = file.target, !Name.isValid(target) { throw EnvelopeError("field \"target\" is not a valid pool name") }
        file.id = try EnvelopeCodec.optionalString(o, "id")
        file.origin = try EnvelopeCodec.optionalString(o, "origin")
        file.seq = o["seq"]?.intValue.map { UInt64(max(0, $0)) }
        return file
    }

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

    /// `{stream}_{event_type}_{timestamp}_{origin}-{seq}.json`, with a file-safe timestamp
    /// (`20261125T034014.123Z`): unique per event, and sorted by time within a stream.
    public static func fileName(for event: Event) -> String {
        let stamp = Timestamp.format(event.timestamp).replacingOccurrences(of: "-", with: "").replacingOccurrences(of: ":", with: "")
        return "\(event.stream)_\(event.type.rawValue)_\(stamp)_\(event.origin)-\(event.seq).json"
    }
}
