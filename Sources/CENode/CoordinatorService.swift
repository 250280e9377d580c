import CECore
import CECoordinator
import Foundation
import Synchronization

/// Runs the coordinator's state machines on a node: every event the node stores goes in,
/// what they decide is emitted. On start the state is rebuilt from the node's store, and a
/// decision the store shows was never published (a crash in between) is published then.
public final class CoordinatorService: Sendable {
    let node: Node
    let state: Mutex<CoordinatorState>
    /// How often deadlines, escalations and liveness are checked.
    public let tickInterval: Duration

    public init(node: Node, tickInterval: Duration = .milliseconds(250)) {
        self.node = node
        self.tickInterval = tickInterval
        self.state = Mutex(CoordinatorState(topology: node.topology))
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
            return .gates(self.state.withLock { $0.status(now: Date()) })
        }
        // A new store is refilled from the pools first (a coordinator whose disk was lost):
        // its decisions come back with the pools' copies, so none is published twice.
        let refilling = node.intake.refill.withLock { $0.wanted }
        if refilling { node.logger.notice("coordinator waits for the refill from the pools before it decides") }
        let started = ContinuousClock.now
        await node.waitForRefill()
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
        var rebuilt = CoordinatorState(topology: node.topology)
        var decided: [Emission] = []
        var published = Set<String>()
        for event in events {
            if event.origin == node.spec.name { published.insert(Self.key(event.type, event.payload, event.correlationID)) }
            decided += rebuilt.handle(event, now: event.timestamp)
        }
        let count = events.count
        events = []
        state.withLock { $0 = rebuilt }
        ready.store(true, ordering: .releasing)
        let missed = decided.filter { !published.contains(Self.key($0.type, $0.payload, $0.correlationID)) }
        if refilling {
            let d = ContinuousClock.now - started
            node.logger.notice("coordinator rebuilt from the pools' copies in \(d): \(rebuilt.gates.specs.count) gates, \(rebuilt.conflicts.open.count) open conflicts")
        }
        if count > 0 {
            node.logger.notice("coordinator state rebuilt from \(count) stored events; publishing \(missed.count) decisions not yet published")
        }
        await publish(missed)
        /// Handles what was stored after `after`, in store order; returns the last rowid read.
        @Sendable func drain(after start: Int64) async throws -> Int64 {
            var after = start
            while true {
                let page = try node.storedEvents(afterRowID: after, limit: 5000, types: types)
                if page.isEmpty { return after }
                for (rowID, event) in page {
                    after = rowID
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
                    let heard = self.node.peerHeartbeats
                    let out = self.state.withLock { s -> [Emission] in
                        for (name, at) in heard { s.heard(node: name, at: at) }
                        return s.tick(now: Date())
                    }
                    await self.publish(out)
                }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    /// The event types the state machines act on (and the coordinator's own decisions, to
    /// know which were published): the rest of the store is never read.
    static func types(_ topology: Topology) -> [String] {
        var types: Set<EventType> = [
            .syncPointReached, .conflictDetected, .conflictResolved,
            .gatePassed, .gateTimedOut, .gateRejected, .resolutionNeeded, .conflictClosed,
        ]
        for gate in topology.gates { types.formUnion(gate.requireEvents) }
        return types.map(\.rawValue).sorted()
    }

    /// Gates and conflicts now, as the `gates` control command answers them.
    public func status(now: Date = Date()) -> JSONValue { state.withLock { $0.status(now: now) } }

    /// Publishes a step's decisions together, in order (one transaction).
    private func publish(_ emissions: [Emission]) async {
        let outcomes = await node.emitEach(emissions.map { Node.Emission($0.type, payload: $0.payload, correlationID: $0.correlationID, target: $0.target) })
        for (e, outcome) in zip(emissions, outcomes) {
            if case .failure(let error) = outcome { node.logger.error("coordinator could not publish \(e.type): \(error)") }
        }
    }

    /// What makes one decision the same as another, to find those already published.
    static func key(_ type: EventType, _ payload: JSONValue, _ correlation: String?) -> String {
        switch type {
        case .gatePassed, .gateTimedOut:
            return "\(type)/\(payload["gate"]?.stringValue ?? "")/\(payload["round"]?.intValue ?? 0)"
        case .resolutionNeeded:
            return "\(type)/\(payload["conflict_id"]?.stringValue ?? "")/\(payload["level"]?.intValue ?? 0)"
        case .poolUp, .poolDown:
            return "\(type)/\(payload["pool"]?.stringValue ?? "")/\(UUID())"  // liveness is re-derived live, never replayed
        default:
            return "\(type)/\(correlation ?? "")"
        }
    }
}
