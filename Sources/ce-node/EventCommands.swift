import ArgumentParser
import CECore
import CENode
import CEStore
import Foundation

// `history` and `tail`: a node's stored events, as readable lines (Tables.event) or, with
// --json, one envelope a line for scripts.

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Query a node's event store (works whether or not the node runs).",
        discussion: """
            Prints one line per event: time, origin#seq, type, stream, target, correlation and \
            the payload (cut at \(Tables.payloadWidth) characters). --json prints each event's \
            envelope instead, one JSON object a line. When more events match than --limit, \
            a line on stderr says so.
            """)
    @OptionGroup var selection: NodeSelection
    @Option(name: .customLong("type"), help: "Only this event type.") var eventType: String?
    @Option(help: "Only this stream.") var stream: String?
    @Option(help: "Only this origin node.") var origin: String?
    @Option(help: "Only events after this sequence (with --origin).") var afterSeq: UInt64?
    @Option(help: "Only events at or after this ISO 8601 time.") var since: String?
    @Option(help: "Only events at or before this ISO 8601 time.") var until: String?
    @Option(help: "At most this many events.") var limit: Int = 100
    @Flag(help: "Newest first.") var newestFirst = false
    @Flag(help: "Print each event's envelope as one JSON object a line (for scripts).") var json = false

    func run() async throws {
        var q = ControlRequest.HistoryQuery()
        if let eventType {
            do { q.types = [try EventType(validating: eventType)] } catch { throw ValidationError("--type: \(error)") }
        }
        q.stream = stream
        q.origin = origin
        q.afterSeq = afterSeq
        guard (1...ControlRequest.HistoryQuery.maxHistory).contains(limit) else {
            throw ValidationError("--limit must be from 1 to \(ControlRequest.HistoryQuery.maxHistory)")
        }
        q.limit = limit
        q.newestFirst = newestFirst
        for (flag, text) in [("--since", since), ("--until", until)] {
            guard let text else { continue }
            guard let d = Timestamp.parse(text) else { throw ValidationError("\(flag) is not an ISO 8601 time: \(text)") }
            if flag == "--since" { q.since = d } else { q.until = d }
        }
        let store = StoredEvents(client: ControlClient(dataDirectory: try selection.dataDirectory(), name: selection.nodeName))
        let (events, truncated) = try await store.history(q)
        if events.isEmpty {
            // Nothing matched: a misspelt name is the likely reason, said as such.
            try await store.check(types: q.types ?? [], origin: origin, against: try selection.knownNames())
            if !json { print("No stored events match") }
        }
        var out = EventPrinter(json: json)
        _ = out.print(events)
        if truncated {
            FileHandle.standardError.write(Data("history: stopped at --limit \(q.limit); more events match (raise --limit, or narrow with --since/--type)\n".utf8))
        }
    }
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow the events a running node stores, live.",
        discussion: """
            Prints one line per event as the node stores it (--json: its envelope, one JSON \
            object a line). With --last N or --since TIME it first prints stored events, then \
            follows: every event once, none lost between the stored and the live ones. Stops \
            after --count events, on SIGINT, or with an error when the node stops.
            """)
    @OptionGroup var selection: NodeSelection
    @Option(name: .customLong("type"), help: "Only these event types (repeatable).") var eventTypes: [String] = []
    @Option(help: "Only this stream.") var stream: String?
    @Option(help: "Only events of this origin node.") var origin: String?
    @Option(help: ArgumentHelp("First print the last N stored events, then follow.", valueName: "N")) var last: Int?
    @Option(help: ArgumentHelp("First print the stored events stamped at or after this ISO 8601 time, then follow.", valueName: "time"))
    var since: String?
    @Option(help: "Stop after this many events (the stored ones printed first count).") var count: Int?
    @Flag(help: "Print each event's envelope as one JSON object a line (for scripts).") var json = false

    /// How long one `events_after` call waits for the next event before it is asked again.
    static let pollMilliseconds = 20_000

    func run() async throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1, not \(count)") }
        if let last, !(1...ControlRequest.HistoryQuery.maxHistory).contains(last) {
            throw ValidationError("--last must be from 1 to \(ControlRequest.HistoryQuery.maxHistory), not \(last)")
        }
        var follow = ControlRequest.EventsAfter()
        let types: [EventType]
        do { types = try eventTypes.map { try EventType(validating: $0) } } catch { throw ValidationError("--type: \(error)") }
        follow.types = types.isEmpty ? nil : types
        follow.stream = stream
        follow.origin = origin
        follow.limit = 1000
        if let since {
            guard let date = Timestamp.parse(since) else { throw ValidationError("--since is not an ISO 8601 time: \(since)") }
            follow.since = date
        }
        let client = ControlClient(dataDirectory: try selection.dataDirectory(), name: selection.nodeName)
        try await StoredEvents(client: client).check(types: types, origin: origin, against: try selection.knownNames())

        var out = EventPrinter(json: json, limit: count)
        // Ids printed from the backlog, dropped if the live reads bring them again.
        var printed: Set<String> = []
        if let last {
            var q = ControlRequest.HistoryQuery()
            (q.types, q.stream, q.origin, q.since) = (follow.types, follow.stream, follow.origin, follow.since)
            q.limit = last
            q.newestFirst = true
            let (backlog, cursor) = try await lastStored(q, matching: follow, client: client)
            printed = Set(backlog.compactMap { $0["id"]?.stringValue })
            if out.print(backlog) { return }
            follow.after = .row(cursor)
        } else if follow.since != nil {
            follow.after = .row(0)
        } else {
            follow.after = .now
        }
        // A long poll: each call returns as soon as an event is stored after the cursor (or
        // after the wait, empty) with the cursor to continue from, so nothing is missed.
        follow.waitMilliseconds = Self.pollMilliseconds
        while true {
            let (events, cursor) = try await client.eventsAfter(follow, timeout: .milliseconds(Self.pollMilliseconds) + .seconds(15))
            let fresh = printed.isEmpty ? events : events.filter { !printed.contains($0["id"]?.stringValue ?? "") }
            if out.print(fresh) { return }
            follow.after = .row(cursor)
        }
    }

    /// The last stored events `q` selects, oldest first, and the cursor the live events follow.
    ///
    /// The cursor (the newest row) is read before the events and again after them: when the two
    /// agree nothing was stored in between, so the events are exactly the last ones up to the
    /// cursor. Otherwise it tries again; on a node too busy for that it keeps the cursor read
    /// before its last read of the events, and the caller drops the events it printed already.
    func lastStored(
        _ q: ControlRequest.HistoryQuery, matching follow: ControlRequest.EventsAfter, client: ControlClient
    ) async throws -> (events: [JSONValue], cursor: Int64) {
        var probe = follow
        (probe.after, probe.limit, probe.waitMilliseconds) = (.now, 1, 0)
        var before = try await client.eventsAfter(probe, timeout: .seconds(10)).cursor
        for attempt in 1...5 {
            let events = try await client.history(q).events
            let after = try await client.eventsAfter(probe, timeout: .seconds(10)).cursor
            if after == before || attempt == 5 { return (events.reversed(), before) }
            before = after
        }
        preconditionFailure("unreachable: the last attempt returns")
    }
}

/// A node's stored events: through its control endpoint while it runs, else from its store
/// file (the audit trail outlives the process).
struct StoredEvents {
    let client: ControlClient

    func history(_ q: ControlRequest.HistoryQuery) async throws -> (events: [JSONValue], truncated: Bool) {
        if client.isRunning { return try await client.history(q) }
        guard FileManager.default.fileExists(atPath: client.paths.store) else {
            throw ValidationError("no event store at \(client.paths.store)")
        }
        return try EventStore(directory: client.paths.data).history(q)
    }

    /// Throws when an event type or origin asked for is neither in the topology nor in any
    /// stored event (a type introduced with --custom-type is found in the store).
    func check(types: [EventType], origin: String?, against names: KnownNames?) async throws {
        guard let names else { return }
        let here = "nor in the events stored at \(client.name)"
        for type in types {
            guard let problem = names.unknownType(type.rawValue, where: here) else { continue }
            var q = ControlRequest.HistoryQuery()
            (q.types, q.limit) = ([type], 1)
            if try await history(q).events.isEmpty { throw CommandError(problem) }
        }
        if let origin, let problem = names.unknownNode(origin, where: here) {
            var q = ControlRequest.HistoryQuery()
            (q.origin, q.limit) = (origin, 1)
            if try await history(q).events.isEmpty { throw CommandError(problem) }
        }
    }
}

/// Prints events as `history` and `tail` do, and counts them against a limit.
struct EventPrinter {
    let json: Bool
    var limit: Int? = nil
    private(set) var printed = 0

    init(json: Bool, limit: Int? = nil) {
        self.json = json
        self.limit = limit
    }

    /// Prints `events` up to the limit; true once the limit is reached.
    mutating func print(_ events: some Sequence<JSONValue>) -> Bool {
        for event in events {
            if let limit, printed >= limit { break }
            Swift.print(json ? event.serializedString : Tables.event(event))
            printed += 1
        }
        fflush(nil)
        return limit.map { printed >= $0 } ?? false
    }
}
