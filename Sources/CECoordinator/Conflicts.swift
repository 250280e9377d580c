import CECore
import Foundation

/// Conflicts: every `conflict_detected` (`{"subject","parties","description"}`) opens a
/// tracked conflict, or merges into the open one on the same subject, and asks the first
/// resolver with `resolution_needed`. A conflict unresolved for `escalateAfter` goes to the
/// next resolver. `conflict_resolved` (`{"conflict_id","decision"}`) closes it and tells the
/// parties with `conflict_closed`.
public struct Conflicts: Sendable {
    public struct Conflict: Sendable, Hashable {
        public var id: String
        public var subject: String
        public var parties: [String]
        public var descriptions: [String]
        public var reportedBy: [String]
        public var openedAt: Date
        public var askedAt: Date
        /// Index into the resolver chain.
        public var level = 0
    }

    public private(set) var resolvers: [String]
    public private(set) var escalateAfter: TimeInterval
    public private(set) var open: [String: Conflict] = [:]
    public private(set) var closed: Set<String> = []

    public init(resolvers: [String], escalateAfter: TimeInterval) {
        self.resolvers = resolvers.isEmpty ? ["human"] : resolvers
        self.escalateAfter = escalateAfter
    }

    public var openSubjects: Set<String> { Set(open.values.map(\.subject)) }

    /// A new resolver chain: open conflicts keep their level (the last resolver's, when the
    /// chain got shorter) and when they were asked.
    public mutating func reconfigure(resolvers: [String], escalateAfter: TimeInterval) {
        self.resolvers = resolvers.isEmpty ? ["human"] : resolvers
        self.escalateAfter = escalateAfter
        for (id, var conflict) in open where conflict.level >= self.resolvers.count {
            conflict.level = self.resolvers.count - 1
            open[id] = conflict
        }
    }

    public mutating func handle(_ event: Event, now: Date) -> [Emission] {
        switch event.type {
        case .conflictDetected: return detected(event, now: now)
        case .conflictResolved: return resolved(event)
        case .resolutionNeeded: return asked(event, now: now)
        default: return []
        }
    }

    /// A `resolution_needed` already published (read back when the state is rebuilt): the
    /// conflict is at that level since then, so it is not escalated to it a second time.
    private mutating func asked(_ event: Event, now: Date) -> [Emission] {
        guard let id = event.payload["conflict_id"]?.stringValue ?? event.correlationID, var conflict = open[id],
              let level = event.payload["level"]?.intValue, level >= conflict.level, level < resolvers.count else { return [] }
        conflict.level = level
        conflict.askedAt = now
        open[id] = conflict
        return []
    }

    private mutating func detected(_ event: Event, now: Date) -> [Emission] {
        let subject = event.payload["subject"]?.stringValue ?? "unspecified"
        let parties = (event.payload["parties"]?.arrayValue ?? []).compactMap(\.stringValue)
        let description = event.payload["description"]?.stringValue ?? ""
        if let id = open.values.first(where: { $0.subject == subject })?.id {
            // The same disagreement reported again: merge, do not ask twice.
            var conflict = open[id]!
            for party in parties + [event.stream] where !conflict.parties.contains(party) { conflict.parties.append(party) }
            if !description.isEmpty { conflict.descriptions.append(description) }
            conflict.reportedBy.append(event.origin)
            open[id] = conflict
            return []
        }
        var all = parties
        if !all.contains(event.stream) { all.append(event.stream) }
        let conflict = Conflict(
            id: event.id, subject: subject, parties: all, descriptions: description.isEmpty ? [] : [description],
            reportedBy: [event.origin], openedAt: now, askedAt: now)
        open[conflict.id] = conflict
        return [ask(conflict)]
    }

    private func ask(_ c: Conflict) -> Emission {
        Emission(.resolutionNeeded, [
            "conflict_id": .string(c.id), "subject": .string(c.subject), "parties": .array(c.parties.map(JSONValue.string)),
            "descriptions": .array(c.descriptions.map(JSONValue.string)), "reported_by": .array(c.reportedBy.map(JSONValue.string)),
            "resolver": .string(resolvers[c.level]), "level": .number(Double(c.level)),
        ], target: resolvers[c.level], correlationID: c.id)
    }

    private mutating func resolved(_ event: Event) -> [Emission] {
        guard let id = event.payload["conflict_id"]?.stringValue ?? event.correlationID, let conflict = open.removeValue(forKey: id) else {
            return []
        }
        closed.insert(id)
        return [Emission(.conflictClosed, [
            "conflict_id": .string(id), "subject": .string(conflict.subject),
            "decision": event.payload["decision"] ?? .null, "resolved_by": .string(ConflictLedger.resolver(event)),
            "parties": .array(conflict.parties.map(JSONValue.string)),
        ], correlationID: id)]
    }

    /// Escalates conflicts that waited too long to the next resolver.
    public mutating func tick(now: Date) -> [Emission] {
        var out: [Emission] = []
        for (id, var conflict) in open.sorted(by: { $0.key < $1.key })
        where conflict.level + 1 < resolvers.count && now.timeIntervalSince(conflict.askedAt) >= escalateAfter {
            conflict.level += 1
            conflict.askedAt = now
            open[id] = conflict
            out.append(ask(conflict))
        }
        return out
    }
}
