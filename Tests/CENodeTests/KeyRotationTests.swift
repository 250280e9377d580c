import CECluster
import CECore
import CENode
import CEStore
import Foundation
import Synchronization
import Testing

/// What the emitter acknowledged, and when it is to stop.
final class Emitted: Sendable {
    let ids = Mutex<[String]>([])
    let stop = Mutex(false)
}

/// A node's CURVE key rotated while it emits, with no restart: its next key made, every node
/// reloaded (peers admit both keys), the node switching by itself, then the old key dropped by
/// a second reload. Every event it emitted reaches every peer, none later than a second.
@Suite("Key rotation with no gap", .serialized)
struct KeyRotationTests {
    static let nodes: [Cluster.NodeDef] = [
        .init(name: "planner-1", pool: "planner"),
        .init(name: "builder-1", pool: "builder"),
        .init(name: "reviewer-1", pool: "reviewer"),
    ]

    /// Edits the topology file as an operator does between reloads.
    func edit(_ cluster: Cluster, _ change: (String) -> String) throws {
        let text = try String(contentsOfFile: cluster.topologyPath, encoding: .utf8)
        let changed = change(text)
        #expect(changed != text, "the edit changed nothing")
        try changed.write(toFile: cluster.topologyPath, atomically: true, encoding: .utf8)
    }

    func reloadEveryNode(_ cluster: Cluster) async throws {
        for node in Self.nodes {
            let out = try await cluster.run(["reload", "--topology", cluster.topologyPath, "--node", node.name])
            #expect(out.contains("runs topology"), "reload of \(node.name) said: \(out)")
        }
    }

    /// The public key a `keys rotate` line names (`name: "key"`).
    func key(in line: String) throws -> String {
        let parts = line.split(separator: "\"")
        guard parts.count >= 2 else { throw TestFailure("no key in \(line)") }
        return String(parts[1])
    }

    /// The events of `origin` stored in the node's store at `data`.
    static func held(from origin: String, at data: String) throws -> [StoredEvent] {
        var query = EventQuery()
        query.origin = origin
        query.limit = 100_000
        return try EventStore(directory: data, durability: .normal).events(query)
    }

    /// Waits until every node named holds every event of `ids` from `origin`.
    static func waitUntilHeld(_ ids: Set<String>, from origin: String, at nodes: [String], in cluster: Cluster, within seconds: Double) async throws {
        for node in nodes {
            let data = cluster.data(node)
            try await eventually(seconds, "\(node) holds the \(ids.count) events of \(origin) emitted so far") {
                ids.isSubset(of: Set(try held(from: origin, at: data).map { $0.id }))
            }
        }
    }

    /// Emits build_ready through a node's control endpoint until told to stop (at most 2000).
    static func emit(every interval: Duration, at data: String) -> (Emitted, Task<Void, Never>) {
        let emitted = Emitted()
        let client = ControlClient(dataDirectory: data)
        let task = Task {
            var n = 0
            while !emitted.stop.withLock({ $0 }) && n < 2000 {
                n += 1
                if let event = try? await client.emit(.init(.buildReady, payload: ["n": .number(Double(n))]), timeout: .seconds(5)),
                   let id = event["id"]?.stringValue {
                    emitted.ids.withLock { $0.append(id) }
                }
                try? await Task.sleep(for: interval)
            }
        }
        return (emitted, task)
    }

    @Test func aNodeRotatesItsKeyWhileItEmits() async throws {
        try await withCluster(Self.nodes, pools: "pools:\n  planner: { subscribe: all }\n  reviewer: { subscribe: all }\n") { cluster in
            let pids = cluster.processes.mapValues { $0.processIdentifier }
            let old = try #require(cluster.keys["builder-1"]?.publicKey)
            // builder-1 emits every 50 ms through the rotation.
            let (emitted, emitter) = Self.emit(every: .milliseconds(50), at: cluster.data("builder-1"))
            try await eventually(10, "builder-1 emits") { emitted.ids.withLock { $0.count } >= 10 }

            // 1. The next key, admitted everywhere.
            let made = try await cluster.run(["keys", "rotate", "--topology", cluster.topologyPath, "--node", "builder-1"])
            let next = try key(in: made.split(separator: "\n").first { $0.hasPrefix("builder-1.next:") }.map(String.init) ?? "")
            #expect(next != old)
            try edit(cluster) { $0.replacingOccurrences(of: "public_key: \"\(old)\"", with: "public_key: \"\(old)\"\n    next_public_key: \"\(next)\"") }
            try await reloadEveryNode(cluster)

            // 2. It switches by itself once every peer runs the file.
            try await eventually(20, "builder-1 uses its next key") {
                try await cluster.status("builder-1")["key"]?["public_key"]?.stringValue == next
            }
            #expect(FileManager.default.fileExists(atPath: cluster.data("builder-1") + "/curve.previous.key"))
            // Two seconds of events after the switch reach every peer before the old key is
            // dropped: the peers dial the node with its new key by themselves.
            let count = emitted.ids.withLock { $0.count }
            try await eventually(20, "builder-1 emits for two seconds after the switch") { emitted.ids.withLock { $0.count } >= count + 40 }
            try await Self.waitUntilHeld(Set(emitted.ids.withLock { $0 }), from: "builder-1", at: ["planner-1", "reviewer-1"], in: cluster, within: 5)

            // 3. The old key leaves the file.
            let finished = try await cluster.run(["keys", "rotate", "--topology", cluster.topologyPath, "--node", "builder-1", "--finish"])
            #expect(try key(in: finished) == next)
            try edit(cluster) {
                $0.replacingOccurrences(of: "public_key: \"\(old)\"\n    next_public_key: \"\(next)\"", with: "public_key: \"\(next)\"")
            }
            try await reloadEveryNode(cluster)
            let after = emitted.ids.withLock { $0.count }
            try await eventually(10, "events flow after the old key is dropped") { emitted.ids.withLock { $0.count } >= after + 10 }
            emitted.stop.withLock { $0 = true }
            await emitter.value
            let ids = Set(emitted.ids.withLock { $0 })

            // Every acknowledged event at every peer, once, none later than a second.
            for peer in ["planner-1", "reviewer-1"] {
                try await eventually(20, "\(peer) holds every event of builder-1") {
                    var query = EventQuery()
                    query.origin = "builder-1"
                    query.limit = 100_000
                    let held = try EventStore(directory: cluster.data(peer), durability: .normal).events(query)
                    return ids.isSubset(of: Set(held.map { $0.id }))
                }
                var query = EventQuery()
                query.origin = "builder-1"
                query.limit = 100_000
                let held = try EventStore(directory: cluster.data(peer), durability: .normal).events(query)
                #expect(held.count == Set(held.map { $0.id }).count, "\(peer) holds an event twice")
                let late = held.map { $0.receivedMillis - $0.timestampMillis }.max() ?? 0
                print("key rotation: \(held.count) events of builder-1 at \(peer), the latest stored \(late) ms after it was emitted")
                #expect(late < 1000, "an event of builder-1 reached \(peer) \(late) ms after it was emitted")
            }
            // No node restarted, and the old key is refused: the others list only the new one.
            #expect(cluster.processes.mapValues { $0.processIdentifier } == pids)
            #expect(cluster.processes.values.allSatisfy { $0.isRunning })
            let status = try await cluster.status("builder-1")
            #expect(status["key"]?["next_public_key"] == .null)
            #expect(status["key"]?["rotation"] == .null)
            let topology = try TopologyLoader.load(path: cluster.topologyPath)
            #expect(topology.node(named: "builder-1")?.publicKeys == [next])
        }
    }
}
