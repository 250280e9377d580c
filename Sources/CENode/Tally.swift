import CECore

// Each fact a node counts is counted once, here: the status counter (`Node.Counters`, what
// `ce-node status` shows) and the metric of the same fact (NodeMetrics, what /metrics shows)
// move together, so the two never disagree.

extension Node {
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
        state.withLock { count(what, in: &$0) }
    }

    /// Counts inside a lock of the state already held.
    func count(_ what: Count, in s: inout State) {
        switch what {
        case .emitted(let n):
            s.counters.emitted += n
            metrics.emitted.increment(by: n)
        case .received(let n):
            s.counters.received += n
            metrics.delivered.increment(by: n)
        case .duplicates(let n):
            s.counters.duplicates += n
            metrics.duplicates.increment(by: n)
        case .rejected(let reason):
            s.counters.rejected += 1
            metrics.rejected(reason)
        case .askSent:
            s.counters.asksSent += 1
            metrics.asksSent.increment()
        case .askFailed:
            s.counters.asksFailed += 1
            metrics.askFailures.increment()
        case .questionAnswered:
            s.counters.questionsAnswered += 1
            metrics.questionsAnswered.increment()
        case .repeatedQuestion:
            s.counters.repeatedQuestions += 1
            metrics.repeatedQuestions.increment()
        case .listenerDrops(let n):
            s.counters.listenerDrops += n
            metrics.listenerDrops.increment(by: n)
        case .replayStarted:
            s.counters.replays += 1
            metrics.replays.increment()
        case .replayRequest:
            s.counters.replayRequests += 1
            metrics.replayRequestsMade.increment()
        case .replayedIn(let n):
            s.counters.replayedIn += n
            metrics.replayedIn.increment(by: n)
        case .replayServed(let n):
            s.counters.replayedOut += n
            metrics.replayRequestsServed.increment()
            metrics.replayedOut.increment(by: n)
        case .pendingDropped(let n):
            s.counters.pendingDropped += n
            metrics.pendingDropped.increment(by: n)
        case .livePause:
            s.counters.livePauses += 1
            metrics.livePauses.increment()
        case .skipped(let n):
            s.counters.skipped += n
            metrics.skipped.increment(by: n)
        case .forged:
            s.counters.forged += 1
            metrics.forged.increment()
        case .handshakeRefused:
            s.counters.handshakesRefused += 1
            metrics.handshakesRefused.increment()
        case .decisionDropped:
            s.counters.decisionsDropped += 1
            metrics.decisionsDropped.increment()
        }
    }
}
