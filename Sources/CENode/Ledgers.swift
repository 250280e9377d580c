import CECore
import CECoordinator

/// What the stored events say was decided, as this node holds them: the cluster's conflicts
/// (a resolve is checked against them) and which coordinator decisions it takes and who the
/// active coordinator is. A value; the node keeps it behind one lock.
struct Ledgers: Sendable {
    var conflicts = ConflictLedger()
    var decisions: DecisionLedger

    /// Takes one stored event in store order: what it says of conflicts and of decisions.
    mutating func take(_ event: Event) -> DecisionLedger.Verdict {
        conflicts.take(event)
        return decisions.take(event)
    }

    /// The types either ledger reads.
    static let types = Array(typeSet)
    /// The same as a set: an event of another type (nearly every one) is passed over with
    /// one lookup, not a comparison with each of them.
    static let typeSet = Set(ConflictLedger.types + DecisionLedger.types)
    static let decisionTypes = Set(DecisionLedger.types)
    static let conflictTypes = Set(ConflictLedger.types)
}
