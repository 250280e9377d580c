import Foundation
import Synchronization

/// One event on the bus: what a pool announced, stamped by the node that emitted it.
///
/// The fields `stream`, `type` (`event_type` on the wire), `payload` and `timestamp` are the
/// ones agents write; `id`, `origin` and `seq` are stamped by the origin node, which numbers
/// its events 1, 2, 3, ... with no gaps and never reuses a number.
public struct Event: Sendable, Hashable {
    /// Globally unique id (the origin's node id, a dash and a random 128-bit hex string by default).
    public var id: String
    /// The node that emitted the event.
    public var origin: String
    /// The origin's store the event was numbered in: made when that store was created, so a
    /// store that replaces a lost one numbers from 1 again without colliding with the old
    /// one's events. Empty for events of stores made before epochs existed. Epochs of one
    /// origin order by when their stores were made (the text sorts that way).
    public var epoch: String
    /// Per-origin sequence number within the epoch, from 1.
    public var seq: UInt64
    /// The emitting pool.
    public var stream: String
    /// The event type: one of the catalog's or a well-formed custom one.
    public var type: EventType
    /// When the event was emitted (UTC, millisecond precision on the wire).
    public var timestamp: Date
    /// Any JSON value. An event decoded from an envelope keeps its payload's bytes, checked to
    /// be valid JSON, and builds the value the first time it is read: a node that stores and
    /// forwards events never parses their payloads.
    public var payload: JSONValue {
        get {
            switch body {
            case .value(let value): return value
            case .bytes(let raw): return raw.value
            }
        }
        set { body = .value(newValue) }
    }
    private var body: Payload
    /// Ties an event to an earlier one (a reply, a resolution).
    public var correlationID: String?
    /// The pool the event is addressed to, if any (every subscriber still receives it).
    public var target: String?

    public init(
        id: String,
        origin: String,
        epoch: String = "",
        seq: UInt64,
        stream: String,
        type: EventType,
        timestamp: Date,
        payload: JSONValue,
        correlationID: String? = nil,
        target: String? = nil
    ) {
        self.id = id
        self.origin = origin
        self.epoch = epoch
        self.seq = seq
        self.stream = stream
        self.type = type
        self.timestamp = timestamp
        self.body = .value(payload)
        self.correlationID = correlationID
        self.target = target
    }
}

extension Event {
    /// An event whose payload is the JSON in `bytes[range]`, already checked to parse.
    init(id: String, origin: String, epoch: String, seq: UInt64, stream: String, type: EventType, timestamp: Date,
         payloadBytes bytes: [UInt8], range: Range<Int>, correlationID: String?, target: String?) {
        self.init(id: id, origin: origin, epoch: epoch, seq: seq, stream: stream, type: type, timestamp: timestamp,
                  payload: .null, correlationID: correlationID, target: target)
        body = .bytes(RawJSON(bytes: bytes, range: range))
    }

    /// Equal when every field is, the payloads compared as JSON values (written the same, or
    /// parsed to the same value).
    public static func == (a: Event, b: Event) -> Bool {
        guard a.id == b.id, a.origin == b.origin, a.epoch == b.epoch, a.seq == b.seq, a.stream == b.stream, a.type == b.type,
              a.timestamp == b.timestamp, a.correlationID == b.correlationID, a.target == b.target
        else { return false }
        if case .bytes(let x) = a.body, case .bytes(let y) = b.body, x.bytes[x.range].elementsEqual(y.bytes[y.range]) { return true }
        return a.payload == b.payload
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(origin)
        hasher.combine(epoch)
        hasher.combine(seq)
        hasher.combine(stream)
        hasher.combine(type)
        hasher.combine(timestamp)
        hasher.combine(payload)
        hasher.combine(correlationID)
        hasher.combine(target)
    }
}

/// An event's payload: a value, or the bytes of one (parsed when first read).
enum Payload: Sendable {
    case value(JSONValue)
    case bytes(RawJSON)
}

/// JSON bytes known to parse, and the value they parse to once it was asked for.
final class RawJSON: Sendable {
    let bytes: [UInt8]
    let range: Range<Int>
    private let parsed = Mutex<JSONValue?>(nil)

    init(bytes: [UInt8], range: Range<Int>) {
        self.bytes = bytes
        self.range = range
    }

    var value: JSONValue {
        parsed.withLock { parsed in
            if let parsed { return parsed }
            // Checked when the envelope was decoded (the same parser's rules), so this parses.
            let value = (try? bytes.withUnsafeBufferPointer { JSONValue.parse(buffer: UnsafeBufferPointer(rebasing: $0[range])) }.get()) ?? .null
            parsed = value
            return value
        }
    }
}

/// One numbered line of an origin's events: the origin and the epoch of its store. Order and
/// "stored once" hold per line (sequence 1, 2, 3, ... with no holes at the origin).
public struct Line: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var origin: String
    public var epoch: String

    public init(_ origin: String, _ epoch: String) {
        self.origin = origin
        self.epoch = epoch
    }

    public static func < (a: Line, b: Line) -> Bool { (a.origin, a.epoch) < (b.origin, b.epoch) }

    public var description: String { epoch.isEmpty ? origin : "\(origin)@\(epoch)" }
}

extension Event {
    /// The line this event is numbered in.
    public var line: Line { Line(origin, epoch) }
}

/// What an epoch id may hold: 1-64 bytes of [A-Za-z0-9-] (a UUID, as made).
public enum Epoch {
    public static func make() -> String { EventID.make() }

    public static func isValid(_ text: String) -> Bool {
        guard !text.isEmpty, text.utf8.count <= 64 else { return false }
        return text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }
    }
}

/// A JSON value, as carried in an event's payload.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}
