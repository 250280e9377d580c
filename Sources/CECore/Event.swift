import Foundation

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
    /// Any JSON value.
    public var payload: JSONValue
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
        self.payload = payload
        self.correlationID = correlationID
        self.target = target
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
