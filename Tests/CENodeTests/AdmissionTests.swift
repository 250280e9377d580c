import CECluster
import CECore
import CENode
import Foundation
import Testing

/// One set of rules at every door: what the node refuses whichever way an event comes in
/// (control socket, CLI, event folder, in-process `Node.emit`), on real node processes.
@Suite("Admission at every door", .serialized)
struct AdmissionTests {
    static let nodes: [Cluster.NodeDef] = [
        .init(name: "coordinator", pool: "coordinator"), .init(name: "planner-1", pool: "planner", workspace: true),
        .init(name: "builder-1", pool: "builder"),
    ]
    static let config = """
        custom_types: [schema_v1]
        conflicts: { resolvers: [planner, human], escalate_after_s: 600 }

        """

    /// Events of `type` stored at `node`.
    func stored(_ cluster: Cluster, _ node: String, _ type: String) async throws -> [JSONValue] {
        try await cluster.history(node, type: type)
    }

    @Test func oversizedEventsAndUnknownTypesAreRefusedAtEveryDoorAndNothingIsStored() async throws {
        // 2 KiB limit: a 3 KiB payload is over it as it would go on the wire.
        let settings = "heartbeat_ms: 200\n  max_message_bytes: 2048"
        try await withCluster(Self.nodes, pools: Self.config, settings: settings) { cluster in
            let big = JSONValue.string(String(repeating: "x", count: 3000))
            // Control socket.
            let control = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "event_type": "plan_ready", "payload": big])
            }
            #expect(control?.description.contains("more than the cluster's limit of 2048") == true, "\(control?.description ?? "")")
            let typo = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "event_type": "plan_redy"])
            }
            #expect(typo?.description.contains("unknown event type \"plan_redy\" (did you mean plan_ready?)") == true, "\(typo?.description ?? "")")
            let target = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "event_type": "plan_ready", "target": "bulder"])
            }
            #expect(target?.description.contains("did you mean builder?") == true, "\(target?.description ?? "")")
            // A batch: the refused one fails, and the reply says which.
            let batch = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "events": [["event_type": "plan_ready"], ["event_type": "plan_redy"]]])
            }
            #expect(batch?.description.contains("plan_redy") == true)
            // CLI, by flags and by file.
            let cli = try await runCENode(["emit", "--data", cluster.data("planner-1"), "--type", "plan_redy"])
            #expect(cli.status != 0 && cli.output.contains("did you mean plan_ready?"), "\(cli)")
            let file = cluster.root + "/big.json"
            try JSONValue.object(["stream": "planner", "event_type": "plan_ready", "payload": big]).serialized()
                .withUnsafeBufferPointer { try Data($0).write(to: URL(fileURLWithPath: file)) }
            let cliFile = try await runCENode(["emit", "--data", cluster.data("planner-1"), "--file", file])
            #expect(cliFile.status != 0 && cliFile.output.contains("limit of 2048"), "\(cliFile)")
            // Event folder: the file moves to rejected/ with the reason beside it.
            let outbox = cluster.workspace("planner-1") + "/.ce-events"
            try FileManager.default.copyItem(atPath: file, toPath: outbox + "/planner_plan_ready_big.json")
            try Data(#"{"stream":"planner","event_type":"plan_redy","payload":{}}"#.utf8)
                .write(to: URL(fileURLWithPath: outbox + "/planner_plan_redy_1.json"))
            try await eventually(15, "both files are rejected") {
                FileManager.default.fileExists(atPath: outbox + "/rejected/planner_plan_ready_big.json.error")
                    && FileManager.default.fileExists(atPath: outbox + "/rejected/planner_plan_redy_1.json.error")
            }
            let reason = try String(contentsOfFile: outbox + "/rejected/planner_plan_ready_big.json.error", encoding: .utf8)
            #expect(reason.contains("limit of 2048"), "\(reason)")
            let typoReason = try String(contentsOfFile: outbox + "/rejected/planner_plan_redy_1.json.error", encoding: .utf8)
            #expect(typoReason.contains("did you mean plan_ready?"), "\(typoReason)")
            // A declared custom type and an undeclared one asked for on purpose go out.
            try await cluster.control("planner-1", ["cmd": "emit", "event_type": "schema_v1"])
            let custom = try await runCENode(["emit", "--data", cluster.data("planner-1"), "--type", "early_notes", "--custom-type"])
            #expect(custom.status == 0, "\(custom)")
            // Nothing refused was stored, and the line has no hole: the next event is seq 3.
            let history = try await cluster.history("planner-1").filter { $0["origin"]?.stringValue == "planner-1" }
            #expect(history.compactMap { $0["event_type"]?.stringValue } == ["plan_ready", "schema_v1", "early_notes"], "\(history)")
            #expect(history.compactMap { $0["seq"]?.intValue } == [1, 2, 3])
            // The subscriber got every admitted event and nothing else.
            try await eventually(10, "builder-1 stores planner-1's three events") {
                try await cluster.history("builder-1").filter { $0["origin"]?.stringValue == "planner-1" }.count == 3
            }
        }
    }

    @Test func aResolveIsCheckedAgainstTheConflictAndNamesItsResolver() async throws {
        try await withCluster(Self.nodes, pools: Self.config) { cluster in
            // No such conflict: refused through the control socket and the CLI.
            let bogus = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "event_type": "conflict_resolved", "payload": ["conflict_id": "bogus-id", "decision": "x"]])
            }
            #expect(bogus?.description.contains("no open conflict \"bogus-id\"") == true, "\(bogus?.description ?? "")")
            let cliBogus = try await runCENode(["resolve", "no-such-id", "--decision", "x", "--data", cluster.data("coordinator")])
            #expect(cliBogus.status != 0 && cliBogus.output.contains("no open conflict"), "\(cliBogus)")
            // A real conflict, asked of the planner.
            let detected = try await cluster.emit("builder-1", "conflict_detected", ["subject": "auth", "parties": ["planner"]])
            let id = try #require(detected["id"]?.stringValue)
            for node in ["planner-1", "coordinator"] {
                try await eventually(10, "\(node) stores resolution_needed") {
                    try await stored(cluster, node, "resolution_needed").contains { $0["payload"]?["conflict_id"]?.stringValue == id }
                }
            }
            // A human resolves from the CLI on the coordinator's host; a second resolve at once is refused, naming the first.
            let first = try await runCENode(["resolve", id, "--decision", "\"tokens\"", "--data", cluster.data("coordinator")])
            #expect(first.status == 0, "\(first)")
            let second = await #expect(throws: NodeError.self) {
                try await cluster.control("coordinator", ["cmd": "emit", "event_type": "conflict_resolved", "payload": ["conflict_id": .string(id), "decision": "y"]])
            }
            // Refused whether the coordinator closed it already or not, naming who resolved first.
            let named = ["already resolved by human", "already closed (resolved by human)"]
            #expect(named.contains { second?.description.contains($0) == true }, "\(second?.description ?? "")")
            try await eventually(10, "planner-1 stores conflict_closed") {
                try await stored(cluster, "planner-1", "conflict_closed").contains { $0["payload"]?["conflict_id"]?.stringValue == id }
            }
            let closed = try await stored(cluster, "planner-1", "conflict_closed").first { $0["payload"]?["conflict_id"]?.stringValue == id }
            #expect(closed?["payload"]?["resolved_by"]?.stringValue == "human", "\(closed ?? .null)")
            // Closed: refused at another node too, saying so.
            let late = await #expect(throws: NodeError.self) {
                try await cluster.control("planner-1", ["cmd": "emit", "event_type": "conflict_resolved", "payload": ["conflict_id": .string(id), "decision": "z"]])
            }
            #expect(late?.description.contains("already closed (resolved by human)") == true, "\(late?.description ?? "")")
            #expect(try await stored(cluster, "coordinator", "conflict_resolved").count == 1)
            #expect(try await stored(cluster, "coordinator", "conflict_closed").count == 1)
        }
    }

    @Test func nodeEmitInProcessPassesTheSameCheck() async throws {
        try await withNodeInProcess { node in
            let error = await #expect(throws: AdmissionError.self) { try await node.emit(EventType(validating: "plan_redy")) }
            #expect(error?.description.contains("did you mean plan_ready?") == true)
            let event = try await node.emit(EventType(validating: "plan_redy"), allowCustomType: true)
            #expect(event.seq == 1)
        }
    }
}
