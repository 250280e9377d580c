import Logging
import ZeroMQ

/// When to dial a peer's publisher again, as a value: it takes the monitor events of one SUB
/// socket with the time they came, and returns what to do (dial an endpoint now, look again
/// at an instant, say something once). It does no I/O and keeps no clock; ``Node/redial(sub:events:)``
/// feeds it and carries out its directives, and its tests drive it with made-up instants.
///
/// libzmq reconnects by itself after most drops, but not after a protocol error (an oversized
/// or malformed frame, a handshake the server answered with an error): the endpoint then
/// stays down until it is dialled again. The redialer dials only an endpoint libzmq has left
/// alone (silent since its last drop), keeps at most one look pending per endpoint however
/// many drops come, and waits longer after each dial that did not bring the peer back: from
/// `first`, doubling, up to `cap`, less a random part (`jitter`). A handshake that succeeds
/// starts the waits over; a TCP connection alone does not (a server with another key accepts
/// it, then fails the handshake).
struct Redialer: Sendable {
    struct Settings: Sendable {
        /// The first look after a drop, and the wait before the first dial.
        var first: Duration = .seconds(1)
        /// The longest wait between two dials.
        var cap: Duration = .seconds(5)
        /// Each wait is shortened by up to this fraction, at random, so nodes do not dial in step.
        var jitter = 0.2
        /// How long an endpoint must be silent after a drop to count as left alone by libzmq:
        /// longer than the SUB's reconnect interval (100 ms) plus libzmq's jitter (as much again).
        var quiet: Duration = .milliseconds(500)
    }

    enum Directive: Sendable, Equatable {
        /// Drop what is left of the endpoint's connection and dial it again, now.
        case dial(String)
        /// Call ``due(_:now:)`` for the endpoint at this instant.
        case wake(String, at: ContinuousClock.Instant)
        /// A change worth one log line.
        case notice(Notice)
    }

    enum Notice: Sendable, Equatable {
        /// The handshakes with the endpoint fail, in a way not yet reported since the last
        /// that succeeded (`value`: libzmq's errno, protocol error code or ZAP status, by kind;
        /// one failed attempt can report two kinds, so each kind is said once).
        case handshakeFails(String, MonitorEvent.Kind, value: UInt32)
        /// The endpoint was left down; the first dial of this outage.
        case diallingAgain(String)
        /// A handshake succeeded after one of the notices above.
        case restored(String)
    }

    /// The monitor events the redialer needs to see.
    static let watched: Set<MonitorEvent.Kind> = [
        .connected, .connectDelayed, .connectRetried, .disconnected,
        .handshakeSucceeded, .handshakeFailedNoDetail, .handshakeFailedProtocol, .handshakeFailedAuth,
    ]

    struct Link: Sendable {
        /// A handshake succeeded and no drop came since.
        var up = false
        /// The last event and when it came.
        var last: MonitorEvent.Kind?
        var lastAt: ContinuousClock.Instant?
        /// Dials since the last handshake that succeeded: the exponent of the wait.
        var dials = 0
        /// When ``due(_:now:)`` is to be called; nil when no look is pending.
        var wake: ContinuousClock.Instant?
        /// The handshake failures reported since the last that succeeded, and whether this
        /// outage's dialling was.
        var failures: Set<MonitorEvent.Kind> = []
        var saidDialling = false
    }

    let settings: Settings
    private(set) var links: [String: Link] = [:]
    private var random: SplitMix64

    init(settings: Settings = Settings(), seed: UInt64) {
        self.settings = settings
        self.random = SplitMix64(seed: seed)
    }

    /// Takes one monitor event of the socket.
    mutating func handle(_ kind: MonitorEvent.Kind, endpoint: String, value: UInt32 = 0, now: ContinuousClock.Instant) -> [Directive] {
        var link = links[endpoint, default: Link()]
        var out: [Directive] = []
        switch kind {
        case .handshakeSucceeded:
            if !link.failures.isEmpty || link.saidDialling { out.append(.notice(.restored(endpoint))) }
            link.up = true
            link.dials = 0
            link.failures = []
            link.saidDialling = false
        case .handshakeFailedNoDetail, .handshakeFailedProtocol, .handshakeFailedAuth:
            link.up = false
            if link.failures.insert(kind).inserted {
                out.append(.notice(.handshakeFails(endpoint, kind, value: value)))
            }
        case .disconnected:
            link.up = false
            if link.wake == nil {
                let at = now + wait(afterDials: link.dials)
                link.wake = at
                out.append(.wake(endpoint, at: at))
            }
        default:
            break  // a connection under way: libzmq is at it
        }
        link.last = kind
        link.lastAt = now
        links[endpoint] = link
        return out
    }

    /// The look that a `.wake` asked for: dials an endpoint left down and silent, and keeps
    /// looking while it is down. An early or stale call does nothing.
    mutating func due(_ endpoint: String, now: ContinuousClock.Instant) -> [Directive] {
        guard var link = links[endpoint], let wake = link.wake, now >= wake else { return [] }
        link.wake = nil
        defer { links[endpoint] = link }
        guard !link.up else { return [] }
        var out: [Directive] = []
        if link.last == .disconnected, let lastAt = link.lastAt, now - lastAt >= settings.quiet {
            link.dials += 1
            if !link.saidDialling {
                link.saidDialling = true
                out.append(.notice(.diallingAgain(endpoint)))
            }
            out.append(.dial(endpoint))
        }
        let at = now + wait(afterDials: link.dials)
        link.wake = at
        out.append(.wake(endpoint, at: at))
        return out
    }

    /// The wait before the next look after `dials` dials, without jitter: `first`, doubled
    /// per dial, at most `cap`.
    func nominalWait(afterDials dials: Int) -> Duration {
        min(settings.first * (1 << min(dials, 30)), settings.cap)
    }

    private mutating func wait(afterDials dials: Int) -> Duration {
        let unit = Double(random.next() >> 11) / Double(1 << 53)
        return nominalWait(afterDials: dials) * (1 - settings.jitter * unit)
    }

    /// Endpoints with a look pending.
    var pending: Int { links.values.count(where: { $0.wake != nil }) }
}

/// When a rotating peer may be dialled with its other key: at most once per `spacing` per
/// peer (a value; its tests drive it).
struct KeySwap: Sendable {
    static let spacing: Duration = .milliseconds(500)
    private var last: [String: ContinuousClock.Instant] = [:]

    /// A handshake with `peer` failed: true when its key is to be swapped now.
    mutating func take(_ peer: String, now: ContinuousClock.Instant) -> Bool {
        if let last = last[peer], now - last < Self.spacing { return false }
        last[peer] = now
        return true
    }
}

/// A small seeded generator: the redialer's jitter is reproducible in its tests.
struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Node {
    /// Carries out a ``Redialer`` for one peer's SUB socket, whose monitor reports
    /// ``Redialer/watched``: dials, the looks it asks for (one sleeping task each), log lines.
    func redial(sub: Socket, events: MonitorEvents) async throws {
        let peer = links.peer(of: sub) ?? "?"
        let key = security.isOn ? topology.node(named: peer)?.publicKey : nil
        enum Input: Sendable {
            case event(MonitorEvent.Kind, endpoint: String, value: UInt32)
            case due(String)
        }
        let (inputs, post) = AsyncStream.makeStream(of: Input.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { post.finish() }
                for try await event in events {
                    if let kind = event.kind { post.yield(.event(kind, endpoint: event.endpoint, value: event.value)) }
                }
            }
            var redialer = Redialer(seed: .random(in: .min ... .max))
            // A rotating peer (two keys in the topology) whose servers fail the handshake with
            // the key this node dials it with has switched to its other key (or not yet): a new
            // SUB dials it with the other one at once, at most one swap per peer every
            // `KeySwap.spacing` (when neither key works, the swaps stay that slow).
            for await input in inputs {
                if case .event(let kind, _, _) = input, [.handshakeFailedNoDetail, .handshakeFailedProtocol].contains(kind),
                   rotation.withLock({ $0.swaps.take(peer, now: .now) }), let spec = topology.node(named: peer), let other = security.alternate(spec) {
                    logger.info("the handshakes with \(peer) fail: dialling it with its other key \(other)")
                    // A new SUB: libzmq keeps retrying a dial with the options it was made with.
                    Task { self.relink(peer) }
                }
                let directives = switch input {
                case .event(let kind, let endpoint, let value): redialer.handle(kind, endpoint: endpoint, value: value, now: .now)
                case .due(let endpoint): redialer.due(endpoint, now: .now)
                }
                for directive in directives {
                    switch directive {
                    case .dial(let endpoint):
                        try? sub.disconnect(endpoint)
                        try? sub.connect(endpoint)
                    case .wake(let endpoint, let at):
                        group.addTask {
                            guard (try? await Task.sleep(until: at, clock: .continuous)) != nil else { return }
                            post.yield(.due(endpoint))
                        }
                    case .notice(let notice):
                        say(notice, peer: peer, key: key, wait: redialer.settings.cap)
                    }
                }
            }
            group.cancelAll()
            try await group.waitForAll()
        }
    }

    private func say(_ notice: Redialer.Notice, peer: String, key: String?, wait: Duration) {
        switch notice {
        case .handshakeFails(let endpoint, let kind, let value):
            let reason = switch kind {
            case .handshakeFailedAuth: "the server refused this node's key (ZAP status \(value))"
            case .handshakeFailedProtocol:
                switch value {
                case 0x1100_0001: "a cryptographic error (protocol error 0x11000001)"
                case 0x1100_0002: "the server there uses another security mechanism (protocol error 0x11000002)"
                default: "protocol error 0x\(String(value, radix: 16))"
                }
            default: "the connection closed during the handshake (errno \(value))"
            }
            let expected = key.map { "; \(peer)'s public key is \($0): does the server there hold another key, or no CURVE?" } ?? ""
            logger.warning("the handshake with peer \(peer) at \(endpoint) fails: \(reason)\(expected) (said once until a handshake succeeds)", metadata: [
                "ce.peer": .string(peer), "ce.endpoint": .string(endpoint),
            ])
        case .diallingAgain(let endpoint):
            logger.notice("peer connection \(endpoint) dropped and not restored by libzmq: dialling again, waiting up to \(wait) between dials until \(peer) is back", metadata: [
                "ce.peer": .string(peer), "ce.endpoint": .string(endpoint),
            ])
        case .restored(let endpoint):
            logger.info("peer connection \(endpoint) to \(peer) is back", metadata: ["ce.peer": .string(peer), "ce.endpoint": .string(endpoint)])
        }
    }
}
