internal import CZeroMQ
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A ZeroMQ context: the I/O threads, the reactor thread that owns async sockets, and every
/// socket made from it.
///
/// Shut it down with ``shutdown()`` (or let the last reference go): every socket still open
/// is closed on its owning thread with a bounded linger, then the context is terminated.
/// Shutdown never hangs on unsent messages or on peers that are gone.
public final class Context: Sendable {
    /// Settings for a context; every value has a sane default.
    public struct Settings: Sendable {
        /// libzmq I/O threads (ZMQ_IO_THREADS).
        public var ioThreads = 1
        /// Linger given to new sockets, and the most any socket may linger when it is closed
        /// or the context shuts down, in milliseconds.
        public var linger = 1000
        /// The most messages one read takes from libzmq for an async socket: the reactor for a
        /// receiver that waits, or a receiver by itself (a `receive()` leaves the rest queued).
        /// While no receiver waits, messages stay in libzmq, whose receive high-water mark
        /// pushes back on the peers.
        public var receiveBatchLimit = 1024
        /// Messages an async sender may queue per socket before `send` waits (a send that finds
        /// the queue full queues its message and waits until the queue is down to half).
        public var sendQueueLimit = 1024
        /// Sockets the context may have (ZMQ_MAX_SOCKETS).
        public var maxSockets = 1024
        public init() {}
    }

    public let settings: Settings
    let reactor: Reactor
    private let nextID = Atomic<Int>(0)
    /// The running ZAP authenticator, held by the context: were it dropped, its socket would
    /// close and libzmq's CURVE servers would admit any client key (no handler, no check).
    let authenticator = Mutex<Authenticator?>(nil)

    public init(_ settings: Settings = Settings()) throws(ZMQError) {
        Context.ignoreSIGPIPE
        guard let ctx = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        zmq_ctx_set(ctx, ZMQ_IO_THREADS, Int32(settings.ioThreads))
        zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, Int32(settings.maxSockets))
        self.settings = settings
        do {
            self.reactor = try Reactor(context: ctx, shutdownLinger: settings.linger)
        } catch {
            zmq_ctx_term(ctx)
            throw error
        }
        reactor.owner = self
    }

    deinit {
        // Never wait here (this may run on the cooperative pool): the reactor thread closes
        // the sockets and terminates the context on its own.
        reactor.requestStop()
    }

    /// libzmq does not set MSG_NOSIGNAL everywhere: a peer that vanished must not kill us.
    private static let ignoreSIGPIPE: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Makes a socket. It is owned by this context and closed by its shutdown at the latest.
    public func socket(_ type: SocketType) throws(ZMQError) -> Socket {
        guard !reactor.isFinished else {
            throw ZMQError(code: .terminated, operation: "socket", message: "the context was shut down")
        }
        guard let handle = zmq_socket(reactor.context, type.rawValue) else { throw ZMQError.last("zmq_socket(\(type))") }
        var linger = Int32(settings.linger)
        zmq_setsockopt(handle, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
        let core = SocketCore(
            type: type, handle: handle, reactor: reactor,
            receiveLimit: max(1, settings.receiveBatchLimit), sendLimit: max(1, settings.sendQueueLimit),
            maxLinger: settings.linger)
        reactor.openSockets.withLock { $0[ObjectIdentifier(core)] = core }
        return Socket(core: core)
    }

    /// The context's reactor thread as a task executor. A task that prefers it
    /// (`withTaskExecutorPreference(context.taskExecutor) { ... }`, or
    /// `Task(executorPreference:)`) runs on the thread that reads and writes the context's
    /// async sockets: when a receive waits, the message's arrival resumes the task on that
    /// thread instead of handing it to another, and its sends are made there. That saves a
    /// thread wake-up per message wait, which is most of a request-reply round trip on a small
    /// machine. The task shares the thread with every socket of the context, so give it only
    /// work between messages that is short and never blocks (no blocking calls, no
    /// ``shutdownBlocking()``, no disk); anything else belongs on the default executor. Once
    /// the context has shut down, such tasks run on the default executor.
    public var taskExecutor: any TaskExecutor { reactor }

    /// Closes every socket and terminates the context, waiting until that is done (at most
    /// about the linger time). Call from a thread you own; async code uses ``shutdown()``.
    public func shutdownBlocking() {
        reactor.requestStop()
        reactor.waitUntilFinished()
    }

    /// Closes every socket and terminates the context without blocking a cooperative thread.
    public func shutdown() async {
        reactor.requestStop()
        if reactor.isFinished { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread { [reactor] in
                reactor.waitUntilFinished()
                continuation.resume()
            }
        }
    }

    /// A unique inproc endpoint name for internal plumbing (monitors).
    func uniqueInprocEndpoint(_ prefix: String) -> String {
        let n = nextID.wrappingAdd(1, ordering: .relaxed).newValue
        return "inproc://\(prefix)-\(ObjectIdentifier(self).hashValue)-\(n)"
    }

    /// libzmq's version as (major, minor, patch).
    public static var version: (major: Int, minor: Int, patch: Int) {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return (Int(major), Int(minor), Int(patch))
    }

    /// Whether libzmq was built with a capability ("curve", "ipc", "draft", ...).
    public static func has(_ capability: String) -> Bool { zmq_has(capability) != 0 }
}
