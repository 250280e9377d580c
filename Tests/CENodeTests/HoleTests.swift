import CECluster
import CECore
import CENode
import Foundation
import Testing

/// A line never stalls and never skips silently: a subscriber whose limit is smaller than the
/// origin's (two topologies that disagree) skips the event it cannot take, says so, and takes
/// what follows in order at once.
@Suite("Events a subscriber cannot take", .serialized)
struct HoleTests {
    @Test func anEventLargerThanTheSubscribersLimitIsAHoleThatIsSaidAndTheLineGoesOn() async throws {
        let nodes: [Cluster.NodeDef] = [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]
        try await withCluster(nodes, settings: "heartbeat_ms: 200\n  max_message_bytes: 65536", start: ["planner-1"]) { cluster in
            // builder-1 runs with a copy of the topology whose limit is 4 KiB.
            let small = cluster.root + "/small.yaml"
            let text = try String(contentsOfFile: cluster.topologyPath, encoding: .utf8)
            try text.replacingOccurrences(of: "max_message_bytes: 65536", with: "max_message_bytes: 4096")
                .write(toFile: small, atomically: true, encoding: .utf8)
            try cluster.start("builder-1", ["--topology", small])
            try await cluster.waitUntilUp("builder-1")
            try await cluster.waitUntilConnected(["planner-1", "builder-1"])
            try await cluster.emit("planner-1", "plan_ready", ["n": 1])
            let big = try await cluster.emit("planner-1", "plan_ready", ["n": 2, "blob": .string(String(repeating: "x", count: 10_000))])
            try await cluster.emit("planner-1", "plan_ready", ["n": 3])
            let started = ContinuousClock.now
            try await eventually(10, "builder-1 stores n=3 past the hole") {
                try await cluster.history("builder-1", type: "plan_ready").contains { $0["payload"]?["n"]?.intValue == 3 }
            }
            // Well before the replay would give up on the line (about 30 s).
            #expect(ContinuousClock.now - started < .seconds(8))
            let stored = try await cluster.history("builder-1", type: "plan_ready")
            #expect(stored.compactMap { $0["payload"]?["n"]?.intValue } == [1, 3], "\(stored)")
            #expect(stored.compactMap { $0["seq"]?.intValue } == [1, 3])
            // Said: the status counter, an event of builder-1's own, and the log.
            #expect(try await cluster.status("builder-1")["counters"]?["skipped"]?.intValue == 1)
            let record = try await cluster.history("builder-1", type: "event_skipped")
            #expect(record.count == 1 && record.first?["origin"]?.stringValue == "builder-1", "\(record)")
            #expect(record.first?["payload"]?["id"] == big["id"] && record.first?["payload"]?["seq"]?.intValue == 2, "\(record)")
            #expect(record.first?["payload"]?["limit"]?.intValue == 4096)
            #expect(cluster.log("builder-1").contains("skipped planner-1's event \(big["id"]?.stringValue ?? "?") (seq 2"))
            // The line is whole after the hole: later events arrive live, nothing is waiting.
            try await cluster.emit("planner-1", "plan_ready", ["n": 4])
            try await eventually(10, "builder-1 stores n=4") {
                try await cluster.history("builder-1", type: "plan_ready").contains { $0["payload"]?["n"]?.intValue == 4 }
            }
            let peer = try await cluster.status("builder-1")["peers"]?.arrayValue?.first { $0["name"]?.stringValue == "planner-1" }
            #expect(peer?["replaying"]?.boolValue != true, "\(peer ?? .null)")
            #expect(try await cluster.status("builder-1")["counters"]?["skipped"]?.intValue == 1, "skipped once, not again by replay")
        }
    }
}
