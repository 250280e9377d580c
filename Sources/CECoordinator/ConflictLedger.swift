import CECore
import Foundation

/// What a node knows of the cluster's conflicts from the events it stores: which conflicts the
/// coordinator asked to resolve (`resolution_needed`), which a resolve was stored for
/// (`conflict_resolved`) and which it closed (`conflict_closed`). Every node stores the
/// coordinator's decisions, so any node can check a resolve against it before emitting one.
/// A value type: no I/O.
public struct ConflictLedger: Sendable {
    /// Conflict id -> subject, for every conflict asked about and not closed.
    public private(set) var open: [String: String] = [:]
    /// Conflict id -> who resolved it first (as `resolved_by` says) and when.
    public private(set) var resolved: [String: (by: String, at: Date)] = [:]
    /// Conflict id -> who resolved it, per the coordinator's `conflict_closed`.
    public private(set) var closed: [String: String] = [:]

    public init() {}

    /// The types the ledger reads.
    public static let types: [EventType] = [.resolutionNeeded, .conflictResolved, .conflictClosed]

    /// The conflict an event of the ledger's types is about.
    public static func conflictID(_ event: Event) -> String? {
        event.payload["conflict_id"]?.stringValue ?? event.correlationID
    }

    /// Who resolved: the payload's `resolved_by` when it is "human" or the emitting pool, else the pool.
    public static func resolver(_ event: Event) -> String {
        if let claimed = event.payload["resolved_by"]?.stringValue, claimed == "human" || claimed == event.stream { return claimed }
        return event.stream
    }

    /// Takes one stored event (any type; others are ignored).
    public mutating func take(_ event: Event) {
        guard Self.types.contains(event.type), let id = Self.conflictID(event) else { return }
        switch event.type {
        case .resolutionNeeded:
            if closed[id] == nil { open[id] = event.payload["subject"]?.stringValue ?? "" }
        case .conflictResolved:
            if resolved[id] == nil { resolved[id] = (Self.resolver(event), event.timestamp) }
        default:
            open.removeValue(forKey: id)
            closed[id] = event.payload["resolved_by"]?.stringValue ?? "?"
        }
    }

    /// Why a resolve of `id` must be refused, or nil when the conflict is open and unresolved.
    public func refusal(resolving id: String) -> String? {
        if let by = closed[id] {
            return "conflict \(id) is already closed (resolved by \(by))"
        }
        if let first = resolved[id] {
            return "conflict \(id) was already resolved by \(first.by) at \(Timestamp.format(first.at)); the coordinator closes it with that decision"
        }
        if open[id] == nil {
            let ids = open.keys.sorted()
            return "no open conflict \"\(id)\" (open: \(ids.isEmpty ? "none" : ids.joined(separator: ", ")))"
        }
        return nil
    }
}
