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
    /// Per-origin sequence number, from 1.
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
        self.seq = seq
        self.stream = stream
        self.type = type
        self.timestamp = timestamp
        self.payload = payload
        self.correlationID = correlationID
        self.target = target
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
