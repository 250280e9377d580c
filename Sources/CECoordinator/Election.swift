import CECore
import Foundation

/// When a coordinator acts, and when its standby takes over: the pools vote.
///
/// The standby takes over when the active coordinator has been silent for the failover time
/// *and* a majority of the pool nodes say, in heartbeats heard within three intervals, that
/// they do not hear it either. A partition between the two coordinators alone changes
/// nothing: the pools still hear the active one. An active coordinator that hears fewer than
/// a majority of the pool nodes holds its decisions (the minority side of a partition decides
/// nothing); with failover turned off it always decides, as no one else will.
///
/// A value type: what a coordinator heard comes in, what to do comes out.
public struct Election: Sendable {
    /// What one node's newest heartbeat said, and when it was heard.
    public struct Heard: Sendable, Hashable {
        public var at: Date
        /// The coordinators that node heard within the failover time.
        public var hears: Set<String>
        public init(at: Date, hears: Set<String>) {
            self.at = at
            self.hears = hears
        }
    }

    public let me: String
    /// The pool nodes: the voters.
    public let voters: [String]
    /// Nil: the standby never takes over by itself.
    public let failover: TimeInterval?
    /// How recent a voter's heartbeat must be to count (three intervals).
    public let fresh: TimeInterval

    public init(me: String, topology: Topology) {
        self.me = me
        voters = topology.poolNodes.map(\.name)
        let ms = topology.settings.coordinatorFailoverMilliseconds
        failover = ms > 0 && topology.standby != nil ? Double(ms) / 1000 : nil
        fresh = Double(topology.settings.heartbeatMilliseconds) * 3 / 1000
    }

    public var majority: Int { voters.count / 2 + 1 }

    /// The voters heard recently.
    public func present(_ heard: [String: Heard], now: Date) -> [String] {
        voters.filter { heard[$0].map { now.timeIntervalSince($0.at) < fresh } ?? false }
    }

    /// Whether the active coordinator (this one) may publish decisions now.
    public func mayDecide(_ heard: [String: Heard], now: Date) -> Bool {
        failover == nil || voters.isEmpty || present(heard, now: now).count >= majority
    }

    /// Why this standby takes over from `active` now, or nil while it must not.
    /// `lastHeardActive`: the active coordinator's newest heartbeat here (nil: never heard,
    /// then the silence runs from `since`, when this coordinator started).
    public func takeover(from active: String?, lastHeardActive: Date?, since: Date, heard: [String: Heard], now: Date) -> String? {
        guard let failover, let active, active != me else { return nil }
        let silent = now.timeIntervalSince(lastHeardActive ?? since)
        guard silent >= failover else { return nil }
        let down = present(heard, now: now).filter { !heard[$0]!.hears.contains(active) }
        guard down.count >= majority else { return nil }
        return "\(active) silent for \(String(format: "%.1f", silent)) s; \(down.count) of \(voters.count) pool nodes hear it down (\(down.joined(separator: ", ")))"
    }
}
