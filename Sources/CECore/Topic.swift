/// Topics: frame 1 of an event message, `<event_type>/<stream>` in UTF-8.
///
/// Topics that start with `_` belong to the bus itself (heartbeats: `_hb/<origin>`); event
/// types may not start with `_`, so the two never collide.
public enum Topic {
    /// The prefix of every heartbeat topic.
    public static let heartbeatPrefix: [UInt8] = Array("_hb/".utf8)

    /// `<type>/<stream>`.
    public static func bytes(type: EventType, stream: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(type.rawValue.utf8.count + 1 + stream.utf8.count)
        out.append(contentsOf: type.rawValue.utf8)
        out.append(0x2F)
        out.append(contentsOf: stream.utf8)
        return out
    }

    /// The SUB prefix for one type: `<type>/`, so `plan_ready/` never matches `plan_ready_v2/...`.
    public static func subscriptionPrefix(for type: EventType) -> [UInt8] {
        Array(type.rawValue.utf8) + [0x2F]
    }

    /// `_hb/<origin>`: the topic of a node's heartbeats.
    public static func heartbeat(origin: String) -> [UInt8] {
        heartbeatPrefix + Array(origin.utf8)
    }

    /// True for the bus's own topics (those starting with `_`).
    public static func isReserved(_ topic: some Collection<UInt8>) -> Bool {
        topic.first == 0x5F
    }

    /// True when ``parse(_:)`` accepts `bytes`, checked on the bytes: `<type>/<stream>`, the
    /// type 1-64 of `[a-z0-9_]` not starting with `_`, the stream a ``Name``.
    public static func isWellFormed(_ bytes: [UInt8]) -> Bool {
        guard let slash = bytes.firstIndex(of: 0x2F), slash > 0, slash <= EventType.maxLength, bytes[0] != 0x5F else { return false }
        let streamCount = bytes.count - slash - 1
        guard streamCount > 0, streamCount <= Name.maxLength else { return false }
        for byte in bytes[..<slash] where !EventType.allowed(byte) { return false }
        for byte in bytes[(slash + 1)...] where !Name.allowed(byte) { return false }
        return true
    }

    /// Splits an event topic into its type and stream, checking both.
    public static func parse(_ bytes: some Collection<UInt8>) throws(EnvelopeError) -> (EventType, String) {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw EnvelopeError(.topicNotUTF8, "topic is not UTF-8")
        }
        guard let slash = text.utf8.firstIndex(of: 0x2F) else {
            throw EnvelopeError(.badTopic, "topic \"\(text.prefix(80))\" is not <event_type>/<stream>")
        }
        let typeName = String(text[..<slash])
        let stream = String(text[text.index(after: slash)...])
        let type: EventType
        do { type = try EventType(validating: typeName) } catch {
            throw EnvelopeError(.badTopic, "topic \"\(text.prefix(80))\": \(error)")
        }
        do { try Name.validate(stream) } catch {
            throw EnvelopeError(.badTopic, "topic \"\(text.prefix(80))\": stream \(error)")
        }
        return (type, stream)
    }
}
