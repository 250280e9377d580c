import Synchronization
import ZeroMQ

/// The node's connections while it runs: its sockets, each peer's SUB with the loops that
/// read it, and the peers whose live events are paused (see ``Node/pauseLive(from:)``). A
/// reload adds and removes peers' SUBs and rebinds; a key rotation dials a peer again.
final class PeerLinks: Sendable {
    struct Link: Sendable {
        let socket: Socket
        let tasks: [Task<Void, Never>]
    }

    private struct State {
        var links: [String: Link] = [:]
        /// SUBs opened and not yet started (their loops start right after).
        var opened: [String: Socket] = [:]
        var paused: Set<String> = []
        var sockets: Node.Sockets?
    }
    private let state = Mutex(State())

    /// The node's sockets, while it runs.
    var sockets: Node.Sockets? {
        get { state.withLock { $0.sockets } }
        set { state.withLock { $0.sockets = newValue } }
    }

    func opened(_ name: String, _ socket: Socket) { state.withLock { $0.opened[name] = socket } }

    func started(_ name: String, _ link: Link) {
        state.withLock { s in
            s.opened.removeValue(forKey: name)
            s.links[name] = link
        }
    }

    /// Takes a peer's link out (its loops are to be cancelled and its SUB closed).
    func remove(_ name: String) -> Link? {
        state.withLock { s in
            s.opened.removeValue(forKey: name)
            return s.links.removeValue(forKey: name)
        }
    }

    var names: [String] { state.withLock { Array($0.links.keys) } }

    /// The SUB that dials a peer.
    func socket(of name: String) -> Socket? { state.withLock { $0.links[name]?.socket ?? $0.opened[name] } }

    /// The peer a SUB dials.
    func peer(of socket: Socket) -> String? {
        state.withLock { s in (s.links.first { $0.value.socket === socket }?.key) ?? s.opened.first { $0.value === socket }?.key }
    }

    /// Marks a peer's live events paused; its SUB when it was not paused already.
    func pause(_ name: String) -> Socket? {
        state.withLock { s in s.paused.insert(name).inserted ? (s.links[name]?.socket ?? s.opened[name]) : nil }
    }

    /// Marks a peer's live events flowing again; its SUB when it was paused.
    func resume(_ name: String) -> Socket? {
        state.withLock { s in s.paused.remove(name) != nil ? (s.links[name]?.socket ?? s.opened[name]) : nil }
    }

    /// Each peer's SUB whose live events flow (not paused).
    var flowing: [(String, Socket)] {
        state.withLock { s in
            (s.links.map { ($0.key, $0.value.socket) } + s.opened.map { ($0.key, $0.value) }).filter { !s.paused.contains($0.0) }
        }
    }
}
