import CECore
import Synchronization

/// Hands what the node stores to whoever reads it in this process: every event to each
/// listener (``Node/events(buffer:)``), a signal to readers that take what is new from the
/// store themselves, and the store position up to which the event folder's inbox holds
/// everything received.
final class Fanout: Sendable {
    private struct State {
        var listeners: [UInt64: AsyncStream<Event>.Continuation] = [:]
        var signals: [UInt64: AsyncStream<Void>.Continuation] = [:]
        var next: UInt64 = 0
        /// The store's last rowid once everything received up to it was written to the
        /// event folder's inbox; saved (meta `inbox_rowid`) with the next heartbeat.
        var inboxMark: Int64?
    }
    private let state = Mutex(State())

    /// Every event handed over from now on; a listener more than `buffer` behind loses the oldest.
    func events(buffer: Int) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingOldest(buffer))
        register(continuation, in: \.listeners)
        return stream
    }

    /// A signal after events were stored (at most one waits).
    func storedSignal() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        register(continuation, in: \.signals)
        return stream
    }

    /// Keeps `continuation` in `list` until its stream ends.
    private func register<T: Sendable>(_ continuation: AsyncStream<T>.Continuation,
                                       in list: WritableKeyPath<State, [UInt64: AsyncStream<T>.Continuation]> & Sendable) {
        let id = state.withLock { s in
            s.next += 1
            s[keyPath: list][s.next] = continuation
            return s.next
        }
        continuation.onTermination = { [weak self] _ in self?.state.withLock { _ = $0[keyPath: list].removeValue(forKey: id) } }
    }

    /// Hands `events` to every listener and signals the readers once; returns how many
    /// events listeners that were too far behind lost.
    func hand(_ events: [Event]) -> Int {
        let (listeners, signals) = state.withLock { (Array($0.listeners.values), Array($0.signals.values)) }
        for signal in signals { signal.yield(()) }
        var drops = 0
        for listener in listeners {
            for event in events {
                if case .dropped = listener.yield(event) { drops += 1 }
            }
        }
        return drops
    }

    /// Signals the readers of the store only (events stored that no listener is handed).
    func signal() {
        for signal in state.withLock({ Array($0.signals.values) }) { signal.yield(()) }
    }

    /// Ends every listener's and reader's stream (the node stops).
    func finish() {
        // Outside the lock: finishing runs the stream's onTermination, which locks too.
        let (listeners, signals) = state.withLock { s in
            defer {
                s.listeners.removeAll()
                s.signals.removeAll()
            }
            return (Array(s.listeners.values), Array(s.signals.values))
        }
        for listener in listeners { listener.finish() }
        for signal in signals { signal.finish() }
    }

    func markInbox(_ rowID: Int64) { state.withLock { $0.inboxMark = rowID } }

    /// The inbox mark not saved yet, if any (taken: saved once).
    func takeInboxMark() -> Int64? { state.withLock { s in defer { s.inboxMark = nil }; return s.inboxMark } }
}
