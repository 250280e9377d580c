import CECore
import CEStore
import Foundation
import Synchronization

// Control commands for agents that hold a connection to their node (`ce-node mcp`):
// `events_after`, `questions` and `answer` (ControlRequest in CECore; PROTOCOL.md, "Control
// endpoint", documents them).

extension Node {
    // MARK: events_after

    /// The events stored after a cursor (the store's row id), optionally waiting up to
    /// `wait_ms` for the first one. The reply's `cursor` is where the next call continues:
    /// every matching event stored up to it has been returned, so none is missed between calls.
    func eventsAfter(_ q: ControlRequest.EventsAfter) async -> ControlReply {
        func failure(_ text: String) -> ControlReply { .failure("events_after: " + text) }
        var cursor: Int64 = 0
        switch q.after {
        case .row(let n): cursor = n
        case .now:
            do { cursor = try store.lastRowID() } catch { return failure("\(error)") }
        }
        let types = q.types.map { Set($0.map(\.rawValue)) }
        let (origin, stream, since) = (q.origin, q.stream, q.since)
        let matches: @Sendable (Event) -> Bool = { event in
            if let types, !types.contains(event.type.rawValue) { return false }
            if let origin, event.origin != origin { return false }
            if let stream, event.stream != stream { return false }
            if let since, event.timestamp < since { return false }
            return true
        }
        let deadline = ContinuousClock.now + .milliseconds(q.waitMilliseconds)
        // Listen before the first read, so an event stored between the read and the wait is seen.
        let live = q.waitMilliseconds > 0 ? events(buffer: 1000) : nil
        var query = EventQuery()
        query.types = q.types?.map(\.rawValue)
        query.origin = q.origin
        query.stream = q.stream
        query.since = q.since
        query.limit = q.limit
        while true {
            do {
                // Read the last row id first: a row committed after it has a larger id and is
                // either in this page or comes after the cursor returned.
                let last = try store.lastRowID()
                query.afterRowID = cursor
                let rows = try store.events(query)
                if let newest = rows.last {
                    cursor = rows.count == q.limit ? newest.rowID : max(newest.rowID, last)
                    return .eventsAfter(events: rows.compactMap { try? JSONValue(parsing: $0.envelope) }, cursor: cursor)
                }
                cursor = max(cursor, last)
            } catch {
                return failure("\(error)")
            }
            guard let live, ContinuousClock.now < deadline else { return .eventsAfter(events: [], cursor: cursor) }
            let seen = await firstElement(of: live, until: deadline, where: matches)
            if !seen && ContinuousClock.now >= deadline { return .eventsAfter(events: [], cursor: cursor) }
            if !seen { return failure("node \(spec.name) is stopping") }
        }
    }

    // MARK: Questions

    /// The questions addressed to this pool that wait for an answer through the control
    /// endpoint; with a wait, waits until one is pending that is not in `known`. Each call
    /// also tells the node an answerer is attached (see ``AnswerDesk``).
    func pendingQuestions(waitMilliseconds wait: Int, known: Set<String>) async -> ControlReply {
        let desk = questions.desk
        desk.attach()
        defer { desk.detach() }
        if wait > 0 {
            let deadline = ContinuousClock.now + .milliseconds(wait)
            let changes = desk.changes()
            if desk.pending().allSatisfy({ known.contains($0.question.requestID) }) {
                _ = await firstElement(of: changes, until: deadline) { _ in
                    !desk.pending().allSatisfy { known.contains($0.question.requestID) }
                }
            }
        }
        let now = Date()
        return .questions(desk.pending().map { item in
            ControlReply.PendingQuestion(
                requestID: item.question.requestID, fromNode: item.question.fromNode, fromPool: item.question.fromPool,
                question: item.question.question, askedAt: item.askedAt,
                waitingMilliseconds: Int((now.timeIntervalSince(item.askedAt) * 1000).rounded()))
        })
    }

    /// Answers a pending question; the answer is recorded in the store before the asker
    /// gets it, and a second answer to the same question is refused.
    func answerQuestion(_ id: String, _ answer: JSONValue) -> ControlReply {
        func failure(_ text: String) -> ControlReply { .failure("answer: " + text) }
        if questions.desk.answer(id, with: answer) { return .answered(requestID: id) }
        if let stored = try? store.answer(for: id), let reply = try? JSONValue(parsing: stored) {
            let by = reply["answered_by"]?.stringValue ?? spec.name
            return failure("question \(id) was already answered (by \(by)); each question is answered once")
        }
        if let at = questions.desk.expiredAt(id) {
            return failure("question \(id) expired at \(Timestamp.format(at)) (its asker stopped waiting): this answer was not delivered")
        }
        let open = questions.desk.pending().map(\.question.requestID)
        return failure("no question \(id) waits for an answer at \(spec.name) (waiting: \(open.isEmpty ? "none" : open.joined(separator: ", ")))")
    }

    /// Answers a question through the event folder or the control endpoint, whichever
    /// answers first; the other is withdrawn (its request file removed).
    func answerThroughAgents(_ question: Question) async throws -> JSONValue {
        let desk = questions.desk
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
        var expired: [String: Date] = [:]
        var expiredOrder: [String] = []
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

    /// Holds the question until `answer(_:with:)`, cancellation, or the asker's deadline:
    /// then the question leaves the pending list (its asker stopped waiting) and this
    /// throws ``QuestionExpired``; an answer given later is refused as late.
    func wait(for question: Question) async throws -> JSONValue {
        try await withThrowingTaskGroup(of: JSONValue.self) { group in
            group.addTask { try await self.hold(question) }
            group.addTask {
                try await Task.sleep(until: question.deadline, clock: .continuous)
                self.expire(question.requestID)
                throw QuestionExpired(requestID: question.requestID)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    /// The questions whose asker stopped waiting before an answer came, and when (the last
    /// ``expiredKept``, so a late answer is told why it is refused).
    func expiredAt(_ id: String) -> Date? { state.withLock { $0.expired[id] } }
    static let expiredKept = 1000

    private func expire(_ id: String) {
        let (waiting, watchers) = state.withLock { s -> (Waiting?, [AsyncStream<Void>.Continuation]) in
            s.expired[id] = Date()
            s.expiredOrder.append(id)
            if s.expiredOrder.count > Self.expiredKept { s.expired.removeValue(forKey: s.expiredOrder.removeFirst()) }
            return (s.waiting.removeValue(forKey: id), Array(s.watchers.values))
        }
        waiting?.continuation.resume(throwing: QuestionExpired(requestID: id))
        for w in watchers { w.yield() }
    }

    /// Holds the question until `answer(_:with:)` or cancellation.
    private func hold(_ question: Question) async throws -> JSONValue {
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
