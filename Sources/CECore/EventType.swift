/// An event type: a name from the catalog (`plan_ready`, ...) or a custom one (`schema_v1`).
///
/// Every type matches `[a-z0-9_]+` and is at most ``maxLength`` bytes long, so it can stand
/// in a topic (`<event_type>/<stream>`) without escaping.
public struct EventType: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let rawValue: String

    /// The longest accepted type name, in bytes.
    public static let maxLength = 64

    /// Accepts a well-formed name; throws ``EventTypeError`` naming what is wrong.
    public init(validating name: String) throws(EventTypeError) {
        guard !name.isEmpty else { throw .empty }
        guard name.utf8.count <= Self.maxLength else { throw .tooLong(name, Self.maxLength) }
        guard name.utf8.first != 0x5F else { throw .reserved(name) }
        for byte in name.utf8 where !Self.allowed(byte) { throw .badCharacter(name) }
        self.rawValue = name
    }

    /// `[a-z0-9_]`
    static func allowed(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x5F
    }

    /// For names known to be well formed (the catalog's); traps on a malformed one.
    init(known name: String) {
        do { try self.init(validating: name) } catch { preconditionFailure("\(error)") }
    }

    /// The catalog category, or nil for a custom type.
    public var category: Category? { Self.catalog[self] }

    /// True when the type is one of the twelve standard types.
    public var isStandard: Bool { category != nil }

    public var description: String { rawValue }

    public static func < (lhs: EventType, rhs: EventType) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The four categories of the standard vocabulary.
    public enum Category: String, Sendable, CaseIterable {
        case planning, building, review, coordination
    }

    // Planning
    public static let planReady = EventType(known: "plan_ready")
    public static let architectureComplete = EventType(known: "architecture_complete")
    public static let requirementsDefined = EventType(known: "requirements_defined")
    // Building
    public static let buildReady = EventType(known: "build_ready")
    public static let implementationComplete = EventType(known: "implementation_complete")
    public static let integrationDone = EventType(known: "integration_done")
    // Review
    public static let reviewComplete = EventType(known: "review_complete")
    public static let qualityValidated = EventType(known: "quality_validated")
    public static let approvalGranted = EventType(known: "approval_granted")
    // Coordination
    public static let syncPointReached = EventType(known: "sync_point_reached")
    public static let conflictDetected = EventType(known: "conflict_detected")
    public static let resolutionNeeded = EventType(known: "resolution_needed")

    /// The twelve standard types and their categories.
    public static let catalog: [EventType: Category] = [
        .planReady: .planning, .architectureComplete: .planning, .requirementsDefined: .planning,
        .buildReady: .building, .implementationComplete: .building, .integrationDone: .building,
        .reviewComplete: .review, .qualityValidated: .review, .approvalGranted: .review,
        .syncPointReached: .coordination, .conflictDetected: .coordination,
        .resolutionNeeded: .coordination,
    ]

    /// The standard types of one category, sorted by name.
    public static func standard(in category: Category) -> [EventType] {
        catalog.filter { $0.value == category }.map(\.key).sorted()
    }
}

/// Why a string is not a valid event type.
public enum EventTypeError: Error, Sendable, Equatable, CustomStringConvertible {
    case empty
    case tooLong(String, Int)
    case badCharacter(String)
    case reserved(String)

    public var description: String {
        switch self {
        case .empty: "event type is empty"
        case .tooLong(let name, let max): "event type '\(name.prefix(80))' is longer than \(max) bytes"
        case .badCharacter(let name): "event type '\(name.prefix(80))' may only contain a-z, 0-9 and _"
        case .reserved(let name): "event type '\(name.prefix(80))' starts with _, which is reserved for the bus's own topics"
        }
    }
}
