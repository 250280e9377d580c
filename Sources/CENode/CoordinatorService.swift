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
        self.state = Mutex(CoordinatorState(topology: node.topology, now: Date()))
    }

    /// Serves until cancelled; run it beside `node.run()`.
    public func run() async throws {
        let live = node.events()
        // A new store is refilled from the pools first (a coordinator whose disk was lost):
        // its decisions come back with the pools' copies, so none is published twice.
        let ready = Atomic<Bool>(false)
        node.addControlCommand("gates") { [self] _ in
            guard ready.load(ordering: .acquiring) else {
                return ["ok": false, "error": "the coordinator is rebuilding its state (refilling its store from the pools first); ask again shortly"]
            }
            return ["ok": true, "coordinator": self.state.withLock { $0.status(now: Date()) }]
        }
        let refilling = node.intake.refill.withLock { $0.wanted }
        if refilling { node.logger.notice("coordinator waits for the refill from the pools before it decides") }
        let started = ContinuousClock.now
        await node.waitForRefill()
        // Rebuild from the store: replay every stored event with its own time as the clock.
        // Gates have been open since the first stored event (or since now, on a fresh store).
        // A refilled store holds the events origin by origin: they go in by their time.
        var stored: [Event] = []
        var after: Int64 = 0
        while true {
            let page = try node.storedEvents(afterRowID: after, limit: 5000)
            if page.isEmpty { break }
            after = page.last!.rowID
            stored += page.map(\.event)
        }
        if refilling { stored.sort { $0.timestamp < $1.timestamp } }
        var rebuilt = CoordinatorState(topology: node.topology, now: stored.first?.timestamp ?? Date())
        var decided: [Emission] = []
        var published = Set<String>()
        var seen = Set<String>()
        for event in stored {
            seen.insert(event.id)
            if event.origin == node.spec.name { published.insert(Self.key(event.type, event.payload, event.correlationID)) }
            decided += rebuilt.handle(event, now: event.timestamp)
        }
        stored = []
        if refilling {
            let d = ContinuousClock.now - started
            node.logger.notice("coordinator rebuilt from the pools' copies in \(d): \(rebuilt.gates.specs.count) gates, \(rebuilt.conflicts.open.count) open conflicts")
        }
        state.withLock { $0 = rebuilt }
        let missed = decided.filter { !published.contains(Self.key($0.type, $0.payload, $0.correlationID)) }
        if !seen.isEmpty {
            node.logger.notice("coordinator state rebuilt from \(seen.count) stored events; publishing \(missed.count) decisions not yet published")
        }
        ready.store(true, ordering: .releasing)
        await publish(missed)
        let replayed = seen
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for await event in live where !replayed.contains(event.id) {
                    let out = self.state.withLock { $0.handle(event, now: Date()) }
                    await self.publish(out)
                }
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

    /// Gates and conflicts now, as the `gates` control command answers them.
    public func status(now: Date = Date()) -> JSONValue { state.withLock { $0.status(now: now) } }

    private func publish(_ emissions: [Emission]) async {
        for e in emissions {
            do {
                _ = try await node.emit(e.type, payload: e.payload, correlationID: e.correlationID, target: e.target)
            } catch {
                node.logger.error("coordinator could not publish \(e.type): \(error)")
            }
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
