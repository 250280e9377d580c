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

    struct State {
        var allowed: Set<String>
        var accepted = 0
        var denied = 0
    }

    init(socket: Socket, allowed: Set<String>) {
        self.socket = socket
        self.state = Mutex(State(allowed: allowed))
    }

    /// Adds a client public key (40 Z85 characters) to the allow-list.
    public func allow(_ publicKey: String) { state.withLock { _ = $0.allowed.insert(publicKey) } }
    /// Removes a client key; its next handshake is refused (open connections stay open).
    public func revoke(_ publicKey: String) { state.withLock { _ = $0.allowed.remove(publicKey) } }
    /// Handshakes admitted and refused so far.
    public var counts: (accepted: Int, denied: Int) { state.withLock { ($0.accepted, $0.denied) } }

    /// Stops answering; CURVE servers then refuse every client (libzmq denies when no handler answers).
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
        let mechanism = frames[5].string ?? ""
        guard mechanism == "CURVE", frames.count >= 7, frames[6].count == 32, let key = Z85.encode(frames[6].bytes) else {
            state.withLock { $0.denied += 1 }
            return reply(requestID: requestID, status: "400", text: "mechanism \(mechanism) not allowed", user: "")
        }
        let ok = state.withLock { s -> Bool in
            let ok = s.allowed.contains(key)
            if ok { s.accepted += 1 } else { s.denied += 1 }
            return ok
        }
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
    /// public keys (40 Z85 characters each). At most one runs per context.
    public func startAuthenticator(allowing publicKeys: some Sequence<String>) throws(ZMQError) -> Authenticator {
        let socket = try self.socket(.rep)
        let authenticator = Authenticator(socket: socket, allowed: Set(publicKeys))
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
        return authenticator
    }
}
