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
        /// peer is away stay missed). For measuring what the guarantees cost.
        public var replay = true
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
    let emits = BatchQueue<PendingEmit>()
    /// Held while this node's own events or a heartbeat go out on its PUB socket: a heartbeat
    /// reads the last sequence and is sent with no event published in between, so it never
    /// tells a subscriber a sequence older than events it has already sent.
    let publishing = AsyncLock()
    /// Held by a reload, so two never interleave.
    let reloading = AsyncLock()
    /// When each rotating peer was last dialled with its other key (Redial.swift).
    let keySwaps = Mutex(KeySwap())
    /// The peers a key rotation waited for when last said (said again when they change).
    let keyRotation = Mutex<[String]?>(nil)
    let state: Mutex<State>
    let eventFolder: EventFolder?
    /// Questions answered through the control endpoint (AgentControl.swift).
    let answerDesk = AnswerDesk()
    let intake: Intake
    /// CURVE keys and the checks that bind a message to the node that sent it (Security.swift).
    let security: NodeSecurity
    /// Which node of a pool the next `ask` tries first.
    let nextResponder = Atomic<UInt64>(0)
    let askSockets = KeptSockets(limit: 8)
    /// What every emitted event is checked against, whichever door it came through.
    var admission: Admission { running.withLock { $0.admission } }
    /// Counters and histograms, resolved once (NodeMetrics.swift).
    public let metrics: NodeMetrics
    /// When this node was made (peers are not taken for down before a few heartbeats passed).
    let startedAt = ContinuousClock.now
    /// Each peer's SUB and the loops reading it, by peer name.
    let links = Mutex<[String: PeerLink]>([:])
    /// The sockets while the node runs (a reload adds and removes peers' SUBs, and rebinds).
    let live = Mutex<Sockets?>(nil)

    struct PeerLink: Sendable {
        let socket: Socket
        let tasks: [Task<Void, Never>]
    }

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

    struct Peer: Sendable {
        var pool: String
        var lastSeen: Date
        var epoch: String
        var lastSeq: UInt64
        /// What its heartbeat said of the coordinators: the highest term it knows, the
        /// coordinators it hears, and (a coordinator's) whether it is the active one.
        var term = 0
        var hears: Set<String> = []
        var role: String? = nil
        /// The digest of the topology it runs (``Topology/digest``); nil from a node that says none.
        var topology: String? = nil
    }

    struct State: Sendable {
        var lastSeq: UInt64
        /// This node's last sequence per event type: sent beside each event and heartbeat,
        /// so a subscriber can tell whether it missed something it subscribes to.
        var marks: [String: UInt64]
        var counters = Counters()
        var peers: [String: Peer] = [:]
        var listeners: [UInt64: AsyncStream<Event>.Continuation] = [:]
        /// Told (without the events) that something was stored: readers that take what is
        /// new from the store themselves.
        var signals: [UInt64: AsyncStream<Void>.Continuation] = [:]
        var nextListener: UInt64 = 0
        var questionHandler: (@Sendable (Question) async throws -> JSONValue)?
        var inFlight: [String: [Frame]] = [:]
        var running = false
        /// The store's last rowid once everything received up to it was written to the
        /// event folder's inbox; saved (meta `inbox_rowid`) with the next heartbeat.
        var inboxMark: Int64?
        /// The cluster's conflicts as the stored events tell them: a resolve is checked against it.
        var conflicts = ConflictLedger()
        /// Which coordinator decisions this node takes, and who the active coordinator is.
        var decisions: DecisionLedger
        /// The coordinator's `gates` and `handover` commands, on a coordinator's node.
        var gatesProvider: (@Sendable () async -> ControlReply)?
        var handoverProvider: (@Sendable () async -> ControlReply)?
        /// Run after each reload with the new topology (the coordinator's).
        var reloadHandlers: [@Sendable (Topology) async -> Void] = []
    }

    /// What a node has done since it started.
    public struct Counters: Sendable, Equatable {
        public var emitted = 0
        public var received = 0
        public var duplicates = 0
        public var rejected = 0
        public var questionsAnswered = 0
        public var repeatedQuestions = 0
        public var asksSent = 0
        public var asksFailed = 0
        public var listenerDrops = 0
        /// Replays started (a gap, a silent tail, a restart), requests sent, events received
        /// by replay, events served to others by replay, live events dropped behind a gap.
        public var replays = 0
        public var replayRequests = 0
        public var replayedIn = 0
        public var replayedOut = 0
        public var pendingDropped = 0
        /// Times a peer's live events were paused because this node fell too far behind
        /// (it read them by replay until it caught up).
        public var livePauses = 0
        /// Events received that this node could not take (larger than its own limit).
        public var skipped = 0
        /// Messages whose claimed origin (`origin`, `answered_by`, `from_node`) is not the
        /// node whose key sent them; CURVE handshakes the allow-list refused.
        public var forged = 0
        public var handshakesRefused = 0
        /// Coordinator decisions stored but not handed over (fenced by a newer term, or decided already).
        public var decisionsDropped = 0
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
        var state = State(
            lastSeq: try store.maxSeq(origin: spec.name, epoch: store.epoch),
            marks: try store.lastSeqByType(origin: spec.name, epoch: store.epoch),
            decisions: DecisionLedger(topology: options.topology))
        var query = EventQuery()
        query.types = Array(Set(ConflictLedger.types + DecisionLedger.types)).map(\.rawValue)
        query.limit = Int.max
        // In store order, as they were taken when they were stored.
        for stored in try store.events(query) {
            guard let event = try? stored.decoded() else { continue }
            state.conflicts.take(event)
            _ = state.decisions.take(event)
        }
        self.state = Mutex(state)
        self.eventFolder = try options.workspace.map { try EventFolder(workspace: $0) }
        self.intake = Intake(types: Self.subscribedTypes(pool: spec.pool, topology: options.topology), maxHeld: options.maxHeld)
        let metrics = NodeMetrics(
            node: spec.name, peers: options.topology.peers(of: spec.name).map(\.name),
            factory: options.metricsFactory ?? MetricsSystem.factory)
        self.metrics = metrics
        writer.observeCommits { events, nanoseconds in
            metrics.commitBatch.record(events)
            metrics.commitDuration.recordNanoseconds(nanoseconds)
        }
        if options.replay {
            try loadCursors()
            let wanted = store.isNew && options.refill && options.catchUp == .beginning && !topology.peers(of: spec.name).isEmpty
            intake.refill.withLock { $0.wanted = wanted }
            if wanted { logger.notice("the store \(store.path) is new (epoch \(store.epoch)): refilling it from the peers") }
        }
        if !intake.refill.withLock({ $0.wanted }) { refillFinished() }
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
        guard let mark = state.withLock({ s in defer { s.inboxMark = nil }; return s.inboxMark }) else { return }
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
        let alreadyRunning = state.withLock { s -> Bool in
            defer { s.running = true }
            return s.running
        }
        guard !alreadyRunning else { throw NodeError("node \(spec.name) is already running") }
        if !security.isOn {
            logger.warning("security is none in \(topology.file): no CURVE, anyone who reaches this node's ports can publish, ask and claim to be any node")
        }
        let sockets = try openSockets()
        logger.info("node up", metadata: [
            "ce.security": .string(topology.settings.security.rawValue),
            "ce.pool": .string(spec.pool), "ce.pub": .string(spec.bindPubEndpoint), "ce.rep": .string(spec.bindRepEndpoint),
            "ce.peers": .string(topology.peers(of: spec.name).map(\.name).joined(separator: ",")),
            "ce.last_seq": .stringConvertible(state.withLock { $0.lastSeq }),
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
                live.withLock { $0 = sockets }
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
        for name in links.withLock({ Array($0.keys) }) { stopLink(name) }
        live.withLock { $0 = nil }
    }

    /// Ends the loops that wait on a queue rather than on a socket.
    private func finishQueues() {
        emits.finish()
        intake.replayRequests.finish()
    }

    private func shutdown() async {
        saveInboxMark()
        emits.finish()
        writer.close()
        // Finish outside the lock: finishing runs the stream's onTermination, which locks too.
        let (listeners, signals) = state.withLock { s in
            defer {
                s.listeners.removeAll()
                s.signals.removeAll()
            }
            return (Array(s.listeners.values), Array(s.signals.values))
        }
        for listener in listeners { listener.finish() }
        for signal in signals { signal.finish() }
        await context.shutdown()
        // Every queued write done, then the WAL emptied into the store file.
        await writer.shutdown()
        if !store.checkpointAtStop() {
            logger.notice("the store's WAL could not be emptied into \(store.path) at the stop; its events stay in the WAL beside it and the next start reads them")
        }
        // The ipc socket files say "a node runs here": remove them with the node.
        for endpoint in [controlEndpoint, feedEndpoint] { try? FileManager.default.removeItem(atPath: String(endpoint.dropFirst(6))) }
        state.withLock { $0.running = false }
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
        intake.subscriptions.withLock { $0[peer.name] = sub }
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
                if !Task.isCancelled && state.withLock({ $0.running }) { logger.error("receiving from \(name) failed: \(error)") }
            }
        }
        let redial = Task { [self] in _ = try? await redialLoop(sub: sub.socket, events: sub.events) }
        links.withLock { $0[name] = PeerLink(socket: sub.socket, tasks: [receive, redial]) }
    }

    /// Dials a peer again on a new SUB (with the key ``NodeSecurity/serverKey(of:)`` says now).
    func relink(_ name: String) {
        guard let peer = topology.node(named: name), let feed = live.withLock({ $0?.feed }) else { return }
        stopLink(name)
        do { startLink(try openSubscription(to: peer), feed: feed) } catch { logger.error("cannot dial \(name) again: \(error)") }
    }

    /// Stops reading a peer and closes its SUB (a reload removed it, or the node stops).
    func stopLink(_ name: String) {
        guard let link = links.withLock({ $0.removeValue(forKey: name) }) else { return }
        for task in link.tasks { task.cancel() }
        link.socket.close()
        intake.subscriptions.withLock { _ = $0.removeValue(forKey: name) }
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
            if !emits.put(pending) {
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
            let pendings = emissions.enumerated().map { index, emission in
                PendingEmit(
                    type: emission.type, stream: emission.stream ?? spec.pool, payload: emission.payload,
                    correlationID: emission.correlationID, target: emission.target, id: emission.id,
                    allowCustomType: emission.allowCustomType,
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
            if !emits.put(contentsOf: pendings) {
                for pending in pendings { pending.complete(.failure(NodeError("node \(spec.name) is not running"))) }
            }
        }
    }

    /// Takes every emit queued so far, stamps and stores them in one transaction, publishes
    /// them in sequence order, then answers the callers.
    private func emitLoop(pub: Socket, feed: Socket) async throws {
        while let batch = await emits.take() {
            var events: [Event] = []
            var records: [StoredEvent] = []
            var waiting: [@Sendable (Result<Event, any Error>) -> Void] = []
            var (first, marks) = state.withLock { ($0.lastSeq + 1, Marks.Writer($0.marks)) }
            var markFrames: [[UInt8]] = []
            /// Ids given in this batch, and emits that repeat one of them.
            var batchIDs: [String: Int] = [:]
            var repeats: [(index: Int, complete: @Sendable (Result<Event, any Error>) -> Void)] = []
            var (ledger, decisions) = state.withLock { ($0.conflicts, $0.decisions) }
            // Read once a batch: a reload may change it between batches, never within one.
            let admission = self.admission
            let now = Date()
            for var pending in batch {
                // An event emitted again with the id it already has (an event file found again
                // after a crash, a caller retrying an emit it got no answer for) is not stored or
                // sent twice: the caller gets the event as stored.
                if let id = pending.id {
                    if let index = batchIDs[id] {
                        repeats.append((index, pending.complete))
                        continue
                    }
                    if let stored = try? store.envelope(id: id), let event = try? EnvelopeCodec.decode(stored) {
                        if event.origin == spec.name {
                            pending.complete(.success(event))
                        } else {
                            pending.complete(.failure(NodeError("event id \(id) is taken by an event of \(event.origin)")))
                        }
                        continue
                    }
                    batchIDs[id] = events.count
                }
                let event: Event
                let envelope: [UInt8]
                do {
                    try admit(&pending, ledger: ledger, admission: admission)
                    try admitDecision(pending, decisions: decisions)
                    event = Event(
                        id: pending.id ?? EventID.make(now: now), origin: spec.name, epoch: store.epoch, seq: first, stream: pending.stream,
                        type: pending.type, timestamp: now, payload: pending.payload,
                        correlationID: pending.correlationID, target: pending.target)
                    envelope = EnvelopeCodec.encode(event)
                    try admission.check(envelopeBytes: envelope.count)
                } catch {
                    if let id = pending.id { batchIDs.removeValue(forKey: id) }
                    pending.complete(.failure(error))
                    continue
                }
                ledger.take(event)
                _ = decisions.take(event)
                first += 1
                if options.replay { markFrames.append(marks.bytes()) }
                marks.advance(type: event.type.rawValue, seq: event.seq)
                events.append(event)
                records.append(StoredEvent(event: event, envelope: envelope, receivedAt: now))
                waiting.append(pending.complete)
            }
            if events.isEmpty { continue }
            do {
                _ = try await writer.append(records)
            } catch {
                logger.error("store refused \(events.count) events: \(error)")
                for c in waiting { c(.failure(error)) }
                for r in repeats { r.complete(.failure(error)) }
                continue
            }
            count(.emitted(events.count))
            metrics.stored(events.count, from: spec.name)
            var wire: [Message] = []
            var local: [Message] = []
            wire.reserveCapacity(events.count)
            local.reserveCapacity(events.count)
            // By index: iterating the arrays would copy every event and record (a retain and
            // a release for each of their strings) to read three fields.
            for index in events.indices {
                let topic = Frame(Topic.bytes(type: events[index].type, stream: events[index].stream))
                let envelope = Frame(records[index].envelope)
                wire.append(Message(options.replay ? [topic, envelope, Frame(markFrames[index])] : [topic, envelope]))
                local.append(Message([topic, envelope]))
            }
            // The committed batch goes out in one go, in sequence order.
            try? await publishing.run {
                state.withLock { s in
                    s.lastSeq = events.last!.seq
                    s.marks = marks.marks
                }
                try? await pub.send(batch: wire)
            }
            try? await feed.send(batch: local)
            if events.contains(where: { DecisionLedger.types.contains($0.type) }) {
                state.withLock { s in for e in events where DecisionLedger.types.contains(e.type) { _ = s.decisions.take(e) } }
            }
            broadcast(events)
            for (event, c) in zip(events, waiting) { c(.success(event)) }
            for r in repeats { r.complete(.success(events[r.index])) }
        }
    }

    /// The checks every emit passes, whichever door it came through (the envelope's size is
    /// checked once it is encoded). A resolve is checked against the conflicts as stored
    /// here and gets `resolved_by` set to who resolved.
    /// A coordinator decision is emitted only by a coordinator, in the current term, and once
    /// per gate round or conflict level; a claim of the active role only for a newer term.
    private func admitDecision(_ pending: PendingEmit, decisions: DecisionLedger) throws {
        guard DecisionLedger.types.contains(pending.type) else { return }
        let coordinators = topology.coordinators.map(\.name)
        guard spec.isCoordinator else {
            throw NodeError("\(pending.type) is a coordinator's decision: only \(coordinators.isEmpty ? "a coordinator" : coordinators.joined(separator: " or ")) emits it")
        }
        let term = max(0, pending.payload["term"]?.intValue ?? 0)
        if pending.type == .coordinatorActive {
            guard term > decisions.term else {
                throw NodeError("coordinator_active for term \(term), but term \(decisions.term) (\(decisions.active ?? "?")) has begun already")
            }
            return
        }
        guard term >= decisions.term else {
            throw NodeError("\(pending.type) of term \(term) is fenced: \(decisions.active ?? "?") is the active coordinator in term \(decisions.term)")
        }
        if let key = DecisionLedger.key(pending.type, pending.payload, pending.correlationID), decisions.taken.contains(key) {
            throw NodeError("\(key) was decided already")
        }
    }

    private func admit(_ pending: inout PendingEmit, ledger: ConflictLedger, admission: Admission) throws {
        guard Name.isValid(pending.stream) else {
            throw NodeError("stream \"\(pending.stream)\" is not a valid name ([A-Za-z0-9_.-], 1-64 bytes)")
        }
        try admission.check(type: pending.type, allowCustom: pending.allowCustomType)
        try admission.check(target: pending.target)
        try admission.check(correlationID: pending.correlationID)
        if pending.type == .conflictResolved {
            guard case .object(var payload) = pending.payload, let id = payload["conflict_id"]?.stringValue else {
                throw NodeError("conflict_resolved needs a payload with \"conflict_id\" and \"decision\"")
            }
            if let refusal = ledger.refusal(resolving: id) { throw NodeError("cannot resolve: \(refusal)") }
            if payload["resolved_by"]?.stringValue != "human" { payload["resolved_by"] = .string(pending.stream) }
            pending.payload = .object(payload)
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

    func heard(heartbeat message: Message, from sender: String) -> (origin: String, epoch: String, seq: UInt64, marks: [String: UInt64]?)? {
        guard let body = try? JSONValue(parsing: message[1].bytes), let origin = body["origin"]?.stringValue else {
            reject("malformed heartbeat", .heartbeat)
            return nil
        }
        guard origin == sender else {
            forged("heartbeat", claimed: origin, sender: sender)
            return nil
        }
        let epoch = body["epoch"]?.stringValue ?? ""
        guard epoch.isEmpty || Epoch.isValid(epoch) else {
            reject("heartbeat with a malformed epoch", .heartbeat)
            return nil
        }
        var peer = Peer(
            pool: body["pool"]?.stringValue ?? "?", lastSeen: Date(), epoch: epoch,
            lastSeq: UInt64(max(0, body["seq"]?.intValue ?? 0)))
        peer.term = max(0, body["term"]?.intValue ?? 0)
        peer.hears = Set((body["coordinators"]?.arrayValue ?? []).compactMap(\.stringValue))
        peer.role = body["role"]?.stringValue
        peer.topology = body["topology"]?.stringValue
        state.withLock { s in
            s.peers[origin] = peer
            // A coordinator says it is active in a newer term: believed at once (its own word).
            if peer.role == "active" { s.decisions.heard(active: origin, term: peer.term) }
        }
        let marks = body["marks"].flatMap(Marks.from)
        return (origin, epoch, peer.lastSeq, marks)
    }

    private func heartbeatLoop(pub: Socket) async throws {
        let interval = Duration.milliseconds(topology.settings.heartbeatMilliseconds)
        let topic = Frame(Array("_hb/\(spec.name)".utf8))
        var watch = PeerWatch()
        while true {
            saveInboxMark()
            _ = try? await reloading.run { await rotateKeyIfReady() }
            for line in watch.check(self) {
                if line.warning { logger.warning("\(line.text)") } else { logger.notice("\(line.text)") }
            }
            try await publishing.run {
                let (seq, marks, coordination) = state.withLock { ($0.lastSeq, $0.marks, coordinatorWord(in: $0)) }
                var body: [String: JSONValue] = [
                    "origin": .string(spec.name), "pool": .string(spec.pool), "epoch": .string(store.epoch), "seq": .number(Double(seq)),
                    "marks": Marks.value(marks),
                    "timestamp": .string(Timestamp.format(Date())),
                    "topology": .string(topology.digest),
                ]
                body.merge(coordination) { a, _ in a }
                try await pub.send(Message([topic, Frame(JSONValue.object(body).serialized())]))
            }
            try await Task.sleep(for: interval)
        }
    }

    /// What this node's heartbeat says of the coordinators: the highest term it knows, the
    /// coordinators it heard within the failover time (its vote), and on a coordinator
    /// whether it is the active one.
    private func coordinatorWord(in s: State) -> [String: JSONValue] {
        guard !topology.coordinators.isEmpty else { return [:] }
        let failover = topology.settings.coordinatorFailoverMilliseconds
        let window = Double(failover > 0 ? failover : topology.settings.heartbeatMilliseconds * 3) / 1000
        let now = Date()
        let heard = topology.coordinators.map(\.name).filter { name in
            name == spec.name || s.peers[name].map { now.timeIntervalSince($0.lastSeen) < window } ?? false
        }
        var word: [String: JSONValue] = ["term": .number(Double(s.decisions.term)), "coordinators": .array(heard.map(JSONValue.string))]
        if spec.isCoordinator { word["role"] = .string(s.decisions.active == spec.name ? "active" : "standby") }
        return word
    }

    // MARK: Listening in process

    /// Every event stored here from now on (emitted here or received), in the order stored.
    /// A listener that falls more than `buffer` events behind loses the oldest (counted).
    public func events(buffer: Int = 100_000) -> AsyncStream<Event> {
        let (stream, continuation) = AsyncStream<Event>.makeStream(bufferingPolicy: .bufferingOldest(buffer))
        register(continuation, in: \.listeners)
        return stream
    }

    /// Keeps `continuation` in `list` until its stream ends.
    private func register<T: Sendable>(_ continuation: AsyncStream<T>.Continuation,
                                       in list: WritableKeyPath<State, [UInt64: AsyncStream<T>.Continuation]> & Sendable) {
        let id = state.withLock { s -> UInt64 in
            s.nextListener += 1
            s[keyPath: list][s.nextListener] = continuation
            return s.nextListener
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0[keyPath: list].removeValue(forKey: id) }
        }
    }

    /// A signal after events were stored (at most one waits; none is lost for a reader that
    /// reads the store by rowid after each).
    public func storedSignal() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        register(continuation, in: \.signals)
        return stream
    }

    /// Hands a stored batch to the listeners, and one signal for the batch.
    /// Takes the coordinator decisions among newly stored events into the ledger, in store
    /// order, and returns those to hand over: a decision fenced by a newer term, or one whose
    /// gate round or conflict level was decided already, stays in the store (the history
    /// keeps it) but reaches no one here.
    func takeDecisions(_ held: [Intake.Held]) -> [Intake.Held] {
        guard held.contains(where: { DecisionLedger.types.contains($0.event.type) }) else { return held }
        var dropped: [(Event, String)] = []
        let kept = state.withLock { s in
            held.filter { h in
                guard DecisionLedger.types.contains(h.event.type), case .drop(let why) = s.decisions.take(h.event) else { return true }
                dropped.append((h.event, why))
                count(.decisionDropped, in: &s)
                return false
            }
        }
        for (event, why) in dropped { logger.notice("not handing over \(event.origin)'s \(event.type) \(event.id): \(why)") }
        // The coordinator reads every stored decision (dropped ones too) from the store.
        if kept.isEmpty && !dropped.isEmpty { for signal in state.withLock({ Array($0.signals.values) }) { signal.yield(()) } }
        return kept
    }

    func broadcast(_ events: [Event]) {
        guard !events.isEmpty else { return }
        let (listeners, signals) = state.withLock { s in
            // By index: iterating would copy every event (a retain and a release per string).
            for i in events.indices where ConflictLedger.types.contains(events[i].type) { s.conflicts.take(events[i]) }
            return (Array(s.listeners.values), Array(s.signals.values))
        }
        for signal in signals { signal.yield(()) }
        var drops = 0
        for listener in listeners {
            for event in events {
                if case .dropped = listener.yield(event) { drops += 1 }
            }
        }
        if drops > 0 {
            count(.listenerDrops(drops))
        }
    }

    // MARK: Status

    public var counters: Counters { state.withLock { $0.counters } }

    /// When each peer was last heard (heartbeats), by node name.
    public var peerHeartbeats: [String: Date] { state.withLock { $0.peers.mapValues(\.lastSeen) } }

    /// Serves the control endpoint's `gates` command (the coordinator's service does).
    public func provideGates(_ provider: @escaping @Sendable () async -> ControlReply) {
        state.withLock { $0.gatesProvider = provider }
    }

    /// Serves the `handover` command (the coordinator service, on a coordinator's node).
    public func provideHandover(_ provider: @escaping @Sendable () async -> ControlReply) {
        state.withLock { $0.handoverProvider = provider }
    }

    /// The events in this node's store, in the order stored.
    public func storedEvents(afterRowID: Int64, limit: Int, types: [String]? = nil) throws -> [(rowID: Int64, event: Event)] {
        var query = EventQuery()
        query.afterRowID = afterRowID
        query.limit = limit
        query.types = types
        return try store.events(query).compactMap { stored in (try? stored.decoded()).map { (stored.rowID, $0) } }
    }
    public var lastSequence: UInt64 { state.withLock { $0.lastSeq } }

    /// The node's state as JSON: peers, subscriptions, counters, endpoints.
    public func status() -> JSONValue {
        let (counters, peers, lastSeq) = state.withLock { ($0.counters, $0.peers, $0.lastSeq) }
        let delivery = intake.state.withLock { $0 }
        let now = Date()
        let staleAfter = Double(topology.settings.heartbeatMilliseconds) * 3 / 1000
        let peerList: [JSONValue] = topology.peers(of: spec.name).map { node in
            let heard = peers[node.name]
            var object: [String: JSONValue] = ["name": .string(node.name), "pool": .string(node.pool), "endpoint": .string(node.pubEndpoint)]
            if let heard {
                let age = now.timeIntervalSince(heard.lastSeen)
                object["topology"] = heard.topology.map(JSONValue.string) ?? .null
                object["last_heard_ms"] = .number((age * 1000).rounded())
                object["last_seq"] = .number(Double(heard.lastSeq))
                object["epoch"] = .string(heard.epoch)
                object["up"] = .bool(age < staleAfter)
            } else {
                object["up"] = false
            }
            if let epoch = delivery.current[node.name], let track = delivery.tracks[Line(node.name, epoch)] {
                object["cursor"] = track.cursor.map { .number(Double($0)) } ?? .null
                object["waiting"] = .number(Double(track.pending.count))
                object["replaying"] = .bool(track.replaying)
            }
            return .object(object)
        }
        // Every line held here (an origin's events in one epoch), and how far the peers that
        // answered the last survey hold it.
        let holders = intake.holders.withLock { $0 }
        var lineList: [JSONValue] = [["origin": .string(spec.name), "epoch": .string(store.epoch), "through": .number(Double(lastSeq)), "current": true]]
        for (line, track) in delivery.tracks.sorted(by: { $0.key < $1.key }) {
            var object: [String: JSONValue] = [
                "origin": .string(line.origin), "epoch": .string(line.epoch), "through": track.cursor.map { .number(Double($0)) } ?? .null,
                "current": .bool(delivery.current[line.origin] == line.epoch), "replaying": .bool(track.replaying),
            ]
            if let byPeer = holders[line] { object["held_by"] = .object(byPeer.mapValues { .number(Double($0)) }) }
            lineList.append(.object(object))
        }
        let r = intake.refill.withLock { $0 }
        let refillStatus: JSONValue = r.wanted ? [
            "done": .bool(r.done), "events": .number(Double(r.events)), "lines": .number(Double(r.lines.count)),
            "peers_answered": .number(Double(r.answered.count)),
        ] : .null
        let subscriptions: JSONValue = topology.subscriptions(forPool: spec.pool).map { .array($0.map { .string($0.rawValue) }) } ?? "all"
        return [
            "node": .string(spec.name), "pool": .string(spec.pool), "epoch": .string(store.epoch), "last_seq": .number(Double(lastSeq)),
            "subscriptions": subscriptions, "peers": .array(peerList), "lines": .array(lineList), "refill": refillStatus,
            "counters": [
                "emitted": .number(Double(counters.emitted)), "received": .number(Double(counters.received)),
                "duplicates": .number(Double(counters.duplicates)), "rejected": .number(Double(counters.rejected)),
                "questions_answered": .number(Double(counters.questionsAnswered)),
                "repeated_questions": .number(Double(counters.repeatedQuestions)),
                "asks_sent": .number(Double(counters.asksSent)), "asks_failed": .number(Double(counters.asksFailed)),
                "listener_drops": .number(Double(counters.listenerDrops)),
                "replays": .number(Double(counters.replays)), "replay_requests": .number(Double(counters.replayRequests)),
                "replayed_in": .number(Double(counters.replayedIn)), "replayed_out": .number(Double(counters.replayedOut)),
                "pending_dropped": .number(Double(counters.pendingDropped)),
                "live_pauses": .number(Double(counters.livePauses)), "skipped": .number(Double(counters.skipped)),
                "forged": .number(Double(counters.forged)), "handshakes_refused": .number(Double(counters.handshakesRefused)),
                "decisions_dropped": .number(Double(counters.decisionsDropped)),
            ],
            "coordinator": coordinatorStatus(),
            "topology": [
                "file": .string(topology.file), "digest": .string(topology.digest),
                "differing": .array(driftingPeers().map(JSONValue.string)),
            ],
            "endpoints": [
                "pub": .string(spec.bindPubEndpoint), "rep": .string(spec.bindRepEndpoint),
                "control": .string(controlEndpoint), "feed": .string(feedEndpoint),
            ],
            "store": .string(NodePaths(dataDirectory: options.dataDirectory).store),
            "index": indexStatus(),
            "security": .string(topology.settings.security.rawValue),
            "key": keyStatus(),
        ]
    }
}

extension Node {
    /// The CURVE key this node uses, the next one the topology names, and whom a rotation
    /// waits for (peers not yet running this topology). Null without CURVE.
    func keyStatus() -> JSONValue {
        guard let inUse = security.keys?.publicKey else { return .null }
        let next = topology.node(named: spec.name)?.nextPublicKey
        let waiting = keyRotation.withLock { $0 }
        return [
            "public_key": .string(inUse), "next_public_key": next.map(JSONValue.string) ?? .null,
            "rotation": next == nil || next == inUse ? .null : .array((waiting ?? []).map(JSONValue.string)),
        ]
    }

    /// Who decides, as this node knows it: the term, the active coordinator, and the last
    /// takeover or handover (when, why). Null without a coordinator section.
    func coordinatorStatus() -> JSONValue {
        guard !topology.coordinators.isEmpty else { return .null }
        let d = state.withLock { $0.decisions }
        return [
            "term": .number(Double(d.term)), "active": d.active.map(JSONValue.string) ?? .null,
            "since": d.lastClaim.map { .string(Timestamp.format($0.at)) } ?? .null,
            "reason": d.lastClaim.map { .string($0.reason) } ?? .null,
            "previous": d.lastClaim?.previous.map(JSONValue.string) ?? .null,
            "standby": topology.standby.map { .string($0.name) } ?? .null,
        ]
    }

    /// The peers whose newest heartbeat names another topology than this node runs.
    public func driftingPeers() -> [String] {
        let mine = topology.digest
        return state.withLock { s in s.peers.filter { $0.value.topology.map { $0 != mine } ?? false }.keys.sorted() }
    }

    /// What a peer's newest heartbeat said of the coordinators, and when it was heard.
    public struct PeerWord: Sendable {
        public var at: Date
        public var term: Int
        /// The coordinators it heard within the failover time.
        public var hears: Set<String>
        /// A coordinator's: "active" or "standby".
        public var role: String?
    }

    /// Every peer's newest heartbeat, by name (a coordinator's election reads them).
    public var peerWords: [String: PeerWord] {
        state.withLock { $0.peers.mapValues { PeerWord(at: $0.lastSeen, term: $0.term, hears: $0.hears, role: $0.role) } }
    }

    /// The coordinators' term and the active one, as this node's ledger says.
    public var coordinatorTerm: (term: Int, active: String?, lastClaim: DecisionLedger.Claim?) {
        state.withLock { ($0.decisions.term, $0.decisions.active, $0.decisions.lastClaim) }
    }

    /// Whether a decision with this key was taken here.
    public func decided(_ key: String) -> Bool { state.withLock { $0.decisions.taken.contains(key) } }

    /// How far this node holds an origin's current line (its last stored sequence there).
    public func held(origin: String) -> (epoch: String, seq: UInt64)? {
        intake.state.withLock { d in
            d.current[origin].flatMap { epoch in d.tracks[Line(origin, epoch)]?.cursor.map { (epoch, $0) } }
        }
    }

    /// How far the store's index file (by type, by stream) has read the event table; queries
    /// read the rest from the event table, so this is about speed, never about answers.
    func indexStatus() -> JSONValue {
        var index: [String: JSONValue] = ["read_up_to": .number(Double(store.indexedUpTo))]
        if let last = try? store.lastRowID() { index["stored_up_to"] = .number(Double(last)) }
        if let failure = store.indexFailure { index["error"] = .string(failure) }
        return .object(index)
    }
}

/// A node-level error with a sentence a person can act on.
public struct NodeError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

