import CECore
import Foundation
import ZeroMQ

/// What a reload of the topology changes for one node, worked out before anything is applied.
/// A file that needs this node restarted (its own entry, the cluster's settings, the
/// coordinators changed) is refused whole, naming each reason; the node keeps the one it runs.
/// A value: no I/O.
struct TopologyChange: Sendable {
    /// Why the new file cannot be applied live here; empty when it can.
    var refusals: [String] = []
    /// What changes, one line each, for the operator.
    var lines: [String] = []
    var added: [NodeSpec] = []
    var removed: [NodeSpec] = []
    /// Peers whose endpoint or key changed: dialled again.
    var redialled: [NodeSpec] = []
    /// This node's subscribed types before and after (nil: all), when they differ.
    var subscriptions: (before: [EventType]?, after: [EventType]?)?

    /// `keyInUse`: this node's public key now (nil without CURVE); `nextHeld`: the public key of
    /// its `curve.next.key`, if it holds one; `dialling`: the key it dials each peer with.
    init(from old: Topology, to new: Topology, node name: String, keyInUse: String? = nil, nextHeld: String? = nil,
         dialling: (NodeSpec) -> String? = { $0.publicKey }) {
        guard let mine = new.node(named: name), let was = old.node(named: name) else {
            refusals.append("this node, \(name), is not in the new file: stop it instead")
            return
        }
        for (what, changed) in [
            ("pool", mine.pool != was.pool), ("host", mine.host != was.host), ("bind", mine.bind != was.bind),
            ("ports", [mine.pubPort, mine.repPort, mine.replayPort ?? 0, mine.metricsPort ?? 0] != [was.pubPort, was.repPort, was.replayPort ?? 0, was.metricsPort ?? 0]),
            ("data", mine.data != was.data), ("workspace", mine.workspace != was.workspace),
        ] where changed {
            refusals.append("\(name)'s own \(what) changed: restart this node to take it")
        }
        if let keyInUse, !mine.publicKeys.contains(keyInUse) {
            refusals.append("\(name) uses the key \(keyInUse), which the new file no longer lists for it: restart it with its new key, or rotate without a gap (ce-node keys rotate)")
        }
        if let next = mine.nextPublicKey, next != keyInUse, keyInUse != nil, next != nextHeld {
            refusals.append("the new file names a next key for \(name) (\(next)) that this node does not hold in \(NodeKeyFile.nextName): run `ce-node keys rotate --node \(name)` on its host")
        }
        if let next = mine.nextPublicKey, next != was.nextPublicKey, next != keyInUse {
            lines.append("this node rotates to its next key once every peer runs this file")
        }
        var (a, b) = (old.settings, new.settings)
        (a.keysFile, b.keysFile, a.keysFileFound, b.keysFileFound) = (nil, nil, true, true)
        if a != b { refusals.append("settings changed: the cluster's settings need every node restarted") }
        if old.coordinators.map(\.name) != new.coordinators.map(\.name) {
            refusals.append("the coordinators changed (\(old.coordinators.map(\.name)) -> \(new.coordinators.map(\.name))): restart the nodes")
        }
        let before = Dictionary(uniqueKeysWithValues: old.peers(of: name).map { ($0.name, $0) })
        let after = Dictionary(uniqueKeysWithValues: new.peers(of: name).map { ($0.name, $0) })
        added = new.peers(of: name).filter { before[$0.name] == nil }
        removed = old.peers(of: name).filter { after[$0.name] == nil }
        redialled = new.peers(of: name).filter { peer in
            guard let was = before[peer.name] else { return false }
            let keyGone = dialling(was).map { !peer.publicKeys.contains($0) } ?? false
            return peer.pubEndpoint != was.pubEndpoint || keyGone || peer.pool != was.pool
        }
        for peer in added { lines.append("node \(peer.name) (pool \(peer.pool), \(peer.pubEndpoint)) added: dialled and admitted") }
        for peer in removed { lines.append("node \(peer.name) removed: disconnected and refused; its events stay") }
        for peer in redialled { lines.append("node \(peer.name) changed its endpoint, key or pool: dialled again") }
        for peer in new.peers(of: name) where before[peer.name] != nil && before[peer.name]!.publicKeys != peer.publicKeys && !redialled.contains(peer) {
            lines.append("node \(peer.name)'s keys: \(peer.publicKeys.joined(separator: " and ")) admitted")
        }
        let (subBefore, subAfter) = (Node.subscribedTypes(pool: was.pool, topology: old), Node.subscribedTypes(pool: mine.pool, topology: new))
        if subBefore.map(Set.init) != subAfter.map(Set.init) {
            subscriptions = (subBefore, subAfter)
            let describe = { (types: [EventType]?) in types.map { $0.map(\.rawValue).sorted().joined(separator: ", ") } ?? "all" }
            lines.append("this node's subscriptions: \(describe(subBefore)) -> \(describe(subAfter)) (added types are taken from now on)")
        }
        if old.gates != new.gates { lines.append("gates changed: \(new.gates.map(\.name).joined(separator: ", "))") }
        if old.conflicts != new.conflicts { lines.append("conflict resolvers or escalation changed") }
        if Set(old.customTypes) != Set(new.customTypes) { lines.append("custom types: \(new.customTypes.map(\.rawValue).joined(separator: ", "))") }
        for pool in Set(old.pools.keys).union(new.pools.keys).sorted() where pool != mine.pool && old.pools[pool] != new.pools[pool] {
            lines.append("pool \(pool)'s subscriptions changed")
        }
    }
}

extension Node {
    /// Re-reads the topology file (and its keys file) and applies the difference while the
    /// node runs: peers added are dialled and admitted, peers removed are disconnected and
    /// refused (their events stay here and can be replayed), subscriptions follow the new
    /// list, and the coordinator takes changed gates. A file that does not validate, or that
    /// needs a restart here, is refused whole with every reason.
    public func reload() async -> ControlReply {
        (try? await reloading.run { await self.applyReload() }) ?? .failure("the reload was cancelled")
    }

    private func applyReload() async -> ControlReply {
        let old = topology
        let new: Topology
        do {
            new = try TopologyLoader.load(path: old.file)
        } catch {
            return .failure("not reloaded, \(spec.name) keeps running topology \(old.digest): \(error)")
        }
        let nextHeld = (try? NodeKeyFile.load(dataDirectory: options.dataDirectory, node: spec.name, topologyFile: new.file, next: true))?.publicKey
        let change = TopologyChange(from: old, to: new, node: spec.name, keyInUse: security.keys?.publicKey, nextHeld: nextHeld) { [security] in
            security.serverKey(of: $0)
        }
        guard change.refusals.isEmpty else {
            return .failure("not reloaded, \(spec.name) keeps running topology \(old.digest):\n" + change.refusals.map { "  \($0)" }.joined(separator: "\n"))
        }
        if new.digest == old.digest {
            logger.info("reloaded \(new.file): unchanged (topology \(new.digest))")
            return .reloaded(["digest": .string(new.digest), "changed": .array([])])
        }
        if security.isOn, let missing = Optional(new.nodesWithoutKeys), !missing.isEmpty {
            return .failure("not reloaded: \(new.file) gives no public key for \(missing.joined(separator: ", "))")
        }
        // Keys first: a new peer's handshake is admitted before it is dialled, and a removed
        // node's is refused from here on.
        let revoked = security.update(new)
        running.withLock { $0 = Running(topology: new, admission: Admission(topology: new, busTypes: Self.busTypes)) }
        if let (before, after) = change.subscriptions { resubscribe(from: before, to: after) }
        if let sockets = links.sockets {
            for peer in change.removed + change.redialled {
                stopLink(peer.name)
                peers.forget(peer.name)
            }
            // A node added is followed from its first event (its line is new to this cluster),
            // as a peer this node never heard is at start (``loadCursors()``).
            intake.state.withLock { d in
                for peer in change.added where !d.isFollowed(peer.name) {
                    var track = Delivery.Track()
                    track.cursor = 0
                    d.unheard[peer.name] = track
                }
            }
            for peer in change.added + change.redialled {
                do {
                    startLink(try openSubscription(to: peer), feed: sockets.feed)
                } catch {
                    logger.error("reload: cannot dial \(peer.name): \(error)")
                }
            }
            // A removed node's connections into this node's sockets were made before its key
            // was revoked: the sockets are bound again so that every peer reconnects, through
            // the new allow-list (the others within a reconnect interval; what they miss
            // meanwhile comes back by replay).
            if !revoked.isEmpty { await rebind(sockets) }
        }
        for handler in hooks.withLock({ $0.reload }) { await handler(new) }
        logger.notice("reloaded \(new.file) (topology \(old.digest) -> \(new.digest)): \(change.lines.isEmpty ? "nothing that changes this node" : change.lines.joined(separator: "; "))")
        return .reloaded(["digest": .string(new.digest), "previous": .string(old.digest), "changed": .array(change.lines.map(JSONValue.string))])
    }

    /// The SUB filters and the intake follow a changed subscription list. Added types are
    /// taken from now on; this node relays only the types it had before until it restarts.
    private func resubscribe(from before: [EventType]?, to after: [EventType]?) {
        intake.state.withLock { $0.subscribe(to: after.map { Set($0.map(\.rawValue)) }) }
        func prefixes(_ types: [EventType]?) -> Set<[UInt8]> {
            guard let types else { return [[]] }
            return Set(types.map { Topic.subscriptionPrefix(for: $0) })
        }
        let (old, new) = (prefixes(before), prefixes(after))
        for (peer, sub) in links.flowing {
            do {
                for prefix in new.subtracting(old) { try sub.set(.subscribe(prefix)) }
                for prefix in old.subtracting(new) { try sub.set(.unsubscribe(prefix)) }
            } catch {
                logger.error("reload: cannot change the subscriptions to \(peer): \(error)")
            }
        }
    }

    /// Binds the PUB and ROUTER sockets again: libzmq closes the connections accepted on an
    /// endpoint when it is unbound, so every peer dials again through the allow-list.
    /// libzmq closes the listener in its I/O thread after `unbind` returns, so the port may
    /// still be taken for a moment: the bind is tried again until it succeeds (every 20 ms,
    /// for up to 10 s, then every second, logged, until it does).
    func rebind(_ sockets: Sockets) async {
        var list: [(Socket, String)] = [(sockets.pub, spec.bindPubEndpoint), (sockets.router, spec.bindRepEndpoint)]
        if let replay = sockets.replay, let endpoint = spec.bindReplayEndpoint { list.append((replay, endpoint)) }
        for (socket, endpoint) in list {
            let bound = (try? socket.lastEndpoint()) ?? endpoint
            do {
                try socket.unbind(endpoint.contains("*") ? bound : endpoint)
            } catch {
                logger.error("reload: cannot unbind \(endpoint): \(error)")
                continue
            }
            let start = ContinuousClock.now
            var attempts = 0
            while true {
                do {
                    _ = try socket.bind(endpoint)
                    break
                } catch {
                    attempts += 1
                    let waited = ContinuousClock.now - start
                    if waited >= .seconds(10) && attempts % 50 == 0 { logger.error("reload: cannot bind \(endpoint) again yet (\(error)); trying on") }
                    if Task.isCancelled { return }
                    try? await Task.sleep(for: waited < .seconds(10) ? .milliseconds(20) : .seconds(1))
                }
            }
        }
    }

    /// While the topology names a next key for this node that it holds: switches to it once
    /// every peer runs this topology (their heartbeats say its digest), so every peer admits
    /// it. The servers take the new key and are bound again (peers dial again, trying the
    /// other key of this node when a handshake fails), the subscriptions are dialled again
    /// with it, and it becomes the node's key on disk. Checked with each heartbeat.
    func rotateKeyIfReady() async {
        let topology = self.topology
        guard security.isOn, let me = topology.node(named: spec.name), let next = me.nextPublicKey,
              security.keys?.publicKey != next, let sockets = links.sockets else { return }
        let now = Date()
        let waiting = topology.peers(of: spec.name).filter { peer in
            guard peers.isUp(peer.name, now: now) else { return true }
            return peers[peer.name]?.topology != topology.digest
        }.map(\.name)
        guard waiting.isEmpty else {
            let said = rotation.withLock { r -> Bool in defer { r.waitingFor = waiting }; return r.waitingFor == waiting }
            if !said { logger.notice("key rotation: waiting for \(waiting.joined(separator: ", ")) to run topology \(topology.digest) before switching to the next key") }
            return
        }
        guard let pair = security.nextPair(dataDirectory: options.dataDirectory, node: me, topologyFile: topology.file) else {
            logger.error("key rotation: \(NodeKeyFile.path(dataDirectory: options.dataDirectory, next: true)) does not hold the next key the topology names (\(next))")
            return
        }
        do {
            try security.switchTo(pair, dataDirectory: options.dataDirectory)
        } catch {
            logger.error("key rotation: \(error)")
            return
        }
        for socket in [sockets.pub, sockets.router] + (sockets.replay.map { [$0] } ?? []) {
            do { try security.serve(socket) } catch { logger.error("key rotation: cannot set the new key on a server socket: \(error)") }
        }
        await rebind(sockets)
        for peer in topology.peers(of: spec.name) {
            stopLink(peer.name)
            do { startLink(try openSubscription(to: peer), feed: sockets.feed) } catch { logger.error("key rotation: cannot dial \(peer.name): \(error)") }
        }
        questions.sockets.closeAll()
        rotation.withLock { $0.waitingFor = nil }
        logger.notice("switched to the next key \(next): every peer admits it; finish with `ce-node keys rotate --node \(spec.name) --finish` and a reload everywhere")
    }

    /// Runs `handler` with the new topology after each reload this node applies (the
    /// coordinator takes changed gates, resolvers and pools).
    public func onReload(_ handler: @escaping @Sendable (Topology) async -> Void) {
        hooks.withLock { $0.reload.append(handler) }
    }
}
