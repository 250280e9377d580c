import CECore
import CoreMetrics
import Foundation

/// Why a message was refused; the `reason` label of `ce_events_rejected_total`.
public enum RejectReason: String, Sendable, CaseIterable {
    /// The wrong number of frames (events, requests, control requests).
    case frames
    /// An event envelope that does not decode.
    case envelope
    /// An event that claims the receiving node as its origin.
    case ownOrigin = "own_origin"
    /// A heartbeat that does not parse.
    case heartbeat
    /// A question or replay request that does not parse.
    case request
}

/// The node's metrics through swift-metrics: every handle is resolved once, when the node is
/// made, so the event path only increments (docs/METRICS.md lists them). Without a
/// bootstrapped metrics system (library use, tests) they go to swift-metrics' no-op handler.
///
/// Per-peer gauges (up, lag, last heard) are not here: they are read from ``Node/status()``
/// when metrics are scraped, so they cost nothing between scrapes.
public struct NodeMetrics: Sendable {
    public let emitted: Counter
    /// Stored here, by origin: this node's own events and those of each peer of the topology.
    let storedByOrigin: [String: Counter]
    /// Stored here from an origin outside the topology.
    let storedOther: Counter
    /// Handed to the feed, in-process listeners and the event folder (each new event once).
    public let delivered: Counter
    public let duplicates: Counter
    let rejected: [RejectReason: Counter]
    /// Replay requests this node answered, replay requests it sent, events it received by
    /// replay, events it served by replay.
    public let replayRequestsServed: Counter
    public let replayRequestsMade: Counter
    public let replayedIn: Counter
    public let replayedOut: Counter
    /// Live events dropped behind a gap (they come back by replay).
    public let pendingDropped: Counter
    /// Times a peer's live events were paused while this node caught up by replay.
    public let livePauses: Counter
    /// Events received that this node cannot take (larger than its own limit): holes in
    /// their lines, each said in the log and in an `event_skipped` event.
    public let skipped: Counter
    public let listenerDrops: Counter
    /// Events per store transaction, and how long each transaction took (fsync included).
    public let commitBatch: Recorder
    public let commitDuration: CoreMetrics.Timer
    /// From `emit` called to `emit` returned (stored, published).
    public let emitDuration: CoreMetrics.Timer
    /// From `ask` called to the answer (retries included), by outcome.
    public let askDuration: CoreMetrics.Timer
    public let askFailures: Counter
    public let asksSent: Counter
    public let questionsAnswered: Counter
    /// Retries of a question answered (or being answered) already: answered once.
    public let repeatedQuestions: Counter
    /// Replays started (a gap, a silent tail, a restart).
    public let replays: Counter
    /// Messages whose claimed origin is not the node whose key sent them; handshakes refused.
    public let forged: Counter
    public let handshakesRefused: Counter
    /// Coordinator decisions stored but not handed over (fenced by a newer term, or decided already).
    public let decisionsDropped: Counter
    /// On a coordinator: the term it knows, 1 while it is the active one, takeovers it made.
    public let coordinatorTerm: Gauge
    public let coordinatorActive: Gauge
    public let takeovers: Counter
    /// Peers whose heartbeats name another topology than this node runs.
    public let topologyDrift: Gauge
    /// Event-folder files taken as events, and files moved to `rejected/`.
    public let folderFilesPicked: Counter
    public let folderFilesRejected: Counter

    /// Resolves every handle with `factory` (by default the process's bootstrapped one).
    public init(node: String, peers: [String], factory: any MetricsFactory = MetricsSystem.factory) {
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: label, dimensions: dimensions, factory: factory)
        }
        emitted = counter("ce_events_emitted_total")
        var stored: [String: Counter] = [:]
        for origin in [node] + peers { stored[origin] = counter("ce_events_stored_total", [("origin", origin)]) }
        storedByOrigin = stored
        storedOther = counter("ce_events_stored_total", [("origin", "other")])
        delivered = counter("ce_events_delivered_total")
        duplicates = counter("ce_events_duplicate_total")
        var rejected: [RejectReason: Counter] = [:]
        for reason in RejectReason.allCases { rejected[reason] = counter("ce_messages_rejected_total", [("reason", reason.rawValue)]) }
        self.rejected = rejected
        replayRequestsServed = counter("ce_replay_requests_served_total")
        replayRequestsMade = counter("ce_replay_requests_total")
        replayedIn = counter("ce_events_recovered_total")
        replayedOut = counter("ce_replay_events_served_total")
        pendingDropped = counter("ce_events_held_dropped_total")
        livePauses = counter("ce_live_pauses_total")
        skipped = counter("ce_events_skipped_total")
        listenerDrops = counter("ce_listener_drops_total")
        commitBatch = Recorder(label: "ce_store_commit_batch_events", dimensions: [], aggregate: true, factory: factory)
        commitDuration = CoreMetrics.Timer(label: "ce_store_commit_duration_seconds", dimensions: [], factory: factory)
        emitDuration = CoreMetrics.Timer(label: "ce_emit_duration_seconds", dimensions: [], factory: factory)
        askDuration = CoreMetrics.Timer(label: "ce_ask_duration_seconds", dimensions: [], factory: factory)
        askFailures = counter("ce_asks_failed_total")
        asksSent = counter("ce_asks_total")
        questionsAnswered = counter("ce_questions_answered_total")
        repeatedQuestions = counter("ce_questions_repeated_total")
        replays = counter("ce_replays_total")
        forged = counter("ce_forged_total")
        handshakesRefused = counter("ce_handshakes_refused_total")
        decisionsDropped = counter("ce_decisions_dropped_total")
        coordinatorTerm = Gauge(label: "ce_coordinator_term", dimensions: [], factory: factory)
        coordinatorActive = Gauge(label: "ce_coordinator_active", dimensions: [], factory: factory)
        takeovers = counter("ce_coordinator_takeovers_total")
        topologyDrift = Gauge(label: "ce_topology_differing_peers", dimensions: [], factory: factory)
        folderFilesPicked = counter("ce_event_files_total", [("result", "picked")])
        folderFilesRejected = counter("ce_event_files_total", [("result", "rejected")])
    }

    /// Counts `count` events of `origin` stored here.
    func stored(_ count: Int, from origin: String) {
        (storedByOrigin[origin] ?? storedOther).increment(by: count)
    }

    /// Events stored, given by their origins: counted by runs of one origin (a batch usually
    /// comes from one), not hashed one by one.
    func stored(origins: some Sequence<String>) {
        var run: (origin: String, count: Int)?
        for origin in origins {
            if run?.origin == origin {
                run!.count += 1
                continue
            }
            if let run { stored(run.count, from: run.origin) }
            run = (origin, 1)
        }
        if let run { stored(run.count, from: run.origin) }
    }

    func rejected(_ reason: RejectReason) { rejected[reason]?.increment() }

    /// Records the time since `start` on `timer`.
    static func record(_ timer: CoreMetrics.Timer, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        timer.recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }
}
