import CECore
import Foundation
import GRDB
import Synchronization

/// Group commit: many tasks append at once; one thread writes everything queued so far in
/// one transaction (one fsync), then answers every caller. The Swift cooperative pool never
/// waits on the disk.
public final class EventWriter: Sendable {
    /// The most events one transaction takes.
    public static let maxBatch = 2000

    /// The queue and the writer thread. The thread holds only this, not the writer, so a
    /// writer that is dropped without `close()` still closes (in `deinit`) and its thread ends.
    let core: Core

    var store: EventStore { core.store }

    /// Starts a writer (and its thread) for `store`; ``EventStore/writer()`` does the same.
    public convenience init(store: EventStore) {
        self.init(store: store, gathering: nil)
    }

    /// `gathering`: how long after a commit the writer waits for its callers to come back
    /// (see ``Core/gatherDeadline(after:callers:)``); nil for the default, a quarter of that commit's
    /// duration and at most 1 ms. Tests pass a long one to make batches predictable.
    init(store: EventStore, gathering: Duration?) {
        core = Core(store: store, gathering: gathering)
        let core = self.core
        let thread = Thread { core.run() }
        thread.name = "ce-store-writer"
        thread.start()
    }

    deinit { core.close() }

    /// Appends events (durably, once this returns) and advances cursors in the same
    /// transaction; returns for each event whether it was new.
    public func append(_ events: [StoredEvent], advancing cursors: [Line: UInt64] = [:]) async throws -> [Bool] {
        try await core.append(events, advancing: cursors, answers: [])
    }

    public func append(_ event: StoredEvent) async throws -> Bool {
        try await append([event])[0]
    }

    /// Records the reply to a request (durably, once this returns), in the next group commit;
    /// a request answered before keeps its first reply.
    public func recordAnswer(requestID: String, reply: [UInt8]) async throws {
        _ = try await core.append([], advancing: [:], answers: [(requestID, reply)])
    }

    /// Events written and transactions committed so far.
    public var counts: (events: Int, transactions: Int) { core.state.withLock { ($0.eventsWritten, $0.transactions) } }

    /// Calls `body` after every committed transaction with its event count and its duration in
    /// nanoseconds (fsync included), on the writer thread: keep it short.
    public func observeCommits(_ body: @escaping @Sendable (_ events: Int, _ nanoseconds: Int64) -> Void) {
        core.observer.withLock { $0 = Core.CommitObserver(body: body) }
    }

    /// The writer thread as a task executor: a task that prefers it (`Task(executorPreference:)`,
    /// `TaskGroup.addTask(executorPreference:)`) runs on that thread between commits, so its
    /// appends are written and answered with no thread hand-off either way. For the node's own
    /// loops that store what they take (emits, received events) and its recorded answers
    /// (written, then sent from here), never for user code: while such a task runs, nothing
    /// is written.
    public var executor: any TaskExecutor { core }

    /// Writes what is queued, then stops; later appends fail. Returns without waiting.
    public func close() { core.close() }

    /// Closes, and returns once everything queued before has been written (or has failed)
    /// and the writer thread has stopped.
    public func shutdown() async { await core.shutdown() }

    /// Events waiting to be written.
    var queuedEvents: Int { core.state.withLock { $0.queuedEvents } }

    /// Holds requests in the queue until `resume()` (tests use it to make batches predictable).
    func pause() { core.state.withLock { $0.paused = true } }

    func resume() {
        core.state.withLock { $0.paused = false }
        core.signal()
    }
}

extension EventWriter {
    final class Core: TaskExecutor {
        let store: EventStore
        let state = Mutex(State())
        let wakeup = NSCondition()
        let observer = Mutex<CommitObserver?>(nil)

        /// The closure inside a struct: a bare closure kept in a `Mutex` and read with
        /// `withLock { $0 }` is written back wrapped in two more reabstraction thunks on every
        /// read, so each commit called it through a longer chain (time and stack growing with
        /// the number of commits, until the writer thread's stack ran out).
        struct CommitObserver: Sendable {
            let body: @Sendable (_ events: Int, _ nanoseconds: Int64) -> Void
        }

        struct Request {
            var events: [StoredEvent]
            var cursors: [Line: UInt64]
            var answers: [(requestID: String, reply: [UInt8])]
            var continuation: CheckedContinuation<[Bool], any Error>
        }

        struct State {
            var queue: [Request] = []
            var queuedEvents = 0
            var closed = false
            var stopped = false
            /// Set by tests to let requests pile up; closing overrides it.
            var paused = false
            var eventsWritten = 0
            var transactions = 0
            var waitingForStop: [CheckedContinuation<Void, Never>] = []
            /// Jobs of tasks that prefer the writer thread, run before the next batch is taken.
            var jobs: [UnownedJob] = []
        }

        /// Fixed time to gather callers after a commit; nil: from the commit's duration.
        let gathering: Duration?

        init(store: EventStore, gathering: Duration?) {
            self.store = store
            self.gathering = gathering
        }

        /// Until when the next batch waits for more callers, after a commit that started at
        /// `start` and answered `callers` requests.
        ///
        /// Callers that append one event and wait for it come back together when their commit
        /// is answered, a few at a time as the threads resume them. Without waiting, the next
        /// transaction takes the first few and the rest wait a whole commit (an fsync) for the
        /// one after: 16 such callers formed batches of about 8. So while fewer requests are
        /// queued than the last commit answered, the writer waits a little for the others:
        /// at most a quarter of the last commit's duration (1 ms at most), so a caller that
        /// does not come back costs the next batch little against the fsync it shares.
        func gatherDeadline(after start: ContinuousClock.Instant, callers: Int) -> (deadline: ContinuousClock.Instant, callers: Int)? {
            guard callers > 1 else { return nil }
            let end = ContinuousClock.now
            let wait = gathering ?? min((end - start) / 4, .milliseconds(1))
            return (end + wait, callers)
        }

        /// Whether the writer thread has stopped.
        var stopped: Bool { state.withLock { $0.stopped } }

        func append(_ events: [StoredEvent], advancing cursors: [Line: UInt64], answers: [(requestID: String, reply: [UInt8])]) async throws -> [Bool] {
            try await withCheckedThrowingContinuation { continuation in
                let accepted = state.withLock { s -> Bool in
                    if s.closed { return false }
                    s.queue.append(Request(events: events, cursors: cursors, answers: answers, continuation: continuation))
                    s.queuedEvents += events.count
                    return true
                }
                if accepted {
                    signal()
                } else {
                    continuation.resume(throwing: StoreError(operation: "append", path: store.path, message: "the writer is closed"))
                }
            }
        }

        func close() {
            state.withLock { $0.closed = true }
            signal()
        }

        func shutdown() async {
            await withCheckedContinuation { continuation in
                let stopped = state.withLock { s -> Bool in
                    s.closed = true
                    if !s.stopped { s.waitingForStop.append(continuation) }
                    return s.stopped
                }
                if stopped { continuation.resume() } else { signal() }
            }
        }

        /// Runs a job of a task that prefers the writer thread on it; once the thread has
        /// stopped, on the global executor instead (a task is never left unrun).
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            let queued = state.withLock { s -> Bool in
                if s.stopped { return false }
                s.jobs.append(job)
                return true
            }
            if queued { signal() } else { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        }

        func signal() {
            wakeup.lock()
            wakeup.signal()
            wakeup.unlock()
        }

        /// The writer thread: waits on the condition (no polling) until requests are queued
        /// or the writer closes; stops once closed and nothing is left.
        func run() {
            // Named from the thread itself (see ``ThreadName``).
            ThreadName.set("ce-store-writer")
            var gather: (deadline: ContinuousClock.Instant, callers: Int)?
            let executor = asUnownedTaskExecutor()
            var jobs: [UnownedJob] = []
            /// Runs the jobs queued so far by tasks that prefer this thread (outside every lock:
            /// they append and signal).
            func runJobs() {
                state.withLock { swap(&jobs, &$0.jobs) }
                for job in jobs { job.runSynchronously(on: executor) }
                jobs.removeAll(keepingCapacity: true)
            }
            while true {
                runJobs()
                wakeup.lock()
                var batch: [Request] = []
                var done = false
                var jobsWaiting = false
                while true {
                    var waitUntil: ContinuousClock.Instant?
                    (batch, done) = state.withLock { s -> ([Request], Bool) in
                        // Tasks first: what they append joins this batch.
                        if !s.jobs.isEmpty {
                            jobsWaiting = true
                            return ([], false)
                        }
                        if s.paused && !s.closed { return ([], false) }
                        if let g = gather, !s.closed, !s.queue.isEmpty, s.queue.count < g.callers,
                           s.queuedEvents < EventWriter.maxBatch, ContinuousClock.now < g.deadline {
                            waitUntil = g.deadline
                            return ([], false)
                        }
                        // Whole requests, up to maxBatch events (a larger single request goes alone).
                        var taken = 0
                        var count = 0
                        while taken < s.queue.count, taken == 0 || count + s.queue[taken].events.count <= EventWriter.maxBatch {
                            count += s.queue[taken].events.count
                            taken += 1
                        }
                        let batch = Array(s.queue[..<taken])
                        s.queue.removeFirst(taken)
                        s.queuedEvents -= count
                        return (batch, s.closed && s.queue.isEmpty && batch.isEmpty)
                    }
                    if !batch.isEmpty || done || jobsWaiting { break }
                    if let waitUntil {
                        wakeup.wait(until: waitUntil)
                    } else {
                        wakeup.wait()
                    }
                }
                wakeup.unlock()
                if done { break }
                if batch.isEmpty { continue }  // jobs to run first
                let start = ContinuousClock.now
                let committed = write(batch)
                gather = gatherDeadline(after: start, callers: batch.count)
                // The tasks on this thread that the commit answered go on first (they publish
                // and acknowledge what it stored); then the index reads the batch, and what
                // the checkpoint thread left behind is copied (which can take milliseconds).
                runJobs()
                if committed { store.committed() }
            }
            let (waiting, late) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [UnownedJob]) in
                s.stopped = true
                defer { s.waitingForStop = []; s.jobs = [] }
                return (s.waitingForStop, s.jobs)
            }
            for continuation in waiting { continuation.resume() }
            // Tasks that prefer this thread go on elsewhere (their appends fail: closed).
            for job in late { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        }

        /// Writes a batch in one transaction and answers its callers; true when it committed.
        func write(_ batch: [Request]) -> Bool {
            let start = ContinuousClock.now
            do {
                var cursors: [Line: UInt64] = [:]
                for request in batch { cursors.merge(request.cursors) { max($0, $1) } }
                let events = batch.count == 1 ? batch[0].events : batch.flatMap(\.events)
                let answers = batch.flatMap(\.answers)
                let results = try store.write { connection -> [[Bool]] in
                    let all = try connection.transaction("append") {
                        for (requestID, reply) in answers { try store.insertAnswer(requestID: requestID, reply: reply, connection) }
                        return try EventStore.insert(events, cursors: cursors, connection)
                    }
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
                if let observer = observer.withLock({ $0 }) {
                    let elapsed = ContinuousClock.now - start
                    observer.body(batch.reduce(0) { $0 + $1.events.count }, elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
                }
                for (request, fresh) in zip(batch, results) { request.continuation.resume(returning: fresh) }
                return true
            } catch {
                let failure = error as? StoreError ?? store.fail("append", error)
                for request in batch { request.continuation.resume(throwing: failure) }
                return false
            }
        }
    }
}
