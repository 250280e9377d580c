internal import CZeroMQ
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A ZeroMQ socket, made by ``Context/socket(_:)``.
///
/// A socket is used either asynchronously (`send`, `receive`, `messages`: the calling task or
/// the context's reactor thread does the libzmq calls, one at a time under the socket's lock)
/// or with blocking calls (`sendBlocking`, `receiveBlocking`:
/// the caller's thread does them), never both: the first send or receive decides, and the
/// other kind then fails with ``ZMQError/Code/busy``. Control calls (`bind`, `connect`,
/// `set`) work in either mode and from any thread.
///
/// Closing: ``close()``, or dropping the last reference, or the context's shutdown.
public final class Socket: Sendable {
    public let type: SocketType
    let core: SocketCore

    init(core: SocketCore) {
        self.type = core.type
        self.core = core
    }

    deinit {
        core.requestClose()
    }

    // MARK: Endpoints

    /// Binds to an endpoint: `tcp://127.0.0.1:5555`, `tcp://*:*` (ephemeral port),
    /// `ipc:///path/socket`, `inproc://name`. Returns the endpoint actually bound
    /// (the resolved port for `*`).
    @discardableResult
    public func bind(_ endpoint: String) throws(ZMQError) -> String {
        let needsAuthenticator = core.state.withLock { $0.isCurveServer }
        if needsAuthenticator && !core.reactor.hasAuthenticator.load(ordering: .acquiring) {
            throw ZMQError(
                code: .invalidArgument, operation: "bind", endpoint: endpoint,
                message: "a CURVE server must not bind before a ZAP authenticator runs (without one it accepts any client key); call Context.startAuthenticator first")
        }
        try Self.checkPort("bind", endpoint)
        return try core.control("bind") { handle throws(ZMQError) in
            guard zmq_bind(handle, endpoint) == 0 else { throw Self.endpointError("bind", endpoint) }
            return Self.lastEndpoint(handle) ?? endpoint
        }
    }

    /// Connects to an endpoint; libzmq connects in the background and reconnects after failures.
    public func connect(_ endpoint: String) throws(ZMQError) {
        try Self.checkPort("connect", endpoint)
        try core.control("connect") { handle throws(ZMQError) in
            guard zmq_connect(handle, endpoint) == 0 else { throw Self.endpointError("connect", endpoint) }
        }
    }

    /// Stops listening on an endpoint bound earlier (use the string `bind` returned).
    public func unbind(_ endpoint: String) throws(ZMQError) {
        try core.control("unbind") { handle throws(ZMQError) in
            guard zmq_unbind(handle, endpoint) == 0 else { throw Self.endpointError("unbind", endpoint) }
        }
    }

    /// Drops a connection made earlier.
    public func disconnect(_ endpoint: String) throws(ZMQError) {
        try core.control("disconnect") { handle throws(ZMQError) in
            guard zmq_disconnect(handle, endpoint) == 0 else { throw Self.endpointError("disconnect", endpoint) }
        }
    }

    /// libzmq takes any number as a TCP port (99999 silently becomes another port): refuse
    /// what is not `*` or 0-65535 before it gets there.
    static func checkPort(_ operation: String, _ endpoint: String) throws(ZMQError) {
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":") else { return }
        let port = endpoint[endpoint.index(after: colon)...]
        if port == "*" || port.isEmpty { return }
        guard let number = Int(port), (0...65535).contains(number) else {
            throw ZMQError(code: .invalidArgument, operation: operation, endpoint: endpoint,
                           message: "TCP port \"\(port)\" is not * or a number from 0 to 65535")
        }
    }

    static func endpointError(_ operation: String, _ endpoint: String) -> ZMQError {
        var error = ZMQError.last(operation, endpoint: endpoint)
        switch error.code {
        case .invalidArgument, .protocolNotSupported:
            error.message += ": expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
        case .init(rawValue: ENOENT):
            error.message += ": no such endpoint (for inproc, the peer must bind first; for unbind/disconnect, use the exact endpoint string)"
        default: break
        }
        return error
    }

    static func lastEndpoint(_ handle: UnsafeMutableRawPointer) -> String? {
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0, size > 1 else { return nil }
        return String(decoding: buffer.prefix(size - 1).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Options

    /// Sets an option. See ``SocketOption`` for the list.
    public func set(_ option: SocketOption) throws(ZMQError) {
        try core.control("setsockopt(\(option.name))") { handle throws(ZMQError) in try option.apply(to: handle) }
        if case .curveServer(let on) = option { core.state.withLock { $0.isCurveServer = on } }
        if case .requestRelaxed(let on) = option { core.state.withLock { $0.relaxed = on } }
        if case .receiveUserID(let on) = option { core.readsUserID.store(on, ordering: .releasing) }
    }

    /// Sets several options in order.
    public func set(_ options: [SocketOption]) throws(ZMQError) {
        for option in options { try set(option) }
    }

    /// The endpoint last bound or connected (ZMQ_LAST_ENDPOINT), with the resolved port.
    public func lastEndpoint() throws(ZMQError) -> String? {
        try core.control("getsockopt(ZMQ_LAST_ENDPOINT)") { Self.lastEndpoint($0) }
    }

    /// This socket's routing id (ZMQ_ROUTING_ID).
    public func routingID() throws(ZMQError) -> [UInt8] {
        try core.control("getsockopt(ZMQ_ROUTING_ID)") { handle throws(ZMQError) in
            var buffer = [UInt8](repeating: 0, count: 256)
            var size = buffer.count
            guard zmq_getsockopt(handle, ZMQ_ROUTING_ID, &buffer, &size) == 0 else {
                throw ZMQError.last("getsockopt(ZMQ_ROUTING_ID)")
            }
            return Array(buffer.prefix(size))
        }
    }

    /// An integer option's current value (for options not covered by a typed getter).
    public func integerOption(_ option: SocketOption) throws(ZMQError) -> Int {
        let id = option.optionID
        return try core.control("getsockopt(\(option.name))") { handle throws(ZMQError) in
            var value: Int32 = 0
            var size = MemoryLayout<Int32>.size
            guard zmq_getsockopt(handle, id, &value, &size) == 0 else { throw ZMQError.last("getsockopt") }
            return Int(value)
        }
    }

    /// Sends that libzmq refused after an async `send` had returned (unconfirmed socket types:
    /// PUB, XPUB, PUSH, DEALER, PAIR, XSUB), with the last such error.
    public var failedSends: (count: Int, lastError: ZMQError?) {
        core.state.withLock { ($0.failedSends, $0.lastSendError) }
    }

    // MARK: Async sending and receiving

    /// Sends a message (all its frames, atomically).
    ///
    /// For REQ, REP and ROUTER the call returns once libzmq took the message, so state and
    /// routing errors (EFSM, EHOSTUNREACH) are thrown here. For the other types the calling
    /// task sends the message itself when nothing is queued ahead of it and the reactor is
    /// not using the socket at that moment. When libzmq refuses that send (flow control: a PUB
    /// with `publisherNoDrop`, a PUSH or DEALER at its high-water mark) the message is queued
    /// to the reactor and the call returns once libzmq has taken it, as a blocking send would,
    /// but without holding a thread. Otherwise the message joins the socket's queue and the
    /// call returns at once; when that queue is full the message is queued all the same and
    /// the call waits until the queue is down to half. A message that was queued is sent even
    /// if the calling task is cancelled afterwards.
    ///
    /// Inlined into the caller: a message the task sends itself costs no async call (whose
    /// frame would be allocated and freed for every message).
    @inlinable
    nonisolated(nonsending) public func send(_ message: Message) async throws {
        switch try sendByCaller(message) {
        case .done: return
        case .queuedWhenFull(let ticket): try await waitUntilTaken(ticket)
        case .unavailable: try await sendQueued(message)
        }
    }

    /// The synchronous part of `send`: the calling task sends the message itself when it may.
    @usableFromInline
    func sendByCaller(_ message: Message) throws -> DirectSend {
        guard type.canSend else {
            throw ZMQError(code: .notSupported, operation: "send", message: "a \(type) socket cannot send")
        }
        return core.allowsDirectSend ? try sendDirectly(message) : .unavailable
    }

    /// The rest of `send`: the message joins the socket's queue for the reactor.
    @usableFromInline
    nonisolated(nonsending) func sendQueued(_ message: Message) async throws {
        enum Fast { case queued(wake: Bool), wait, closed, notAsync, refused(ZMQError) }
        let confirm = type.confirmsSends
        let type = self.type
        let fast = core.state.withLock { s -> Fast in
            if s.mode != .async { return s.mode == .closed ? .closed : .notAsync }
            if let error = s.lockstepError(type) { return .refused(error) }
            guard !confirm && s.outbox.count < core.sendLimit else { return .wait }
            s.queue(.init(message: message))
            if s.flushScheduled { return .queued(wake: false) }
            s.flushScheduled = true
            return .queued(wake: true)
        }
        switch fast {
        case .notAsync:
            try core.enterAsyncMode("send")
            try await send(message)
        case .queued(let wake):
            if wake { core.reactor.wake() }
            return
        case .closed:
            throw core.closedError("send")
        case .refused(let error):
            throw error
        case .wait where confirm:
            // Returns once libzmq took this message (or refused it).
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let error = core.state.withLock { s -> ZMQError? in
                    if s.mode == .closed { return s.closeReason ?? ZMQError(code: .closed, operation: "send") }
                    s.queue(.init(message: message, continuation: continuation))
                    s.flushScheduled = true
                    return nil
                }
                if let error { continuation.resume(throwing: error) } else { core.reactor.wake() }
            }
        case .wait:
            // The queue is full: this message joins it now, and the call returns once the
            // queue is down to half (see `SocketCore.roomWaiters`), so a sender that outruns
            // libzmq waits once per half a queue, not once per message.
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Queued { case wait, room, closed(ZMQError) }
                let queued = core.state.withLock { s -> Queued in
                    if s.mode == .closed { return .closed(s.closeReason ?? ZMQError(code: .closed, operation: "send")) }
                    s.queue(.init(message: message))
                    s.flushScheduled = true
                    if s.outbox.count <= core.sendLimit / 2 { return .room }
                    s.roomWaiters.append(continuation)
                    return .wait
                }
                switch queued {
                case .closed(let error): continuation.resume(throwing: error)
                case .room:
                    core.reactor.wake()
                    continuation.resume()
                case .wait: core.reactor.wake()
                }
            }
        }
    }

    /// Sends several messages, in order. The calling task sends them itself while libzmq
    /// takes them, under one lock for the whole batch (no thread hand-off, no suspension);
    /// when libzmq is full, the message it refused is queued and the task waits until libzmq
    /// has taken it, then goes on sending itself. While other senders' messages are queued
    /// ahead, the rest take the queue as single sends do. REQ and REP (one message per turn)
    /// send them one after another.
    nonisolated(nonsending) public func send(batch messages: [Message]) async throws {
        var next = 0
        while core.allowsDirectSend && next < messages.count {
            let (handled, full) = try sendDirectly(batch: messages[next...])
            next += handled
            guard let full else { break }
            try await waitUntilTaken(full)
        }
        while next < messages.count {
            try await send(messages[next])
            next += 1
        }
    }

    /// Returns once libzmq has taken the `ticket`-th message queued on this socket (or the
    /// socket closed: a queued message is then handed to libzmq by the close, within linger).
    @usableFromInline
    func waitUntilTaken(_ ticket: UInt64) async throws {
        let core = self.core
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let now = core.state.withLock { s -> Bool in
                if s.mode == .closed || s.taken >= ticket { return true }
                s.takenWaiters.append((ticket, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// How many of `messages` were sent (or, the last of them, queued) by the caller itself,
    /// and the ticket of the one queued because libzmq was full, if any.
    private func sendDirectly(batch messages: ArraySlice<Message>) throws -> (handled: Int, full: UInt64?) {
        let core = self.core
        var failure: ZMQError?
        var wake = false
        var full: UInt64?
        let type = self.type
        let handled = core.handleLock.withLockIfAvailable { _ -> Int in
            guard !messages.isEmpty, core.state.withLock({ $0.mode == .async && $0.outbox.isEmpty }), let handle = core.handle else { return 0 }
            // REQ and REP keep their lockstep one message at a time (the queued path checks it).
            guard type != .req && type != .rep else { return 0 }
            defer { core.noteDirectSend(handle: handle) }
            var count = 0
            for message in messages {
                let (outcome, next) = core.sendNow(message, handle: handle)
                switch outcome {
                case .sent:
                    count += 1
                    continue
                case .failed(let error):
                    failure = error
                    return count
                case .again:
                    (wake, full) = core.queueRefused(message, resumingAt: next)
                    return count + 1
                }
            }
            return count
        } ?? 0
        if wake { core.reactor.wake() }
        if let failure { throw failure }
        return (handled, full)
    }

    @usableFromInline
    enum DirectSend {
        /// Sent by the caller.
        case done
        /// libzmq was full: queued to the reactor as message number `ticket`.
        case queuedWhenFull(ticket: UInt64)
        /// The message must take the queue (others are queued ahead, or the reactor holds the socket).
        case unavailable
    }

    /// When nothing is queued and the reactor is not using the socket, the calling task sends
    /// itself (no thread hand-off).
    private func sendDirectly(_ message: Message) throws -> DirectSend {
        enum Direct { case sent, queued(wake: Bool, ticket: UInt64), failed(ZMQError), unavailable }
        let core = self.core
        let type = self.type
        let outcome = core.handleLock.withLockIfAvailable { _ -> Direct in
            let ready = core.state.withLock { s -> Result<Bool, ZMQError> in
                guard s.mode == .async && s.outbox.isEmpty else { return .success(false) }
                if let error = s.lockstepError(type) { return .failure(error) }
                return .success(true)
            }
            switch ready {
            case .failure(let error): return .failed(error)
            case .success(false): return .unavailable
            case .success(true): break
            }
            guard let handle = core.handle else { return .unavailable }
            defer { core.noteDirectSend(handle: handle) }
            let (outcome, next) = core.sendNow(message, handle: handle)
            switch outcome {
            case .sent: return .sent
            case .failed(let error): return .failed(error)
            case .again:
                let (wake, ticket) = core.queueRefused(message, resumingAt: next)
                return .queued(wake: wake, ticket: ticket)
            }
        }
        switch outcome {
        case .sent?: return .done
        case .queued(let wake, let ticket)?:
            if wake { core.reactor.wake() }
            return .queuedWhenFull(ticket: ticket)
        case .failed(let error)?: throw error
        case .unavailable?, nil: return .unavailable
        }
    }

    /// Sends one message made of the given frames.
    public func send(_ frames: Frame...) async throws {
        try await send(Message(frames))
    }

    /// Receives the next message, waiting for it. Cancellation ends the wait with `CancellationError`.
    nonisolated(nonsending) public func receive() async throws -> Message {
        try startReceiving()
        if let message = takeOne() { return message }
        if let direct = core.receiveDirectly(take: 1) { return direct[0] }
        return try await waitFor(one: true)[0]
    }

    /// Receives the next message, or throws a ``ZMQError`` with code `.again` once `timeout` passes.
    /// The reactor keeps the deadline: a wait costs no extra task or timer.
    nonisolated(nonsending) public func receive(timeout: Duration) async throws -> Message {
        try startReceiving()
        if let message = takeOne() { return message }
        if let direct = core.receiveDirectly(take: 1) { return direct[0] }
        return try await waitFor(one: true, timeout: timeout)[0]
    }

    /// Everything that has already arrived, or the next messages once some arrive.
    nonisolated(nonsending) public func receiveBatch() async throws -> [Message] {
        try startReceiving()
        let type = self.type
        let ready = core.state.withLock { $0.take(one: false, type) ?? [] }
        if !ready.isEmpty {
            if ready.count >= core.receiveLimit { core.reactor.wake() }
            return ready
        }
        if let direct = core.receiveDirectly(take: .max) { return direct }
        return try await waitFor(one: false)
    }

    /// The messages this socket receives, as an async sequence. Messages that have already
    /// arrived are handed over in batches without suspending; the sequence ends when the
    /// socket closes. Breaking out of a loop keeps unread messages for the next receive.
    public var messages: Messages { Messages(socket: self) }

    /// Returns messages a receiver took but did not consume (to the front of the queue).
    func putBack(_ messages: ArraySlice<Message>) {
        core.state.withLock { s in
            if s.mode != .closed { s.inbox.prepend(contentsOf: messages) }
        }
    }

    private func startReceiving() throws(ZMQError) {
        guard type.canReceive else {
            throw ZMQError(code: .notSupported, operation: "receive", message: "a \(type) socket cannot receive")
        }
        try core.enterAsyncMode("receive")
        let started = core.state.withLock { s -> Bool in
            if s.receiving { return false }
            s.receiving = true
            return true
        }
        if started { core.reactor.wake() }
    }

    private func takeOne() -> Message? {
        let (message, wasFull) = core.state.withLock { s -> (Message?, Bool) in
            let full = s.inbox.count >= core.receiveLimit
            let message = s.inbox.popFirst()
            if message != nil { s.tookMessages(core.type) }
            return (message, full)
        }
        if wasFull { core.reactor.wake() }
        return message
    }

    private func waitFor(one: Bool, timeout: Duration? = nil) async throws -> [Message] {
        let deadline = timeout.map { ContinuousClock.now + $0 }
        let id = core.state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            return s.nextWaiterID
        }
        let core = self.core
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[Message], any Error>) in
                enum Now { case wait(wake: Bool), give([Message], wasFull: Bool), fail(any Error) }
                let now = core.state.withLock { s -> Now in
                    if s.cancelledWaiters.remove(id) != nil { return .fail(CancellationError()) }
                    if s.mode == .closed { return .fail(s.closeReason ?? ZMQError(code: .closed, operation: "receive")) }
                    let full = s.inbox.count >= core.receiveLimit
                    if let messages = s.take(one: one, core.type) { return .give(messages, wasFull: full) }
                    s.waiters.append(.init(id: id, one: one, deadline: deadline, timeout: timeout, continuation: continuation))
                    // The reactor stopped watching for messages while no one waited: it must
                    // look again, now that someone does.
                    let wake = s.readableUnclaimed
                    s.readableUnclaimed = false
                    return .wait(wake: wake)
                }
                switch now {
                case .wait(let wake):
                    if wake { core.reactor.wake() }
                    if let deadline { core.reactor.watchDeadlines(of: core, deadline: deadline) }
                case .give(let messages, let wasFull):
                    // The reactor stops reading at a full inbox: tell it there is room again.
                    if wasFull { core.reactor.wake() }
                    continuation.resume(returning: messages)
                case .fail(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            let waiter = core.state.withLock { s -> SocketCore.Waiter? in
                if let index = s.waiters.firstIndex(where: { $0.id == id }) {
                    return s.waiters.remove(at: index)
                }
                s.cancelledWaiters.insert(id)
                return nil
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    // MARK: Blocking calls

    /// Sends a message on the caller's thread, blocking until libzmq takes it (or
    /// `sendTimeout` passes: then `.again`).
    public func sendBlocking(_ message: Message) throws(ZMQError) {
        try withBlockingHandle("send") { handle throws(ZMQError) in
            var next = 0
            while true {
                let (outcome, resume) = core.sendNow(message, from: next, handle: handle, wait: true)
                next = resume
                switch outcome {
                case .sent: return
                case .again: throw ZMQError(code: .again, operation: "send", message: "libzmq took no message within the send timeout")
                case .failed(let error): throw error
                }
            }
        }
    }

    /// Receives a message on the caller's thread, blocking until one arrives (or
    /// `receiveTimeout` passes: then `.again`).
    public func receiveBlocking() throws(ZMQError) -> Message {
        try withBlockingHandle("receive") { handle throws(ZMQError) in
            while true {
                switch core.receiveNow(handle: handle, flags: 0) {
                case .message(let m): return m
                case .again: throw ZMQError(code: .again, operation: "receive", message: "no message within the receive timeout")
                case .failed(let error) where error.code == .interrupted: continue
                case .failed(let error): throw error
                }
            }
        }
    }

    private func withBlockingHandle<T>(_ operation: String, _ body: (UnsafeMutableRawPointer) throws(ZMQError) -> T) throws(ZMQError) -> T {
        try core.handleLock.withLock { _ throws(ZMQError) -> T in
            let mode = core.state.withLock { s -> SocketCore.Mode in
                if s.mode == .idle { s.mode = .blocking }
                return s.mode
            }
            switch mode {
            case .blocking:
                guard let handle = core.handle else { throw core.closedError(operation) }
                return try body(handle)
            case .async:
                throw ZMQError(code: .busy, operation: operation, message: "the socket is used asynchronously; use a separate socket for blocking calls")
            case .closed, .idle:
                throw core.closedError(operation)
            }
        }
    }

    // MARK: Closing

    /// Closes the socket: what is queued is handed to libzmq, which keeps trying to deliver it
    /// for at most the linger time; waiting receivers and senders get a `.closed` error.
    /// Returns once the socket is closed (its endpoints are free again).
    public func close() {
        core.close(wait: true)
    }
}

extension SocketCore {
    /// Closes on the owner: the reactor for async sockets, the caller otherwise.
    func close(wait: Bool) {
        let monitors = state.withLock { s -> [Socket] in
            let m = s.monitors
            s.monitors.removeAll()
            return m
        }
        let async = handleLock.withLock { _ -> Bool in
            if state.withLock({ $0.mode }) == .async { return true }
            if let handle {
                var value = Int32(0)
                var size = MemoryLayout<Int32>.size
                zmq_getsockopt(handle, ZMQ_LINGER, &value, &size)
                if value < 0 || Int(value) > maxLinger {
                    value = Int32(maxLinger)
                    zmq_setsockopt(handle, ZMQ_LINGER, &value, MemoryLayout<Int32>.size)
                }
                zmq_close(handle)
                self.handle = nil
            }
            return false
        }
        if async {
            if wait {
                _ = try? reactor.runSync { [self] _ throws(ZMQError) in closeOnOwner(linger: nil, reason: .closed) }
            } else {
                reactor.submit { [self] _ in closeOnOwner(linger: nil, reason: .closed) }
            }
        } else {
            finishClose(reason: .closed)
        }
        // A monitor ends with the socket it watches.
        for monitor in monitors { monitor.close() }
    }

    func requestClose() { close(wait: false) }
}

extension Socket {
    /// An async sequence of the messages a socket receives.
    public struct Messages: AsyncSequence, Sendable {
        public typealias Element = Message
        let socket: Socket

        public func makeAsyncIterator() -> Iterator { Iterator(socket: socket) }

        public struct Iterator: AsyncIteratorProtocol {
            @usableFromInline let buffer: Buffer

            init(socket: Socket) { buffer = Buffer(socket: socket) }

            nonisolated(nonsending) public mutating func next() async throws -> Message? {
                try await next(isolation: #isolation)
            }

            /// What `for try await` calls: runs where the loop runs (the default version of
            /// this requirement hops to the generic executor and back for every message), as
            /// `nonisolated(nonsending)`: an `isolated` parameter instead would make the runtime
            /// check the task's executor on every call. Inlined into the loop: a message
            /// already taken costs no async call.
            @inlinable
            nonisolated(nonsending) public mutating func next(isolation actor: (any Actor)?) async throws -> Message? {
                if let message = buffer.pop() { return message }
                return try await buffer.refillAndPop()
            }
        }

        /// Messages taken from the socket but not yet consumed; handed back when dropped.
        @usableFromInline
        final class Buffer: @unchecked Sendable {
            // @unchecked Sendable: used by one iterator, which is used by one task at a time.
            let socket: Socket
            @usableFromInline var items: [Message] = []
            @usableFromInline var index = 0
            init(socket: Socket) { self.socket = socket }
            @inlinable
            func pop() -> Message? {
                guard index < items.count else { return nil }
                defer { index += 1 }
                return items[index]
            }
            /// Waits for the next messages; nil once the socket is closed.
            @usableFromInline
            nonisolated(nonsending) func refillAndPop() async throws -> Message? {
                do {
                    items = try await socket.receiveBatch()
                    index = 0
                } catch let error as ZMQError where error.code == .closed || error.code == .terminated {
                    return nil
                }
                return pop()
            }
            deinit {
                if index < items.count { socket.putBack(items[index...]) }
            }
        }
    }
}

extension SocketOption {
    var optionID: Int32 {
        switch self {
        case .sendHighWaterMark: ZMQ_SNDHWM
        case .receiveHighWaterMark: ZMQ_RCVHWM
        case .linger: ZMQ_LINGER
        case .receiveTimeout: ZMQ_RCVTIMEO
        case .sendTimeout: ZMQ_SNDTIMEO
        case .reconnectInterval: ZMQ_RECONNECT_IVL
        case .reconnectIntervalMax: ZMQ_RECONNECT_IVL_MAX
        case .heartbeatInterval: ZMQ_HEARTBEAT_IVL
        case .heartbeatTTL: ZMQ_HEARTBEAT_TTL
        case .heartbeatTimeout: ZMQ_HEARTBEAT_TIMEOUT
        case .immediate: ZMQ_IMMEDIATE
        case .tcpKeepalive: ZMQ_TCP_KEEPALIVE
        case .tcpKeepaliveIdle: ZMQ_TCP_KEEPALIVE_IDLE
        case .tcpKeepaliveInterval: ZMQ_TCP_KEEPALIVE_INTVL
        case .ipv6: ZMQ_IPV6
        case .curveServer: ZMQ_CURVE_SERVER
        case .maxMessageSize: ZMQ_MAXMSGSIZE
        case .routerMandatory: ZMQ_ROUTER_MANDATORY
        case .publisherNoDrop: ZMQ_XPUB_NODROP
        case .requestRelaxed: ZMQ_REQ_RELAXED
        case .requestCorrelate: ZMQ_REQ_CORRELATE
        case .subscribe: ZMQ_SUBSCRIBE
        case .unsubscribe: ZMQ_UNSUBSCRIBE
        case .routingID: ZMQ_ROUTING_ID
        case .curvePublicKey: ZMQ_CURVE_PUBLICKEY
        case .curveSecretKey: ZMQ_CURVE_SECRETKEY
        case .curveServerKey: ZMQ_CURVE_SERVERKEY
        case .zapDomain: ZMQ_ZAP_DOMAIN
        case .receiveUserID: -1
        }
    }
}
