import CECore
import Synchronization

// Each fact a node counts is counted once, here: the status counter (`Node.Counters`, what
// `ce-node status` shows) and the metric of the same fact (NodeMetrics, what /metrics shows)
// move together, so the two never disagree.

/// The node's counters: each fact counted once, in the status counter and its metric together.
final class Tally: Sendable {
    private let counters = Mutex(Node.Counters())
    let metrics: NodeMetrics

    init(metrics: NodeMetrics) { self.metrics = metrics }

    /// What was counted so far.
    var snapshot: Node.Counters { counters.withLock { $0 } }

    /// Something that happened, to count.
    enum Count {
        /// Own events stored and published.
        case emitted(Int)
        /// Events received and stored here for the first time (handed over).
        case received(Int)
        /// Events received again (already held, or of an epoch no longer current).
        case duplicates(Int)
        case rejected(RejectReason)
        case askSent, askFailed, questionAnswered, repeatedQuestion
        case listenerDrops(Int)
        case replayStarted, replayRequest
        case replayedIn(Int)
        /// A replay request answered with this many events.
        case replayServed(Int)
        case pendingDropped(Int)
        case livePause
        case skipped(Int)
        case forged, handshakeRefused
        /// A coordinator decision stored but not handed over (fenced, or decided already).
        case decisionDropped
    }

    func count(_ what: Count) {
        counters.withLock { count(what, in: &$0) }
    }

    private func count(_ what: Count, in counters: inout Node.Counters) {
        switch what {
        case .emitted(let n):
            counters.emitted += n
            metrics.emitted.increment(by: n)
        case .received(let n):
            counters.received += n
            metrics.delivered.increment(by: n)
        case .duplicates(let n):
            counters.duplicates += n
            metrics.duplicates.increment(by: n)
        case .rejected(let reason):
            counters.rejected += 1
            metrics.rejected(reason)
        case .askSent:
            counters.asksSent += 1
            metrics.asksSent.increment()
        case .askFailed:
            counters.asksFailed += 1
            metrics.askFailures.increment()
        case .questionAnswered:
            counters.questionsAnswered += 1
            metrics.questionsAnswered.increment()
        case .repeatedQuestion:
            counters.repeatedQuestions += 1
            metrics.repeatedQuestions.increment()
        case .listenerDrops(let n):
            counters.listenerDrops += n
            metrics.listenerDrops.increment(by: n)
        case .replayStarted:
            counters.replays += 1
            metrics.replays.increment()
        case .replayRequest:
            counters.replayRequests += 1
            metrics.replayRequestsMade.increment()
        case .replayedIn(let n):
            counters.replayedIn += n
            metrics.replayedIn.increment(by: n)
        case .replayServed(let n):
            counters.replayedOut += n
            metrics.replayRequestsServed.increment()
            metrics.replayedOut.increment(by: n)
        case .pendingDropped(let n):
            counters.pendingDropped += n
            metrics.pendingDropped.increment(by: n)
        case .livePause:
            counters.livePauses += 1
            metrics.livePauses.increment()
        case .skipped(let n):
            counters.skipped += n
            metrics.skipped.increment(by: n)
        case .forged:
            counters.forged += 1
            metrics.forged.increment()
        case .handshakeRefused:
            counters.handshakesRefused += 1
            metrics.handshakesRefused.increment()
        case .decisionDropped:
            counters.decisionsDropped += 1
            metrics.decisionsDropped.increment()
        }
    }
}

extension Node {
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

    typealias Count = Tally.Count
    func count(_ what: Count) { tally.count(what) }
}
