internal import CZeroMQ

/// A socket option with its typed value. Durations are in milliseconds, as libzmq takes them.
///
///     try socket.set(.linger(milliseconds: 0))
///     try socket.set(.subscribe("plan_ready/"))
public enum SocketOption: Sendable, Hashable {
    /// Messages queued for sending per peer before sends block or drop (ZMQ_SNDHWM; 0 = no limit).
    case sendHighWaterMark(Int)
    /// Messages queued for receiving per peer (ZMQ_RCVHWM; 0 = no limit).
    case receiveHighWaterMark(Int)
    /// How long pending messages may delay `close` (ZMQ_LINGER; -1 = forever, 0 = drop).
    case linger(milliseconds: Int)
    /// Adds a SUB prefix filter (ZMQ_SUBSCRIBE; an empty prefix matches everything).
    case subscribe([UInt8])
    /// Removes a SUB prefix filter (ZMQ_UNSUBSCRIBE).
    case unsubscribe([UInt8])
    /// The routing id announced to ROUTER peers (ZMQ_ROUTING_ID, 1-255 bytes).
    case routingID([UInt8])
    /// Timeout of a blocking receive (ZMQ_RCVTIMEO; -1 = forever).
    case receiveTimeout(milliseconds: Int)
    /// Timeout of a blocking send (ZMQ_SNDTIMEO; -1 = forever).
    case sendTimeout(milliseconds: Int)
    /// First reconnect delay (ZMQ_RECONNECT_IVL; -1 = never reconnect).
    case reconnectInterval(milliseconds: Int)
    /// Cap for the exponential reconnect back-off (ZMQ_RECONNECT_IVL_MAX; 0 = no back-off).
    case reconnectIntervalMax(milliseconds: Int)
    /// Interval of ZMTP PING heartbeats (ZMQ_HEARTBEAT_IVL; 0 = off).
    case heartbeatInterval(milliseconds: Int)
    /// Time-to-live announced to the peer in PINGs (ZMQ_HEARTBEAT_TTL).
    case heartbeatTTL(milliseconds: Int)
    /// How long to wait for traffic after a PING before the connection is dropped (ZMQ_HEARTBEAT_TIMEOUT).
    case heartbeatTimeout(milliseconds: Int)
    /// Inbound messages larger than this drop the connection (ZMQ_MAXMSGSIZE; -1 = no limit).
    case maxMessageSize(Int64)
    /// Queue messages only to completed connections (ZMQ_IMMEDIATE).
    case immediate(Bool)
    /// Lets a REQ send again without waiting for the reply (ZMQ_REQ_RELAXED).
    case requestRelaxed(Bool)
    /// REQ matches replies to requests with a request id frame (ZMQ_REQ_CORRELATE).
    case requestCorrelate(Bool)
    /// A ROUTER send to an unknown peer fails with EHOSTUNREACH instead of dropping (ZMQ_ROUTER_MANDATORY).
    case routerMandatory(Bool)
    /// An XPUB/PUB blocks (EAGAIN) at the high-water mark instead of dropping (ZMQ_XPUB_NODROP).
    case publisherNoDrop(Bool)
    /// TCP keepalive (ZMQ_TCP_KEEPALIVE; -1 = OS default, 0 = off, 1 = on).
    case tcpKeepalive(Int)
    /// Seconds idle before keepalive probes (ZMQ_TCP_KEEPALIVE_IDLE; -1 = OS default).
    case tcpKeepaliveIdle(seconds: Int)
    /// Seconds between keepalive probes (ZMQ_TCP_KEEPALIVE_INTVL; -1 = OS default).
    case tcpKeepaliveInterval(seconds: Int)
    /// Accept IPv6 as well as IPv4 (ZMQ_IPV6).
    case ipv6(Bool)
    /// Act as CURVE server (ZMQ_CURVE_SERVER); needs a secret key and a running ZAP authenticator.
    case curveServer(Bool)
    /// This socket's long-term public key, 40 Z85 characters (ZMQ_CURVE_PUBLICKEY).
    case curvePublicKey(String)
    /// This socket's long-term secret key, 40 Z85 characters (ZMQ_CURVE_SECRETKEY).
    case curveSecretKey(String)
    /// The server's public key a CURVE client expects, 40 Z85 characters (ZMQ_CURVE_SERVERKEY).
    case curveServerKey(String)
    /// The ZAP domain sent to the authenticator (ZMQ_ZAP_DOMAIN).
    case zapDomain(String)
    /// Not a libzmq option: received messages carry the User-Id the ZAP authenticator gave
    /// their connection (``Message/userID``, read with `zmq_msg_gets`). Off by default, so
    /// sockets that do not need it do not pay for the lookup.
    case receiveUserID(Bool)

    var name: String {
        switch self {
        case .sendHighWaterMark: "ZMQ_SNDHWM"
        case .receiveHighWaterMark: "ZMQ_RCVHWM"
        case .linger: "ZMQ_LINGER"
        case .subscribe: "ZMQ_SUBSCRIBE"
        case .unsubscribe: "ZMQ_UNSUBSCRIBE"
        case .routingID: "ZMQ_ROUTING_ID"
        case .receiveTimeout: "ZMQ_RCVTIMEO"
        case .sendTimeout: "ZMQ_SNDTIMEO"
        case .reconnectInterval: "ZMQ_RECONNECT_IVL"
        case .reconnectIntervalMax: "ZMQ_RECONNECT_IVL_MAX"
        case .heartbeatInterval: "ZMQ_HEARTBEAT_IVL"
        case .heartbeatTTL: "ZMQ_HEARTBEAT_TTL"
        case .heartbeatTimeout: "ZMQ_HEARTBEAT_TIMEOUT"
        case .maxMessageSize: "ZMQ_MAXMSGSIZE"
        case .immediate: "ZMQ_IMMEDIATE"
        case .requestRelaxed: "ZMQ_REQ_RELAXED"
        case .requestCorrelate: "ZMQ_REQ_CORRELATE"
        case .routerMandatory: "ZMQ_ROUTER_MANDATORY"
        case .publisherNoDrop: "ZMQ_XPUB_NODROP"
        case .tcpKeepalive: "ZMQ_TCP_KEEPALIVE"
        case .tcpKeepaliveIdle: "ZMQ_TCP_KEEPALIVE_IDLE"
        case .tcpKeepaliveInterval: "ZMQ_TCP_KEEPALIVE_INTVL"
        case .ipv6: "ZMQ_IPV6"
        case .curveServer: "ZMQ_CURVE_SERVER"
        case .curvePublicKey: "ZMQ_CURVE_PUBLICKEY"
        case .curveSecretKey: "ZMQ_CURVE_SECRETKEY"
        case .curveServerKey: "ZMQ_CURVE_SERVERKEY"
        case .zapDomain: "ZMQ_ZAP_DOMAIN"
        case .receiveUserID: "User-Id (read per message)"
        }
    }

    /// Applies the option to a raw socket handle. Called only by the handle's owner.
    func apply(to handle: UnsafeMutableRawPointer) throws(ZMQError) {
        let rc: Int32
        switch self {
        case .sendHighWaterMark(let v): rc = setInt(handle, ZMQ_SNDHWM, v)
        case .receiveHighWaterMark(let v): rc = setInt(handle, ZMQ_RCVHWM, v)
        case .linger(let v): rc = setInt(handle, ZMQ_LINGER, v)
        case .subscribe(let v): rc = setBytes(handle, ZMQ_SUBSCRIBE, v)
        case .unsubscribe(let v): rc = setBytes(handle, ZMQ_UNSUBSCRIBE, v)
        case .routingID(let v): rc = setBytes(handle, ZMQ_ROUTING_ID, v)
        case .receiveTimeout(let v): rc = setInt(handle, ZMQ_RCVTIMEO, v)
        case .sendTimeout(let v): rc = setInt(handle, ZMQ_SNDTIMEO, v)
        case .reconnectInterval(let v): rc = setInt(handle, ZMQ_RECONNECT_IVL, v)
        case .reconnectIntervalMax(let v): rc = setInt(handle, ZMQ_RECONNECT_IVL_MAX, v)
        case .heartbeatInterval(let v): rc = setInt(handle, ZMQ_HEARTBEAT_IVL, v)
        case .heartbeatTTL(let v): rc = setInt(handle, ZMQ_HEARTBEAT_TTL, v)
        case .heartbeatTimeout(let v): rc = setInt(handle, ZMQ_HEARTBEAT_TIMEOUT, v)
        case .maxMessageSize(let v):
            var value = v
            rc = zmq_setsockopt(handle, ZMQ_MAXMSGSIZE, &value, MemoryLayout<Int64>.size)
        case .immediate(let v): rc = setInt(handle, ZMQ_IMMEDIATE, v ? 1 : 0)
        case .requestRelaxed(let v): rc = setInt(handle, ZMQ_REQ_RELAXED, v ? 1 : 0)
        case .requestCorrelate(let v): rc = setInt(handle, ZMQ_REQ_CORRELATE, v ? 1 : 0)
        case .routerMandatory(let v): rc = setInt(handle, ZMQ_ROUTER_MANDATORY, v ? 1 : 0)
        case .publisherNoDrop(let v): rc = setInt(handle, ZMQ_XPUB_NODROP, v ? 1 : 0)
        case .tcpKeepalive(let v): rc = setInt(handle, ZMQ_TCP_KEEPALIVE, v)
        case .tcpKeepaliveIdle(let v): rc = setInt(handle, ZMQ_TCP_KEEPALIVE_IDLE, v)
        case .tcpKeepaliveInterval(let v): rc = setInt(handle, ZMQ_TCP_KEEPALIVE_INTVL, v)
        case .ipv6(let v): rc = setInt(handle, ZMQ_IPV6, v ? 1 : 0)
        case .curveServer(let v): rc = setInt(handle, ZMQ_CURVE_SERVER, v ? 1 : 0)
        case .curvePublicKey(let key): rc = try setKey(handle, ZMQ_CURVE_PUBLICKEY, key)
        case .curveSecretKey(let key): rc = try setKey(handle, ZMQ_CURVE_SECRETKEY, key)
        case .curveServerKey(let key): rc = try setKey(handle, ZMQ_CURVE_SERVERKEY, key)
        case .zapDomain(let v): rc = setBytes(handle, ZMQ_ZAP_DOMAIN, Array(v.utf8))
        case .receiveUserID: rc = 0  // the wrapper's own; see Socket.set
        }
        if rc != 0 { throw ZMQError.last("setsockopt(\(name))") }
    }

    private func setInt(_ handle: UnsafeMutableRawPointer, _ option: Int32, _ value: Int) -> Int32 {
        var v = Int32(clamping: value)
        return zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size)
    }

    private func setBytes(_ handle: UnsafeMutableRawPointer, _ option: Int32, _ value: [UInt8]) -> Int32 {
        value.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
    }

    private func setKey(_ handle: UnsafeMutableRawPointer, _ option: Int32, _ key: String) throws(ZMQError) -> Int32 {
        guard key.utf8.count == 40, Z85.decode(key) != nil else {
            throw ZMQError(
                code: .invalidArgument, operation: "setsockopt(\(name))",
                message: "a CURVE key must be 40 Z85 characters, got \(key.utf8.count)")
        }
        return setBytes(handle, option, Array(key.utf8))
    }
}
