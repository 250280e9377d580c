import CECore
import Foundation

/// Pool liveness from node heartbeats: a pool is up while any of its nodes was heard within
/// `timeout`; changes are published as `pool_up` / `pool_down`.
public struct Liveness: Sendable {
    public private(set) var nodesByPool: [String: Set<String>]
    public let timeout: TimeInterval
    public private(set) var lastHeard: [String: Date] = [:]
    public private(set) var up: Set<String> = []

    public init(nodesByPool: [String: Set<String>], timeout: TimeInterval) {
        self.nodesByPool = nodesByPool
        self.timeout = timeout
    }

    public mutating func heard(node: String, at: Date) {
        if let previous = lastHeard[node], previous > at { return }  // out of order: keep the newest
        lastHeard[node] = at
    }

    /// New pools and members: what was heard stays; a pool that is gone is no longer said up.
    public mutating func reconfigure(nodesByPool: [String: Set<String>]) {
        self.nodesByPool = nodesByPool
        up = up.filter { nodesByPool[$0] != nil }
    }

    public func isUp(pool: String, now: Date) -> Bool {
        (nodesByPool[pool] ?? []).contains { node in lastHeard[node].map { now.timeIntervalSince($0) < timeout } ?? false }
    }

    /// A `pool_up` or `pool_down` published (by either coordinator): the pools up as said.
    public mutating func observe(_ event: Event) {
        guard let pool = event.payload["pool"]?.stringValue, nodesByPool[pool] != nil else { return }
        if event.type == .poolUp { up.insert(pool) } else if event.type == .poolDown { up.remove(pool) }
    }

    public mutating func tick(now: Date) -> [Emission] {
        var out: [Emission] = []
        for pool in nodesByPool.keys.sorted() {
            let isUp = isUp(pool: pool, now: now)
            guard isUp != up.contains(pool) else { continue }
            let nodes = (nodesByPool[pool] ?? []).filter { lastHeard[$0].map { now.timeIntervalSince($0) < timeout } ?? false }.sorted()
            if isUp { up.insert(pool) } else { up.remove(pool) }
            out.append(Emission(isUp ? .poolUp : .poolDown, ["pool": .string(pool), "nodes": .array(nodes.map(JSONValue.string))]))
        }
        return out
    }
}
