import CECore
import CECoordinator
import Foundation
import Synchronization

/// Runs the coordinator's state machines on a coordinator node: every event the node stores
/// goes in, what they decide is published while this coordinator is the active one. On start
/// the state is rebuilt from the node's store, and a decision the store shows was never
/// published (a crash in between) is published then.
///
/// With a standby in the topology, both coordinators run this: both keep the full state from
/// the stored stream, exactly one publishes. The standby holds what its own state machines
/// decide as pending, drops each when the active coordinator's decision with the same key is
/// stored, and on taking over publishes what is still pending (what was due is done once).
/// Who is active is the node's ``DecisionLedger``'s word (terms); when the standby takes over
/// is the ``Election``'s.
public final class CoordinatorService: Sendable {
    let node: Node
    let state: Mutex<CoordinatorState>
    let role: Mutex<Role>
    /// Who votes changes with a reload.
    let electionBox: Mutex<Election>
    var election: Election { electionBox.withLock { $0 } }
    /// How often deadlines, escalations, liveness and the election are checked.
    public let tickInterval: Duration

    /// This coordinator's part, as of the last check.
    struct Role: Sendable {
        /// The ledger names this coordinator the active one.
        var active = false
        /// Publishing now: active, hearing a majority of the pool nodes, not handing over.
        var deciding = false
        var handingOver = false
        /// Decisions made here and not published: while standby (until the active
        /// coordinator's arrive, or they are too old) or while holding.
        var pending: [Pending] = []
        /// The last takeover or handover this coordinator saw or made.
        var startedAt = Date()
        var becameActive: Date?
    }

    struct Pending: Sendable {
        var emission: Emission
        var key: String?
        var at: Date
        /// Made while this coordinator was active but held (it heard too few pool nodes):
        /// its own decision, published when it may decide again, however late.
        var own: Bool
    }

    public init(node: Node, tickInterval: Duration = .milliseconds(250)) {
        self.node = node
        self.tickInterval = tickInterval
        self.state = Mutex(CoordinatorState(topology: node.topology))
        self.role = Mutex(Role())
        self.electionBox = Mutex(Election(me: node.spec.name, topology: node.topology))
    }

    /// How long a standby's own decision waits for the active coordinator's before it is
    /// taken for a different decision: the failover time and a few heartbeats.
    var shadowWindow: TimeInterval {
        Double(node.topology.settings.coordinatorFailoverMilliseconds + node.topology.settings.heartbeatMilliseconds * 6) / 1000 + 1
    }

    /// Serves until cancelled; run it beside `node.run()`.
    public func run() async throws {
        // What is stored is read from the store by rowid, in store order, so nothing is
        // missed however long the rebuild takes; the signal only says when to look.
        let stored = node.storedSignal()
        let ready = Atomic<Bool>(false)
        node.provideGates { [self] in
            guard ready.load(ordering: .acquiring) else {
                return .failure("the coordinator is rebuilding its state (refilling its store from the pools first); ask again shortly")
            }
            return .gates(self.status())
        }
        node.onReload { [self] topology in
            state.withLock { $0.reconfigure(topology) }
            electionBox.withLock { $0 = Election(me: node.spec.name, topology: topology) }
            // A gate whose pools changed may pass now (the pool that left was the one missing).
            await tick()
        }
        node.provideHandover { [self] in
            guard ready.load(ordering: .acquiring) else { return .failure("the coordinator is rebuilding its state; ask again shortly") }
            return await self.handover()
        }
        // A new store is refilled from the pools first (a coordinator whose disk was lost):
        // its decisions come back with the pools' copies, so none is published twice.
        let refilling = node.intake.state.withLock { $0.refill.wanted }
        if refilling { node.logger.notice("coordinator waits for the refill from the pools before it decides") }
        let started = ContinuousClock.now
        await node.waitForRefill()
        try Task.checkCancellation()
        // Rebuild from the store: every event the state machines act on, with its own time as
        // the clock, so a round opens at its first report's own time. A refilled store holds
        // the events origin by origin: they go in by their time.
        let types = Self.types(node.topology)
        var events: [Event] = []
        var after: Int64 = 0
        while true {
            let page = try node.storedEvents(afterRowID: after, limit: 5000, types: types)
            if page.isEmpty { break }
            after = page.last!.rowID
            events += page.map(\.event)
        }
        if refilling { events.sort { $0.timestamp < $1.timestamp } }
        let coordinators = Set(node.topology.coordinators.map(\.name))
        var rebuilt = CoordinatorState(topology: node.topology)
        var decided: [Emission] = []
        var published = Set<String>()
        for event in events {
            if coordinators.contains(event.origin), let key = DecisionLedger.key(event) { published.insert(key) }
            decided += rebuilt.handle(event, now: event.timestamp)
        }
        let count = events.count
        events = []
        state.withLock { $0 = rebuilt }
        ready.store(true, ordering: .releasing)
        let missed = decided.filter { e in DecisionLedger.key(e.type, e.payload, e.correlationID).map { !published.contains($0) } ?? true }
        if refilling {
            let d = ContinuousClock.now - started
            node.logger.notice("coordinator rebuilt from the pools' copies in \(d): \(rebuilt.gates.specs.count) gates, \(rebuilt.conflicts.open.count) open conflicts")
        }
        if count > 0 {
            node.logger.notice("coordinator state rebuilt from \(count) stored events; \(missed.count) decisions not yet published")
        }
        updateRole()
        await publish(missed)
        /// Handles what was stored after `after`, in store order; returns the last rowid read.
        @Sendable func drain(after start: Int64) async throws -> Int64 {
            var after = start
            while true {
                let page = try node.storedEvents(afterRowID: after, limit: 5000, types: types)
                if page.isEmpty { return after }
                for (rowID, event) in page {
                    after = rowID
                    // A decision stored (this coordinator's or the other's): not made again here.
                    if coordinators.contains(event.origin), let key = DecisionLedger.key(event) {
                        role.withLock { r in r.pending.removeAll { $0.key == key } }
                    }
                    let out = state.withLock { $0.handle(event, now: Date()) }
                    await publish(out)
                }
            }
        }
        // What arrived during the rebuild goes in before the first tick (a deadline that passed
        // meanwhile must not find a report that is already stored missing).
        let cursor = try await drain(after: after)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                var after = cursor
                for await _ in stored { after = try await drain(after: after) }
            }
            group.addTask {
                while true {
                    try await Task.sleep(for: self.tickInterval)
                    await self.tick()
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// One check: the role, a takeover if one is due, then deadlines, escalations and liveness.
    func tick() async {
        let now = Date()
        let heard = node.peerWords
        if let (reason, from) = takeoverDue(heard, now: now) { await claim(from: from, reason: reason) }
        let (deciding, flush) = updateRole()
        let out = state.withLock { s -> [Emission] in
            for (name, word) in heard { s.heard(node: name, at: word.at) }
            return s.tick(now: now, liveness: deciding)
        }
        if !flush.isEmpty {
            node.logger.notice("coordinator publishes \(flush.count) decisions made while it was not deciding")
            await publish(flush)
        }
        await publish(out)
    }

    /// Reads who is active from the ledger and whether this coordinator may decide now; on
    /// becoming able to decide, returns what is pending and still due.
    @discardableResult
    func updateRole() -> (deciding: Bool, flush: [Emission]) {
        let me = node.spec.name
        let (term, active, _) = node.coordinatorTerm
        let heard = node.peerWords
        let now = Date()
        let isActive = active == me
        // A pool node that knows a newer term than this coordinator does: hold until the
        // claim or the new active coordinator's heartbeat arrives here.
        let behind = heard.values.contains { $0.term > term }
        let may = isActive && !behind && election.mayDecide(heard.mapValues { Election.Heard(at: $0.at, hears: $0.hears) }, now: now)
        let window = shadowWindow
        let (changed, wasActive, flush, holding) = role.withLock { r -> (Bool, Bool, [Emission], Bool) in
            let wasActive = r.active
            r.active = isActive
            if isActive && !wasActive { r.becameActive = now }
            let deciding = may && !r.handingOver
            var flush: [Emission] = []
            if deciding && !r.deciding {
                let due = r.pending.filter { $0.own || now.timeIntervalSince($0.at) <= window }
                flush = due.map(\.emission)
                r.pending = []
            } else if !deciding {
                // A standby's own decisions that the active coordinator did not make in time
                // were decided otherwise there: forgotten.
                r.pending.removeAll { !$0.own && now.timeIntervalSince($0.at) > window }
            }
            let changed = deciding != r.deciding
            r.deciding = deciding
            return (changed, wasActive, flush, isActive && !deciding)
        }
        node.metrics.coordinatorTerm.record(term)
        node.metrics.coordinatorActive.record(isActive ? 1 : 0)
        if isActive != wasActive {
            if isActive {
                node.logger.notice("\(me) is the active coordinator in term \(term)")
            } else {
                node.logger.notice("\(me) is the standby: \(active ?? "?") is the active coordinator in term \(term)")
            }
        } else if changed && holding {
            node.logger.warning("\(me) holds its decisions: it hears \(election.present(heard.mapValues { Election.Heard(at: $0.at, hears: $0.hears) }, now: now).count) of \(election.voters.count) pool nodes\(behind ? ", and a pool node knows a newer term" : "")")
        }
        return (role.withLock { $0.deciding }, flush)
    }

    /// The reason and the active coordinator when this standby must take over now.
    func takeoverDue(_ heard: [String: Node.PeerWord], now: Date) -> (String, String)? {
        let (_, active, _) = node.coordinatorTerm
        guard let active, active != node.spec.name else { return nil }
        let since = role.withLock { $0.startedAt }
        let votes = heard.mapValues { Election.Heard(at: $0.at, hears: $0.hears) }
        return election.takeover(from: active, lastHeardActive: heard[active]?.at, since: since, heard: votes, now: now).map { ($0, active) }
    }

    /// Starts a new term with this coordinator active: a `coordinator_active` event whose
    /// fence is the last event of the old active coordinator stored here.
    func claim(from previous: String, reason: String) async {
        let term = node.coordinatorTerm.term + 1
        var payload: [String: JSONValue] = [
            "term": .number(Double(term)), "node": .string(node.spec.name), "previous": .string(previous), "reason": .string(reason),
        ]
        if let held = node.held(origin: previous) {
            payload["fence"] = ["origin": .string(previous), "epoch": .string(held.epoch), "seq": .number(Double(held.seq))]
        } else {
            payload["fence"] = .null
        }
        let outcome = await node.emitEach([Node.Emission(.coordinatorActive, payload: .object(payload))])
        switch outcome.first {
        case .success?:
            node.metrics.takeovers.increment()
            node.logger.warning("\(node.spec.name) takes over as the active coordinator in term \(term): \(reason)")
        case .failure(let error)?:
            node.logger.error("could not take over in term \(term): \(error)")
        case nil:
            break
        }
    }

    /// `handover`: this active coordinator names its standby the active one in a new term,
    /// once it hears the standby; it stops deciding first, so nothing it decides falls after
    /// the handover in its line. Answers once the standby says it is active (or after 10 s).
    func handover() async -> ControlReply {
        let me = node.spec.name
        let (term, active, _) = node.coordinatorTerm
        guard active == me else {
            return .failure("\(me) is not the active coordinator: \(active ?? "none") is, in term \(term); run handover on its host")
        }
        guard let standby = node.topology.coordinators.first(where: { $0.name != me })?.name else {
            return .failure("the topology names no standby coordinator to hand over to (coordinator.standby)")
        }
        guard node.peers.isUp(standby) else {
            return .failure("the standby \(standby) is not heard here (no heartbeat in the last \(String(format: "%.1f", node.peers.staleAfter)) s): handing over to it would leave no coordinator")
        }
        role.withLock { r in
            r.handingOver = true
            r.deciding = false
        }
        defer { role.withLock { $0.handingOver = false } }
        let payload: JSONValue = [
            "term": .number(Double(term + 1)), "node": .string(standby), "previous": .string(me),
            "reason": .string("handover requested on \(me)"), "fence": .null,
        ]
        guard case .success? = await node.emitEach([Node.Emission(.coordinatorActive, payload: payload)]).first else {
            return .failure("could not store the handover event; \(me) stays the active coordinator")
        }
        node.logger.notice("\(me) hands the active role over to \(standby) in term \(term + 1)")
        updateRole()
        let deadline = ContinuousClock.now + .seconds(10)
        var confirmed = false
        while ContinuousClock.now < deadline {
            if let word = node.peerWords[standby], word.role == "active", word.term >= term + 1 {
                confirmed = true
                break
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return .handover(["term": .number(Double(term + 1)), "to": .string(standby), "confirmed": .bool(confirmed)])
    }

    /// The event types the state machines act on (and the coordinators' decisions, to know
    /// which were published): the rest of the store is never read.
    static func types(_ topology: Topology) -> [String] {
        var types: Set<EventType> = [.syncPointReached, .conflictDetected, .conflictResolved]
        types.formUnion(DecisionLedger.types)
        for gate in topology.gates { types.formUnion(gate.requireEvents) }
        return types.map(\.rawValue).sorted()
    }

    /// Gates and conflicts now, as the `gates` control command answers them, with this
    /// coordinator's role.
    public func status(now: Date = Date()) -> JSONValue {
        var object = state.withLock { $0.status(now: now) }.objectValue ?? [:]
        let (term, active, claim) = node.coordinatorTerm
        let r = role.withLock { $0 }
        object["role"] = .string(r.active ? (r.deciding ? "active" : "active, holding") : "standby")
        object["term"] = .number(Double(term))
        object["active"] = active.map(JSONValue.string) ?? .null
        object["pending"] = .number(Double(r.pending.count))
        object["last_takeover"] = claim.map { c in
            [
                "term": .number(Double(c.term)), "at": .string(Timestamp.format(c.at)), "from": c.previous.map(JSONValue.string) ?? .null,
                "to": .string(c.node), "reason": .string(c.reason),
            ]
        } ?? .null
        return .object(object)
    }

    /// Publishes a step's decisions together, in order (one transaction), in this
    /// coordinator's term; while it does not decide they wait as pending.
    private func publish(_ emissions: [Emission]) async {
        guard !emissions.isEmpty else { return }
        let now = Date()
        let (deciding, active) = role.withLock { ($0.deciding, $0.active) }
        guard deciding else {
            role.withLock { r in
                for e in emissions {
                    // Liveness is said again by whoever decides next, from what it hears then.
                    guard e.type != .poolUp && e.type != .poolDown else { continue }
                    let key = DecisionLedger.key(e.type, e.payload, e.correlationID)
                    if let key, node.decided(key) { continue }
                    r.pending.append(Pending(emission: e, key: key, at: now, own: active))
                }
            }
            return
        }
        let term = node.coordinatorTerm.term
        let items = emissions.map { e -> Node.Emission in
            var payload = e.payload.objectValue ?? [:]
            payload["term"] = .number(Double(term))
            return Node.Emission(e.type, payload: .object(payload), correlationID: e.correlationID, target: e.target)
        }
        let outcomes = await node.emitEach(items)
        for (e, outcome) in zip(emissions, outcomes) {
            if case .failure(let error) = outcome { node.logger.notice("coordinator did not publish \(e.type): \(error)") }
        }
    }
}
