internal import CZeroMQ
import DequeModule
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The shared state of one socket: its libzmq handle, its queues and who owns it.
///
/// Ownership of the handle (libzmq sockets are not thread-safe):
/// - `idle`: not yet used for sending or receiving; control operations (bind, options) run
///   on the caller's thread while `handleLock` is held.
/// - `async`: every libzmq call is made under `handleLock`, by the reactor thread or by a task
///   that sends or receives by itself when nothing is queued ahead of it.
/// - `blocking`: the caller's thread owns it, one call at a time under `handleLock`.
/// Handing the handle from one owner to the next goes through a lock, which gives libzmq
/// the full memory barrier it asks for when a socket moves between threads.
final class SocketCore: @unchecked Sendable {
    // @unchecked Sendable: `handle` is read and written only by its current owner as described
    // above; everything else mutable is inside `state` (a Mutex) or immutable.
    let type: SocketType
    unowned let reactor: Reactor
    var handle: UnsafeMutableRawPointer?
    let handleLock = Mutex<Void>(())
    let state = Mutex<State>(State())
    /// The most messages one read takes from libzmq for async receivers (see
    /// `Context.Settings.receiveBatchLimit`).
    let receiveLimit: Int
    /// Messages an async sender may queue without waiting for the reactor.
    let sendLimit: Int
    let maxLinger: Int
    /// Whether received messages carry their connection's ZAP User-Id (``SocketOption/receiveUserID(_:)``).
    let readsUserID = Atomic<Bool>(false)
    /// Set after a libzmq call on the handle outside the reactor's reading of its state (a
    /// task's own send or receive, a control call, the reactor's flush of queued sends): the
    /// call may have taken the notification descriptor's signal, so the reactor reads
    /// ZMQ_EVENTS again instead of trusting a quiet descriptor.
    let touched = Atomic<Bool>(false)
    /// Reactor thread only: the events the notification descriptor was watched for in the
    /// last poll (0: not watched), and whether it signalled there.
    var watchedFor: Int16 = 0
    var signalled = false
    /// For the ZAP authenticator: requests are answered on the reactor thread as they arrive.
    var inlineHandler: (@Sendable (Message) -> Message)?
    /// One `zmq_msg_t` for receiving, used under `handleLock` (heap, never copied).
    private let scratch = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
    /// PUB and XPUB report POLLOUT even at the high-water mark (a no-drop publisher then says
    /// EAGAIN): the reactor waits for room in a short timed send instead of polling for it.
    var pollOutIsMeaningless: Bool { type == .pub || type == .xpub }

    enum Mode { case idle, async, blocking, closed }

    struct Outgoing {
        var message: Message
        var nextFrame = 0
        var continuation: CheckedContinuation<Void, any Error>?
    }

    /// A task waiting in `receive` (`one`: it takes a single message, the rest stay queued)
    /// or in `receiveBatch` (it takes everything queued).
    struct Waiter {
        let id: UInt64
        let one: Bool
        /// For `receive(timeout:)`: when the reactor gives up on it with `.again`.
        var deadline: ContinuousClock.Instant? = nil
        var timeout: Duration? = nil
        let continuation: CheckedContinuation<[Message], any Error>
    }

    struct State {
        var mode = Mode.idle
        var closeReason: ZMQError?
        var inbox = Inbox()
        var waiters = Deque<Waiter>()
        var cancelledWaiters = Set<UInt64>()
        var nextWaiterID: UInt64 = 0
        /// Set once someone receives asynchronously: from then on the reactor reads for the
        /// receivers that wait.
        var receiving = false
        /// The reactor found messages to read and no receiver waiting: it left them in libzmq
        /// (the next receiver reads them itself, see `receiveDirectly`) and stopped watching
        /// for more, until a receiver waits again (which clears this and wakes the reactor).
        var readableUnclaimed = false
        var outbox = Deque<Outgoing>()
        /// Senders of unconfirmed types whose messages went into a full outbox: resumed once
        /// it is down to half of `sendLimit` (or the socket closes; their messages were queued
        /// like the others before them).
        var roomWaiters: [CheckedContinuation<Void, any Error>] = []
        /// Senders whose own send found libzmq full: each waits until libzmq has taken the
        /// message it queued, the `ticket`-th message queued on this socket (see `queue`).
        var takenWaiters: [(ticket: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        /// Messages ever queued to the outbox, and ever taken out of it by the reactor (sent
        /// or refused): the outbox is in order, so message number n has left once `taken >= n`.
        var queued: UInt64 = 0
        var taken: UInt64 = 0

        /// Queues a message to send; returns its number (its ticket for `takenWaiters`).
        @discardableResult
        mutating func queue(_ item: Outgoing) -> UInt64 {
            outbox.append(item)
            queued &+= 1
            return queued
        }
        /// True while the reactor has been told about queued sends it has not yet taken.
        var flushScheduled = false
        var isCurveServer = false
        /// REQ: a request was sent and its reply not yet taken. REP: a request was taken and
        /// not yet answered. Lets `send` report EFSM at the call without a trip to the reactor.
        var lockstep = false
        /// REQ with ZMQ_REQ_RELAXED: may send again before the reply.
        var relaxed = false

        /// Records that the user took `count` messages (lockstep bookkeeping).
        mutating func tookMessages(_ type: SocketType) {
            if type == .req { lockstep = false } else if type == .rep { lockstep = true }
        }

        /// The first queued message (`one`) or all of them, with the lockstep recorded; nil
        /// when none is queued.
        mutating func take(one: Bool, _ type: SocketType) -> [Message]? {
            guard !inbox.isEmpty else { return nil }
            tookMessages(type)
            return one ? [inbox.popFirst()!] : inbox.takeAll()
        }

        /// Checks and records a send against the REQ/REP lockstep; nil when allowed.
        mutating func lockstepError(_ type: SocketType) -> ZMQError? {
            switch type {
            case .req:
                if lockstep && !relaxed {
                    return ZMQError(code: .invalidState, operation: "send", message: "a REQ socket must receive the reply before sending again (or set requestRelaxed)")
                }
                lockstep = true
            case .rep:
                if !lockstep {
                    return ZMQError(code: .invalidState, operation: "send", message: "a REP socket must receive a request before sending a reply")
                }
                lockstep = false
            default: break
            }
            return nil
        }
        var monitors: [Socket] = []
        /// Sends that libzmq refused after `send` had returned (unconfirmed socket types).
        var failedSends = 0
        var lastSendError: ZMQError?
    }

    init(type: SocketType, handle: UnsafeMutableRawPointer, reactor: Reactor, receiveLimit: Int, sendLimit: Int, maxLinger: Int) {
        self.type = type
        self.handle = handle
        self.reactor = reactor
        self.receiveLimit = receiveLimit
        self.sendLimit = sendLimit
        self.maxLinger = maxLinger
    }

    deinit {
        scratch.deallocate()
    }

    func closedError(_ operation: String) -> ZMQError {
        state.withLock { $0.closeReason } .map { ZMQError(code: $0.code, operation: operation, message: $0.message) }
            ?? ZMQError(code: .closed, operation: operation, message: "socket is closed")
    }

    // MARK: Control operations (any thread)

    /// Runs a short libzmq call on the handle's current owner.
    func control<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (UnsafeMutableRawPointer) throws(ZMQError) -> T) throws(ZMQError) -> T {
        defer { touched.store(true, ordering: .releasing) }
        let direct: Result<T, ZMQError>? = handleLock.withLock { _ in
            switch state.withLock({ $0.mode }) {
            case .async: return nil
            case .closed: return .failure(closedError(operation))
            case .idle, .blocking:
                guard let handle else { return .failure(closedError(operation)) }
                do throws(ZMQError) { return .success(try body(handle)) } catch { return .failure(error) }
            }
        }
        if let direct { return try direct.get() }
        return try reactor.runSync { [self] _ throws(ZMQError) in
            let result: Result<T, ZMQError> = handleLock.withLock { _ in
                guard let handle else { return .failure(closedError(operation)) }
                do throws(ZMQError) { return .success(try body(handle)) } catch { return .failure(error) }
            }
            return try result.get()
        }
    }

    /// Moves an idle socket to the reactor. Throws when a blocking caller owns it.
    func enterAsyncMode(_ operation: String) throws(ZMQError) {
        let mode = state.withLock { $0.mode }
        if mode == .async { return }
        try handleLock.withLock { _ throws(ZMQError) in
            let current = state.withLock { s -> Mode in
                if s.mode == .idle { s.mode = .async }
                return s.mode
            }
            switch current {
            case .async:
                reactor.submit { [self] reactor in reactor.register(self) }
            case .blocking:
                throw ZMQError(code: .busy, operation: operation, message: "the socket is used with blocking calls; use a separate socket for async calls")
            case .closed, .idle:
                throw closedError(operation)
            }
        }
    }

    // MARK: Reactor side

    /// Flushes queued sends and tells which poll events the socket needs, and whether the
    /// reactor should come back soon (a publisher at its high-water mark).
    func prepareForPoll() -> (events: Int16, retrySoon: Bool) {
        guard handle != nil else { return (0, false) }
        let hasOutgoing = state.withLock { !$0.outbox.isEmpty }
        if hasOutgoing {
            flush(waitMillis: pollOutIsMeaningless ? 1 : 0)
            touched.store(true, ordering: .relaxed)
        }
        return state.withLock { s in
            var events: Int16 = 0
            var retry = false
            if !s.outbox.isEmpty {
                if pollOutIsMeaningless { retry = true } else { events |= Int16(ZMQ_POLLOUT) }
            }
            if s.receiving && s.inbox.count < receiveLimit && !s.readableUnclaimed { events |= Int16(ZMQ_POLLIN) }
            return (events, retry)
        }
    }

    enum SendOutcome { case sent, again, failed(ZMQError) }

    /// Sends one queued message, resuming at `nextFrame`: without blocking, or waiting up to
    /// the socket's send timeout when `wait` is set.
    func sendNow(_ item: inout Outgoing, handle: UnsafeMutableRawPointer, wait: Bool = false) -> SendOutcome {
        let (outcome, next) = sendNow(item.message, from: item.nextFrame, handle: handle, wait: wait)
        item.nextFrame = next
        return outcome
    }

    /// Sends `message` from frame `first` on; returns the outcome and the frame to resume at
    /// (libzmq may have taken the first frames of a multipart message before saying EAGAIN).
    /// A single-frame message, the common case, goes to `zmq_send` without copying the frame.
    func sendNow(_ message: Message, from first: Int = 0, handle: UnsafeMutableRawPointer, wait: Bool = false) -> (SendOutcome, next: Int) {
        let dontWait = wait ? 0 : ZMQ_DONTWAIT
        if first == 0, case .one(let frame) = message.storage {
            while true {
                let rc = frame.bytes.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, dontWait) }
                if rc >= 0 { return (.sent, 1) }
                let code = zmq_errno()
                if code == EAGAIN { return (.again, 0) }
                if code != EINTR { return (.failed(ZMQError(code: .init(rawValue: code), operation: "send")), 0) }
            }
        }
        let count = message.count
        var next = first
        while next < count {
            let last = next == count - 1
            let flags = dontWait | (last ? 0 : ZMQ_SNDMORE)
            let rc = message[next].bytes.withUnsafeBytes {
                zmq_send(handle, $0.baseAddress, $0.count, flags)
            }
            if rc < 0 {
                let code = zmq_errno()
                if code == EAGAIN { return (.again, next) }
                if code == EINTR { continue }
                return (.failed(ZMQError(code: .init(rawValue: code), operation: "send")), next)
            }
            next += 1
        }
        return (.sent, next)
    }

    /// A task's own send that libzmq refused (perhaps after taking the first frames): the
    /// message is queued for the reactor while the caller still holds `handleLock`, so no
    /// other send can come between. Returns whether the reactor must be woken, and the
    /// message's ticket (see `State.takenWaiters`).
    func queueRefused(_ message: Message, resumingAt next: Int) -> (wake: Bool, ticket: UInt64) {
        var item = Outgoing(message: message)
        item.nextFrame = next
        return state.withLock { s in
            let ticket = s.queue(item)
            defer { s.flushScheduled = true }
            return (!s.flushScheduled, ticket)
        }
    }

    /// Sends what is queued until libzmq says EAGAIN; with `waitMillis`, first waits that
    /// long for room (a timed send) before giving up. Reactor thread only.
    func flush(waitMillis: Int = 0) {
        // Under `handleLock`: a sender on another thread may send directly on a send-only
        // socket whose queue is empty (see `Socket.send`); taking the queue and sending it
        // under the same lock keeps every sender's messages in order.
        let completions = handleLock.withLock { _ in flushLocked(waitMillis: waitMillis) }
        for (continuation, error) in completions {
            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
        }
    }

    private func flushLocked(waitMillis: Int) -> [(CheckedContinuation<Void, any Error>, ZMQError?)] {
        guard let handle else { return [] }
        var waited = false
        var completions: [(CheckedContinuation<Void, any Error>, ZMQError?)] = []
        var failures: [ZMQError] = []
        var left: UInt64 = 0
        // Keep taking what senders queue while we send, a bounded number of rounds: while the
        // reactor is at it, `flushScheduled` stays set and senders need not wake it.
        rounds: for _ in 0..<64 {
            var pending = state.withLock { s -> Deque<Outgoing> in
                if s.outbox.isEmpty {
                    s.flushScheduled = false
                    return []
                }
                var taken = Deque<Outgoing>()
                swap(&taken, &s.outbox)
                return taken
            }
            if pending.isEmpty { break rounds }
            sending: while !pending.isEmpty {
                switch sendNow(&pending[pending.startIndex], handle: handle) {
                case .sent:
                    let item = pending.removeFirst()
                    left += 1
                    if let c = item.continuation { completions.append((c, nil)) }
                case .failed(let error):
                    let item = pending.removeFirst()
                    left += 1
                    if let c = item.continuation { completions.append((c, error)) } else { failures.append(error) }
                case .again:
                    guard waitMillis > 0 && !waited else { break sending }
                    waited = true
                    var timeout = Int32(waitMillis)
                    zmq_setsockopt(handle, ZMQ_SNDTIMEO, &timeout, MemoryLayout<Int32>.size)
                    if case .sent = sendNow(&pending[pending.startIndex], handle: handle, wait: true) { waited = false }
                }
            }
            if !pending.isEmpty {
                // libzmq is full: put the rest back in front; POLLOUT (or a timed retry) resumes.
                state.withLock { $0.outbox.prepend(contentsOf: pending) }
                break rounds
            }
        }
        state.withLock { s in
            if !failures.isEmpty {
                s.failedSends += failures.count
                s.lastSendError = failures.last
            }
            if !s.roomWaiters.isEmpty && s.outbox.count <= sendLimit / 2 {
                completions += s.roomWaiters.map { ($0, nil) }
                s.roomWaiters.removeAll()
            }
            s.taken &+= left
            if !s.takenWaiters.isEmpty {
                let taken = s.taken
                completions += s.takenWaiters.filter { $0.ticket <= taken }.map { ($0.continuation, nil) }
                s.takenWaiters.removeAll { $0.ticket <= taken }
            }
        }
        return completions
    }

    /// Whether a task may send on the socket itself when nothing is queued (see `Socket.send`):
    /// every libzmq call on an async socket, the reactor's included, is made under
    /// `handleLock`, and the reactor waits on the notification descriptor, not in `zmq_poll`.
    var allowsDirectSend: Bool {
        guard inlineHandler == nil else { return false }
        switch type {
        case .pub, .push, .dealer, .router, .req, .rep, .pair: return true
        default: return false
        }
    }

    /// The socket's notification descriptor (ZMQ_FD, read once). Reactor thread only.
    private(set) var notifyFD: Int32 = -1

    /// Whether the socket's state is as the reactor last read it, so its descriptor can be
    /// watched again for `interest` without reading ZMQ_EVENTS (a system call or two): it was
    /// watched for at least that in the last poll, did not signal there, and no call has
    /// been made on it since. Reactor thread only.
    func isQuiet(for interest: Int16) -> Bool {
        let wasTouched = touched.exchange(false, ordering: .acquiringAndReleasing)
        return !wasTouched && !signalled && watchedFor != 0 && interest & ~watchedFor == 0
    }

    /// Which of `interest` the socket is ready for now (ZMQ_EVENTS), and its notification
    /// descriptor to wait on otherwise. Reactor thread only.
    func readyEvents(_ interest: Int16) -> (ready: Int16, fd: Int32) {
        handleLock.withLock { _ in
            guard let handle else { return (0, -1) }
            if notifyFD < 0 {
                var fd: Int32 = -1
                var size = MemoryLayout<Int32>.size
                if zmq_getsockopt(handle, ZMQ_FD, &fd, &size) == 0 { notifyFD = fd }
            }
            var events: Int32 = 0
            var size = MemoryLayout<Int32>.size
            guard zmq_getsockopt(handle, ZMQ_EVENTS, &events, &size) == 0 else { return (0, notifyFD) }
            return (Int16(truncatingIfNeeded: events) & interest, notifyFD)
        }
    }

    /// After a task's own send: the call may have taken the descriptor's signal of messages
    /// that arrived meanwhile, so the reactor is woken when some wait to be read. Called
    /// under `handleLock`.
    func noteDirectSend(handle: UnsafeMutableRawPointer) {
        touched.store(true, ordering: .releasing)
        // On the reactor thread (a task that prefers it), the reactor's next look at its
        // sockets comes right after this task's turn, and reads this one's state (`touched`).
        guard type.canReceive, !reactor.isReactorThread, state.withLock({ $0.receiving }) else { return }
        var events: Int32 = 0
        var size = MemoryLayout<Int32>.size
        if zmq_getsockopt(handle, ZMQ_EVENTS, &events, &size) == 0, events & ZMQ_POLLIN != 0 { reactor.wake() }
    }

    /// Reads waiting messages without blocking and hands them to receivers. Reactor thread only.
    func drain() {
        if let inlineHandler {
            // Request-reply served on this thread (REP): receive one, answer it, repeat.
            handleLock.withLock { _ in
                guard let handle else { return }
                while case .message(let request) = receiveNow(handle: handle) {
                    var reply = Outgoing(message: inlineHandler(request))
                    _ = sendNow(&reply, handle: handle)
                }
            }
            return
        }
        // No receiver waits: the messages stay in libzmq for the next receiver to read on its
        // own thread. Read here, each would be allocated on this thread, queued, and freed on
        // another; a busy receiver never waits, so the reactor is then out of its way.
        let room = state.withLock { s -> Int in
            guard !s.waiters.isEmpty else {
                s.readableUnclaimed = true
                return 0
            }
            return receiveLimit - s.inbox.count
        }
        guard room > 0 else { return }
        // Read and queued under `handleLock`, so a task that receives by itself (see
        // `receiveDirectly`) finds these in the inbox before it reads what came after them.
        let wakeups = handleLock.withLock { _ -> [(Waiter, [Message])] in
            guard let handle else { return [] }
            let batch = receiveAvailable(handle: handle, limit: room).messages
            return batch.isEmpty ? [] : enqueue(batch)
        }
        resume(wakeups)
    }

    /// Reads up to `limit` waiting messages without blocking; `drained` tells whether libzmq
    /// said it has no more. Under `handleLock`.
    func receiveAvailable(handle: UnsafeMutableRawPointer, limit: Int) -> (messages: [Message], drained: Bool) {
        var batch: [Message] = []
        batch.reserveCapacity(min(limit, 256))
        while batch.count < limit {
            switch receiveNow(handle: handle) {
            case .message(let m): batch.append(m)
            case .again: return (batch, true)
            case .failed(let error):
                state.withLock { $0.lastSendError = error }
                return (batch, true)
            }
        }
        return (batch, false)
    }

    /// A task reads what libzmq holds itself, without the reactor, when the inbox is empty
    /// and no other receiver waits (so nothing that arrived earlier can be passed). The first
    /// `take` messages are returned, the rest go to the inbox; nil when the task must wait.
    func receiveDirectly(take: Int) -> [Message]? {
        guard inlineHandler == nil else { return nil }
        let outcome = handleLock.withLockIfAvailable { _ -> [Message]? in
            guard let handle, state.withLock({ $0.mode == .async && $0.inbox.isEmpty && $0.waiters.isEmpty }) else { return nil }
            defer { touched.store(true, ordering: .releasing) }
            let (batch, drained) = receiveAvailable(handle: handle, limit: receiveLimit)
            // Stopped at the limit: the reads may have taken the descriptor's signal of what
            // is left, so the reactor is told to look.
            if !drained { reactor.wake() }
            guard !batch.isEmpty else { return nil }
            return state.withLock { s -> [Message] in
                s.tookMessages(type)
                if batch.count <= take { return batch }
                s.inbox.append(contentsOf: batch[take...])
                return Array(batch[..<take])
            }
        }
        return outcome ?? nil
    }

    enum ReceiveOutcome { case message(Message), again, failed(ZMQError) }

    /// Receives one whole multipart message without blocking. Under `handleLock` (or by the blocking owner).
    func receiveNow(handle: UnsafeMutableRawPointer, flags: Int32 = ZMQ_DONTWAIT) -> ReceiveOutcome {
        let msg = scratch
        var frames: [Frame] = []
        var userID: String?
        while true {
            zmq_msg_init(msg)
            var rc = zmq_msg_recv(msg, handle, frames.isEmpty ? flags : 0)
            // Later parts of a multipart message are already here: retry them on EINTR.
            while rc < 0 && zmq_errno() == EINTR && !frames.isEmpty { rc = zmq_msg_recv(msg, handle, 0) }
            if rc < 0 {
                let code = zmq_errno()
                zmq_msg_close(msg)
                if code == EAGAIN { return .again }
                return .failed(ZMQError(code: .init(rawValue: code), operation: "receive"))
            }
            if userID == nil && readsUserID.load(ordering: .relaxed), let text = zmq_msg_gets(msg, "User-Id") {
                userID = String(cString: text)
            }
            let size = zmq_msg_size(msg)
            let data = zmq_msg_data(msg)
            // `Array(_:)` of a buffer pointer: about half the cost of `unsafeUninitializedCapacity`,
            // whose unspecialized allocation looks up the array's generic metadata on every call.
            let bytes = size > 0 ? Array(UnsafeRawBufferPointer(start: data, count: size)) : []
            let more = zmq_msg_more(msg) != 0
            zmq_msg_close(msg)
            if frames.isEmpty && !more {
                var message = Message(Frame(bytes))
                message.userID = userID
                return .message(message)
            }
            frames.append(Frame(bytes))
            if !more { break }
        }
        var message = Message(frames)
        message.userID = userID
        return .message(message)
    }

    /// Queues received messages (to the inbox) and takes out the waiters they satisfy, to be
    /// resumed by `resume` outside any lock.
    private func enqueue(_ batch: [Message]) -> [(Waiter, [Message])] {
        var wakeups: [(Waiter, [Message])] = []
        state.withLock { s in
            s.inbox.append(contentsOf: batch)
            while let waiter = s.waiters.first, let messages = s.take(one: waiter.one, type) {
                s.waiters.removeFirst()
                wakeups.append((waiter, messages))
            }
        }
        return wakeups
    }

    private func resume(_ wakeups: [(Waiter, [Message])]) {
        for (waiter, messages) in wakeups { waiter.continuation.resume(returning: messages) }
    }

    /// Takes out the waiters whose deadline has passed and resumes them with `.again`;
    /// returns the nearest deadline still ahead, nil when no waiter has one. Reactor thread.
    func expireWaiters(now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        var expired: [Waiter] = []
        let next = state.withLock { s -> ContinuousClock.Instant? in
            var next: ContinuousClock.Instant?
            s.waiters.removeAll { waiter in
                guard let deadline = waiter.deadline else { return false }
                if deadline <= now {
                    expired.append(waiter)
                    return true
                }
                next = min(next ?? deadline, deadline)
                return false
            }
            return next
        }
        for waiter in expired {
            let waited = waiter.timeout.map { "\($0)" } ?? "the timeout"
            waiter.continuation.resume(throwing: ZMQError(code: .again, operation: "receive", message: "no message within \(waited)"))
        }
        return next
    }

    /// Closes the handle on the reactor thread (or after the context stopped).
    func closeOnOwner(linger: Int?, reason: ZMQError.Code) {
        guard handle != nil else { return }
        // Hand what is still queued to libzmq, waiting at most the linger time for room.
        let bound = linger ?? maxLinger
        let deadline = ContinuousClock.now + .milliseconds(bound)
        while state.withLock({ !$0.outbox.isEmpty }) && ContinuousClock.now < deadline {
            flush(waitMillis: 10)
        }
        handleLock.withLock { _ in
            guard let handle else { return }
            boundLinger(handle, to: bound)
            // Monitoring stops first: libzmq's I/O thread sends a monitor's events with a
            // blocking send, so a socket closed while still monitored can block that thread
            // (and every socket of the context) on an event for a reader already gone.
            zmq_socket_monitor(handle, nil, 0)
            zmq_close(handle)
            self.handle = nil
        }
        reactor.unregister(self)
        finishClose(reason: reason)
    }

    /// Closes a socket that the reactor does not own, once its blocking caller has let go.
    func closeFromOtherOwner() {
        handleLock.withLock { _ in
            guard let handle else { return }
            boundLinger(handle, to: 0)
            zmq_socket_monitor(handle, nil, 0)
            zmq_close(handle)
            self.handle = nil
        }
        finishClose(reason: .terminated)
    }

    private func boundLinger(_ handle: UnsafeMutableRawPointer, to bound: Int) {
        var linger: Int32 = -1
        var size = MemoryLayout<Int32>.size
        zmq_getsockopt(handle, ZMQ_LINGER, &linger, &size)
        if linger < 0 || Int(linger) > bound {
            var value = Int32(bound)
            zmq_setsockopt(handle, ZMQ_LINGER, &value, MemoryLayout<Int32>.size)
        }
    }

    func finishClose(reason: ZMQError.Code) {
        let error = ZMQError(
            code: reason, operation: "socket",
            message: reason == .terminated ? "the context was shut down" : "socket is closed")
        let (waiters, outbox, roomWaiters) = state.withLock { s -> (Deque<Waiter>, Deque<Outgoing>, [CheckedContinuation<Void, any Error>]) in
            s.mode = .closed
            if s.closeReason == nil { s.closeReason = error }
            let taken = (s.waiters, s.outbox, s.roomWaiters + s.takenWaiters.map(\.continuation))
            s.waiters.removeAll()
            s.outbox.removeAll()
            s.inbox.removeAll()
            s.roomWaiters.removeAll()
            s.takenWaiters.removeAll()
            return taken
        }
        reactor.openSockets.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(self)) }
        for waiter in waiters { waiter.continuation.resume(throwing: error) }
        for item in outbox { item.continuation?.resume(throwing: error) }
        for waiter in roomWaiters { waiter.resume() }
    }
}

/// Received messages not yet taken, in order: an array read from `head`. A batch read into
/// an empty inbox is kept as it is, and a receiver that takes everything gets the array
/// itself: no message is copied on the way (a queue copied each one in and out, with a
/// retain and a release each).
struct Inbox {
    private var items: [Message] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { head == items.count }

    mutating func popFirst() -> Message? {
        guard head < items.count else { return nil }
        // Moved out (an empty message left in its place), so the inbox holds no reference to it.
        var message = Message(Frame([]))
        swap(&message, &items[head])
        head += 1
        if head == items.count { removeAll() }
        return message
    }

    /// Slots in use, taken ones included (what the array holds).
    var slots: Int { items.count }

    mutating func append(contentsOf batch: [Message]) {
        if isEmpty {
            items = batch
            head = 0
        } else {
            dropTaken()
            items.append(contentsOf: batch)
        }
    }

    mutating func append(contentsOf batch: ArraySlice<Message>) {
        if isEmpty { removeAll() } else { dropTaken() }
        items.append(contentsOf: batch)
    }

    /// Drops the slots of taken messages once they are half the array: a receiver that takes
    /// one at a time from an inbox that never empties must not make it grow without end.
    private mutating func dropTaken() {
        guard head > 0, head * 2 >= items.count else { return }
        items.removeFirst(head)
        head = 0
    }

    /// Puts messages back in front (a receiver's unconsumed ones).
    mutating func prepend(contentsOf messages: ArraySlice<Message>) {
        guard !messages.isEmpty else { return }
        items = Array(messages) + items[head...]
        head = 0
    }

    /// Everything queued, in order; the inbox is left empty.
    mutating func takeAll() -> [Message] {
        let all = head == 0 ? items : Array(items[head...])
        items = []
        head = 0
        return all
    }

    mutating func removeAll() {
        items = []
        head = 0
    }
}
