internal import CZeroMQ

/// The stable socket types of libzmq 4.3.
public enum SocketType: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case pub, sub, xpub, xsub, req, rep, dealer, router, push, pull, pair

    var rawValue: Int32 {
        switch self {
        case .pub: ZMQ_PUB
        case .sub: ZMQ_SUB
        case .xpub: ZMQ_XPUB
        case .xsub: ZMQ_XSUB
        case .req: ZMQ_REQ
        case .rep: ZMQ_REP
        case .dealer: ZMQ_DEALER
        case .router: ZMQ_ROUTER
        case .push: ZMQ_PUSH
        case .pull: ZMQ_PULL
        case .pair: ZMQ_PAIR
        }
    }

    /// Types whose sends can fail for a reason the sender must hear at once (an unroutable
    /// peer): for these, an async `send` returns only after libzmq took the message. REQ and
    /// REP lockstep errors are found without the reactor (see `SocketCore.State.lockstep`).
    var confirmsSends: Bool { self == .router }

    var canSend: Bool { self != .sub && self != .pull }
    var canReceive: Bool { self != .pub && self != .push }

    public var description: String {
        switch self {
        case .pub: "PUB"
        case .sub: "SUB"
        case .xpub: "XPUB"
        case .xsub: "XSUB"
        case .req: "REQ"
        case .rep: "REP"
        case .dealer: "DEALER"
        case .router: "ROUTER"
        case .push: "PUSH"
        case .pull: "PULL"
        case .pair: "PAIR"
        }
    }
}
