import CECluster
import CECore
import CENode
import CEStore
import Foundation
import Synchronization
import Testing
import ZeroMQ

@Suite("ce-node processes on loopback", .serialized)
struct NodeTests {
    @Test func broadcastReachesTwoPools() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder"), .init(name: "reviewer-1", pool: "reviewer")]) { cluster in
            let event = try await cluster.emit("planner-1", "plan_ready", ["feature": "login"])
            let id = event["id"]!.stringValue!
            for node in ["builder-1", "reviewer-1"] {
                try await eventually(10, "\(node) stores the plan") { try await cluster.history(node).contains { $0["id"]?.stringValue == id } }
            }
            // Stored at the origin too, with its sequence.
            let origin = try await cluster.history("planner-1")
            #expect(origin.map { $0["seq"]?.intValue } == [1])
            // Each store's index file reads what was stored, after the commit.
            for node in ["planner-1", "builder-1", "reviewer-1"] {
                try await eventually(10, "\(node)'s index reads its store") {
                    let index = try await cluster.status(node)["index"]
                    let stored = index?["stored_up_to"]?.intValue ?? -1
                    return stored >= 1 && index?["read_up_to"]?.intValue == stored && index?["error"] == nil
                }
            }
        }
    }

    @Test func threeStagePipelineAndFilteredSubscriptions() async throws {
        let pools = """
            pools:
              builder: { subscribe: [plan_ready] }
              reviewer: { subscribe: [build_ready] }
              planner: { subscribe: [review_complete] }

            """
        try await withCluster(
            [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder"), .init(name: "reviewer-1", pool: "reviewer")],
            pools: pools) { cluster in
            // planner -> builder -> reviewer -> planner, each stage reacting to what it received.
            try await cluster.emit("planner-1", "plan_ready", ["step": 1])
            try await eventually(10, "builder receives the plan") { !(try await cluster.history("builder-1", type: "plan_ready")).isEmpty }
            try await cluster.emit("builder-1", "build_ready", ["step": 2])
            try await eventually(10, "reviewer receives the build") { !(try await cluster.history("reviewer-1", type: "build_ready")).isEmpty }
            try await cluster.emit("reviewer-1", "review_complete", ["step": 3])
            try await eventually(10, "planner receives the review") { !(try await cluster.history("planner-1", type: "review_complete")).isEmpty }
            // Filtered: nobody stored what they did not subscribe to.
            #expect(try await cluster.history("reviewer-1", type: "plan_ready").isEmpty)
            #expect(try await cluster.history("builder-1", type: "review_complete").isEmpty)
            #expect(try await cluster.history("planner-1", type: "build_ready").isEmpty)
            // A type that merely shares a prefix is not delivered either.
            try await cluster.emit("planner-1", "plan_ready_v2", ["x": 1])
            try await cluster.emit("planner-1", "plan_ready", ["after": true])
            try await eventually(10, "second plan arrives") { (try await cluster.history("builder-1", type: "plan_ready")).count == 2 }
            #expect(try await cluster.history("builder-1", type: "plan_ready_v2").isEmpty)
        }
    }

    @Test func askGetsAnAnswerFromTheEventFolderOnce() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder")],
                                        settings: "heartbeat_ms: 200\n  ask_timeout_ms: 5000\n  ask_retries: 0") { cluster in
            let agent = Task { try await cluster.answerNextQuestion(of: "planner-1", with: "token") }
            let reply = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": ["text": "cookie or token?"]])
            let question = try await agent.value
            #expect(question["question"]?["text"]?.stringValue == "cookie or token?")
            #expect(question["from_node"]?.stringValue == "builder-1")
            #expect(reply["answer"]?.stringValue == "token")
            let status = try await cluster.status("planner-1")
            #expect(status["counters"]?["questions_answered"]?.intValue == 1)
        }
    }

    @Test func aQuestionIsAnsweredOnceAcrossAResponderRestart() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder")]) { cluster in
            // The asker's side of the wire, with a request id of its own, as a retry would send it.
            let context = try cluster.rawContext()
            defer { Task { await context.shutdown() } }
            func send(_ requestID: String) async throws -> JSONValue {
                let req = try context.socket(.req)
                defer { req.close() }
                try req.set(.linger(milliseconds: 0))
                try cluster.dial(req, as: "builder-1", to: "planner-1")
                try req.connect(cluster.topology.node(named: "planner-1")!.repEndpoint)
                let body: JSONValue = ["v": 1, "request_id": .string(requestID), "from_node": "builder-1", "from_pool": "builder",
                                       "pool": "planner", "question": "cookie or token?"]
                try await req.send(Message(body.serialized()))
                return try JSONValue(parsing: try await req.receive(timeout: .seconds(10))[0].bytes)
            }
            // 1. The responder dies before its agent answers; the retry after its restart is answered.
            let first = Task { try? await send("r-1") }
            try await eventually(10, "the question reaches the agent") {
                ((try? FileManager.default.contentsOfDirectory(atPath: cluster.workspace("planner-1") + "/.ce-events/requests")) ?? []).contains("r-1.json")
            }
            cluster.kill("planner-1")
            first.cancel()
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            let agent = Task { try await cluster.answerNextQuestion(of: "planner-1", with: "token") }
            let answered = try await send("r-1")
            _ = try await agent.value
            #expect(answered["answer"]?.stringValue == "token")
            // 2. Answered, then restarted: a retry gets the recorded answer; the agent is not asked again.
            cluster.kill("planner-1")
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            let again = try await send("r-1")
            #expect(again["answer"]?.stringValue == "token")
            let counters = try await cluster.status("planner-1")["counters"]
            #expect(counters?["repeated_questions"]?.intValue == 1)
            #expect(counters?["questions_answered"]?.intValue == 0)
            let files = try FileManager.default.contentsOfDirectory(atPath: cluster.workspace("planner-1") + "/.ce-events/requests")
            #expect(!files.contains("r-1.json"))
        }
    }

    @Test func aSlowAnswerIsRetriedOnAFreshSocketAndAnsweredOnce() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder")],
                              settings: "heartbeat_ms: 200\n  ask_timeout_ms: 300\n  ask_retries: 5") { cluster in
            let requests = cluster.workspace("planner-1") + "/.ce-events/requests"
            // The agent takes longer than the asker's timeout: the asker retries meanwhile.
            let agent = Task {
                try await cluster.answerNextQuestion(of: "planner-1", with: "slow but sure") {
                    (try await cluster.status("planner-1")["counters"]?["repeated_questions"]?.intValue ?? 0) >= 1
                }
            }
            let reply = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "take your time"])
            try await agent.value
            #expect(reply["answer"]?.stringValue == "slow but sure")
            let counters = try await cluster.status("planner-1")["counters"]
            #expect(counters?["questions_answered"]?.intValue == 1)
            #expect((counters?["repeated_questions"]?.intValue ?? 0) >= 1)
            // Only one question file was ever written for the retried request.
            let files = (try? FileManager.default.contentsOfDirectory(atPath: requests))?.filter { $0.hasSuffix(".json") } ?? []
            #expect(files.isEmpty)
        }
    }

    @Test func tailFollowsLiveEventsAndSigtermStopsCleanly() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]) { cluster in
            let tail = Process()
            tail.executableURL = ceNodeBinary
            tail.arguments = ["tail", "--data", cluster.data("builder-1"), "--type", "build_ready", "--count", "1", "--json"]
            let pipe = Pipe()
            tail.standardOutput = pipe
            try tail.run()
            defer { if tail.isRunning { tail.terminate() } }
            // Keep emitting until the tail, which may still be connecting, has seen one.
            try await eventually(10, "tail prints an event") {
                try await cluster.emit("planner-1", "plan_ready")
                try await cluster.emit("builder-1", "build_ready", ["n": 1])
                return !tail.isRunning
            }
            let line = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let event = try JSONValue(parsing: line.trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(event["event_type"]?.stringValue == "build_ready")
            #expect(event["origin"]?.stringValue == "builder-1")
            try await cluster.stop("builder-1")
            #expect(cluster.processes["builder-1"]?.terminationStatus == 0)
            #expect(!FileManager.default.fileExists(atPath: cluster.data("builder-1") + "/control.sock"))
        }
    }

    @Test func askToADeadResponderTimesOutWithAClearError() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")], start: ["builder-1"]) { cluster in
            let started = ContinuousClock.now
            do {
                _ = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "anyone?"])
                Issue.record("ask to a dead pool returned")
            } catch {
                let text = "\(error)"
                #expect(text.contains("planner") && text.contains("did not answer") && text.contains("2 attempts"), "\(text)")
            }
            // 2 attempts of 500 ms each, not forever.
            #expect(ContinuousClock.now - started < .seconds(8))
            do {
                _ = try await cluster.control("builder-1", ["cmd": "ask", "pool": "nobody", "question": "?"])
                Issue.record("ask to an unknown pool returned")
            } catch {
                #expect("\(error)".contains("no pool \"nobody\""))
            }
            // The node is still fine.
            let failed = try await cluster.status("builder-1")["counters"]?["asks_failed"]?.intValue
            #expect(failed == 1)
        }
    }

    @Test func eventFolderRoundTrip() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder", workspace: true)]) { cluster in
            let outbox = cluster.workspace("planner-1") + "/.ce-events"
            // Write, then rename in: the documented way.
            let file = #"{"stream":"planner","event_type":"schema_v1","payload":{"tables":["user"]},"timestamp":"2026-11-25T10:00:00Z"}"#
            try Data(file.utf8).write(to: URL(fileURLWithPath: outbox + "/.writing"))
            try FileManager.default.moveItem(atPath: outbox + "/.writing", toPath: outbox + "/planner_schema_v1_20261125T100000Z.json")
            let inbox = cluster.workspace("builder-1") + "/.ce-events/inbox"
            var delivered: [String] = []
            try await eventually(10, "the event reaches the builder's inbox") {
                delivered = (try? FileManager.default.contentsOfDirectory(atPath: inbox))?.filter { $0.hasSuffix(".json") } ?? []
                return !delivered.isEmpty
            }
            let content = try JSONValue(parsing: [UInt8](FileManager.default.contents(atPath: inbox + "/" + delivered[0])!))
            #expect(content["event_type"]?.stringValue == "schema_v1")
            #expect(content["payload"]?["tables"]?[0]?.stringValue == "user")
            #expect(delivered[0].hasPrefix("planner_schema_v1_"))
            try await eventually(5, "the file is moved aside") {
                FileManager.default.fileExists(atPath: outbox + "/sent/planner_schema_v1_20261125T100000Z.json")
            }
            // A broken file is retried, then quarantined with the reason; the node keeps running.
            try Data("{\"stream\": \"planner\", \"event_ty".utf8).write(to: URL(fileURLWithPath: outbox + "/broken.json"))
            try await eventually(10, "the broken file is quarantined") {
                FileManager.default.fileExists(atPath: outbox + "/rejected/broken.json.error")
            }
            let reason = try String(contentsOfFile: outbox + "/rejected/broken.json.error", encoding: .utf8)
            #expect(reason.contains("JSON"))
            #expect(try await cluster.history("planner-1").count == 1)
        }
    }

    @Test func filesDroppedWhileTheNodeWasDownGoOutInNameOrder() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true)], start: []) { cluster in
            // More than one chunk of emits, with a broken file among them.
            let count = 2300
            let outbox = try cluster.dropEventFiles("planner-1", count: count)
            try Data("{\"stream\": \"planner\", \"event_ty".utf8).write(to: URL(fileURLWithPath: outbox + "/planner_plan_ready_01500x.json"))
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            try await eventually(60, "every file is moved to sent/") {
                ((try? FileManager.default.contentsOfDirectory(atPath: outbox + "/sent")) ?? []).count == count
            }
            try await eventually(10, "the broken file is quarantined") {
                FileManager.default.fileExists(atPath: outbox + "/rejected/planner_plan_ready_01500x.json.error")
            }
            try await cluster.expectEventFilesStoredInOrder("planner-1", count: count)
        }
    }

    @Test func restartKeepsTheStoreAndContinuesTheSequence() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]) { cluster in
            for i in 1...3 { try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(i))]) }
            cluster.kill("planner-1")  // SIGKILL: acknowledged events must survive
            #expect(try await cluster.history("planner-1").count == 3)
            try cluster.start("planner-1")
            let restarted = Date()
            try await cluster.waitUntilUp("planner-1")
            // Until the builder has reconnected, a PUB has nobody to send to (slow joiner):
            // wait until the builder hears a heartbeat sent after the restart.
            try await eventually(10, "builder hears the restarted planner") {
                let peers = try await cluster.status("builder-1")["peers"]?.arrayValue ?? []
                guard let heard = peers.first(where: { $0["name"]?.stringValue == "planner-1" })?["last_heard_ms"]?.doubleValue else { return false }
                return heard < Date().timeIntervalSince(restarted) * 1000 - 50
            }
            let event = try await cluster.emit("planner-1", "plan_ready", ["n": 4])
            #expect(event["seq"]?.intValue == 4)
            try await eventually(10, "builder has all four, once each") { try await cluster.history("builder-1").count == 4 }
            let seqs = try await cluster.history("builder-1").compactMap { $0["seq"]?.intValue }
            #expect(seqs == [1, 2, 3, 4])
        }
    }

    /// A node whose volume is lost starts a new store in a new epoch: it numbers from 1 again
    /// without colliding with its old events (its peers keep both lines), and it gets its
    /// own earlier events back from a peer that holds them.
    @Test func aNodeWhoseStoreWasWipedStartsANewEpochAndGetsItsHistoryBack() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]) { cluster in
            var old: [String] = []
            for i in 1...3 { old.append(try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(i))])["id"]!.stringValue!) }
            try await eventually(10, "builder has the three") { try await cluster.history("builder-1").count == 3 }
            let oldEpoch = try await cluster.status("planner-1")["epoch"]!.stringValue!
            cluster.kill("planner-1")
            try FileManager.default.removeItem(atPath: cluster.data("planner-1"))  // the volume is gone
            try cluster.restoreKey("planner-1")  // its identity comes back from a backup
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            // Emitted right away: no waiting for the builder to reconnect; replay covers it.
            let event = try await cluster.emit("planner-1", "plan_ready", ["n": 4])
            let newEpoch = try await cluster.status("planner-1")["epoch"]!.stringValue!
            #expect(event["seq"]?.intValue == 1 && newEpoch != oldEpoch && newEpoch > oldEpoch)
            try await eventually(10, "builder stores the new event beside the old ones") { try await cluster.history("builder-1").count == 4 }
            let lines = try cluster.storedEvents("builder-1", origin: "planner-1").map { "\($0.epoch == oldEpoch ? "old" : "new")-\($0.seq)" }
            #expect(lines == ["old-1", "old-2", "old-3", "new-1"])
            try await eventually(15, "planner-1 has its own earlier events back") {
                Set(try cluster.storedEvents("planner-1", origin: "planner-1").map(\.id)).isSuperset(of: old)
            }
            try await eventually(15, "its refill is done") { try await cluster.status("planner-1")["refill"]?["done"]?.boolValue == true }
            let held = try await cluster.status("builder-1")["lines"]!.arrayValue!.filter { $0["origin"]?.stringValue == "planner-1" }
            #expect(held.map { $0["epoch"]!.stringValue! }.sorted() == [oldEpoch, newEpoch], "status shows both lines")
            #expect(held.first { $0["epoch"]?.stringValue == newEpoch }?["current"]?.boolValue == true)
        }
    }

    @Test func badInputIsCountedAndRejectedAndNothingStoredIsLost() async throws {
        // "mallory" is in the topology but is this test's own raw PUB socket.
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "planner")],
            settings: "heartbeat_ms: 200\n  max_message_bytes: 4096", start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            let good = Event(id: "good-1", origin: "mallory", seq: 1, stream: "planner", type: .planReady, timestamp: Date(), payload: ["ok": true])
            let goodMessage = Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(good))])
            // Slow joiner: repeat the good event until it is stored (duplicates are not stored twice).
            try await eventually(10, "the good event is stored") {
                try await pub.send(goodMessage)
                return try await cluster.history("builder-1").count == 1
            }
            var bad: [Message] = [
                Message([Frame("plan_ready/planner")]),  // one frame
                Message([Frame("plan_ready/planner"), Frame("{}"), Frame("extra")]),  // three frames
                Message([Frame([0xFF, 0xFE]), Frame(EnvelopeCodec.encode(good))]),  // topic not UTF-8
                Message([Frame("plan_ready/planner"), Frame("{not json")]),  // invalid JSON
                Message([Frame("plan_ready/planner"), Frame(#"{"v":1,"id":"x"}"#)]),  // missing fields
                Message([Frame("build_ready/planner"), Frame(EnvelopeCodec.encode(good))]),  // topic disagrees
            ]
            var future = good
            future.id = "future"
            future.seq = 2
            var envelope = String(decoding: EnvelopeCodec.encode(future), as: UTF8.self)
            envelope = envelope.replacingOccurrences(of: #""v":1"#, with: #""v":9"#)
            bad.append(Message([Frame("plan_ready/planner"), Frame(envelope)]))  // unknown version
            for message in bad { try await pub.send(message) }
            try await eventually(10, "every bad message is counted") {
                (try await cluster.status("builder-1")["counters"]?["rejected"]?.intValue ?? 0) >= bad.count
            }
            // Oversized (ZMQ_MAXMSGSIZE): the connection is dropped, the node lives and reconnects.
            try await pub.send(Frame("plan_ready/planner"), Frame([UInt8](repeating: 0x20, count: 8192)))
            var next = good
            next.id = "good-2"
            next.seq = 2
            let nextMessage = Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(next))])
            try await eventually(15, "a good event after the oversized one is stored") {
                try await pub.send(nextMessage)
                return try await cluster.history("builder-1").count == 2
            }
            #expect(try await cluster.history("builder-1").map { $0["id"]?.stringValue } == ["good-1", "good-2"])
            #expect(cluster.processes["builder-1"]!.isRunning)
            await context.shutdown()
        }
    }

    /// A node stopped cleanly leaves every event in `events.sqlite` itself (a copy of that file
    /// alone is a whole backup), even while another connection to the store is open: SQLite
    /// folds its WAL into the file on its own only when the last connection closes.
    @Test func aStoppedNodesStoreFileHoldsEveryEventWithoutItsWAL() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner")]) { cluster in
            for i in 1...20 { try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(i))]) }
            // Another connection, open across the stop (as a reader such as `ce-node history` may be).
            let reader = try EventStore(directory: cluster.data("planner-1"), durability: .normal)
            #expect(try reader.count() == 20)
            try await cluster.stop("planner-1")
            let copy = cluster.root + "/backup"
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: cluster.data("planner-1") + "/events.sqlite", toPath: copy + "/events.sqlite")
            #expect(try EventStore(directory: copy, durability: .normal).count() == 20, "the copied store file alone")
            #expect(try reader.count() == 20)
        }
    }

    /// A damaged store: moved aside and replaced by a new one by default; with `--no-refill`
    /// the node refuses to start, names the file, and leaves it as it was.
    @Test func aDamagedStoreIsMovedAsideOrWithNoRefillLeftAlone() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")]) { cluster in
            try await cluster.emit("planner-1", "plan_ready", ["n": 1])
            try await eventually(10, "builder has it") { try await cluster.history("builder-1").count == 1 }
            try await cluster.stop("builder-1")
            let path = cluster.data("builder-1") + "/events.sqlite"
            let garbage = Data(repeating: 0x5A, count: 64 * 1024)
            try garbage.write(to: URL(fileURLWithPath: path))
            // The WAL goes too: SQLite reads a page from the WAL before the file, so a WAL left
            // by the stopped node that still holds every page of this small store would cover
            // the garbage, and the store would open whole (as it did in one run).
            for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            let refused = try await runCENode(["run", "--topology", cluster.topologyPath, "--node", "builder-1", "--no-refill"], seconds: 30)
            #expect(refused.status != 0 && refused.status != -1, "exit status \(refused.status) (-1: still running after 30 s, killed)")
            #expect(refused.output.contains(path) && refused.output.contains("--no-refill"), "\(refused.output)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == garbage, "left as it was")
            try cluster.start("builder-1")
            try await cluster.waitUntilUp("builder-1")
            let aside = try FileManager.default.contentsOfDirectory(atPath: cluster.data("builder-1")).filter { $0.hasPrefix("events.sqlite.damaged-") }
            #expect(aside.count == 1)
            #expect(try Data(contentsOf: URL(fileURLWithPath: cluster.data("builder-1") + "/" + aside[0])) == garbage, "kept, not deleted")
            try await eventually(15, "the new store is refilled") { try await cluster.history("builder-1").count == 1 }
        }
    }

    /// A control client per call (the CLI, the demo, benchmarks polling status) leaves no
    /// file descriptor behind: a process that calls thousands of times keeps running.
    @Test func controlCallsLeaveNoDescriptorBehind() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner")]) { cluster in
            let client = ControlClient(dataDirectory: cluster.data("planner-1"))
            func descriptors() throws -> Int { try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count }
            for _ in 0..<20 { _ = try await client.call(["cmd": "status"]) }
            let before = try descriptors()
            for _ in 0..<300 { _ = try await client.call(["cmd": "status"]) }
            let after = try descriptors()
            // One per call would be 300; tests running beside this one in the process open and
            // close their own meanwhile, hence the margin.
            #expect(after - before < 100, "\(after - before) descriptors more after 300 calls (\(before) -> \(after))")
        }
    }

    @Test func cliRefusesBadFlagsWithClearErrors() async throws {
        let dir = NSTemporaryDirectory() + "ce-cli-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = dir + "/bad.yaml"
        try "version: 1\nnodes:\n  - name: a\n    pool: p\n    host: 999.1.1.1\n    ports: { pub: 70000, rep: 7001 }\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let run = { (args: [String]) async throws -> String in
            let (status, output) = try await runCENode(args)
            #expect(status != 0, "\(args) should fail")
            return output
        }
        let topologyError = try await run(["run", "--topology", bad, "--node", "a"])
        #expect(topologyError.contains("nodes[0].host"))
        #expect(topologyError.contains("nodes[0].ports.pub"))
        #expect(try await run(["run", "--topology", dir + "/missing.yaml", "--node", "a"]).contains("missing.yaml"))
        #expect(try await run(["emit", "--data", dir, "--type", "Bad-Type"]).contains("event type"))
        #expect(try await run(["emit", "--data", dir, "--type", "plan_ready", "--payload", "{oops"]).contains("--payload is not valid JSON"))
        #expect(try await run(["status", "--data", dir]).contains("no node is running"))
        #expect(try await run(["run", "--bogus-flag"]).contains("bogus-flag"))
    }
}

@Suite("Peers that are gone, said in the log")
struct PeerLogTests {
    @Test func aPeerThatNeverComesUpOrDoesNotResolveOrDiesIsNamedInTheLog() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "planner-1", pool: "planner"),
             .init(name: "ghost-1", pool: "reviewer", host: "no-such-host.invalid")],
            settings: "heartbeat_ms: 200", start: ["builder-1", "planner-1"]) { cluster in
            try await eventually(20, "builder-1 says the unresolvable peer was never heard") {
                cluster.log("builder-1").contains("peer ghost-1 (tcp://no-such-host.invalid:")
                    && cluster.log("builder-1").contains("does not resolve here")
            }
            cluster.kill("planner-1")
            try await eventually(10, "builder-1 says planner-1 went silent") { cluster.log("builder-1").contains("peer planner-1 (tcp://127.0.0.1") }
            try cluster.start("planner-1")
            try await eventually(10, "builder-1 says planner-1 is back") { cluster.log("builder-1").contains("peer planner-1 is back") }
            #expect(cluster.log("builder-1").contains("silent for"))
        }
    }
}

@Suite("Publishers that cannot replay")
struct NoReplayPublisherTests {
    /// A publisher of another make ("mallory": this test's raw PUB socket) sends heartbeats
    /// and an event after a gap, and answers no replay: the node takes the event anyway.
    @Test func eventsOfALivePublisherThatAnswersNoReplayAreTakenAfterAFewTries() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "planner")],
            settings: "heartbeat_ms: 200\n  ask_timeout_ms: 500", start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            let event = Event(id: "after-a-gap", origin: "mallory", seq: 3, stream: "planner", type: .planReady, timestamp: Date(), payload: .null)
            let message = Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(event))])
            let heartbeat = Message([Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"planner","seq":3}"#)])
            var sent = false
            try await eventually(30, "builder-1 stores mallory's event\n\(cluster.log("builder-1"))") {
                try await pub.send(heartbeat)
                if !sent, try await cluster.status("builder-1")["peers"]?.arrayValue?.first?["up"]?.boolValue == true {
                    try await pub.send(message)  // connected: it arrives, ahead of a gap (seq 1-2 unseen)
                    sent = true
                }
                return try await cluster.history("builder-1").contains { $0["id"]?.stringValue == "after-a-gap" }
            }
            #expect(cluster.log("builder-1").contains("answers no replay"))
            #expect(try await cluster.status("builder-1")["counters"]?["replay_requests"]?.intValue ?? 0 >= 5)
            await context.shutdown()
        }
    }
}

@Suite("Gaps told apart from filtered events")
struct MarksTests {
    /// A raw publisher ("mallory") numbers every event, but builders subscribe to plan_ready
    /// only: an event whose marks show that what came between was of other types is taken at
    /// once; one whose marks show a plan_ready the node never got waits for a replay.
    @Test func marksLetFilteredGapsPassAndHoldRealGaps() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "planner")],
            pools: "pools:\n  builder: { subscribe: [plan_ready] }\n",
            settings: "heartbeat_ms: 200\n  ask_timeout_ms: 500", start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            func event(_ seq: UInt64, marks: String) -> Message {
                let e = Event(id: "m-\(seq)", origin: "mallory", seq: seq, stream: "planner", type: .planReady, timestamp: Date(), payload: .null)
                return Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(e)), Frame(marks)])
            }
            func stored() async throws -> [String] { try await cluster.history("builder-1").compactMap { $0["id"]?.stringValue } }
            try await eventually(10, "builder-1 hears mallory") {
                try await pub.send(Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"planner","seq":0,"marks":{}}"#))
                return try await cluster.status("builder-1")["peers"]?.arrayValue?.first?["up"]?.boolValue == true
            }
            try await pub.send(event(1, marks: "{}"))
            // 2 was a build_log (filtered out by the subscription); 3's marks say so.
            try await pub.send(event(3, marks: #"{"plan_ready":1,"build_log":2}"#))
            try await eventually(10, "1 and 3 are taken") { try await stored() == ["m-1", "m-3"] }
            #expect(try await cluster.status("builder-1")["counters"]?["replay_requests"]?.intValue == 0)
            // 5's marks show a plan_ready (4) this node never got: 5 waits, a replay is asked for.
            try await pub.send(event(5, marks: #"{"plan_ready":4,"build_log":2}"#))
            try await eventually(10, "a replay is asked for") {
                (try await cluster.status("builder-1")["counters"]?["replay_requests"]?.intValue ?? 0) >= 1
            }
            #expect(try await stored() == ["m-1", "m-3"])
            let peer = try await cluster.status("builder-1")["peers"]?.arrayValue?.first
            #expect(peer?["cursor"]?.intValue == 3)
            #expect(peer?["waiting"]?.intValue == 1)
            await context.shutdown()
        }
    }
}

@Suite("A subscriber too far behind pauses the live stream")
struct LivePauseTests {
    /// A raw publisher ("mallory", an XPUB, so the test sees the subscriptions) sends event 1,
    /// then events after a gap, more than builder-1 may hold (`--max-held 5`): builder-1 drops
    /// the rest and stops taking mallory's events live (unsubscribes, keeps the heartbeats)
    /// while it replays. Mallory answers no replay, so the replay ends after a few tries with
    /// the held events taken; the live stream comes back (subscribed again) and the next
    /// event in line is taken live.
    @Test func eventsBeyondWhatMayBeHeldPauseTheLiveStreamUntilTheReplayEnds() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "planner")],
            settings: "heartbeat_ms: 200\n  ask_timeout_ms: 300", start: []) { cluster in
            try cluster.start("builder-1", ["--max-held", "5"])
            try await cluster.waitUntilUp("builder-1")
            let context = try cluster.rawContext()
            let pub = try cluster.impersonate("mallory", .xpub, in: context)
            func event(_ seq: UInt64) -> Message {
                let e = Event(id: "m-\(seq)", origin: "mallory", seq: seq, stream: "planner", type: .planReady, timestamp: Date(), payload: .null)
                return Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(e))])
            }
            func heartbeat(_ seq: Int) -> Message { Message([Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"planner","seq":\#(seq)}"#)]) }
            // What builder-1's SUB asked mallory for, in order: [1] + prefix subscribes, [0] + prefix unsubscribes.
            let subscriptions = Mutex<[String]>([])
            let watcher = Task.detached {
                while let message = try? await pub.receive() {
                    let bytes = message[0].bytes
                    guard let first = bytes.first else { continue }
                    subscriptions.withLock { $0.append((first == 1 ? "+" : "-") + String(decoding: bytes.dropFirst(), as: UTF8.self)) }
                }
            }
            defer { watcher.cancel() }
            try await eventually(10, "builder-1 subscribes to everything mallory sends and hears it") {
                try await pub.send(heartbeat(0))
                let up = try await cluster.status("builder-1")["peers"]?.arrayValue?.first?["up"]?.boolValue == true
                return up && subscriptions.withLock { $0.contains("+") }
            }
            try await pub.send(event(1))
            try await eventually(10, "1 is taken live") { try await cluster.history("builder-1").count == 1 }
            // 2 never comes: 3-7 are held, 8-12 are more than may be held.
            try await pub.send(batch: (3...12).map(event))
            try await eventually(10, "builder-1 pauses mallory's live events: heartbeats only") {
                subscriptions.withLock { $0.suffix(2) == ["+_hb/", "-"] }
            }
            // 8 is dropped, and the pause follows. 9-12 are dropped too when they came in the
            // same read; read after the pause, they are filtered out by the SUB socket, which
            // has unsubscribed (they never reach the node, as any live event during a pause).
            try await eventually(10, "8 is dropped") {
                try await cluster.status("builder-1")["counters"]?["pending_dropped"]?.intValue ?? 0 >= 1
            }
            #expect(try await cluster.status("builder-1")["counters"]?["pending_dropped"]?.intValue ?? 0 <= 5)
            #expect(try await cluster.status("builder-1")["counters"]?["live_pauses"]?.intValue == 1)
            // No replay from mallory: after a few tries builder-1 takes what it holds and resumes.
            try await eventually(30, "the live stream comes back\n\(cluster.log("builder-1"))") {
                try await pub.send(heartbeat(12))
                return subscriptions.withLock { $0.suffix(2) == ["+", "-_hb/"] }
            }
            #expect(cluster.log("builder-1").contains("answers no replay"))
            try await eventually(10, "3-7 are taken") { try await cluster.history("builder-1").count == 6 }
            // Taken live again: 8 is next in line.
            try await pub.send(event(8))
            try await eventually(10, "8 is taken live") {
                try await cluster.history("builder-1").compactMap { $0["id"]?.stringValue } == ["m-1", "m-3", "m-4", "m-5", "m-6", "m-7", "m-8"]
            }
            #expect(try await cluster.status("builder-1")["counters"]?["live_pauses"]?.intValue == 1)
            pub.close()
            await context.shutdown()
        }
    }
}
