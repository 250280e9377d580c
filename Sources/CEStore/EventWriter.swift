import Foundation
import GRDB
import Synchronization

/// Group commit: many tasks append at once; one thread writes everything queued so far in
/// one transaction (one fsync), then answers every caller. The Swift cooperative pool never
/// waits on the disk.
public final class EventWriter: Sendable {
    /// The most events one transaction takes.
    public static let maxBatch = 2000

    let store: EventStore
    private let state = Mutex(State())
    private let wakeup = NSCondition()

    struct Request {
        var events: [StoredEvent]
        var cursors: [String: UInt64]
        var continuation: CheckedContinuation<[Bool], any Error>
    }

    struct State {
        var queue: [Request] = []
        var closed = false
        var stopped = false
        var eventsWritten = 0
        var transactions = 0
    }

    init(store: EventStore) {
        self.store = store
        let thread = Thread { [self] in self.run() }
        thread.name = "ce-store-writer"
        thread.start()
    }

    /// Appends events (durably, once this returns) and advances cursors in the same
    /// transaction; returns for each event whether it was new.
    public func append(_ events: [StoredEvent], advancing cursors: [String: UInt64] = [:]) async throws -> [Bool] {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = state.withLock { s -> Bool in
                if s.closed { return false }
                s.queue.append(Request(events: events, cursors: cursors, continuation: continuation))
                return true
            }
            if accepted {
                wakeup.lock()
                wakeup.signal()
                wakeup.unlock()
            } else {
                continuation.resume(throwing: StoreError(operation: "append", path: store.path, message: "the writer is closed"))
            }
        }
    }

    public func append(_ event: StoredEvent) async throws -> Bool {
        try await append([event])[0]
    }

    /// Events written and transactions committed so far.
    public var counts: (events: Int, transactions: Int) { state.withLock { ($0.eventsWritten, $0.transactions) } }

    /// Writes what is queued, then stops; later appends fail. Returns without waiting.
    public func close() {
        state.withLock { $0.closed = true }
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    private func run() {
        while true {
            wakeup.lock()
            var batch: [Request] = []
            var done = false
            while true {
                (batch, done) = state.withLock { s -> ([Request], Bool) in
                    var taken: [Request] = []
                    var count = 0
                    while let first = s.queue.first, taken.isEmpty || count + first.events.count <= Self.maxBatch {
                        taken.append(s.queue.removeFirst())
                        count += first.events.count
                    }
                    return (taken, s.closed && s.queue.isEmpty && taken.isEmpty)
                }
                if !batch.isEmpty || done { break }
                wakeup.wait()
            }
            wakeup.unlock()
            if done { break }
            write(batch)
        }
        state.withLock { $0.stopped = true }
    }

    private func write(_ batch: [Request]) {
        do {
            let results = try store.pool.write { db -> [[Bool]] in
                var cursors: [String: UInt64] = [:]
                for request in batch { cursors.merge(request.cursors) { max($0, $1) } }
                let all = try EventStore.insert(batch.flatMap(\.events), cursors: cursors, db)
                var split: [[Bool]] = []
                var offset = 0
                for request in batch {
                    split.append(Array(all[offset..<(offset + request.events.count)]))
                    offset += request.events.count
                }
                return split
            }
            state.withLock { s in
                s.transactions += 1
                s.eventsWritten += results.reduce(0) { $0 + $1.filter { $0 }.count }
            }
            for (request, fresh) in zip(batch, results) { request.continuation.resume(returning: fresh) }
        } catch {
            let failure = store.fail("append", error)
            for request in batch { request.continuation.resume(throwing: failure) }
        }
    }
}
