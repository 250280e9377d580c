internal import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// An error from libzmq or from the wrapper, with what a person needs to act on it:
/// the errno, the operation that failed and, where there is one, the endpoint.
public struct ZMQError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The errno value (POSIX or one of libzmq's own, such as ETERM and EFSM).
    public var code: Code
    /// The operation that failed (`bind`, `connect`, `send`, `setsockopt(ZMQ_LINGER)`, ...).
    public var operation: String
    /// The endpoint involved, if any.
    public var endpoint: String?
    /// A human-readable explanation (libzmq's text, or the wrapper's own).
    public var message: String

    public init(code: Code, operation: String, endpoint: String? = nil, message: String? = nil) {
        self.code = code
        self.operation = operation
        self.endpoint = endpoint
        self.message = message ?? String(cString: zmq_strerror(code.rawValue))
    }

    /// Captures `zmq_errno()` at once, for the operation that just failed.
    static func last(_ operation: String, endpoint: String? = nil) -> ZMQError {
        ZMQError(code: Code(rawValue: zmq_errno()), operation: operation, endpoint: endpoint)
    }

    public var description: String {
        var text = "\(operation) failed"
        if let endpoint { text += " for \(endpoint)" }
        return text + ": \(message) (errno \(code.rawValue)\(code.name.map { " " + $0 } ?? ""))"
    }

    /// An errno value, with names for the ones callers act on.
    public struct Code: RawRepresentable, Sendable, Hashable {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// Non-blocking mode was requested and the operation cannot proceed now (or a timeout passed).
        public static let again = Code(rawValue: EAGAIN)
        /// A signal interrupted a blocking call.
        public static let interrupted = Code(rawValue: EINTR)
        /// The context was terminated: the socket can only be closed.
        public static let terminated = Code(rawValue: ETERM_VALUE)
        /// The operation is not valid in the socket's state (REQ send twice, REP receive twice).
        public static let invalidState = Code(rawValue: EFSM_VALUE)
        /// A ROUTER with `routerMandatory` has no peer with that routing id.
        public static let hostUnreachable = Code(rawValue: EHOSTUNREACH)
        /// A bad argument: an endpoint string or option value libzmq does not accept.
        public static let invalidArgument = Code(rawValue: EINVAL)
        /// The transport protocol is not supported (`foo://...`).
        public static let protocolNotSupported = Code(rawValue: EPROTONOSUPPORT)
        /// The endpoint is already in use.
        public static let addressInUse = Code(rawValue: EADDRINUSE)
        /// The address is not a local one.
        public static let addressNotAvailable = Code(rawValue: EADDRNOTAVAIL)
        /// The socket was closed (by `close()`, the context's shutdown, or its owner).
        public static let closed = Code(rawValue: ENOTSOCK)
        /// The socket type does not support the operation (receive on PUB, send on SUB).
        public static let notSupported = Code(rawValue: ENOTSUP)
        /// The socket is driven by the reactor and cannot be used from a blocking call, or the reverse.
        public static let busy = Code(rawValue: EBUSY)

        var name: String? {
            switch self {
            case .again: "EAGAIN"
            case .interrupted: "EINTR"
            case .terminated: "ETERM"
            case .invalidState: "EFSM"
            case .hostUnreachable: "EHOSTUNREACH"
            case .invalidArgument: "EINVAL"
            case .protocolNotSupported: "EPROTONOSUPPORT"
            case .addressInUse: "EADDRINUSE"
            case .addressNotAvailable: "EADDRNOTAVAIL"
            case .closed: "ENOTSOCK"
            case .notSupported: "ENOTSUP"
            case .busy: "EBUSY"
            default: nil
            }
        }
    }
}

// libzmq defines these as ZMQ_HAUSNUMERO-based macros that Swift imports as plain values.
let ETERM_VALUE: Int32 = Int32(ETERM)
let EFSM_VALUE: Int32 = Int32(EFSM)
