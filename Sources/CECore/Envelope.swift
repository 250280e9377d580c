import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Names of nodes, pools and streams: `[A-Za-z0-9_.-]`, 1 to 64 bytes.
public enum Name {
    public static let maxLength = 64

    public static func isValid(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        return utf8.allSatisfy { b in
            (b >= 0x61 && b <= 0x7A) || (b >= 0x41 && b <= 0x5A) || (b >= 0x30 && b <= 0x39) || b == 0x5F || b == 0x2E || b == 0x2D
        }
    }
}

/// Why a message or file is not a valid event.
public struct EnvelopeError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Timestamps on the wire: ISO 8601 in UTC with milliseconds (`2026-11-25T03:40:14.123Z`).
public enum Timestamp {
    /// Formats a date as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    public static func format(_ date: Date) -> String {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var seconds = time_t(millis >= 0 ? millis / 1000 : (millis - 999) / 1000)
        let ms = Int((millis % 1000 + 1000) % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(ms), 3))Z"
    }

    /// Parses ISO 8601 date-times: `2026-11-25T03:40:14Z`, `...14.123456Z`, `...14+02:00`.
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func digits(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for i in at..<(at + n) {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard b.count >= 20, let year = digits(0, 4), b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D,
            let day = digits(8, 2), b[10] == 0x54 || b[10] == 0x74 || b[10] == 0x20, let hour = digits(11, 2), b[13] == 0x3A,
            let minute = digits(14, 2), b[16] == 0x3A, let second = digits(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 {
                fraction += Double(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            guard i > start else { return nil }
        }
        var offset = 0
        guard i < b.count else { return nil }
        if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D {
            guard let oh = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == 0x3A, let om = digits(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == 0x2D ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        let epoch = timegm(&parts)
        return Date(timeIntervalSince1970: Double(epoch - offset) + fraction)
    }
}

/// The wire envelope of an event: a JSON object (frame 2 of an event message).
///
///     {"v":1,"id":"…","origin":"planner-1","seq":12,"stream":"planner","event_type":"plan_ready",
///      "timestamp":"2026-11-25T03:40:14.123Z","payload":{…},"correlation_id":"…","target":"builder"}
///
/// `correlation_id` and `target` are left out when absent. Unknown keys are ignored; a `v`
/// other than 1 is refused.
public enum EnvelopeCodec {
    public static let version = 1

    public static func encode(_ event: Event) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        out.append(contentsOf: Array(#"{"v":1,"id":"#.utf8))
        JSONValue.writeString(event.id, to: &out)
        out.append(contentsOf: Array(#","origin":"#.utf8))
        JSONValue.writeString(event.origin, to: &out)
        out.append(contentsOf: Array(#","seq":"#.utf8))
        out.append(contentsOf: Array(String(event.seq).utf8))
        out.append(contentsOf: Array(#","stream":"#.utf8))
        JSONValue.writeString(event.stream, to: &out)
        out.append(contentsOf: Array(#","event_type":""#.utf8))
        out.append(contentsOf: Array(event.type.rawValue.utf8))
        out.append(contentsOf: Array(#"","timestamp":""#.utf8))
        out.append(contentsOf: Array(Timestamp.format(event.timestamp).utf8))
        out.append(contentsOf: Array(#"","payload":"#.utf8))
        event.payload.write(to: &out)
        if let c = event.correlationID {
            out.append(contentsOf: Array(#","correlation_id":"#.utf8))
            JSONValue.writeString(c, to: &out)
        }
        if let t = event.target {
            out.append(contentsOf: Array(#","target":"#.utf8))
            JSONValue.writeString(t, to: &out)
        }
        out.append(0x7D)
        return out
    }

    public static func decode(_ bytes: some Collection<UInt8>) throws(EnvelopeError) -> Event {
        let value: JSONValue
        do { value = try JSONValue(parsing: bytes) } catch { throw EnvelopeError("envelope is not valid JSON: \(error)") }
        guard case .object(let o) = value else { throw EnvelopeError("envelope must be a JSON object") }
        if let v = o["v"] {
            guard let n = v.intValue else { throw EnvelopeError("field \"v\" must be an integer") }
            guard n == version else { throw EnvelopeError("unknown envelope version \(n) (this node speaks \(version))") }
        } else {
            throw EnvelopeError("missing field \"v\"")
        }
        let id = try string(o, "id")
        guard !id.isEmpty, id.utf8.count <= 128 else { throw EnvelopeError("field \"id\" must be 1-128 bytes") }
        let origin = try name(o, "origin")
        guard let seqValue = o["seq"] else { throw EnvelopeError("missing field \"seq\"") }
        guard case .number(let seqNumber) = seqValue, seqNumber == seqNumber.rounded() else {
            throw EnvelopeError("field \"seq\" must be an integer")
        }
        guard seqNumber >= 1, seqNumber < 9.007_199_254_740_992e15 else { throw EnvelopeError("field \"seq\" must be at least 1") }
        let stream = try name(o, "stream")
        let type = try eventType(o)
        let timestamp = try time(o)
        let payload = o["payload"] ?? .null
        let correlation = try optionalString(o, "correlation_id")
        let target = try optionalString(o, "target")
        if let target, !Name.isValid(target) { throw EnvelopeError("field \"target\" is not a valid pool name: \"\(target.prefix(80))\"") }
        return Event(
            id: id, origin: origin, seq: UInt64(seqNumber), stream: stream, type: type, timestamp: timestamp,
            payload: payload, correlationID: correlation, target: target)
    }

    /// Decodes a two-frame event message and checks that the topic agrees with the envelope.
    public static func decode(topic: [UInt8], body: [UInt8]) throws(EnvelopeError) -> Event {
        let (type, stream) = try Topic.parse(topic)
        let event = try decode(body)
        guard event.type == type, event.stream == stream else {
            throw EnvelopeError("topic \"\(type.rawValue)/\(stream)\" but envelope says \"\(event.type.rawValue)/\(event.stream)\"")
        }
        return event
    }

    static func string(_ o: [String: JSONValue], _ key: String) throws(EnvelopeError) -> String {
        guard let value = o[key] else { throw EnvelopeError("missing field \"\(key)\"") }
        guard case .string(let s) = value else { throw EnvelopeError("field \"\(key)\" must be a string") }
        return s
    }

    static func optionalString(_ o: [String: JSONValue], _ key: String) throws(EnvelopeError) -> String? {
        guard let value = o[key], value != .null else { return nil }
        guard case .string(let s) = value else { throw EnvelopeError("field \"\(key)\" must be a string") }
        return s
    }

    static func name(_ o: [String: JSONValue], _ key: String) throws(EnvelopeError) -> String {
        let s = try string(o, key)
        guard Name.isValid(s) else { throw EnvelopeError("field \"\(key)\" is not a valid name ([A-Za-z0-9_.-], 1-64 bytes): \"\(s.prefix(80))\"") }
        return s
    }

    static func eventType(_ o: [String: JSONValue]) throws(EnvelopeError) -> EventType {
        let s = try string(o, "event_type")
        do { return try EventType(validating: s) } catch { throw EnvelopeError("field \"event_type\": \(error)") }
    }

    static func time(_ o: [String: JSONValue]) throws(EnvelopeError) -> Date {
        let s = try string(o, "timestamp")
        guard let date = Timestamp.parse(s) else { throw EnvelopeError("field \"timestamp\" is not an ISO 8601 date-time: \"\(s.prefix(80))\"") }
        return date
    }
}

/// Topics: frame 1 of an event message, `<event_type>/<stream>` in UTF-8. Topics that start
/// with `_` belong to the bus itself (heartbeats: `_hb/<origin>`).
public enum Topic {
    public static func bytes(type: EventType, stream: String) -> [UInt8] {
        Array(type.rawValue.utf8) + [0x2F] + Array(stream.utf8)
    }

    /// The SUB prefix for one type: `<type>/`, so `plan_ready/` never matches `plan_ready_v2/...`.
    public static func subscriptionPrefix(for type: EventType) -> [UInt8] {
        Array(type.rawValue.utf8) + [0x2F]
    }

    public static func parse(_ bytes: [UInt8]) throws(EnvelopeError) -> (EventType, String) {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw EnvelopeError("topic is not UTF-8") }
        guard let slash = text.firstIndex(of: "/") else { throw EnvelopeError("topic \"\(text.prefix(80))\" is not <event_type>/<stream>") }
        let typeName = String(text[..<slash])
        let stream = String(text[text.index(after: slash)...])
        let type: EventType
        do { type = try EventType(validating: typeName) } catch { throw EnvelopeError("topic: \(error)") }
        guard Name.isValid(stream) else { throw EnvelopeError("topic stream \"\(stream.prefix(80))\" is not a valid name") }
        return (type, stream)
    }
}
