import CECluster
import CECore
import CENode
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The `ce-node` commands as a person and a script use them: readable lines by default and
/// JSON with --json, `tail` with a backlog, names checked against the topology, and an
/// unanswered `ask` that says where its question waited. Real processes.
@Suite("The command line", .serialized)
struct CLITests {
    static let pair: [Cluster.NodeDef] = [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]

    /// Emits `plan_ready` with payload `{"n": n}` at planner-1.
    @discardableResult
    func emitPlan(_ cluster: Cluster, _ n: Int) async throws -> JSONValue {
        try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(n))])
    }

    /// A key is replaced only once the keys file lists its public key: a keys file that
    /// cannot be written leaves the node's secret key (and its next key) as they were.
    @Test func aKeysFileThatCannotBeEditedLeavesTheSecretKeyAsItWas() async throws {
        let root = NSTemporaryDirectory() + "ce-keys-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        // The keys file's folder is a regular file: the topology loads, the keys file cannot be written.
        try "x\n".write(toFile: root + "/afile", atomically: true, encoding: .utf8)
        let topology = root + "/t.yaml"
        try """
            version: 1
            settings: { keys_file: afile/keys.yaml }
            nodes:
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 }, data: data-a }
            """.write(toFile: topology, atomically: true, encoding: .utf8)
        let made = try await runCENode(["keys", "generate", "--topology", topology, "--node", "a"])
        #expect(made.status == 0, "\(made.output)")
        let key = root + "/data-a/curve.key"
        let before = try String(contentsOfFile: key, encoding: .utf8)
        let replaced = try await runCENode(["keys", "generate", "--topology", topology, "--node", "a", "--force", "--add-to-keys-file"])
        #expect(replaced.status != 0 && replaced.output.contains("cannot update the keys file") && replaced.output.contains("secret key of a is unchanged"), "\(replaced.output)")
        #expect(try String(contentsOfFile: key, encoding: .utf8) == before, "the secret key was replaced although its public key is listed nowhere")
        let rotated = try await runCENode(["keys", "rotate", "--topology", topology, "--node", "a", "--add-to-keys-file"])
        #expect(rotated.status != 0 && rotated.output.contains("next secret key of a is unchanged"), "\(rotated.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/data-a") == ["curve.key"], "no next key, no temporary file left")
    }

    @Test func historyPrintsReadableLinesByDefaultAndEnvelopesWithJSON() async throws {
        try await withCluster(Self.pair, start: ["planner-1"]) { cluster in
            let plan = try await cluster.control("planner-1", [
                "cmd": "emit", "event_type": "plan_ready", "payload": ["feature": "login"], "target": "builder", "correlation_id": "c-1",
            ])["event"]!
            let long = try await cluster.emit("planner-1", "plan_ready", ["text": .string(String(repeating: "x", count: 300))])

            let readable = try await runCENode(["history", "--data", cluster.data("planner-1")])
            #expect(readable.status == 0, "\(readable.output)")
            let lines = readable.output.split(separator: "\n").map(String.init)
            #expect(lines.count == 2, "\(readable.output)")
            let time = plan["timestamp"]!.stringValue!
            #expect(lines.first == "\(time)  planner-1#1  plan_ready  stream=planner  target=builder  correlation=c-1  {\"feature\":\"login\"}")
            // A long payload is cut, and the line says so.
            let second = lines.last ?? ""
            #expect(second.hasPrefix("\(long["timestamp"]!.stringValue!)  planner-1#2  plan_ready  stream=planner  {\"text\":\"xxx"), "\(second)")
            #expect(second.hasSuffix("…") && second.count < 200, "\(second)")
            #expect(lines.allSatisfy { (try? JSONValue(parsing: $0)) == nil }, "readable lines are not JSON")

            let json = try await runCENode(["history", "--data", cluster.data("planner-1"), "--json"])
            #expect(json.status == 0, "\(json.output)")
            let events = try json.output.split(separator: "\n").map { try JSONValue(parsing: String($0)) }
            #expect(events == [plan, long])
        }
    }

    @Test func historySaysWhenItStoppedAtItsLimit() async throws {
        try await withCluster(Self.pair, start: ["planner-1"]) { cluster in
            for n in 1...3 { try await emitPlan(cluster, n) }
            let run = try await runCENode(["history", "--data", cluster.data("planner-1"), "--limit", "2"])
            #expect(run.status == 0, "\(run.output)")
            let events = run.output.split(separator: "\n").filter { $0.contains("plan_ready") }
            #expect(events.count == 2 && events.allSatisfy { $0.contains("planner-1#") }, "\(run.output)")
            #expect(run.output.contains("history: stopped at --limit 2; more events match"), "\(run.output)")
            let all = try await runCENode(["history", "--data", cluster.data("planner-1"), "--limit", "3"])
            #expect(!all.output.contains("stopped at"), "\(all.output)")
        }
    }

    @Test func tailLastPrintsTheLastStoredEventsThenFollows() async throws {
        try await withCluster(Self.pair, start: ["planner-1"]) { cluster in
            for n in 1...4 { try await emitPlan(cluster, n) }
            let tail = try Background(["tail", "--data", cluster.data("planner-1"), "--type", "plan_ready", "--last", "2", "--count", "3", "--json"])
            defer { tail.stop() }
            try await eventually(20, "tail prints the stored two") { tail.lines.count >= 2 || !tail.process.isRunning }
            try #require(tail.lines.count >= 2, "\(tail.output)")
            try await emitPlan(cluster, 5)
            let status = try await tail.exit(within: 20)
            #expect(status == 0, "\(tail.output)")
            let ns = tail.lines.map { (try? JSONValue(parsing: $0))?["payload"]?["n"]?.intValue }
            #expect(ns == [3, 4, 5], "\(tail.output)")
        }
    }

    @Test func tailSinceStartsAtATimeThenFollows() async throws {
        try await withCluster(Self.pair, start: ["planner-1"]) { cluster in
            let first = try await emitPlan(cluster, 1)
            // The next event is stamped at a later millisecond than the first.
            let stamped = Timestamp.parse(first["timestamp"]!.stringValue!)!
            try await eventually(5, "the clock passes the first event's time") { Date().timeIntervalSince(stamped) > 0.002 }
            let second = try await emitPlan(cluster, 2)
            try await emitPlan(cluster, 3)
            let since = second["timestamp"]!.stringValue!
            let tail = try Background(["tail", "--data", cluster.data("planner-1"), "--since", since, "--count", "3"])
            defer { tail.stop() }
            try await eventually(20, "tail prints the stored two") { tail.lines.count >= 2 || !tail.process.isRunning }
            try #require(tail.lines.count >= 2, "\(tail.output)")
            try await emitPlan(cluster, 4)
            let status = try await tail.exit(within: 20)
            #expect(status == 0, "\(tail.output)")
            let lines = tail.lines
            #expect(lines.count == 3, "\(tail.output)")
            for (line, n) in zip(lines, [2, 3, 4]) {
                #expect(line.contains("  plan_ready  stream=planner  {\"n\":\(n)}"), "\(line)")
            }
            #expect(lines.first?.hasPrefix(since) == true, "\(tail.output)")
        }
    }

    @Test func misspeltNamesAreErrorsNamingTheNearest() async throws {
        try await withCluster(Self.pair, start: ["planner-1"]) { cluster in
            try await emitPlan(cluster, 1)
            // A type the topology does not list, stored on purpose: found, not refused.
            try await cluster.emit("planner-1", "odd_kind")
            let named = ["--topology", cluster.topologyPath, "--node", "planner-1"]

            let type = try await runCENode(["history"] + named + ["--type", "plan_redy"])
            #expect(type.status != 0, "\(type.output)")
            #expect(type.output.contains("did you mean plan_ready?"), "\(type.output)")
            let custom = try await runCENode(["history"] + named + ["--type", "odd_kind"])
            #expect(custom.status == 0 && custom.output.contains("  odd_kind  "), "\(custom.output)")
            let origin = try await runCENode(["history"] + named + ["--origin", "planer-1"])
            #expect(origin.status != 0 && origin.output.contains("did you mean planner-1?"), "\(origin.output)")
            let tail = try await runCENode(["tail"] + named + ["--type", "plan_redy"], seconds: 20)
            #expect(tail.status != 0 && tail.output.contains("did you mean plan_ready?"), "\(tail.output)")
            let pool = try await runCENode(["ask"] + named + ["--pool", "buildr", "--question", "hi"], seconds: 20)
            #expect(pool.status != 0 && pool.output.contains("did you mean builder?"), "\(pool.output)")
            let target = try await runCENode(["emit"] + named + ["--type", "plan_ready", "--target", "bulder"])
            #expect(target.status != 0 && target.output.contains("did you mean builder?"), "\(target.output)")
        }
    }

    @Test func anUnansweredAskSaysWhereTheQuestionWaited() async throws {
        let nodes: [Cluster.NodeDef] = [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder", workspace: true)]
        try await withCluster(nodes) { cluster in
            let folder = cluster.workspace("builder-1") + "/.ce-events"
            let run = try await runCENode(
                ["ask", "--topology", cluster.topologyPath, "--node", "planner-1", "--pool", "builder", "--question", "anyone?", "--timeout-ms", "300"],
                seconds: 30)
            #expect(run.status != 0, "\(run.output)")
            #expect(run.output.contains("did not answer"), "\(run.output)")
            #expect(run.output.contains("builder-1: as \(folder)/requests/{request_id}.json"), "\(run.output)")
            #expect(run.output.contains("\(folder)/replies/{request_id}.json"), "\(run.output)")
            #expect(run.output.contains("--timeout-ms"), "\(run.output)")
            // The question did wait there: it moved to requests/expired/ when the wait ran out.
            try await eventually(10, "the question file is in requests/expired/") {
                ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/requests/expired")) ?? []).contains { $0.hasSuffix(".json") }
            }
        }
    }
}

/// `ce-node` running beside the test, its output (stdout and stderr) collected in a file.
final class Background: @unchecked Sendable {
    // @unchecked Sendable: the process and the file are only touched by the test that owns them.
    let process = Process()
    let file: String

    init(_ arguments: [String]) throws {
        file = NSTemporaryDirectory() + "ce-bg-" + UUID().uuidString.prefix(8)
        FileManager.default.createFile(atPath: file, contents: nil)
        process.executableURL = ceNodeBinary
        process.arguments = arguments
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: file, encoding: .utf8)) ?? "" }
    /// The complete lines printed so far.
    var lines: [String] {
        let text = output
        let complete = text.hasSuffix("\n") ? text : String(text[..<(text.lastIndex(of: "\n") ?? text.startIndex)])
        return complete.split(separator: "\n").map(String.init)
    }

    /// The exit status, once it has exited (at most `seconds`).
    func exit(within seconds: Double) async throws -> Int32 {
        try await eventually(seconds, "ce-node \(process.arguments?.first ?? "") exits\n\(output)") { !process.isRunning }
        return process.terminationStatus
    }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            awaitExit(process)
        }
        try? FileManager.default.removeItem(atPath: file)
    }
}
