internal import CZeroMQ
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The thread that owns a context's async sockets.
///
/// It blocks in `poll` over the notification descriptors of the sockets that have work (a
/// waiting receiver, queued sends) plus an eventfd, and runs commands queued from any
/// thread. Other threads queue a command or touch a socket's queues, then `wake()` it: the
/// eventfd is written at most once per poll, however many threads call `wake()`. For 10 s
/// after a round that watched receive deadlines it sleeps at most 100 ms at a time, so a new
/// deadline later than that needs no wake (see `watchDeadlines`).
///
/// It is also a task executor (``Context/taskExecutor``): tasks that prefer it run on this
/// thread between polls, so a receive that waits is resumed on the thread that read the
/// message, with no hand-off to another thread.
final class Reactor: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: `registered`, `pollFDs`, `scratch` and `stopping`
    // are touched only by the reactor thread; `commands` is behind a Mutex and `wakePending`
    // is atomic; `context` and `wakeFD` are immutable after init.
    let context: UnsafeMutableRawPointer
    private let wakeFD: Int32
    private let commands = Mutex<CommandQueue>(CommandQueue())
    private let wakePending = Atomic<Bool>(false)
    private let finished = Mutex<Bool>(false)
    private let finishedCondition = NSCondition()
    private var registered: [ObjectIdentifier: SocketCore] = [:]
    /// Sockets with a receiver that waits with a deadline (`receive(timeout:)`).
    private var timed: [ObjectIdentifier: SocketCore] = [:]
    /// Sockets given a deadline by another thread since the last round (see `watchDeadlines`).
    private let newlyTimed = Mutex<[SocketCore]>([])
    /// Nanoseconds after `clockOrigin` until which the thread may sleep without looking at
    /// new deadlines: 0 during a round, `UInt64.max` when it sleeps with no timeout.
    private let sleepsUntil = Atomic<UInt64>(0)
    private let clockOrigin = ContinuousClock.now
    /// After a round that watched deadlines, the thread sleeps at most `tick` for a while
    /// (`tickFor`), so that a receiver that gives the next deadline need not wake it: asks
    /// and replay pages, each with a timeout, come one after another.
    private var tickUntil: ContinuousClock.Instant?
    static let tick = 100  // milliseconds
    static let tickFor: Duration = .seconds(10)
    private var pollFDs: [pollfd] = []
    /// The socket of each descriptor in `pollFDs` after the first (the eventfd).
    private var pollCores: [SocketCore] = []
    private var stopping = false
    private var thread: Thread!
    /// Every socket of the context that is still open, async or not (any thread).
    let openSockets = Mutex<[ObjectIdentifier: SocketCore]>([:])
    /// The context, for sockets that make helper sockets (monitors); nil once it is gone.
    weak var owner: Context?
    /// Set while a ZAP authenticator is bound: CURVE servers may bind only then.
    let hasAuthenticator = Atomic<Bool>(false)
    /// Bounded linger applied to every socket still open at shutdown.
    let shutdownLinger: Int

    init(context: UnsafeMutableRawPointer, shutdownLinger: Int) throws(ZMQError) {
        self.context = context
        self.shutdownLinger = shutdownLinger
        let fd = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        guard fd >= 0 else { throw ZMQError(code: .init(rawValue: errno), operation: "eventfd") }
        self.wakeFD = fd
        let thread = Thread { [self] in self.run() }
        thread.name = "zmq-reactor"
        thread.stackSize = 1 << 20
        self.thread = thread
        thread.start()
    }

    /// The eventfd is closed by the thread once it has finished (the thread's closure keeps
    /// the reactor alive until then, so `deinit` would come too late: one descriptor per
    /// context would leak); `wakeFDOpen` keeps a late `wake()` from writing to a number that
    /// may have been given to another file meanwhile.
    private let wakeFDOpen = Mutex<Bool>(true)

    var isReactorThread: Bool { Thread.current === thread }

    struct CommandQueue {
        var pending: [@Sendable (Reactor) -> Void] = []
        /// Jobs of tasks that prefer this thread as their executor.
        var jobs: [UnownedJob] = []
        /// Set once the thread has stopped: later commands run on the caller's thread and
        /// find every socket closed.
        var stopped = false
    }

    /// Queues work for the reactor thread and wakes it.
    func submit(_ command: @escaping @Sendable (Reactor) -> Void) {
        let queued = commands.withLock { queue -> Bool in
            if queue.stopped { return false }
            queue.pending.append(command)
            return true
        }
        if queued { wake() } else { command(self) }
    }

    /// Runs a job of a task that prefers this executor on the reactor thread; once the thread
    /// has stopped, on the global executor instead (a task is never left unrun).
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let queued = commands.withLock { queue -> Bool in
            if queue.stopped { return false }
            queue.jobs.append(job)
            return true
        }
        if !queued {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        } else if !isReactorThread {
            wake()  // the thread itself looks at its queue before it polls again
        }
    }

    /// Runs `body` on the reactor thread and waits for its result (inline when already there).
    /// For short control operations only (bind, connect, options).
    func runSync<T: Sendable>(_ body: @escaping @Sendable (Reactor) throws(ZMQError) -> T) throws(ZMQError) -> T {
        if isReactorThread { return try body(self) }
        let box = ResultBox<T>()
        submit { reactor in
            do { box.complete(.success(try body(reactor))) } catch let error as ZMQError {
                box.complete(.failure(error))
            } catch { box.complete(.failure(ZMQError(code: .invalidArgument, operation: "reactor", message: "\(error)"))) }
        }
        return try box.wait().get()
    }

    /// Wakes the reactor from its `poll`; cheap when a wake is already pending.
    func wake() {
        if wakePending.exchange(true, ordering: .acquiringAndReleasing) { return }
        var one: UInt64 = 1
        wakeFDOpen.withLock { open in if open { _ = write(wakeFD, &one, 8) } }
    }

    func register(_ core: SocketCore) {
        if core.handle != nil { registered[ObjectIdentifier(core)] = core }
    }

    func unregister(_ core: SocketCore) {
        registered[ObjectIdentifier(core)] = nil
    }

    /// Keeps an eye on the deadlines of `core`'s waiters until none is left (from any thread:
    /// off the reactor thread it is queued for the next round). The thread is woken only when
    /// `deadline` comes before it would look again by itself. (Queued after the thread
    /// stopped, it is never looked at: every socket is closed and its waiters failed.)
    func watchDeadlines(of core: SocketCore, deadline: ContinuousClock.Instant) {
        if isReactorThread {
            timed[ObjectIdentifier(core)] = core
            return
        }
        newlyTimed.withLock { $0.append(core) }
        // Against the thread's store of `sleepsUntil` and its look at `newlyTimed` after it
        // (see `run`): either it sees this socket, or this sees its new sleep.
        if nanoseconds(deadline) < sleepsUntil.load(ordering: .sequentiallyConsistent) { wake() }
    }

    private func nanoseconds(_ instant: ContinuousClock.Instant) -> UInt64 {
        let (seconds, attoseconds) = (instant - clockOrigin).components
        return UInt64(clamping: max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
    }

    /// Gives up on waiters whose deadline passed; the poll timeout in milliseconds until the
    /// nearest deadline still ahead (-1: none).
    private func expireDeadlines() -> Int32 {
        for core in newlyTimed.withLock({ queued in defer { queued.removeAll() }; return queued }) {
            timed[ObjectIdentifier(core)] = core
        }
        guard !timed.isEmpty else { return -1 }
        let now = ContinuousClock.now
        tickUntil = now + Self.tickFor
        var nearest: ContinuousClock.Instant?
        for (id, core) in timed {
            if let next = core.expireWaiters(now: now) { nearest = min(nearest ?? next, next) } else { timed[id] = nil }
        }
        guard let nearest else { return -1 }
        let (seconds, attoseconds) = (nearest - now).components
        let millis = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000  // rounded up
        return Int32(clamping: max(0, millis))
    }

    /// Asks the thread to close everything and terminate the context; returns at once.
    func requestStop() {
        submit { reactor in reactor.stopping = true }
    }

    /// Blocks until the reactor thread has terminated the context.
    func waitUntilFinished() {
        finishedCondition.lock()
        while !finished.withLock({ $0 }) { finishedCondition.wait() }
        finishedCondition.unlock()
    }

    var isFinished: Bool { finished.withLock { $0 } }

    private func run() {
        // Named from the thread itself (Foundation names only its own view of the thread),
        // so `top -H`, `perf` and debuggers show it; the bus's own threads use CECore's
        // `ThreadName`, which this layer does not depend on.
        ce_name_this_thread("zmq-reactor")
        let executor = asUnownedTaskExecutor()
        while true {
            let (batch, jobs) = commands.withLock { queue -> ([@Sendable (Reactor) -> Void], [UnownedJob]) in
                let taken = (queue.pending, queue.jobs)
                queue.pending.removeAll(keepingCapacity: true)
                queue.jobs.removeAll(keepingCapacity: true)
                return taken
            }
            for command in batch { command(self) }
            for job in jobs { job.runSynchronously(on: executor) }
            if stopping { break }

            // Each socket's state is read under its lock (ZMQ_EVENTS), never by `zmq_poll`: a
            // task may send on a socket itself while this thread waits (see `Socket.send`).
            // What is ready is served now; the rest is waited for on the sockets' notification
            // descriptors, which signal a change. Any libzmq call may take the signal, so the
            // state is read again after a signal, after any call made on the socket since the
            // last read (`SocketCore.touched`) and when the events wanted grow; a socket that
            // was watched, stayed quiet and was not used is watched again as it is (see
            // `SocketCore.isQuiet`). A task that sends wakes this thread when its call left
            // messages waiting.
            pollFDs.removeAll(keepingCapacity: true)
            pollFDs.append(pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0))
            pollCores.removeAll(keepingCapacity: true)
            var retrySoon = false
            var served = false
            for core in registered.values {
                let (events, retry) = core.prepareForPoll()
                retrySoon = retrySoon || retry
                var watch = Int32(-1)
                if events == 0 {
                    // Not watched.
                } else if core.isQuiet(for: events) {
                    watch = core.notifyFD
                } else {
                    let (ready, fd) = core.readyEvents(events)
                    if ready & Int16(ZMQ_POLLOUT) != 0 { core.flush() }
                    if ready & Int16(ZMQ_POLLIN) != 0 { core.drain() }
                    if ready != 0 { served = true } else { watch = fd }
                }
                core.watchedFor = watch >= 0 ? events : 0
                core.signalled = false
                if watch >= 0 {
                    pollFDs.append(pollfd(fd: watch, events: Int16(POLLIN), revents: 0))
                    pollCores.append(core)
                }
            }
            // Deadlines first: a waiter given up on may resume a task on this thread.
            let untilDeadline = expireDeadlines()
            // Work queued or served meanwhile (a job resumed here queues without waking): look
            // again before sleeping.
            let more = served || wakePending.load(ordering: .acquiring) || commands.withLock { !$0.jobs.isEmpty }
            var timeout: Int32 = more ? 0 : (retrySoon ? 1 : -1)
            if untilDeadline >= 0 && (timeout < 0 || untilDeadline < timeout) { timeout = untilDeadline }
            if timeout < 0 || timeout > Self.tick, let tickUntil {
                if ContinuousClock.now < tickUntil { timeout = Int32(Self.tick) } else { self.tickUntil = nil }
            }
            // Published before the last look at new deadlines (see `watchDeadlines`); a round
            // that goes on at once is still awake (0: no clock read).
            let until = timeout < 0 ? UInt64.max : timeout == 0 ? 0 : nanoseconds(.now) + UInt64(timeout) * 1_000_000
            sleepsUntil.store(until, ordering: .sequentiallyConsistent)
            if timeout != 0 && newlyTimed.withLock({ !$0.isEmpty }) { timeout = 0 }
            // Nothing to watch and more to do at once (a job resumed here, a socket served):
            // no system call; a wake is taken below as poll would have reported it.
            let rc = timeout == 0 && pollCores.isEmpty ? 0 : poll(&pollFDs, nfds_t(pollFDs.count), timeout)
            sleepsUntil.store(0, ordering: .sequentiallyConsistent)
            for (i, core) in pollCores.enumerated() { core.signalled = rc < 0 || pollFDs[i + 1].revents != 0 }
            if rc < 0 { continue }  // EINTR: look again
            if pollFDs[0].revents & Int16(POLLIN) != 0 || (rc == 0 && wakePending.load(ordering: .acquiring)) {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
                wakePending.store(false, ordering: .releasing)
            }
        }
        shutdownAll()
    }

    /// Closes every socket on this thread with a bounded linger, then terminates the context.
    private func shutdownAll() {
        for core in registered.values {
            core.closeOnOwner(linger: shutdownLinger, reason: .terminated)
        }
        registered.removeAll()
        timed.removeAll()
        // Blocking-mode sockets are owned by their callers' threads: make their calls return
        // ETERM, then close them once their calls have let go.
        zmq_ctx_shutdown(context)
        let others = openSockets.withLock { Array($0.values) }
        for core in others { core.closeFromOtherOwner() }
        while zmq_ctx_term(context) != 0 && zmq_errno() == EINTR {}
        // Commands queued after the stop would wait forever: run them now; they find every
        // socket closed and fail with a clear error.
        let (late, lateJobs) = commands.withLock { queue in
            let taken = (queue.pending, queue.jobs)
            queue.pending.removeAll()
            queue.jobs.removeAll()
            queue.stopped = true
            return taken
        }
        for command in late { command(self) }
        // Tasks that prefer this thread go on elsewhere (they find their sockets closed).
        for job in lateJobs { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
        wakeFDOpen.withLock { open in
            close(wakeFD)
            open = false
        }
        finishedCondition.lock()
        finished.withLock { $0 = true }
        finishedCondition.broadcast()
        finishedCondition.unlock()
    }
}

/// A one-shot result handed from the reactor thread to a waiting thread.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: `result` is read and written only while `condition` is locked.
    private let condition = NSCondition()
    private var result: Result<T, ZMQError>?

    func complete(_ value: Result<T, ZMQError>) {
        condition.lock()
        result = value
        condition.broadcast()
        condition.unlock()
    }

    func wait() -> Result<T, ZMQError> {
        condition.lock()
        defer { condition.unlock() }
        while result == nil { condition.wait() }
        return result!
    }
}
