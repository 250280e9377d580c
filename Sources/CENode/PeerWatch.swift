import CECore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Says in the log when a peer goes silent, comes back, or has never been heard since this
/// node started (with the reason when its host name does not resolve from here), so an
/// operator sees a dead or misnamed peer without asking `ce-node status`.
struct PeerWatch: Sendable {
    var up: [String: Bool] = [:]
    var saidNeverHeard: Set<String> = []
    let started = Date()
    /// Since when each peer has said another topology than this node's, and whether that was said.
    var drifting: [String: (since: Date, said: Bool)] = [:]
    /// How long two nodes may disagree about the topology (a reload going round) before it is a warning.
    static let driftGrace: TimeInterval = 60

    /// Called once per heartbeat interval; returns the lines to log.
    mutating func check(_ node: Node) -> [(warning: Bool, text: String)] {
        let heard = node.peerHeartbeats
        let interval = Double(node.topology.settings.heartbeatMilliseconds) / 1000
        let now = Date()
        var lines: [(Bool, String)] = []
        for peer in node.topology.peers(of: node.spec.name) {
            guard let last = heard[peer.name] else {
                // Ten intervals (at least 5 s) is more than a peer needs to start and connect.
                if now.timeIntervalSince(started) > max(5, interval * 10), !saidNeverHeard.contains(peer.name) {
                    saidNeverHeard.insert(peer.name)
                    let resolution = Self.resolutionProblem(peer.host).map { " Its host \"\(peer.host)\" does not resolve here: \($0)." } ?? ""
                    lines.append((true, "peer \(peer.name) (\(peer.pubEndpoint)) not heard since this node started \(Int(now.timeIntervalSince(started))) s ago: is it running and reachable?\(resolution)"))
                }
                continue
            }
            let isUp = node.peers.isUp(peer.name, now: now)
            if let was = up[peer.name], was != isUp {
                lines.append(isUp
                    ? (false, "peer \(peer.name) is back")
                    : (true, "peer \(peer.name) (\(peer.pubEndpoint)) silent for \(String(format: "%.1f", now.timeIntervalSince(last))) s: down; events it misses are replayed when it is back"))
            } else if up[peer.name] == nil && saidNeverHeard.contains(peer.name) {
                lines.append((false, "peer \(peer.name) heard at last"))
            }
            up[peer.name] = isUp
        }
        let differing = Set(node.driftingPeers())
        node.metrics.topologyDrift.record(differing.count)
        for name in differing where drifting[name] == nil { drifting[name] = (now, false) }
        for (name, d) in drifting {
            if !differing.contains(name) {
                drifting.removeValue(forKey: name)
                if d.said { lines.append((false, "peer \(name) runs the same topology as this node again")) }
            } else if !d.said, now.timeIntervalSince(d.since) > Self.driftGrace {
                drifting[name] = (d.since, true)
                lines.append((true, "peer \(name) has run another topology than this node (\(node.topology.digest) of \(node.topology.file)) for \(Int(now.timeIntervalSince(d.since))) s: give every node the same file and run ce-node reload on each"))
            }
        }
        return lines
    }

    /// nil when `host` is an address or resolves; otherwise the resolver's reason.
    static func resolutionProblem(_ host: String) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        if let result { freeaddrinfo(result) }
        return status == 0 ? nil : String(cString: gai_strerror(status))
    }
}
