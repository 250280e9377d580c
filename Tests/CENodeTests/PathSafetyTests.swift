import CECore
import Foundation
import Testing
import ZeroMQ

/// Names that arrive from the network never become paths outside the node's folders, and the
/// local control endpoint is its owner's alone.
@Suite("Paths and permissions", .serialized)
struct PathSafetyTests {
    @Test func aRequestIDThatClimbsOutOfTheWorkspaceIsRefusedAndNothingIsWritten() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder")],
                              start: ["planner-1"]) { cluster in
            let context = try cluster.rawContext()
            let target = cluster.root + "/pwned-" + UUID().uuidString.prefix(6)
            let workspace = cluster.workspace("planner-1")
            let requests = workspace + "/.ce-events/requests"
            // From the requests folder, up to the cluster's root: what the attack aimed at.
            let depth = requests.split(separator: "/").count - cluster.root.split(separator: "/").count
            let climbing = String(repeating: "../", count: depth) + URL(fileURLWithPath: target).lastPathComponent
            let hostile = [climbing, "../../x", "/tmp/abs", ".hidden", "a/b", "", String(repeating: "r", count: 129), "ok\u{0}nul"]
            /// A question with this request id, as builder-1 sends it; the reply.
            func ask(_ requestID: String) async throws -> JSONValue {
                let req = try context.socket(.req)
                defer { req.close() }
                try req.set(.linger(milliseconds: 0))
                try cluster.dial(req, as: "builder-1", to: "planner-1")
                try req.connect(cluster.topology.node(named: "planner-1")!.repEndpoint)
                let body: JSONValue = ["v": 1, "request_id": .string(requestID), "from_node": "builder-1", "from_pool": "builder",
                                       "pool": "planner", "question": "where?"]
                try await req.send(Message(body.serialized()))
                return try JSONValue(parsing: try await req.receive(timeout: .seconds(10))[0].bytes)
            }
            for requestID in hostile {
                let reply = try await ask(requestID)
                #expect(reply["status"]?.stringValue == "error", "request_id \(requestID.debugDescription) was taken")
                #expect(reply["error"]?.stringValue?.contains("request_id") == true, "\(reply)")
            }
            let written = try FileManager.default.contentsOfDirectory(atPath: cluster.root).filter { $0.hasPrefix("pwned") }
            #expect(written.isEmpty, "files written outside the workspace: \(written)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: requests).isEmpty)
            // The node still answers a well-formed question.
            let agent = Task { try await cluster.answerNextQuestion(of: "planner-1", with: "here") }
            let reply = try await ask("r-ok.1")
            _ = try await agent.value
            #expect(reply["answer"]?.stringValue == "here")
            await context.shutdown()
        }
    }

    @Test func theDataFolderAndTheControlSocketsAreTheOwnersAlone() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner")]) { cluster in
            let data = cluster.data("planner-1")
            func mode(_ path: String) throws -> Int {
                (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
            }
            let modes = try [data, data + "/control.sock", data + "/feed.sock"].map(mode)
            #expect(modes == [0o700, 0o600, 0o600])
        }
    }
}
