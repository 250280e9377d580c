import CECore
import Foundation
import Logging
import Synchronization
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A node's secret key file: `<data>/curve.key`, the 40 Z85 characters of its CURVE secret
/// key and a newline, readable by the node's user only. While its key is rotated, the key it
/// rotates to waits in `<data>/curve.next.key`.
public enum NodeKeyFile {
    public static let name = "curve.key"
    public static let nextName = "curve.next.key"

    public static func path(dataDirectory: String, next: Bool = false) -> String { dataDirectory + "/" + (next ? nextName : name) }

    /// Makes a key pair and writes its secret key into the data folder (created 0700 if
    /// missing), mode 0600. An existing key is kept unless `force`: its public key is what
    /// the topology lists, and a new one would lock the node out of its cluster.
    public static func generate(dataDirectory: String, node: String, force: Bool = false, next: Bool = false) throws(NodeError) -> CurveKeyPair {
        let key = try prepare(dataDirectory: dataDirectory, node: node, force: force, next: next)
        try key.commit()
        return key.pair
    }

    /// A new key written beside the key file, not yet in its place: ``Prepared/commit()``
    /// puts it there (one rename), ``Prepared/discard()`` leaves the old key as it was. So a
    /// command that must also list the new public key (in a keys file) replaces the secret
    /// key only once that worked.
    public struct Prepared: Sendable {
        public let pair: CurveKeyPair
        let temporary: String
        let path: String

        public func commit() throws(NodeError) {
            guard rename(temporary, path) == 0 else {
                let reason = String(cString: strerror(errno))
                unlink(temporary)
                throw NodeError("cannot write \(path): \(reason)")
            }
        }

        public func discard() { unlink(temporary) }
    }

    /// Checks, makes the pair and writes its secret key to a file beside the key file, mode
    /// 0600 from the start and fsynced (see ``generate(dataDirectory:node:force:next:)``).
    public static func prepare(dataDirectory: String, node: String, force: Bool = false, next: Bool = false) throws(NodeError) -> Prepared {
        let path = path(dataDirectory: dataDirectory, next: next)
        if FileManager.default.fileExists(atPath: path) && !force {
            throw NodeError(next
                ? "\(path) already holds the next key of \(node) (a rotation under way): keep it, or make another with --force"
                : "\(path) already holds a secret key for \(node); keep it (`ce-node keys show --node \(node)` prints its public key) or replace it with --force (then update the topology's key of \(node))")
        }
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw NodeError("cannot make the data folder \(dataDirectory) of \(node): \(error.localizedDescription)")
        }
        let pair: CurveKeyPair
        do { pair = try CurveKeyPair.generate() } catch { throw NodeError("cannot make a CURVE key pair: \(error)") }
        // Written beside it with mode 0600 from the start, then renamed over: never readable by others.
        let temporary = path + ".tmp"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw NodeError("cannot write \(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array((pair.secretKey + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw NodeError("cannot write \(temporary): \(reason)")
        }
        return Prepared(pair: pair, temporary: temporary, path: path)
    }

    /// Reads a node's key pair from its data folder, refusing a file others may read.
    public static func load(dataDirectory: String, node: String, topologyFile: String, next: Bool = false) throws(NodeError) -> CurveKeyPair {
        let path = path(dataDirectory: dataDirectory, next: next)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw NodeError("node \(node) has no secret key: \(path) does not exist; make it with `ce-node keys generate --node \(node) --topology \(topologyFile)` and put the public key it prints into the topology")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw NodeError("the secret key file \(path) of node \(node) is readable by others (mode \(String(mode, radix: 8))): `chmod 600 \(path)`, and make a new key if others may have read it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw NodeError("cannot read the secret key file \(path) of node \(node)")
        }
        let secret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard CurveKeyText.problem(secret) == nil, let publicKey = try? CurveKeyPair.publicKey(forSecret: secret) else {
            throw NodeError("the secret key file \(path) of node \(node) does not hold a CURVE secret key (40 Z85 characters)")
        }
        return CurveKeyPair(publicKey: publicKey, secretKey: secret)
    }
}

/// What a node needs for CURVE: its own key pair and every node's public key, with the
/// checks that every message is attributed to exactly one node.
///
/// Socket layout (each message attributable to one key): the PUB, ROUTER (`rep`) and replay
/// ROUTER sockets are CURVE servers behind a ZAP allow-list of the topology's keys, and the
/// ROUTERs' messages carry the sender's key (User-Id); every SUB, REQ and DEALER dials one
/// node with that node's key as server key, so what arrives on it comes from that node.
final class NodeSecurity: Sendable {
    let mode: SecurityMode
    /// This node's key pair in use (CURVE only): its key, or its next one once it switched.
    let current: Mutex<CurveKeyPair?>
    var keys: CurveKeyPair? { current.withLock { $0 } }
    /// Per peer with two keys (rotating): the one its servers answered to last, to dial with.
    let serverKeys = Mutex<[String: String]>([:])
    /// Node name by public key, and the keys the ZAP handler admits: the topology's (a reload
    /// changes both together).
    let keyring: Mutex<(names: [String: String], allowed: [String])>
    /// Peer addresses whose refused handshakes were logged (each once), bounded.
    let refusedLogged = Mutex<Set<String>>([])
    /// The context's ZAP handler, kept for as long as the node runs (it answers only while referenced).
    let authenticator = Mutex<Authenticator?>(nil)

    init(topology: Topology, node: NodeSpec, dataDirectory: String) throws(NodeError) {
        mode = topology.settings.security
        guard mode == .curve else {
            current = Mutex(nil)
            keyring = Mutex(([:], []))
            return
        }
        if let file = topology.settings.keysFile, !topology.settings.keysFileFound {
            throw NodeError("settings.keys_file of \(topology.file) names \(file), which does not exist: make each node's key with `ce-node keys generate --node NAME --topology \(topology.file) --add-to-keys-file` (or set settings.security: none)")
        }
        let missing = topology.nodesWithoutKeys
        guard missing.isEmpty else {
            throw NodeError("\(topology.file) gives no public key for \(missing.joined(separator: ", ")) (security is curve): add public_key: to each node, or list them in settings.keys_file; `ce-node keys generate --node NAME` makes a node's key and prints it")
        }
        let pair = try NodeKeyFile.load(dataDirectory: dataDirectory, node: node.name, topologyFile: topology.file)
        // Its next key, once it has switched to it (a rotation the topology has not finished).
        guard node.publicKeys.contains(pair.publicKey) else {
            throw NodeError("the secret key in \(NodeKeyFile.path(dataDirectory: dataDirectory)) does not belong to node \(node.name): its public key is \(pair.publicKey), \(topology.file) says \(node.publicKeys.joined(separator: " or "))")
        }
        current = Mutex(pair)
        keyring = Mutex(Self.keyring(topology))
    }

    /// Every key of every node (a rotating node's two) to its node.
    static func keyring(_ topology: Topology) -> (names: [String: String], allowed: [String]) {
        let pairs = topology.nodes.flatMap { node in node.publicKeys.map { ($0, node.name) } }
        return (Dictionary(pairs, uniquingKeysWith: { a, _ in a }), pairs.map(\.0))
    }

    /// Admits the keys of a reloaded topology and refuses those it no longer lists, at once
    /// for the ZAP handler (new handshakes) and for the messages' senders. Returns the keys
    /// no longer admitted.
    @discardableResult
    func update(_ topology: Topology) -> [String] {
        guard isOn else { return [] }
        let next = Self.keyring(topology)
        let removed = keyring.withLock { ring -> [String] in
            let gone = Set(ring.allowed).subtracting(next.allowed)
            ring = next
            return Array(gone)
        }
        authenticator.withLock { $0?.replace(allowing: next.allowed) }
        return removed
    }

    var isOn: Bool { keys != nil }

    /// Starts the context's ZAP handler with every key of the topology (before any server binds).
    func startAuthenticator(_ context: Context, onDenial: @escaping @Sendable (Authenticator.Denial) -> Void) throws {
        guard isOn else { return }
        let started = try context.startAuthenticator(allowing: keyring.withLock { $0.allowed }, onDenial: onDenial)
        authenticator.withLock { $0 = started }
    }

    /// Makes a socket a CURVE server (PUB, ROUTER); a ROUTER's messages then carry the client's key.
    func serve(_ socket: Socket) throws {
        guard let keys else { return }
        try socket.set([.curveServer(true), .curvePublicKey(keys.publicKey), .curveSecretKey(keys.secretKey)])
        if socket.type == .router { try socket.set(.receiveUserID(true)) }
    }

    /// Makes a socket a CURVE client of one node: only that node can complete the handshake.
    /// A rotating node is dialled with the key its servers answered to last.
    func dial(_ socket: Socket, to peer: NodeSpec) throws {
        guard let keys, let server = serverKey(of: peer) else { return }
        try socket.set([.curveServerKey(server), .curvePublicKey(keys.publicKey), .curveSecretKey(keys.secretKey)])
    }

    /// The key to dial `peer` with.
    func serverKey(of peer: NodeSpec) -> String? {
        let chosen = serverKeys.withLock { $0[peer.name] }
        return chosen.flatMap { peer.publicKeys.contains($0) ? $0 : nil } ?? peer.publicKey
    }

    /// A handshake with a rotating peer failed: dial it with its other key from now on.
    /// Nil when the peer has one key.
    func alternate(_ peer: NodeSpec) -> String? {
        guard peer.publicKeys.count == 2, let using = serverKey(of: peer) else { return nil }
        let other = peer.publicKeys.first { $0 != using }!
        serverKeys.withLock { $0[peer.name] = other }
        return other
    }

    /// This node's next key, from `curve.next.key`, when it is the one the topology names next.
    func nextPair(dataDirectory: String, node: NodeSpec, topologyFile: String) -> CurveKeyPair? {
        guard isOn, let next = node.nextPublicKey,
              let pair = try? NodeKeyFile.load(dataDirectory: dataDirectory, node: node.name, topologyFile: topologyFile, next: true),
              pair.publicKey == next else { return nil }
        return pair
    }

    /// Uses the next key from now on, and makes it the node's key on disk: `curve.key` becomes
    /// `curve.previous.key`, `curve.next.key` becomes `curve.key` (a restart keeps the new key).
    func switchTo(_ pair: CurveKeyPair, dataDirectory: String) throws(NodeError) {
        let key = NodeKeyFile.path(dataDirectory: dataDirectory), next = NodeKeyFile.path(dataDirectory: dataDirectory, next: true)
        let previous = dataDirectory + "/curve.previous.key"
        guard rename(key, previous) == 0, rename(next, key) == 0 else {
            throw NodeError("cannot move the next key into place (\(next) -> \(key)): \(String(cString: strerror(errno)))")
        }
        current.withLock { $0 = pair }
    }

    /// The node that sent a message on a CURVE server socket; nil when security is off.
    func sender(of message: Message) -> String? {
        guard isOn else { return nil }
        return message.userID.flatMap { key in keyring.withLock { $0.names[key] } } ?? "an unlisted key"
    }
}

extension Node {
    /// Counts and logs a message whose claimed origin is not the node that sent it.
    func forged(_ what: String, claimed: String, sender: String) {
        count(.forged)
        logger.warning("rejected a forged \(what): it claims to come from \(claimed) but \(sender) sent it", metadata: [
            "ce.claimed": .string(claimed), "ce.sender": .string(sender),
        ])
    }

    /// A refused handshake, from the reactor thread: counted; logged once per peer address.
    func refusedHandshake(_ denial: Authenticator.Denial) {
        count(.handshakeRefused)
        let first = security.refusedLogged.withLock { logged -> Bool in
            guard logged.count < 1000 else { return false }
            return logged.insert(denial.address).inserted
        }
        if first {
            logger.warning("refused a connection from \(denial.address): \(denial.reason)\(denial.key.map { " (public key \($0), not in \(topology.file))" } ?? " (no CURVE key offered)")")
        }
    }

    /// On a ROUTER: true when the request's `from_node` is the node whose key sent it (or
    /// security is off); otherwise counted and logged as forged.
    func fromNodeIsSender(_ fromNode: String?, of message: Message, what: String) -> Bool {
        guard let sender = security.sender(of: message) else { return true }
        guard let fromNode, fromNode == sender else {
            forged(what, claimed: fromNode ?? "(no from_node)", sender: sender)
            return false
        }
        return true
    }
}
