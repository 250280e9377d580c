import CECore
import CECoordinator
import CEStore
import CoreMetrics
import Foundation
import Logging
import Synchronization
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// One `ce-node`: it publishes the events its pool emits, subscribes to the pools it listens
/// to, stores every event it emits or receives, answers questions addressed to its pool and
/// asks other pools.
///
/// Make one with ``init(options:)``, then `try await node.run()` until the task is cancelled.
public final class Node: Sendable {
    /// Where and how a node runs; everything but the topology and the name is defaulted.
    public struct Options: Sendable {
        public var topology: Topology
        public var name: String
        /// The folder of the event store and the local control endpoints.
        public var dataDirectory: String
        /// The workspace whose `.ce-events/` folder file-only agents use, if any.
        public var workspace: String?
        public var durability: EventStore.Durability = .full
        /// Where to start on an origin this node holds nothing from.
        public var catchUp: CatchUp = .beginning
        /// Live events held per origin behind a gap while a replay fills it; beyond that they
        /// are dropped and come back by replay, so a stalled subscriber never holds more.
        public var maxHeld = Options.defaultMaxHeld
        public static let defaultMaxHeld = 10_000
        /// False: plain PUB/SUB without sequence tracking or replay (events missed while a
        /// peer is away stay missed). For measuring what the guarantees cost only: not part of
        /// the API a program builds on (`@_spi(Measuring) import CENode`).
        @_spi(Measuring) public var replay = true
        /// A store that fails its integrity check is moved aside (kept, named with the time)
        /// and a new one is made; a new store is refilled from the peers (every event of the
        /// subscribed types from every origin, and this node's own earlier events). False:
        /// a damaged store stops the start, as for an operator who wants to inspect it first.
        public var refill = true
        /// Where the node's metrics go (docs/METRICS.md); nil: the process's bootstrapped
        /// metrics system (a no-op one unless the program bootstrapped it).
        public var metricsFactory: (any MetricsFactory)?
        public var logger: Logger

        public init(topology: Topology, name: String, dataDirectory: String? = nil, workspace: String? = nil) throws(NodeError) {
            guard let spec = topology.node(named: name) else {
                throw NodeError("node \"\(name)\" is not in \(topology.file) (nodes: \(topology.nodes.map(\.name).joined(separator: ", ")))")
            }
            self.topology = topology
            self.name = name
            self.dataDirectory = dataDirectory ?? spec.data
            self.workspace = workspace ?? spec.workspace
            var logger = Logger(label: "ce.node")
            logger[metadataKey: "ce.node"] = .string(name)
            self.logger = logger
        }
    }

    public let spec: NodeSpec
    /// The topology this node runs: the one it started with, or the last `reload` applied.
    public var topology: Topology { running.withLock { $0.topology } }
    public let options: Options
    /// What a reload changes together (Reload.swift).
    let running: Mutex<Running>

    struct Running: Sendable {
        var topology: Topology
        /// What every emitted event is checked against, whichever door it came through.
        var admission: Admission
    }
    let store: EventStore
    let writer: EventWriter
    let context: Context
    let logger: Logger
    // The parts, each with one concern and its own lock.
    /// This node's own line and the emits waiting to be stamped (Publishing.swift).
    let publisher: Publisher
    /// Every peer's newest heartbeat and whether it is up (PeerTable.swift).
    let peers: PeerTable
    /// Hands what is stored to the listeners in this process (Fanout.swift).
    let fanout = Fanout()
    /// Questions answered and asked (Ask.swift).
    let questions = Questions()
    /// The counters of status and metrics (Tally.swift).
    let tally: Tally
    /// Conflicts and coordinator decisions as the stored events tell them (Ledgers.swift).
    let ledgers: Mutex<Ledgers>
    /// What other parts of the program serve through this node (the coordinator's).
    let hooks = Mutex(Hooks())
    let isRunning = Atomic<Bool>(false)
    /// Held by a reload, so two never interleave.
    let reloading = AsyncLock()
    /// Key rotations: this node's own, and its peers' (Reload.swift, Redial.swift).
    let rotation = Mutex(Rotation())

    struct Rotation: Sendable {
        /// When each rotating peer was last dialled with its other key.
        var swaps = KeySwap()
        /// The peers this node's own rotation waited for when last said (said again when they change).
        var waitingFor: [String]?
    }
    let eventFolder: EventFolder?
    let intake: Intake
    /// CURVE keys and the checks that bind a message to the node that sent it (Security.swift).
    let security: NodeSecurity
    /// What every emitted event is checked against, whichever door it came through.
    var admission: Admission { running.withLock { $0.admission } }
    /// Counters and histograms, resolved once (NodeMetrics.swift).
    public let metrics: NodeMetrics
    /// The sockets while the node runs, each peer's SUB and the loops reading it (PeerLinks.swift).
    let links = PeerLinks()

    /// Who waits for the refill of a new store to end (the coordinator, before it rebuilds).
    let refillWaiters = Mutex<(done: Bool, list: [UInt64: CheckedContinuation<Void, Never>], next: UInt64)>((false, [:], 0))

    struct PendingEmit: Sendable {
        var type: EventType
        var stream: String
        var payload: JSONValue
        var correlationID: String?
        var target: String?
        var id: String?
        var allowCustomType = false
        var complete: @Sendable (Result<Event, any Error>) -> Void
    }

    /// One event of ``emit(_:)``: what a control request's emit carries (its caller's id makes
    /// emitting it again return the stored event, not a second one).
    public typealias Emission = ControlRequest.EmitItem

    struct Hooks: Sendable {
        /// The coordinator's `gates` and `handover` commands, on a coordinator's node.
        var gates: (@Sendable () async -> ControlReply)?
        var handover: (@Sendable () async -> ControlReply)?
        /// Run after each reload with the new topology (the coordinator's).
        var reload: [@Sendable (Topology) async -> Void] = []
    }

    public init(options: Options) throws {
        guard let spec = options.topology.node(named: options.name) else {
            throw NodeError("node \"\(options.name)\" is not in the topology")
        }
        self.spec = spec
        self.running = Mutex(Running(topology: options.topology, admission: Admission(topology: options.topology, busTypes: Self.busTypes)))
        self.options = options
        self.logger = options.logger
        self.security = try NodeSecurity(topology: options.topology, node: spec, dataDirectory: options.dataDirectory)
        self.store = try Self.openStore(options, spec: spec)
        // The store and the control socket live here: the node's user alone may enter.
        guard chmod(options.dataDirectory, 0o700) == 0 else {
            throw NodeError("cannot make the data folder \(options.dataDirectory) private (chmod 0700): \(String(cString: strerror(errno)))")
        }
        self.writer = store.writer()
        var settings = Context.Settings()
        settings.linger = 1000
        self.context = try Context(settings)
        self.publisher = Publisher(
            lastSeq: try store.maxSeq(origin: spec.name, epoch: store.epoch),
            marks: try store.lastSeqByType(origin: spec.name, epoch: store.epoch))
        self.peers = PeerTable(heartbeatMilliseconds: options.topology.settings.heartbeatMilliseconds)
        var ledgers = Ledgers(decisions: DecisionLedger(topology: options.topology))
        var query = EventQuery()
        query.types = Ledgers.types.map(\.rawValue)
        query.limit = Int.max
        // In store order, as they were taken when they were stored.
        for stored in try store.events(query) {
            guard let event = try? stored.decoded() else { continue }
            _ = ledgers.take(event)
        }
        self.ledgers = Mutex(ledgers)
        self.eventFolder = try options.workspace.map { try EventFolder(workspace: $0) }
        self.intake = Intake(types: Self.subscribedTypes(pool: spec.pool, topology: options.topology), maxHeld: options.maxHeld)
        let metrics = NodeMetrics(
            node: spec.name, peers: options.topology.peers(of: spec.name).map(\.name),
            factory: options.metricsFactory ?? MetricsSystem.factory)
        self.metrics = metrics
        self.tally = Tally(metrics: metrics)
        writer.observeCommits { events, nanoseconds in
            metrics.commitBatch.record(events)
            metrics.commitDuration.recordNanoseconds(nanoseconds)
        }
        if options.replay {
            try loadCursors()
            let wanted = store.isNew && options.refill && options.catchUp == .beginning && !topology.peers(of: spec.name).isEmpty
            intake.state.withLock { $0.refill.wanted = wanted }
            if wanted { logger.notice("the store \(store.path) is new (epoch \(store.epoch)): refilling it from the peers") }
        }
        if !intake.state.withLock({ $0.refill.wanted }) { refillFinished() }
    }

    /// Opens the store; one that fails its integrity check is moved aside (never deleted)
    /// and a new one made in its place, unless `refill` is off.
    static func openStore(_ options: Options, spec: NodeSpec) throws -> EventStore {
        do {
            return try EventStore(directory: options.dataDirectory, durability: options.durability)
        } catch let error as StoreError where error.damaged {
            guard options.refill else {
                throw NodeError("\(error)\n(--no-refill: the store is left as it is for inspection; move it aside, or start without --no-refill to have it moved aside and refilled from the peers)")
            }
            let stamp = Timestamp.format(Date()).replacingOccurrences(of: ":", with: "")
            let path = options.dataDirectory + "/events.sqlite"
            let aside = path + ".damaged-" + stamp
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
                do {
                    try FileManager.default.moveItem(atPath: path + suffix, toPath: aside + suffix)
                } catch {
                    throw NodeError("\(error)\nand moving it aside to \(aside + suffix) failed: \(error)")
                }
            }
            var logger = options.logger
            logger[metadataKey: "ce.node"] = .string(spec.name)
            logger.error("the store failed to open (\(error.message)): moved it aside to \(aside) and starting a new one, to be refilled from the peers")
            return try EventStore(directory: options.dataDirectory, durability: options.durability)
        }
    }

    /// Calls the waiters of ``waitForRefill()`` (once).
    func refillFinished() {
        let waiters = refillWaiters.withLock { w -> [CheckedContinuation<Void, Never>] in
            defer { w.done = true; w.list = [:] }
            return w.done ? [] : Array(w.list.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once a new store's refill from the peers is done (at once when there is none).
    /// A cancelled waiter returns at once (a node stopped while its refill waits for peers).
    public func waitForRefill() async {
        let id = refillWaiters.withLock { w in
            w.next += 1
            return w.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = refillWaiters.withLock { w -> Bool in
                    if w.done || Task.isCancelled { return true }
                    w.list[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            refillWaiters.withLock { $0.list.removeValue(forKey: id) }?.resume()
        }
    }

    private func folderLoop() async throws {
        if let eventFolder {
            try redeliverToInbox(eventFolder)
            try await eventFolder.run(node: self)
        } else {
            while true { try await Task.sleep(for: .seconds(3600)) }
        }
    }

    /// Events stored but not yet written to the inbox when the node stopped (a crash between
    /// the two): written now. Files are named by origin and sequence, so one written twice
    /// replaces itself unless the agent already took it.
    private func redeliverToInbox(_ folder: EventFolder) throws {
        let last = try store.lastRowID()
        var mark = try store.meta("inbox_rowid").flatMap { Int64($0) } ?? last
        var count = 0
        while mark < last {
            let page = try storedEvents(afterRowID: mark, limit: 1000)
            if page.isEmpty { break }
            for (_, event) in page where event.origin != spec.name {
                folder.deliver(event)
                count += 1
            }
            mark = page.last!.rowID
        }
        try store.setMeta("inbox_rowid", String(last))
        if count > 0 { logger.notice("wrote \(count) stored events to the inbox that a stop had kept from it") }
    }

    func saveInboxMark() {
        guard let mark = fanout.takeInboxMark() else { return }
        do { try store.setMeta("inbox_rowid", String(mark)) } catch { logger.error("cannot save the inbox position: \(error)") }
    }

    // MARK: Endpoints

    /// The local control endpoint (`ce-node emit/ask/status` talk to it).
    public var controlEndpoint: String { NodePaths(dataDirectory: options.dataDirectory).controlEndpoint }
    /// The local feed: every event this node stores, as it is stored (`ce-node tail`).
    public var feedEndpoint: String { NodePaths(dataDirectory: options.dataDirectory).feedEndpoint }

    // MARK: Running

    /// Binds, connects and serves until the task is cancelled; then closes everything cleanly.
    public func run() async throws {
        guard isRunning.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged else { throw NodeError("node \(spec.name) is already running") }
        if !security.isOn {
            logger.warning("security is none in \(topology.file): no CURVE, anyone who reaches this node's ports can publish, ask and claim to be any node")
        }
        let sockets = try openSockets()
        logger.info("node up", metadata: [
            "ce.security": .string(topology.settings.security.rawValue),
            "ce.pool": .string(spec.pool), "ce.pub": .string(spec.bindPubEndpoint), "ce.rep": .string(spec.bindRepEndpoint),
            "ce.peers": .string(topology.peers(of: spec.name).map(\.name).joined(separator: ",")),
            "ce.last_seq": .stringConvertible(publisher.lastSeq),
        ])
        defer { logger.info("node down") }
        do {
            try await withThrowingTaskGroup(of: String.self) { group in
                // The loops that store what they take run on the writer's thread (between its
                // commits), so a batch is stamped or decoded, written, published and handed
                // over with no thread hand-off to the writer and back.
                let writing = writer.executor
                group.addTask(executorPreference: writing) { try await self.emitLoop(pub: sockets.pub, feed: sockets.feed); return "emit" }
                for sub in sockets.subs { startLink(sub, feed: sockets.feed) }
                links.sockets = sockets
                // The answer loop reads its requests on the reactor's thread, which resumes it
                // with no hand-off; each question is answered in a task of the global pool.
                group.addTask(executorPreference: context.taskExecutor) { try await self.answerLoop(router: sockets.router); return "answer" }
                if let replay = sockets.replay {
                    group.addTask { try await self.replayServeLoop(router: replay); return "replay" }
                }
                group.addTask { try await self.controlLoop(control: sockets.control); return "control" }
                group.addTask { try await self.heartbeatLoop(pub: sockets.pub); return "heartbeat" }
                group.addTask { try await self.folderLoop(); return "event folder" }
                group.addTask { await self.replaySupervisor(feed: sockets.feed); return "replay requests" }
                if options.replay { group.addTask { try await self.surveyLoop(); return "survey" } }
                // Loops end by cancellation (the node stops) or by an error (it stops with it);
                // one that returns on its own is a fault worth a log line, not a reason to stop.
                do {
                    while let ended = try await group.next() {
                        if Task.isCancelled { break }
                        logger.error("the \(ended) loop ended unexpectedly; the node keeps running")
                    }
                } catch is CancellationError {
                } catch {
                    logger.error("node loop failed: \(error)")
                    group.cancelAll()
                    finishQueues()
                    stopLinks()
                    throw error
                }
                group.cancelAll()
                finishQueues()
                stopLinks()
                while let _ = try? await group.next() {}
            }
        } catch {
            await shutdown()
            throw error
        }
        await shutdown()
    }

    /// Stops every peer's loops.
    private func stopLinks() {
        for name in links.names { stopLink(name) }
        links.sockets = nil
    }

    /// Ends the loops that wait on a queue rather than on a socket.
    private func finishQueues() {
        publisher.queue.finish()
        intake.replayRequests.finish()
    }

    private func shutdown() async {
        saveInboxMark()
        publisher.queue.finish()
        writer.close()
        fanout.finish()
        await context.shutdown()
        // Every queued write done, then the WAL emptied into the store file.
        await writer.shutdown()
        if !store.checkpointAtStop() {
            logger.notice("the store's WAL could not be emptied into \(store.path) at the stop; its events stay in the WAL beside it and the next start reads them")
        }
        // The ipc socket files say "a node runs here": remove them with the node.
        for endpoint in [controlEndpoint, feedEndpoint] { try? FileManager.default.removeItem(atPath: String(endpoint.dropFirst(6))) }
        isRunning.store(false, ordering: .releasing)
    }

    struct Sockets: Sendable {
        let pub: Socket
        /// One SUB per peer, dialling only that peer: what arrives on it is that peer's.
        let subs: [PeerSubscription]
        let router: Socket
        let control: Socket
        let feed: Socket
        let replay: Socket?
    }

    struct PeerSubscription: Sendable {
        let peer: NodeSpec
        let socket: Socket
        let events: MonitorEvents
    }

    private func openSockets() throws -> Sockets {
        let settings = topology.settings
        // The allow-list runs before any CURVE server binds (without it, any key gets in).
        try security.startAuthenticator(context) { [weak self] denial in self?.refusedHandshake(denial) }
        let pub = try context.socket(.pub)
        try security.serve(pub)
        // A subscriber that falls this far behind loses live events and catches up by
        // replay: the publisher never buffers without bound, and never waits for it.
        try pub.set(.sendHighWaterMark(Self.highWaterMark))
        try bind(pub, spec.bindPubEndpoint, "pub")

        let router = try context.socket(.router)
        try security.serve(router)
        try router.set([.maxMessageSize(Int64(settings.maxMessageBytes))])
        try bind(router, spec.bindRepEndpoint, "rep")
        var replay: Socket?
        if let endpoint = spec.bindReplayEndpoint {
            replay = try context.socket(.router)
            try security.serve(replay!)
            try replay!.set([.maxMessageSize(Int64(settings.maxMessageBytes))])
            try bind(replay!, endpoint, "replay")
        }

        var subs: [PeerSubscription] = []
        for peer in topology.peers(of: spec.name) { subs.append(try openSubscription(to: peer)) }

        try FileManager.default.createDirectory(atPath: options.dataDirectory, withIntermediateDirectories: true)
        let control = try context.socket(.router)
        try bind(control, controlEndpoint, "control")
        let feed = try context.socket(.pub)
        try feed.set(.sendHighWaterMark(100_000))
        try bind(feed, feedEndpoint, "feed")
        // Whoever can connect to the control socket can emit as this node: its owner only
        // (the folder around it is 0700 already, so there is no window before this).
        for endpoint in [controlEndpoint, feedEndpoint] {
            let path = String(endpoint.dropFirst(6))
            guard chmod(path, 0o600) == 0 else {
                throw NodeError("cannot make \(path) private (chmod 0600): \(String(cString: strerror(errno)))")
            }
        }
        return Sockets(pub: pub, subs: subs, router: router, control: control, feed: feed, replay: replay)
    }

    /// A SUB dialling `peer` alone (with CURVE, only its key completes the handshake), with
    /// this node's subscriptions.
    func openSubscription(to peer: NodeSpec) throws -> PeerSubscription {
        let settings = topology.settings
        let sub = try context.socket(.sub)
        try security.dial(sub, to: peer)
        try sub.set([
            .maxMessageSize(Self.receiveCeiling(settings)), .receiveHighWaterMark(Self.highWaterMark),
            .reconnectInterval(milliseconds: 100), .reconnectIntervalMax(milliseconds: 2000),
            .heartbeatInterval(milliseconds: settings.heartbeatMilliseconds),
            .heartbeatTimeout(milliseconds: settings.heartbeatMilliseconds * 3),
        ])
        for prefix in subscriptionPrefixes { try sub.set(.subscribe(prefix)) }
        let events = try sub.monitor(Redialer.watched)
        try sub.connect(peer.pubEndpoint)
        links.opened(peer.name, sub)
        return PeerSubscription(peer: peer, socket: sub, events: events)
    }

    /// Starts the loops that read a peer's SUB: receiving (on the writer's thread, as the
    /// emit loop) and re-dialling. They run until ``stopLink(_:)`` or the node stops.
    func startLink(_ sub: PeerSubscription, feed: Socket) {
        let name = sub.peer.name
        let receive = Task(executorPreference: writer.executor) { [self] in
            do {
                try await receiveLoop(sub: sub.socket, from: name, feed: feed)
            } catch {
                if !Task.isCancelled && isRunning.load(ordering: .acquiring) { logger.error("receiving from \(name) failed: \(error)") }
            }
        }
        let redial = Task { [self] in _ = try? await redialLoop(sub: sub.socket, events: sub.events) }
        links.started(name, PeerLinks.Link(socket: sub.socket, tasks: [receive, redial]))
    }

    /// Dials a peer again on a new SUB (with the key ``NodeSecurity/serverKey(of:)`` says now).
    func relink(_ name: String) {
        guard let peer = topology.node(named: name), let feed = links.sockets?.feed else { return }
        stopLink(name)
        do { startLink(try openSubscription(to: peer), feed: feed) } catch { logger.error("cannot dial \(name) again: \(error)") }
    }

    /// Stops reading a peer and closes its SUB (a reload removed it, or the node stops).
    func stopLink(_ name: String) {
        guard let link = links.remove(name) else { return }
        for task in link.tasks { task.cancel() }
        link.socket.close()
    }

    /// Messages queued per peer connection (each way) before live events are dropped.
    static let highWaterMark = 20_000

    private func bind(_ socket: Socket, _ endpoint: String, _ role: String) throws {
        if endpoint.hasPrefix("ipc://") {
            let path = String(endpoint.dropFirst(6))
            guard path.utf8.count < 108 else {
                throw NodeError("\(role) endpoint path is \(path.utf8.count) bytes, longer than the 107 an ipc:// socket allows: \(path); use a shorter data folder")
            }
            // A socket file left by a node that was killed: nobody listens there any more.
            try? FileManager.default.removeItem(atPath: path)
        }
        do {
            try socket.bind(endpoint)
        } catch {
            throw NodeError("cannot bind the \(role) endpoint of \(spec.name): \(error)")
        }
    }

    /// The SUB prefixes: `<type>/` per subscribed type (all types: the empty prefix), and heartbeats.
    var subscriptionPrefixes: [[UInt8]] {
        guard let types = Self.subscribedTypes(pool: spec.pool, topology: topology) else { return [[]] }
        var prefixes = types.map { Topic.subscriptionPrefix(for: $0) }
        prefixes.append(Self.heartbeatPrefix)
        return prefixes
    }

    static let heartbeatPrefix = Array("_hb/".utf8)

    /// Types the bus itself emits, admitted like the catalog's.
    public static let busTypes: [EventType] = [
        .gatePassed, .gateTimedOut, .gateRejected, .conflictResolved, .conflictClosed, .poolUp, .poolDown, .eventSkipped,
        .coordinatorActive,
    ]

    /// What libzmq lets in on the sockets that bring peers' events (live and replayed): more
    /// than this node's own limit, so an authenticated peer's event that is too large here is
    /// received and skipped with a record of the hole (Intake), instead of the connection
    /// dropping on it again and again and the line stalling behind it.
    static func receiveCeiling(_ settings: TopologySettings) -> Int64 {
        Int64(max(settings.maxMessageBytes, 64 << 20))
    }

    /// The types a pool's nodes subscribe to (nil: all): the topology's list, plus what the
    /// coordinator decides, which concerns every pool.
    public static func subscribedTypes(pool: String, topology: Topology) -> [EventType]? {
        guard let types = topology.subscriptions(forPool: pool) else { return nil }
        // Every decision of the coordinator goes to every node: pools act on them, and a
        // coordinator that loses its store is rebuilt from any pool's copies.
        return types + DecisionLedger.types.filter { !types.contains($0) }
    }

    // MARK: Emitting

    /// Emits an event from this node's pool: it is stored durably here first, then published.
    /// Returns the event as stamped (id, origin, seq, timestamp).
    public func emit(
        _ type: EventType, payload: JSONValue = .null, stream: String? = nil,
        correlationID: String? = nil, target: String? = nil, id: String? = nil, allowCustomType: Bool = false
    ) async throws -> Event {
        let start = ContinuousClock.now
        defer { NodeMetrics.record(metrics.emitDuration, since: start) }
        return try await withCheckedThrowingContinuation { continuation in
            let pending = PendingEmit(
                type: type, stream: stream ?? spec.pool, payload: payload,
                correlationID: correlationID, target: target, id: id, allowCustomType: allowCustomType,
                complete: { continuation.resume(with: $0) })
            if !publisher.queue.put(pending) {
                continuation.resume(throwing: NodeError("node \(spec.name) is not running"))
            }
        }
    }

    /// Emits several events in this order, stored together (one transaction when the
    /// writer is idle); returns them as stamped. The first failure is thrown after all finish.
    public func emit(_ emissions: [Emission]) async throws -> [Event] {
        var events: [Event] = []
        events.reserveCapacity(emissions.count)
        for result in await emitEach(emissions) { events.append(try result.get()) }
        return events
    }

    /// Emits several events in this order, stored together, and returns each one's outcome
    /// (an emit refused for its own reason, a repeated id of another origin's event, does
    /// not fail the others).
    func emitEach(_ emissions: [Emission]) async -> [Result<Event, any Error>] {
        if emissions.isEmpty { return [] }
        let start = ContinuousClock.now
        defer { NodeMetrics.record(metrics.emitDuration, since: start) }
        final class Results: Sendable {
            let state: Mutex<(results: [Result<Event, any Error>?], left: Int)>
            init(_ count: Int) { state = Mutex((Array(repeating: nil, count: count), count)) }
        }
        let results = Results(emissions.count)
        return await withCheckedContinuation { (continuation: CheckedContinuation<[Result<Event, any Error>], Never>) in
            // By index: enumerating would copy each emission whole before its fields are copied.
            let pendings = emissions.indices.map { index in
                PendingEmit(
                    type: emissions[index].type, stream: emissions[index].stream ?? spec.pool, payload: emissions[index].payload,
                    correlationID: emissions[index].correlationID, target: emissions[index].target, id: emissions[index].id,
                    allowCustomType: emissions[index].allowCustomType,
                    complete: { result in
                        let done = results.state.withLock { s -> [Result<Event, any Error>?]? in
                            s.results[index] = result
                            s.left -= 1
                            guard s.left == 0 else { return nil }
                            defer { s.results = [] }
                            return s.results
                        }
                        guard let done else { return }
                        continuation.resume(returning: done.map { $0! })
                    })
            }
            // All at once: the emit loop takes them in one batch (one transaction when the
            // writer is idle), not the first alone and the rest after it.
            if !publisher.queue.put(contentsOf: pendings) {
                for pending in pendings { pending.complete(.failure(NodeError("node \(spec.name) is not running"))) }
            }
        }
    }

    // MARK: Receiving

    /// Receives what one peer publishes (its SUB dials that peer alone).
    private func receiveLoop(sub: Socket, from peer: String, feed: Socket) async throws {
        while true {
            let batch = try await sub.receiveBatch()
            try await takeLive(batch, from: peer, feed: feed)
        }
    }

    /// libzmq does not reconnect after a protocol error (an oversized or malformed frame from
    /// a peer): a peer connection that stays down is dialled again, so one bad message never
    /// cuts a node off from a peer for good.
    private func redialLoop(sub: Socket, events: MonitorEvents) async throws {
        try await redial(sub: sub, events: events)  // Redial.swift: once per endpoint, backing off
    }

    func reject(_ reason: String, _ kind: RejectReason) {
        count(.rejected(kind))
        logger.warning("rejected a message: \(reason)")
    }

    // MARK: Listening in process

    /// Every event stored here from now on (emitted here or received), in the order stored.
    /// A listener that falls more than `buffer` events behind loses the oldest (counted).
    public func events(buffer: Int = 100_000) -> AsyncStream<Event> { fanout.events(buffer: buffer) }

    /// A signal after events were stored (at most one waits; none is lost for a reader that
    /// reads the store by rowid after each).
    public func storedSignal() -> AsyncStream<Void> { fanout.storedSignal() }

    /// Hands a stored batch to the listeners, and one signal for the batch.
    /// Takes the coordinator decisions among newly stored events into the ledger, in store
    /// order, and returns those to hand over: a decision fenced by a newer term, or one whose
    /// gate round or conflict level was decided already, stays in the store (the history
    /// keeps it) but reaches no one here.
    func takeDecisions(_ held: [Intake.Held]) -> [Intake.Held] {
        guard held.indices.contains(where: { Ledgers.decisionTypes.contains(held[$0].event.type) }) else { return held }
        var dropped: [(Event, String)] = []
        let kept = ledgers.withLock { l in
            held.filter { h in
                guard Ledgers.decisionTypes.contains(h.event.type), case .drop(let why) = l.decisions.take(h.event) else { return true }
                dropped.append((h.event, why))
                return false
            }
        }
        for (event, why) in dropped {
            count(.decisionDropped)
            logger.notice("not handing over \(event.origin)'s \(event.type) \(event.id): \(why)")
        }
        // The coordinator reads every stored decision (dropped ones too) from the store.
        if kept.isEmpty && !dropped.isEmpty { fanout.signal() }
        return kept
    }

    /// `mayHoldConflicts`: false when the caller knows none of the events is of a type the
    /// conflict ledger reads.
    func broadcast(_ events: [Event], mayHoldConflicts: Bool = true) {
        guard !events.isEmpty else { return }
        // By index: iterating would copy every event (a retain and a release per string).
        if mayHoldConflicts, events.indices.contains(where: { Ledgers.conflictTypes.contains(events[$0].type) }) {
            ledgers.withLock { l in for i in events.indices where Ledgers.conflictTypes.contains(events[i].type) { l.conflicts.take(events[i]) } }
        }
        let drops = fanout.hand(events)
        if drops > 0 {
            count(.listenerDrops(drops))
        }
    }

    // MARK: Status

    public var counters: Counters { tally.snapshot }

    /// When each peer was last heard (heartbeats), by node name.
    public var peerHeartbeats: [String: Date] { peers.all.mapValues(\.lastSeen) }

    /// Serves the control endpoint's `gates` command (the coordinator's service does).
    public func provideGates(_ provider: @escaping @Sendable () async -> ControlReply) {
        hooks.withLock { $0.gates = provider }
    }

    /// Serves the `handover` command (the coordinator service, on a coordinator's node).
    public func provideHandover(_ provider: @escaping @Sendable () async -> ControlReply) {
        hooks.withLock { $0.handover = provider }
    }

    /// The events in this node's store, in the order stored.
    public func storedEvents(afterRowID: Int64, limit: Int, types: [String]? = nil) throws -> [(rowID: Int64, event: Event)] {
        var query = EventQuery()
        query.afterRowID = afterRowID
        query.limit = limit
        query.types = types
        return try store.events(query).compactMap { stored in (try? stored.decoded()).map { (stored.rowID, $0) } }
    }
    public var lastSequence: UInt64 { publisher.lastSeq }
}

/// A node-level error with a sentence a person can act on.
public struct NodeError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

