import CECore
import CEStore
import Foundation
import Synchronization

// Control commands for agents that hold a connection to their node (`ce-node mcp`):
//
//   {"cmd":"events_after","after":ROWID,"types"?,"origin"?,"stream"?,"since"?,"limit"?,"wait_ms"?}
//       -> {"ok":true,"events":[<envelope>...],"cursor":ROWID}
//   {"cmd":"questions","wait_ms"?,"known"?:[request ids]}
//       -> {"ok":true,"questions":[{"request_id","from_node","from_pool","question","asked_at","waiting_ms"}...]}
//   {"cmd":"answer","request_id":ID,"answer":<JSON>}
//       -> {"ok":true,"request_id":ID}
//
// PROTOCOL.md ("Control endpoint") documents them.

extension Node {
    /// The longest a control command may wait (`wait_ms`).
    public static let maxControlWaitMilliseconds = 600_000

    /// Serves the agent commands; nil for a command that is not one of them.
    func agentControl(_ request: [String: JSONValue]) async -> JSONValue? {
        switch request["cmd"]?.stringValue {
        case "events_after": return await eventsAfter(request)
        case "questions": return await pendingQuestions(request)
        case "answer": return answerQuestion(request)
        default: return nil
        }
    }

    // MARK: events_after

    /// What an `events_after` request selects.
    struct EventFilter: Sendable {
        var types: [String]?
        var origin: String?
        var stream: String?
        var since: Date?

        func matches(_ event: Event) -> Bool {
            if let types, !types.contains(event.type.rawValue) { return false }
            if let origin, event.origin != origin { return false }
            if let stream, event.stream != stream { return false }
            if let since, event.timestamp < since { return false }
            return true
        }
    }

    /// The events stored after a cursor (the store's row id), optionally waiting up to
    /// `wait_ms` for the first one. The reply's `cursor` is where the next call continues:
    /// every matching event stored up to it has been returned, so none is missed between calls.
    func eventsAfter(_ request: [String: JSONValue]) async -> JSONValue {
        func failure(_ text: String) -> JSONValue { ["ok": false, "error": .string("events_after: " + text)] }
        var filter = EventFilter()
        var cursor: Int64 = 0
        switch request["after"] {
        case nil, .null?: break
        case .string("now")?:
            do { cursor = try store.lastRowID() } catch { return failure("\(error)") }
        case let value?:
            guard let n = value.intValue, n >= 0 else { return failure("\"after\" must be a cursor (an integer ≥ 0) or \"now\", not \(value)") }
            cursor = Int64(n)
        }
        if let value = request["types"], value != .null {
            guard let items = value.arrayValue, !items.isEmpty else { return failure("\"types\" must be a non-empty array of event types") }
            var types: [String] = []
            for item in items {
                guard let name = item.stringValue else { return failure("\"types\" must hold strings, not \(item)") }
                do { types.append(try EventType(validating: name).rawValue) } catch { return failure("\(error)") }
            }
            filter.types = types
        }
        for key in ["origin", "stream"] {
            guard let value = request[key], value != .null else { continue }
            guard let name = value.stringValue, Name.isValid(name) else {
                return failure("\"\(key)\" must be a name ([A-Za-z0-9_.-], 1-64 bytes), not \(value)")
            }
            if key == "origin" { filter.origin = name } else { filter.stream = name }
        }
        if let value = request["since"], value != .null {
            guard let text = value.stringValue, let date = Timestamp.parse(text) else {
                return failure("\"since\" must be an ISO 8601 date-time with a zone (2026-11-25T03:40:14Z), not \(value)")
            }
            filter.since = date
        }
        var limit = 100
        if let value = request["limit"], value != .null {
            guard let n = value.intValue, (1...1000).contains(n) else { return failure("\"limit\" must be an integer from 1 to 1000, not \(value)") }
            limit = n
        }
        var wait = 0
        if let value = request["wait_ms"], value != .null {
            guard let n = value.intValue, (0...Self.maxControlWaitMilliseconds).contains(n) else {
                return failure("\"wait_ms\" must be an integer from 0 to \(Self.maxControlWaitMilliseconds), not \(value)")
            }
            wait = n
        }
        let deadline = ContinuousClock.now + .milliseconds(wait)
        // Listen before the first read, so an event stored between the read and the wait is seen.
        let live = wait > 0 ? events(buffer: 1000) : nil
        var query = EventQuery()
        query.types = filter.types
        query.origin = filter.origin
        query.stream = filter.stream
        query.since = filter.since
        query.limit = limit
        while true {
            do {
                // Read the last row id first: a row committed after it has a larger id and is
                // either in this page or comes after the cursor returned.
                let last = try store.lastRowID()
                query.afterRowID = cursor
                let rows = try store.events(query)
                if let newest = rows.last {
                    cursor = rows.count == limit ? newest.rowID : max(newest.rowID, last)
                    let envelopes = rows.compactMap { try? JSONValue(parsing: $0.envelope) }
                    return ["ok": true, "events": .array(envelopes), "cursor": .number(Double(cursor))]
                }
                cursor = max(cursor, last)
            } catch {
                return failure("\(error)")
            }
            guard let live, ContinuousClock.now < deadline else {
                return ["ok": true, "events": [], "cursor": .number(Double(cursor))]
            }
            let wanted = filter
            let seen = await firstElement(of: live, until: deadline) { wanted.matches($0) }
            if !seen && ContinuousClock.now >= deadline {
                return ["ok": true, "events": [], "cursor": .number(Double(cursor))]
            }
            if !seen { return failure("node \(spec.name) is stopping") }
        }
    }

    // MARK: Questions

    /// The questions addressed to this pool that wait for an answer through the control
    /// endpoint; with `wait_ms`, waits until one is pending that is not in `known`. Each call
    /// also tells the node an answerer is attached (see ``AnswerDesk``).
    func pendingQuestions(_ request: [String: JSONValue]) async -> JSONValue {
        func failure(_ text: String) -> JSONValue { ["ok": false, "error": .string("questions: " + text)] }
        var wait = 0
        if let value = request["wait_ms"], value != .null {
            guard let n = value.intValue, (0...Self.maxControlWaitMilliseconds).contains(n) else {
                return failure("\"wait_ms\" must be an integer from 0 to \(Self.maxControlWaitMilliseconds), not \(value)")
            }
            wait = n
        }
        var known = Set<String>()
        if let value = request["known"], value != .null {
            guard let items = value.arrayValue else { return failure("\"known\" must be an array of request ids") }
            known = Set(items.compactMap(\.stringValue))
        }
        let desk = answerDesk
        desk.attach()
        defer { desk.detach() }
        if wait > 0 {
            let deadline = ContinuousClock.now + .milliseconds(wait)
            let changes = desk.changes()
            let known = known
            if desk.pending().allSatisfy({ known.contains($0.question.requestID) }) {
                _ = await firstElement(of: changes, until: deadline) { _ in
                    !desk.pending().allSatisfy { known.contains($0.question.requestID) }
                }
            }
        }
        let now = Date()
        let list: [JSONValue] = desk.pending().map { item in
            [
                "request_id": .string(item.question.requestID), "from_node": .string(item.question.fromNode),
                "from_pool": .string(item.question.fromPool), "question": item.question.question,
                "asked_at": .string(Timestamp.format(item.askedAt)),
                "waiting_ms": .number((now.timeIntervalSince(item.askedAt) * 1000).rounded()),
            ]
        }
        return ["ok": true, "questions": .array(list)]
    }

    /// Answers a pending question; the answer is recorded in the store before the asker
    /// gets it, and a second answer to the same question is refused.
    func answerQuestion(_ request: [String: JSONValue]) -> JSONValue {
        func failure(_ text: String) -> JSONValue { ["ok": false, "error": .string("answer: " + text)] }
        guard let id = request["request_id"]?.stringValue, !id.isEmpty, id.utf8.count <= 128 else {
            return failure("needs \"request_id\", a string of 1-128 bytes (see the questions command)")
        }
        guard let answer = request["answer"] else { return failure("needs \"answer\" (any JSON)") }
        if answerDesk.answer(id, with: answer) { return ["ok": true, "request_id": .string(id)] }
        if let stored = try? store.answer(for: id), let reply = try? JSONValue(parsing: stored) {
            let by = reply["answered_by"]?.stringValue ?? spec.name
            return failure("question \(id) was already answered (by \(by)); each question is answered once")
        }
        let open = answerDesk.pending().map(\.question.requestID)
        return failure("no question \(id) waits for an answer at \(spec.name) (waiting: \(open.isEmpty ? "none" : open.joined(separator: ", ")))")
    }

    /// Answers a question through the event folder or the control endpoint, whichever
    /// answers first; the other is withdrawn (its request file removed).
    func answerThroughAgents(_ question: Question) async throws -> JSONValue {
        let desk = answerDesk
        guard let folder = eventFolder else { return try await desk.wait(for: question) }
        guard desk.hasAnswerer else { return try await folder.ask(question) }
        return try await withThrowingTaskGroup(of: JSONValue.self) { group in
            group.addTask { try await folder.ask(question) }
            group.addTask { try await desk.wait(for: question) }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }
}

/// Questions addressed to this node's pool that wait for an answer through the control
/// endpoint (`questions`, `answer`).
///
/// A node takes questions this way only while an answerer is attached: a `questions` call
/// is open, or one ended less than ``lease`` ago (`ce-node mcp` keeps one open while it runs).
/// Without one (and without a workspace or handler) a question is refused at once, as before.
final class AnswerDesk: Sendable {
    struct Item: Sendable {
        var question: Question
        var askedAt: Date
    }
    private struct Waiting {
        var item: Item
        var continuation: CheckedContinuation<JSONValue, any Error>
    }
    private struct State {
        var waiting: [String: Waiting] = [:]
        var open = 0
        var lastSeen: ContinuousClock.Instant?
        var watchers: [UInt64: AsyncStream<Void>.Continuation] = [:]
        var nextWatcher: UInt64 = 0
    }
    private let state = Mutex(State())
    /// How long after its last `questions` call an answerer counts as attached.
    static let lease: Duration = .seconds(30)

    var hasAnswerer: Bool {
        state.withLock { s in s.open > 0 || s.lastSeen.map { ContinuousClock.now - $0 < Self.lease } ?? false }
    }

    func attach() { state.withLock { $0.open += 1 } }

    func detach() {
        state.withLock { s in
            s.open -= 1
            s.lastSeen = .now
        }
    }

    /// The pending questions, oldest first.
    func pending() -> [Item] {
        state.withLock { $0.waiting.values.map(\.item) }.sorted { $0.askedAt < $1.askedAt }
    }

    /// Signals each change of the pending questions.
    func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { s -> UInt64 in
            s.nextWatcher += 1
            s.watchers[s.nextWatcher] = continuation
            return s.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0.watchers.removeValue(forKey: id) } }
        return stream
    }

    /// Holds the question until `answer(_:with:)` or cancellation.
    func wait(for question: Question) async throws -> JSONValue {
        let id = question.requestID
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let watchers = state.withLock { s -> [AsyncStream<Void>.Continuation] in
                    s.waiting[id] = Waiting(item: Item(question: question, askedAt: Date()), continuation: continuation)
                    return Array(s.watchers.values)
                }
                // Cancelled before the question was registered: onCancel found nothing to withdraw.
                if Task.isCancelled {
                    state.withLock { $0.waiting.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
                    return
                }
                for w in watchers { w.yield() }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Gives the waiting question its answer; false when no such question waits.
    func answer(_ id: String, with answer: JSONValue) -> Bool {
        guard let waiting = state.withLock({ $0.waiting.removeValue(forKey: id) }) else { return false }
        waiting.continuation.resume(returning: answer)
        return true
    }
}

/// Waits until `stream` yields an element for which `matches` holds (true), or until
/// `deadline` or the end of the stream (false).
func firstElement<T: Sendable>(
    of stream: AsyncStream<T>, until deadline: ContinuousClock.Instant, where matches: @escaping @Sendable (T) -> Bool
) async -> Bool {
    await withTaskGroup(of: Bool?.self) { group in
        group.addTask {
            for await element in stream where matches(element) { return true }
            return false
        }
        group.addTask {
            try? await Task.sleep(until: deadline)
            return nil
        }
        defer { group.cancelAll() }
        return await group.next()! ?? false
    }
}
