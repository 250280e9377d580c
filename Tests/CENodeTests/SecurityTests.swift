import CECluster
import CECore
import CENode
import Foundation
import Synchronization
import Testing
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// Only the cluster's members take part, and each only for itself: real `ce-node` processes
/// with CURVE (the harness makes every node's keys), and this test's raw sockets as the
/// hostile peer ("mallory": listed in the topology with its own key, or a stranger's key).
@Suite("CURVE, the allow-list and origins bound to keys", .serialized)
struct SecurityTests {
    func counter(_ cluster: Cluster, _ node: String, _ name: String) async throws -> Int {
        try await cluster.status(node)["counters"]?[name]?.intValue ?? -1
    }

    @Test func anEventClaimingAnotherOriginIsRejectedAndTheGenuineOneIsStored() async throws {
        try await withCluster(
            [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "intruder")],
            start: ["planner-1", "builder-1"]) { cluster in
            let context = try cluster.rawContext()
            defer { Task { await context.shutdown() } }
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            try await eventually(10, "builder-1 hears mallory") {
                try await pub.send(Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"intruder","seq":0,"marks":{}}"#))
                return try await cluster.status("builder-1")["peers"]?.arrayValue?.first { $0["name"]?.stringValue == "mallory" }?["up"]?.boolValue == true
            }
            // planner-1's next sequence, claimed by mallory.
            let next = UInt64(try await cluster.status("planner-1")["last_seq"]?.intValue ?? 0) + 1
            let fake = Event(id: "forged-1", origin: "planner-1", seq: next, stream: "planner", type: .planReady, timestamp: Date(), payload: ["evil": true])
            let message = Message([Frame(Topic.bytes(type: .planReady, stream: "planner")), Frame(EnvelopeCodec.encode(fake)), Frame("{}")])
            try await eventually(10, "builder-1 counts the forged event") {
                try await pub.send(message)
                return try await counter(cluster, "builder-1", "forged") >= 1
            }
            // A heartbeat in planner-1's name is forged as well.
            try await pub.send(Frame("_hb/planner-1"), Frame(#"{"origin":"planner-1","pool":"planner","seq":999}"#))
            let genuine = try await cluster.emit("planner-1", "plan_ready", ["real": true])
            #expect(genuine["seq"]?.intValue == Int(next))
            try await eventually(10, "builder-1 stores planner-1's genuine event") {
                try await cluster.history("builder-1").contains { $0["id"] == genuine["id"] }
            }
            let stored = try await cluster.history("builder-1")
            #expect(!stored.contains { $0["id"]?.stringValue == "forged-1" })
            #expect(stored.filter { $0["origin"]?.stringValue == "planner-1" }.map { $0["seq"]?.intValue } == [Int(next)])
            #expect(try await counter(cluster, "builder-1", "duplicates") == 0)
            try await eventually(5, "the forged heartbeat is counted too") { try await counter(cluster, "builder-1", "forged") >= 2 }
            #expect(cluster.log("builder-1").contains("claims to come from planner-1 but mallory sent it"))
        }
    }

    @Test func aStrangersKeyIsRefusedAtTheHandshakeAndAListedKeyMayNotSpeakForAnother() async throws {
        try await withCluster(
            [.init(name: "planner-1", pool: "planner", workspace: true), .init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "intruder")],
            start: ["planner-1", "builder-1"]) { cluster in
            let context = try cluster.rawContext()
            defer { Task { await context.shutdown() } }
            let planner = cluster.topology.node(named: "planner-1")!
            let stranger = try CurveKeyPair.generate()
            let question: JSONValue = ["v": 1, "request_id": "r-stranger", "from_node": "builder-1", "from_pool": "builder", "pool": "planner", "question": "let me in?"]
            let req = try context.socket(.req)
            try req.set([.linger(milliseconds: 0), .curveServerKey(planner.publicKey!), .curvePublicKey(stranger.publicKey), .curveSecretKey(stranger.secretKey)])
            try req.connect(planner.repEndpoint)
            try await req.send(Message(question.serialized()))
            // A subscriber with the stranger's key hears nothing planner-1 publishes.
            let sub = try context.socket(.sub)
            try sub.set([.subscribe([]), .curveServerKey(planner.publicKey!), .curvePublicKey(stranger.publicKey), .curveSecretKey(stranger.secretKey)])
            try sub.connect(planner.pubEndpoint)
            try await eventually(10, "planner-1 counts the refused handshakes") { try await counter(cluster, "planner-1", "handshakes_refused") >= 2 }
            try await cluster.emit("planner-1", "plan_ready", ["n": 1])
            try await eventually(10, "builder-1 stores the event (the cluster itself works)") { try await cluster.history("builder-1").count == 1 }
            await #expect(throws: ZMQError.self) { _ = try await req.receive(timeout: .milliseconds(500)) }
            await #expect(throws: ZMQError.self) { _ = try await sub.receive(timeout: .milliseconds(200)) }
            // Nothing of the stranger's reached the node: no question file, no answer recorded.
            #expect(try FileManager.default.contentsOfDirectory(atPath: cluster.workspace("planner-1") + "/.ce-events/requests").isEmpty)
            #expect(try await counter(cluster, "planner-1", "questions_answered") == 0)
            // Logged once for the address, with the key.
            let log = cluster.log("planner-1")
            #expect(log.contains("refused a connection from 127.0.0.1: client key not allowed (public key \(stranger.publicKey)"))
            #expect(log.components(separatedBy: "refused a connection from 127.0.0.1").count == 2)

            // mallory's key is listed, but it asks in builder-1's name: refused with a reason, counted.
            let forger = try context.socket(.req)
            try forger.set(.linger(milliseconds: 0))
            try cluster.dial(forger, as: "mallory", to: "planner-1")
            try forger.connect(planner.repEndpoint)
            try await forger.send(Message(question.serialized()))
            let reply = try JSONValue(parsing: try await forger.receive(timeout: .seconds(10))[0].bytes)
            #expect(reply["status"]?.stringValue == "error")
            #expect(reply["error"]?.stringValue?.contains("from_node \"builder-1\"") == true, "\(reply)")
            #expect(try await counter(cluster, "planner-1", "forged") == 1)
            #expect(cluster.log("planner-1").contains("claims to come from builder-1 but mallory sent it"))
            // The same question in its own name is taken (the refusal was about the name, not the key).
            let own: JSONValue = ["v": 1, "request_id": "r-own", "from_node": "mallory", "from_pool": "intruder", "pool": "planner", "question": "?"]
            let agent = Task { try await cluster.answerNextQuestion(of: "planner-1", with: "yes") }
            try await forger.send(Message(own.serialized()))
            let answered = try JSONValue(parsing: try await forger.receive(timeout: .seconds(10))[0].bytes)
            _ = try await agent.value
            #expect(answered["answer"]?.stringValue == "yes" && answered["answered_by"]?.stringValue == "planner-1")
        }
    }

    @Test func aForgedAnswerOrReplayPageFromAListedNodeIsRejected() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "mallory", pool: "planner")],
            // A timeout long enough for a loaded machine: the ask must fail as forged, not as late.
            settings: "heartbeat_ms: 200\n  ask_timeout_ms: 4000\n  ask_retries: 0", start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            defer { Task { await context.shutdown() } }
            let router = try cluster.impersonate("mallory", .router, in: context)
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            let honest = Atomic<Bool>(false)
            let builderKey = cluster.keys["builder-1"]!.publicKey
            let senders = Mutex<Set<String>>([])
            // mallory's responder: answers in planner-1's name (and serves planner-1's events)
            // until told to be honest.
            let responder = Task {
                for try await message in router.messages {
                    senders.withLock { _ = $0.insert(message.userID ?? "none") }
                    let request = try JSONValue(parsing: message[2].bytes)
                    let name = honest.load(ordering: .relaxed) ? "mallory" : "planner-1"
                    var reply: [Frame]
                    if request["kind"]?.stringValue == "lines" {
                        // The survey: answered as itself (only answers and replay pages are forged here).
                        reply = [Frame(JSONValue.object(["v": 1, "status": "ok", "answered_by": "mallory", "lines": []]).serialized())]
                    } else if request["kind"]?.stringValue == "replay" {
                        let event = Event(id: "replayed-\(name)", origin: name, seq: 1, stream: "planner", type: .planReady, timestamp: Date(), payload: .null)
                        let header: JSONValue = ["v": 1, "status": "ok", "origin": .string(name), "last_seq": 1, "through": 1, "count": 1]
                        reply = [Frame(header.serialized()), Frame(EnvelopeCodec.encode(event))]
                    } else {
                        let body: JSONValue = ["v": 1, "request_id": request["request_id"] ?? .null, "status": "ok", "answered_by": .string(name), "answer": "trust me"]
                        reply = [Frame(body.serialized())]
                    }
                    try await router.send(Message([message[0], Frame([])] + reply))
                }
            }
            defer { responder.cancel() }
            // An answer in planner-1's name: not taken.
            await #expect { _ = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "which?"]) } throws: {
                "\($0)".contains("claimed to come from another node than the one asked")
            }
            #expect(try await counter(cluster, "builder-1", "forged") == 1)
            #expect(cluster.log("builder-1").contains("forged answer: it claims to come from planner-1 but mallory sent it"))
            // The request reached mallory from builder-1's key, and the node says so.
            #expect(senders.withLock { $0 } == [builderKey])
            // A replay page of planner-1's events from mallory (heartbeats say mallory has one event).
            try await eventually(10, "builder-1 counts a forged replay page") {
                try await pub.send(Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"planner","seq":1,"marks":{"plan_ready":1}}"#))
                return try await counter(cluster, "builder-1", "forged") >= 2
            }
            #expect(cluster.log("builder-1").contains("forged replay page: it claims to come from planner-1 but mallory sent it"))
            #expect(try await cluster.history("builder-1").isEmpty)
            // Honest from now on: the page and the answer are taken.
            honest.store(true, ordering: .relaxed)
            try await eventually(15, "builder-1 stores mallory's own replayed event") {
                try await pub.send(Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"planner","seq":1,"marks":{"plan_ready":1}}"#))
                return try await cluster.history("builder-1").map { $0["id"]?.stringValue } == ["replayed-mallory"]
            }
            let answer = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": "which?"])
            #expect(answer["answer"]?.stringValue == "trust me", "\(answer)")
            #expect(!(try await cluster.history("builder-1").contains { $0["origin"]?.stringValue == "planner-1" }))
        }
    }

    /// Questions to one responder go over the socket the first one opened: one connection and
    /// one CURVE handshake, not one per question (each connection has its own routing id at the
    /// responder's ROUTER).
    @Test func asksToOneResponderShareOneConnection() async throws {
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "planner-1", pool: "planner")],
            settings: "heartbeat_ms: 200\n  ask_timeout_ms: 4000\n  ask_retries: 0", start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            defer { Task { await context.shutdown() } }
            let router = try cluster.impersonate("planner-1", .router, in: context)
            let connections = Mutex<[[UInt8]]>([])
            let responder = Task {
                for try await message in router.messages {
                    let request = try JSONValue(parsing: message[2].bytes)
                    var body: [String: JSONValue] = ["v": 1, "status": "ok", "answered_by": "planner-1"]
                    if request["kind"]?.stringValue == "lines" {
                        body["lines"] = []
                    } else if request["kind"] == nil {
                        connections.withLock { $0.append(message[0].bytes) }
                        body["request_id"] = request["request_id"] ?? .null
                        body["answer"] = request["question"] ?? .null
                    } else {
                        body = ["v": 1, "status": "error", "answered_by": "planner-1", "error": "not served here"]
                    }
                    try await router.send(Message([message[0], Frame([]), Frame(JSONValue.object(body).serialized())]))
                }
            }
            defer { responder.cancel() }
            for i in 0..<10 {
                let answer = try await cluster.control("builder-1", ["cmd": "ask", "pool": "planner", "question": .number(Double(i))])
                #expect(answer["answer"]?.intValue == i, "\(answer)")
            }
            let seen = connections.withLock { $0 }
            #expect(seen.count == 10)
            #expect(Set(seen).count == 1, "10 questions came over \(Set(seen).count) connections")
        }
    }

    @Test func aNodeRefusesToStartWithoutItsOwnPrivateMatchingKey() async throws {
        let cluster = try await Cluster.make([.init(name: "builder-1", pool: "builder"), .init(name: "planner-1", pool: "planner")], pools: "", settings: "heartbeat_ms: 200")
        do {
            try await startChecks(cluster)
        } catch {
            await cluster.tearDown()
            throw error
        }
        await cluster.tearDown()
    }

    func startChecks(_ cluster: Cluster) async throws {
        let keyFile = cluster.data("builder-1") + "/curve.key"
        let run = ["run", "--topology", cluster.topologyPath, "--node", "builder-1"]
        func fails(_ expected: [String]) async throws {
            let (status, output) = try await runCENode(run, seconds: 20)
            #expect(status != 0)
            for text in expected { #expect(output.contains(text), "no \"\(text)\" in:\n\(output)") }
            #expect(!output.contains(cluster.keys["builder-1"]!.secretKey), "the secret key was printed")
        }
        // Readable by the group.
        chmod(keyFile, 0o640)
        try await fails(["builder-1", keyFile, "readable by others", "chmod 600"])
        chmod(keyFile, 0o600)
        // Another node's key.
        let own = try String(contentsOfFile: keyFile, encoding: .utf8)
        try FileManager.default.removeItem(atPath: keyFile)
        try FileManager.default.copyItem(atPath: cluster.data("planner-1") + "/curve.key", toPath: keyFile)
        try await fails(["does not belong to node builder-1", keyFile])
        // Missing: the error says which command makes it.
        try FileManager.default.removeItem(atPath: keyFile)
        try await fails(["node builder-1 has no secret key", keyFile, "ce-node keys generate --node builder-1"])
        // `keys generate` makes one (and will not overwrite it without --force); `keys show` agrees.
        let generated = try await runCENode(["keys", "generate", "--topology", cluster.topologyPath, "--node", "builder-1"])
        #expect(generated.status == 0, "\(generated.output)")
        let shown = try await runCENode(["keys", "show", "--topology", cluster.topologyPath, "--node", "builder-1"])
        #expect(shown.status == 0 && generated.output.hasSuffix(shown.output) && shown.output.hasPrefix("builder-1: \""), "\(shown.output)")
        let mode = (try FileManager.default.attributesOfItem(atPath: keyFile)[.posixPermissions] as? NSNumber)?.intValue
        #expect(mode == 0o600)
        let again = try await runCENode(["keys", "generate", "--topology", cluster.topologyPath, "--node", "builder-1"])
        #expect(again.status != 0 && again.output.contains("already holds a secret key"))
        #expect(try await runCENode(["keys", "generate", "--topology", cluster.topologyPath, "--node", "builder-1", "--force"]).status == 0)
        #expect(try String(contentsOfFile: keyFile, encoding: .utf8) != own)
        // A topology whose key is malformed: the node and the key field are named.
        let bad = try String(contentsOfFile: cluster.topologyPath, encoding: .utf8)
            .replacingOccurrences(of: cluster.keys["planner-1"]!.publicKey, with: "short")
        try bad.write(toFile: cluster.topologyPath, atomically: true, encoding: .utf8)
        try await fails(["public_key", "node \"planner-1\"", "40 Z85 characters"])
    }

    @Test func securityNoneIsSaidInTheLog() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")],
                              settings: "heartbeat_ms: 200\n  security: none") { cluster in
            #expect(cluster.keys.isEmpty)
            #expect(cluster.log("planner-1").contains("security is none"))
            #expect(try await cluster.status("planner-1")["security"]?.stringValue == "none")
            try await cluster.emit("planner-1", "plan_ready")
            try await eventually(10, "events flow without CURVE") { try await cluster.history("builder-1").count == 1 }
        }
        // And with the default (curve), no such warning.
        try await withCluster([.init(name: "planner-1", pool: "planner")]) { cluster in
            try #expect(try await cluster.status("planner-1")["security"]?.stringValue == "curve")
            #expect(!cluster.log("planner-1").contains("security is none"))
        }
    }
}
