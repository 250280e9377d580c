import CECore
import CEMCP
import Foundation
import MCP
import Testing
import ZeroMQ

/// The tools' argument checks, on a topology with no node running: every bad call is a tool
/// error naming what is wrong, and a good call reaches the (absent) node and says it is not running.
@Suite("MCP tool arguments")
struct ToolArgumentTests {
    static let yaml = """
        version: 1
        settings: { max_message_bytes: 4096 }
        coordinator: { name: coordinator, host: 127.0.0.1, ports: { pub: 21900, rep: 21901 } }
        nodes:
          - { name: planner-1, pool: planner, host: 127.0.0.1, ports: { pub: 21910, rep: 21911 } }
          - { name: builder-1, pool: builder, host: 127.0.0.1, ports: { pub: 21920, rep: 21921 } }
        pools:
          builder: { subscribe: [plan_ready, schema_v1] }
        gates:
          - { name: arch, pools: [planner, builder] }

        """

    /// Tools for builder-1 whose data folder holds no running node.
    func withTools(_ body: (BusTools) async throws -> Void) async throws {
        let root = NSTemporaryDirectory() + "ce-mcp-args-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try Self.yaml.write(toFile: root + "/t.yaml", atomically: true, encoding: .utf8)
        let topology = try TopologyLoader.load(path: root + "/t.yaml")
        let context = try Context()
        let tools = BusTools(settings: try BusTools.Settings(topology: topology, node: "builder-1", dataDirectory: root + "/builder-1"), context: context)
        try await body(tools)
        await context.shutdown()
    }

    func errorText(_ tools: BusTools, _ name: String, _ arguments: [String: Value]) async -> String? {
        let result = await tools.call(name, arguments)
        guard result.isError == true else { return nil }
        return result.content.compactMap { if case .text(let text, _, _) = $0 { text } else { nil } }.joined()
    }

    @Test func badArgumentsAreNamed() async throws {
        try await withTools { tools in
            let cases: [(String, [String: Value], String)] = [
                ("emit", ["event_type": "plan_redy"], "unknown event type \"plan_redy\""),
                ("emit", ["event_type": "Plan"], "may only contain a-z, 0-9 and _"),
                ("emit", ["payload": 1], "missing argument \"event_type\""),
                ("emit", ["event_type": 3], "argument \"event_type\" must be a string, not an integer"),
                ("emit", ["event_type": "plan_ready", "colour": "red"], "unknown argument \"colour\""),
                ("emit", ["event_type": "plan_ready", "target": "ops"], "target \"ops\" is not a pool"),
                ("emit", ["event_type": "plan_ready", "payload": .string(String(repeating: "x", count: 5000))], "more than the cluster's limit of 4096 bytes"),
                ("emit", ["event_type": "plan_ready", "events": []], "not both"),
                ("emit", ["events": [["event_type": "plan_ready"], "text"]], "events[1] must be an object"),
                ("wait_for_events", ["timeout_s": 0], "more than 0 seconds"),
                ("wait_for_events", ["timeout_s": 601], "at most 600 seconds"),
                ("wait_for_events", ["after": -1], "\"after\" must be a cursor"),
                ("wait_for_events", ["max_count": 0], "must be from 1 to 1000"),
                ("wait_for_events", ["since": "yesterday"], "not an ISO 8601 date-time"),
                ("wait_for_events", ["pool": "ops"], "pool \"ops\" is not a pool"),
                ("ask", ["pool": "ops", "question": "?"], "no pool \"ops\""),
                ("ask", ["pool": "planner"], "missing argument \"question\""),
                ("answer", ["answer": 1], "missing argument \"request_id\""),
                ("report_sync_point", ["gate": "nightly"], "no gate \"nightly\""),
                ("report_conflict", ["subject": "x", "parties": ["ops"], "description": "d"], "party \"ops\" is not a pool"),
                ("history", ["after_seq": 2], "give origin too"),
                ("deploy", [:], "unknown tool \"deploy\""),
            ]
            for (tool, arguments, expected) in cases {
                let text = await errorText(tools, tool, arguments)
                #expect(text?.contains(expected) == true, "\(tool) \(arguments): \(text ?? "no error")")
            }
        }
    }

    @Test func aGoodCallWithoutANodeSaysItIsNotRunning() async throws {
        try await withTools { tools in
            for (tool, arguments) in [("emit", ["event_type": "plan_ready"]), ("status", [:]), ("wait_for_events", ["timeout_s": 1])] as [(String, [String: Value])] {
                let text = await errorText(tools, tool, arguments)
                #expect(text?.contains("node builder-1 is not running") == true, "\(tool): \(text ?? "no error")")
            }
            let custom = await errorText(tools, "emit", ["event_type": "lint_report", "allow_custom_type": true])
            #expect(custom?.contains("not running") == true, "a custom type with allow_custom_type passes the checks: \(custom ?? "")")
            let gates = await errorText(tools, "gates", [:])
            #expect(gates?.contains("coordinator (node coordinator) is not running") == true, "\(gates ?? "")")
        }
    }

    @Test func definitionsHaveObjectSchemasAndDescriptions() async throws {
        try await withTools { tools in
            let definitions = tools.definitions
            #expect(definitions.count == 12)
            for tool in definitions {
                #expect(tool.inputSchema.objectValue?["type"] == "object", "\(tool.name)")
                #expect((tool.description ?? "").count > 40, "\(tool.name)")
            }
            let emit = definitions.first { $0.name == "emit" }!
            #expect(emit.description?.contains("builder-1") == true)
        }
    }
}
