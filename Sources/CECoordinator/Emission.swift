import CECore

/// An event a state machine asks the coordinator to publish.
public struct Emission: Sendable, Hashable {
    public var type: EventType
    public var payload: JSONValue
    public var target: String?
    public var correlationID: String?

    public init(_ type: EventType, _ payload: JSONValue, target: String? = nil, correlationID: String? = nil) {
        self.type = type
        self.payload = payload
        self.target = target
        self.correlationID = correlationID
    }
}

/// The event types the coordinator publishes (documented in docs/PROTOCOL.md).
extension EventType {
    /// A gate's required pools all reported for the round: `{"gate","round","pools"}`.
    public static let gatePassed = try! EventType(validating: "gate_passed")
    /// A round's deadline passed: `{"gate","round","missing","waited_s"}`.
    public static let gateTimedOut = try! EventType(validating: "gate_timed_out")
    /// A `sync_point_reached` that was refused: `{"gate","pool","node","reason"}`.
    public static let gateRejected = try! EventType(validating: "gate_rejected")
    /// Emitted by a resolver (or `ce-node resolve`): `{"conflict_id","decision"}`.
    public static let conflictResolved = try! EventType(validating: "conflict_resolved")
    /// The coordinator closed a conflict: `{"conflict_id","subject","decision","resolved_by","parties"}`.
    public static let conflictClosed = try! EventType(validating: "conflict_closed")
    /// A pool's liveness changed: `{"pool","nodes"}`.
    public static let poolUp = try! EventType(validating: "pool_up")
    public static let poolDown = try! EventType(validating: "pool_down")
    /// A node received an event it cannot take (larger than its own `max_message_bytes`): the
    /// hole in that line, `{"origin","epoch","seq","id","event_type","bytes","limit"}`.
    public static let eventSkipped = try! EventType(validating: "event_skipped")
}
