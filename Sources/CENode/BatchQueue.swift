import Synchronization

/// A queue many tasks put into and one loop takes from in batches: everything queued so
/// far, or the next items once some arrive. `finish()` ends the loop once it is drained.
final class BatchQueue<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<[Item]?, Never>?
        var finished = false
    }
    private let state = Mutex(State())

    /// Queues an item; false once the queue is finished.
    @discardableResult
    func put(_ item: Item) -> Bool {
        let (accepted, waiter) = state.withLock { s -> (Bool, CheckedContinuation<[Item]?, Never>?) in
            if s.finished { return (false, nil) }
            if let w = s.waiter {
                s.waiter = nil
                return (true, w)
            }
            s.items.append(item)
            return (true, nil)
        }
        waiter?.resume(returning: [item])
        return accepted
    }

    /// Queues several items together: a waiting taker gets them all in one batch, never
    /// the first alone. False (and none queued) once the queue is finished.
    @discardableResult
    func put(contentsOf batch: [Item]) -> Bool {
        guard !batch.isEmpty else { return true }
        let (accepted, waiter) = state.withLock { s -> (Bool, CheckedContinuation<[Item]?, Never>?) in
            if s.finished { return (false, nil) }
            if let w = s.waiter {
                s.waiter = nil
                return (true, w)
            }
            s.items.append(contentsOf: batch)
            return (true, nil)
        }
        waiter?.resume(returning: batch)
        return accepted
    }

    /// Whether the taker is waiting for items (nothing is queued).
    var takerWaits: Bool { state.withLock { $0.waiter != nil } }

    /// The next batch, or nil once finished and drained. One taker at a time.
    func take() async -> [Item]? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { s -> [Item]?? in
                if !s.items.isEmpty {
                    let taken = s.items
                    s.items.removeAll(keepingCapacity: true)
                    return .some(taken)
                }
                if s.finished { return .some(nil) }
                s.waiter = continuation
                return .none
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Accepts nothing more; the taker gets what is left, then nil.
    func finish() {
        let waiter = state.withLock { s -> CheckedContinuation<[Item]?, Never>? in
            s.finished = true
            defer { s.waiter = nil }
            return s.items.isEmpty ? s.waiter : nil
        }
        waiter?.resume(returning: nil)
    }
}
