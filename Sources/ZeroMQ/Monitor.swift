internal import CZeroMQ

/// A socket event reported by libzmq's monitor: peers coming and going, handshakes.
public struct MonitorEvent: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable, CaseIterable {
        case connected, connectDelayed, connectRetried, listening, bindFailed
        case accepted, acceptFailed, closed, closeFailed, disconnected, monitorStopped
        case handshakeFailedNoDetail, handshakeSucceeded, handshakeFailedProtocol, handshakeFailedAuth

        var flag: Int32 {
            switch self {
            case .connected: ZMQ_EVENT_CONNECTED
            case .connectDelayed: ZMQ_EVENT_CONNECT_DELAYED
            case .connectRetried: ZMQ_EVENT_CONNECT_RETRIED
            case .listening: ZMQ_EVENT_LISTENING
            case .bindFailed: ZMQ_EVENT_BIND_FAILED
            case .accepted: ZMQ_EVENT_ACCEPTED
            case .acceptFailed: ZMQ_EVENT_ACCEPT_FAILED
            case .closed: ZMQ_EVENT_CLOSED
            case .closeFailed: ZMQ_EVENT_CLOSE_FAILED
            case .disconnected: ZMQ_EVENT_DISCONNECTED
            case .monitorStopped: ZMQ_EVENT_MONITOR_STOPPED
            case .handshakeFailedNoDetail: ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
            case .handshakeSucceeded: ZMQ_EVENT_HANDSHAKE_SUCCEEDED
            case .handshakeFailedProtocol: ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
            case .handshakeFailedAuth: ZMQ_EVENT_HANDSHAKE_FAILED_AUTH
            }
        }
    }

    /// What happened, or nil for an event this wrapper does not name.
    public let kind: Kind?
    /// libzmq's raw event flag.
    public let rawEvent: UInt16
    /// The event's value: a file descriptor, an errno, a reconnect interval or a protocol error code.
    public let value: UInt32
    /// The endpoint the event is about.
    public let endpoint: String

    public var description: String { "\(kind.map { "\($0)" } ?? "event \(rawEvent)") \(endpoint) (\(value))" }

    /// Parses libzmq's two-frame monitor message (event:u16 value:u32, then the endpoint).
    init?(_ message: Message) {
        guard message.count == 2, message[0].count == 6 else { return nil }
        let head = message[0].bytes
        let event = UInt16(head[0]) | UInt16(head[1]) << 8
        let value = UInt32(head[2]) | UInt32(head[3]) << 8 | UInt32(head[4]) << 16 | UInt32(head[5]) << 24
        self.rawEvent = event
        self.value = value
        self.kind = Kind.allCases.first { $0.flag == Int32(event) }
        self.endpoint = message[1].string ?? ""
    }
}

extension Socket {
    /// Starts monitoring the socket: the returned sequence yields its events until the socket
    /// (or the context) closes. One monitor per socket.
    public func monitor(_ kinds: Set<MonitorEvent.Kind> = Set(MonitorEvent.Kind.allCases)) throws(ZMQError) -> MonitorEvents {
        guard let context = core.reactor.owner else {
            throw ZMQError(code: .terminated, operation: "monitor", message: "the context was shut down")
        }
        let endpoint = context.uniqueInprocEndpoint("monitor")
        // Not MONITOR_STOPPED: libzmq sends it with a blocking send when the monitor stops (at
        // the socket's close), which never returns if this reader closed first. The sequence
        // ends when the reader closes, right after the socket.
        let mask = kinds.subtracting([.monitorStopped]).reduce(Int32(0)) { $0 | $1.flag }
        try core.control("zmq_socket_monitor") { handle throws(ZMQError) in
            guard zmq_socket_monitor(handle, endpoint, mask) == 0 else {
                throw ZMQError.last("zmq_socket_monitor", endpoint: endpoint)
            }
        }
        let pair = try context.socket(.pair)
        try pair.connect(endpoint)
        core.state.withLock { $0.monitors.append(pair) }
        return MonitorEvents(socket: pair)
    }
}

/// The events of a monitored socket, as an async sequence.
public struct MonitorEvents: AsyncSequence, Sendable {
    public typealias Element = MonitorEvent
    let socket: Socket

    public func makeAsyncIterator() -> Iterator { Iterator(messages: socket.messages.makeAsyncIterator()) }

    public struct Iterator: AsyncIteratorProtocol {
        var messages: Socket.Messages.Iterator

        public mutating func next() async throws -> MonitorEvent? {
            while let message = try await messages.next() {
                guard let event = MonitorEvent(message) else { continue }
                if event.kind == .monitorStopped { return nil }
                return event
            }
            return nil
        }
    }
}
