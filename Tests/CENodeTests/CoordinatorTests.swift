import CECluster
import CECore
import CENode
import Foundation
import Testing

@Suite("The coordinator with three pools, as processes", .serialized)
struct CoordinatorTests {
    static let nodes: [Cluster.NodeDef] = [
        .init(name: "coordinator", pool: "coordinator"), .init(name: "planner-1", pool: "planner"),
        .init(name: "builder-1", pool: "builder"), .init(name: "reviewer-1", pool: "reviewer"),
    ]
    static let config = """
        gates:
          - { name: architecture_approval, pools: [planner, builder, reviewer], subject: architecture }
          - { name: quick, pools: [planner, builder], deadline_s: 20 }
        conflicts: { resolvers: [planner, human], escalate_after_s: 1 }

        """

    func coordinatorEvents(_ cluster: Cluster, _ type: String) async throws -> [JSONValue] {
        try await cluster.history("coordinator", type: type).filter { $0["origin"]?.stringValue == "coordinator" }
    }

    @Test func gatePassesAndEveryPoolHearsIt() async throws {
        try await withCluster(Self.nodes, pools: Self.config) { cluster in
            for node in ["planner-1", "builder-1", "reviewer-1"] {
                try await cluster.emit(node, "sync_point_reached", ["gate": "architecture_approval"])
            }
            for node in ["planner-1", "builder-1", "reviewer-1"] {
                try await eventually(10, "\(node) hears gate_passed") {
                    try await cluster.history(node, type: "gate_passed").contains { $0["payload"]?["gate"]?.stringValue == "architecture_approval" }
                }
            }
            // A second report in round 2 is fine; a duplicate in one round is rejected.
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "architecture_approval"])
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "architecture_approval"])
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "nonexistent"])
            try await eventually(10, "two rejections") { try await coordinatorEvents(cluster, "gate_rejected").count == 2 }
            let gates = try JSONValue(parsing: try await cluster.run(["gates", "--json", "--data", cluster.data("coordinator")]))
            let gate = gates.arrayValue?.first { $0["gate"]?.stringValue == "architecture_approval" }
            #expect(gate?["round"]?.intValue == 2 && gate?["aligned"] == ["planner"], "\(gates)")
            #expect(gate?["missing"]?.arrayValue?.compactMap { $0["pool"]?.stringValue } == ["builder", "reviewer"], "\(gates)")
            // The table a person reads.
            let table = try await cluster.run(["gates", "--data", cluster.data("coordinator")])
            #expect(table.contains("│ architecture_approval │ 2 ") && table.contains("│ planner ") && table.contains("builder, reviewer"), "\(table)")
        }
    }

    @Test func aPoolKilledWhileAGateWaitsIsNamedMissingAndDown() async throws {
        try await withCluster(Self.nodes, pools: Self.config, start: ["coordinator", "planner-1", "builder-1"]) { cluster in
            cluster.kill("builder-1")
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "quick"])
            // The round opens with the planner's report; its deadline runs from then.
            try await eventually(40, "the gate times out") { !(try await coordinatorEvents(cluster, "gate_timed_out")).isEmpty }
            let timedOut = try await coordinatorEvents(cluster, "gate_timed_out").first { $0["payload"]?["gate"]?.stringValue == "quick" }
            #expect(timedOut?["payload"]?["missing"] == ["builder"])
            let gates = try JSONValue(parsing: try await cluster.run(["gates", "--json", "--data", cluster.data("coordinator")]))
            let quick = gates.arrayValue?.first { $0["gate"]?.stringValue == "quick" }
            #expect(quick?["missing"] == [["pool": "builder", "up": false]], "\(gates)")
            let table = try await cluster.run(["gates", "--data", cluster.data("coordinator")])
            #expect(table.contains("builder (down)"), "\(table)")
        }
    }

    @Test func conflictIsMergedEscalatedAndResolvedAndHoldsItsGate() async throws {
        try await withCluster(Self.nodes, pools: Self.config) { cluster in
            let first = try await cluster.emit("reviewer-1", "conflict_detected", ["subject": "architecture", "parties": ["builder"], "description": "no tests"])
            try await cluster.emit("builder-1", "conflict_detected", ["subject": "architecture", "parties": ["reviewer"], "description": "tests exist"])
            let id = first["id"]!.stringValue!
            try await eventually(10, "escalated to human") {
                try await coordinatorEvents(cluster, "resolution_needed").contains { $0["target"]?.stringValue == "human" }
            }
            let asked = try await coordinatorEvents(cluster, "resolution_needed")
            #expect(asked.first?["target"]?.stringValue == "planner")
            #expect(asked.allSatisfy { $0["payload"]?["conflict_id"]?.stringValue == id }, "the duplicate was merged")
            // The gate on the same subject stays shut while the conflict is open.
            for node in ["planner-1", "builder-1", "reviewer-1"] {
                try await cluster.emit(node, "sync_point_reached", ["gate": "architecture_approval"])
            }
            let held = try JSONValue(parsing: try await cluster.run(["gates", "--json", "--data", cluster.data("coordinator")]))
            #expect(held.arrayValue?.first { $0["gate"]?.stringValue == "architecture_approval" }?["blocked_by_conflict"] == true, "\(held)")
            #expect(try await cluster.run(["gates", "--data", cluster.data("coordinator")]).contains("held by a conflict"))
            let open = try JSONValue(parsing: try await cluster.run(["conflicts", "--json", "--data", cluster.data("coordinator")]))
            #expect(open[0]?["conflict_id"]?.stringValue == id && open[0]?["resolver"]?.stringValue == "human" && open[0]?["level"]?.intValue == 1, "\(open)")
            #expect(try await cluster.run(["conflicts", "--data", cluster.data("coordinator")]).contains(id))
            _ = try await cluster.run(["resolve", id, "--decision", "add integration tests", "--data", cluster.data("coordinator")])
            try await eventually(10, "the parties hear the decision and the gate opens") {
                let closed = try await cluster.history("builder-1", type: "conflict_closed")
                let passed = try await cluster.history("reviewer-1", type: "gate_passed")
                return closed.first?["payload"]?["decision"]?.stringValue == "add integration tests" && !passed.isEmpty
            }
        }
    }

    @Test func coordinatorKilledMidGateAndMidConflictPicksUpAfterRestart() async throws {
        try await withCluster(Self.nodes, pools: Self.config) { cluster in
            let conflict = try await cluster.emit("reviewer-1", "conflict_detected", ["subject": "api", "parties": ["builder"]])
            try await cluster.emit("planner-1", "sync_point_reached", ["gate": "architecture_approval"])
            try await cluster.emit("builder-1", "sync_point_reached", ["gate": "architecture_approval"])
            try await eventually(10, "coordinator stored both reports") { try await cluster.history("coordinator", type: "sync_point_reached").count == 2 }
            cluster.kill("coordinator")
            // Pools keep exchanging events while it is down.
            let during = try await cluster.emit("builder-1", "build_ready", ["while": "coordinator down"])
            try await eventually(10, "reviewer still receives") {
                try await cluster.history("reviewer-1", type: "build_ready").contains { $0["id"] == during["id"] }
            }
            try cluster.start("coordinator")
            try await cluster.waitUntilUp("coordinator")
            try await cluster.waitUntilConnected(["coordinator", "reviewer-1"])
            try await cluster.emit("reviewer-1", "sync_point_reached", ["gate": "architecture_approval"])
            try await eventually(10, "the gate opens after the restart") {
                try await coordinatorEvents(cluster, "gate_passed").contains { $0["payload"]?["gate"]?.stringValue == "architecture_approval" }
            }
            try await eventually(10, "the conflict still escalates") {
                try await coordinatorEvents(cluster, "resolution_needed").contains {
                    $0["target"]?.stringValue == "human" && $0["payload"]?["conflict_id"] == conflict["id"]
                }
            }
            // Nothing was asked twice at one level.
            let levels = try await coordinatorEvents(cluster, "resolution_needed").compactMap { $0["payload"]?["level"]?.intValue }
            #expect(levels.sorted() == [0, 1])
        }
    }
}
