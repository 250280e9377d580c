import CECore

/// The decisions of one line's replay loop, as a value: which sources to ask in which order,
/// how long to wait for a page, and what to do when no source gave one (retry after a backoff,
/// take the events held behind a gap as they came, or end). It does no I/O and keeps no clock:
/// the loop (``Node/replayLoop(_:feed:)``) tells it what happened and carries out what it says.
struct ReplayPlan: Sendable {
    /// How long to wait before asking again after a round of failures.
    private(set) var backoff = ReplayPlan.firstBackoff
    /// Rounds in a row in which no source gave a page.
    private(set) var failures = 0
    /// Whether any source answered yet.
    private(set) var answered = false
    let firstTimeout: Duration
    let pageTimeout: Duration

    static let firstBackoff = Duration.milliseconds(100)
    static let maxBackoff = Duration.seconds(2)
    /// Rounds after which an alive origin that answers no replay has its events taken as they came.
    static let aliveButSilentRounds = 5
    /// Rounds after which an older line whose peers fail to answer ends.
    static let olderLineRounds = 30

    /// `askTimeoutMilliseconds`: the topology's ask timeout.
    init(askTimeoutMilliseconds: Int) {
        // Until a source answered, the ask timeout (a source that never answers is found out
        // soon); once pages flow, a page (up to 4 MiB, from a node that may be busy catching
        // up itself) gets longer, so a slow reply is not dropped and asked for again.
        firstTimeout = .milliseconds(max(1000, askTimeoutMilliseconds))
        pageTimeout = .milliseconds(max(5000, askTimeoutMilliseconds))
    }

    /// How long to wait for the next page.
    var timeout: Duration { answered ? pageTimeout : firstTimeout }

    /// The sources to ask, in order: the origin serves its current line; while it is down,
    /// the relays that hold its events come first; a retired line (an older epoch, or this
    /// node's own) is asked of relays only.
    static func sources(origin: NodeSpec?, retired: Bool, originDown: Bool, relays: [NodeSpec]) -> [NodeSpec] {
        guard !retired, let origin else { return relays }
        return originDown ? relays + [origin] : [origin] + relays
    }

    /// What to do after a round in which no source gave a page.
    enum AfterFailure: Equatable {
        /// Ask again after the wait; `log` when this failure is worth a line in the log.
        case retry(after: Duration, log: Bool)
        /// The line has no origin to wait for and no peer has more: take what waits and end.
        case end
        /// The origin is alive but answers no replay: take what waits as it came, and end.
        case takeAsTheyCame
    }

    /// A round failed. `unreachable`: sources that could not be asked (as opposed to those that
    /// answered with nothing more); `originServes`: the line is current and its origin in the
    /// topology; `originUp`: its heartbeats arrive.
    mutating func failed(unreachable: Int, originServes: Bool, originUp: Bool) -> AfterFailure {
        failures += 1
        // An older epoch (or this node's own): no origin to wait for. It ends once every peer
        // answered with nothing more, or after a minute of peers failing to answer (the survey
        // starts it again when one shows it holds more).
        if !originServes, unreachable == 0 || failures >= Self.olderLineRounds { return .end }
        // An origin that is alive but never answers a replay (a publisher of another make, a
        // replay port that is wrong): its events are taken as they come rather than held forever.
        if failures >= Self.aliveButSilentRounds && originUp { return .takeAsTheyCame }
        let wait = backoff
        backoff = min(backoff * 2, Self.maxBackoff)
        return .retry(after: wait, log: failures == 1 || failures % 20 == 0)
    }

    /// Storing a page failed: ask again after the wait.
    mutating func storeFailed() -> Duration {
        let wait = backoff
        backoff = min(backoff * 2, Self.maxBackoff)
        return wait
    }

    /// A source gave a page.
    mutating func gotPage() {
        failures = 0
        backoff = Self.firstBackoff
        answered = true
    }
}
