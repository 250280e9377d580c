internal import CZeroMQ
import Synchronization

/// A ZAP handler (ZeroMQ RFC 27) that admits CURVE clients whose public key is on an
/// allow-list and denies everything else, including other mechanisms.
///
/// Start it with ``Context/startAuthenticator(allowing:)`` before any CURVE server binds:
/// without a ZAP handler, a CURVE server accepts any client key. Requests are answered on
/// the reactor thread as they arrive.
public final class Authenticator: Sendable {
    private let socket: Socket
    private let state: Mutex<State>
    /// Called for every refused handshake, on the reactor thread: it must return quickly and
    /// must not use sockets of this context with blocking calls.
    private let onDenial: (@Sendable (Denial) -> Void)?

    /// A refused handshake: the peer's address, and its CURVE public key when it offered one.
    public struct Denial: Sendable, Hashable, CustomStringConvertible {
        /// The peer's IP address as libzmq reports it (no port).
        public let address: String
        /// The client's public key in Z85, nil for a mechanism other than CURVE.
        public let key: String?
        /// Why: "client key not allowed", "mechanism NULL not allowed", ...
        public let reason: String
        public var description: String { "\(address) (\(key.map { "key \($0)" } ?? "no CURVE key")): \(reason)" }
    }

    struct State {
        var allowed: Set<String>
        var accepted = 0
        var denied = 0
    }

    init(socket: Socket, allowed: Set<String>, onDenial: (@Sendable (Denial) -> Void)?) {
        self.socket = socket
        self.state = Mutex(State(allowed: allowed))
        self.onDenial = onDenial
    }

    /// Adds a client public key (40 Z85 characters) to the allow-list.
    public func allow(_ publicKey: String) { state.withLock { _ = $0.allowed.insert(publicKey) } }
    /// Removes a client key; its next handshake is refused (open connections stay open).
    public func revoke(_ publicKey: String) { state.withLock { _ = $0.allowed.remove(publicKey) } }
    /// Replaces the allow-list in one step: no handshake sees half of the old and half of the new.
    public func replace(allowing publicKeys: some Sequence<String>) {
        let keys = Set(publicKeys)
        state.withLock { $0.allowed = keys }
    }
    /// Handshakes admitted and refused so far.
    public var counts: (accepted: Int, denied: Int) { state.withLock { ($0.accepted, $0.denied) } }

    /// Stops answering. Without a handler bound, libzmq lets every CURVE client in unchecked
    /// (its "Stonehouse" fallback: seen here as connections with no User-Id), so close the
    /// context's CURVE servers first.
    public func stop() {
        socket.core.reactor.hasAuthenticator.store(false, ordering: .releasing)
        socket.close()
    }

    /// Answers one ZAP request: version, request id, domain, address, identity, mechanism, credentials...
    func answer(_ request: Message) -> Message {
        let frames = request.frames
        guard frames.count >= 6, frames[0].string == "1.0" else {
            return reply(requestID: frames.count > 1 ? frames[1] : Frame([]), status: "500", text: "malformed ZAP request", user: "")
        }
        let requestID = frames[1]
        let address = frames[3].string ?? "?"
        let mechanism = frames[5].string ?? ""
        guard mechanism == "CURVE", frames.count >= 7, frames[6].count == 32, let key = Z85.encode(frames[6].bytes) else {
            state.withLock { $0.denied += 1 }
            let text = "mechanism \(mechanism) not allowed"
            onDenial?(Denial(address: address, key: nil, reason: text))
            return reply(requestID: requestID, status: "400", text: text, user: "")
        }
        let ok = state.withLock { s -> Bool in
            let ok = s.allowed.contains(key)
            if ok { s.accepted += 1 } else { s.denied += 1 }
            return ok
        }
        if !ok { onDenial?(Denial(address: address, key: key, reason: "client key not allowed")) }
        return ok
            ? reply(requestID: requestID, status: "200", text: "OK", user: key)
            : reply(requestID: requestID, status: "400", text: "client key not allowed", user: "")
    }

    private func reply(requestID: Frame, status: String, text: String, user: String) -> Message {
        Message([Frame("1.0"), requestID, Frame(status), Frame(text), Frame(user), Frame([])])
    }
}

extension Context {
    /// Binds a ZAP authenticator for this context that admits only the given CURVE client
    /// public keys (40 Z85 characters each). At most one runs per context. A CURVE client's
    /// connection then carries its public key as User-Id (see ``SocketOption/receiveUserID(_:)``).
    /// `onDenial` hears of every refused handshake (on the reactor thread: keep it short).
    public func startAuthenticator(
        allowing publicKeys: some Sequence<String>, onDenial: (@Sendable (Authenticator.Denial) -> Void)? = nil
    ) throws(ZMQError) -> Authenticator {
        let socket = try self.socket(.rep)
        let authenticator = Authenticator(socket: socket, allowed: Set(publicKeys), onDenial: onDenial)
        socket.core.inlineHandler = { [weak authenticator] request in
            authenticator?.answer(request) ?? Message([Frame("1.0"), request.count > 1 ? request[1] : Frame([]), Frame("500"), Frame("authenticator stopped"), Frame([]), Frame([])])
        }
        do {
            try socket.bind("inproc://zeromq.zap.01")
        } catch {
            socket.close()
            throw ZMQError(code: error.code, operation: "startAuthenticator", endpoint: "inproc://zeromq.zap.01",
                           message: error.code == .addressInUse ? "an authenticator already runs for this context" : error.message)
        }
        // Receive on the reactor thread from now on.
        try socket.core.enterAsyncMode("startAuthenticator")
        socket.core.state.withLock { $0.receiving = true }
        socket.core.reactor.wake()
        reactor.hasAuthenticator.store(true, ordering: .releasing)
        self.authenticator.withLock { $0 = authenticator }
        return authenticator
    }
}
