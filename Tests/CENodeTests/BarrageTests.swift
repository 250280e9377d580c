import CECore
import Foundation
import Testing
import ZeroMQ

/// A hundred thousand random and mutated multipart messages at a live node: through its SUB
/// (as a listed publisher), at its `rep` ROUTER (which serves replay and `last_seen` too when
/// the topology gives no replay port) and at its local control endpoint. The node stays up,
/// answers, stores none of it, and stores a genuine event afterwards.
@Suite("A live node under a barrage of bad messages", .serialized)
struct BarrageTests {
    /// xorshift64*: a seeded generator, so a failing run can be replayed from its printed seed.
    struct Random: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 0x2545_F491_4F6C_DD1D
        }
    }

    /// A seed message mutated: bytes flipped, cut, doubled, frames dropped or added, or noise.
    static func mutate(_ seed: [[UInt8]], _ random: inout Random) -> [[UInt8]] {
        var frames = seed
        switch random.next() % 7 {
        case 0:  // random frames of random bytes
            return (0..<Int(random.next() % 4 + 1)).map { _ in (0..<Int(random.next() % 300)).map { _ in UInt8.random(in: 0...255, using: &random) } }
        case 1:  // flip bytes
            let f = Int(random.next() % UInt64(frames.count))
            for _ in 0..<Int(random.next() % 8 + 1) where !frames[f].isEmpty {
                frames[f][Int(random.next() % UInt64(frames[f].count))] = UInt8.random(in: 0...255, using: &random)
            }
        case 2:  // cut a frame
            let f = Int(random.next() % UInt64(frames.count))
            frames[f] = Array(frames[f].prefix(Int(random.next() % UInt64(frames[f].count + 1))))
        case 3:  // drop a frame
            if frames.count > 1 { frames.remove(at: Int(random.next() % UInt64(frames.count))) }
        case 4:  // add frames
            frames += (0..<Int(random.next() % 3 + 1)).map { _ in Array("{\"v\":1}".utf8) }
        case 5:  // nest deeply
            let depth = Int(random.next() % 2000)
            frames[frames.count - 1] = Array(repeating: UInt8(ascii: "["), count: depth) + Array(repeating: UInt8(ascii: "]"), count: depth)
        default:  // large numbers and odd values in the JSON
            let f = frames.count - 1
            let text = String(decoding: frames[f], as: UTF8.self)
                .replacingOccurrences(of: "1", with: ["1e999", "-1", "18446744073709551616", "null", "\"x\"", "1.5"][Int(random.next() % 6)])
            frames[f] = Array(text.utf8)
        }
        return frames
    }

    @Test func aLiveNodeSurvivesAHundredThousandBadMessages() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "mallory", pool: "intruder")],
                              start: ["planner-1"]) { cluster in
            let context = try cluster.rawContext()
            let seed = UInt64.random(in: 1...UInt64.max)
            print("barrage seed \(seed)")
            var random = Random(state: seed)
            // Through planner-1's SUB: mallory is listed, so planner-1 dials it.
            let pub = try cluster.impersonate("mallory", .pub, in: context)
            try await eventually(15, "planner-1 hears mallory") {
                try await pub.send(Frame("_hb/mallory"), Frame(#"{"origin":"mallory","pool":"intruder","seq":0,"marks":{}}"#))
                return try await cluster.status("planner-1")["peers"]?.arrayValue?.first { $0["name"]?.stringValue == "mallory" }?["up"]?.boolValue == true
            }
            // At the rep ROUTER, as mallory; and at the control endpoint.
            let dealer = try context.socket(.dealer)
            try cluster.dial(dealer, as: "mallory", to: "planner-1")
            try dealer.set(.linger(milliseconds: 0))
            try dealer.connect(cluster.topology.node(named: "planner-1")!.repEndpoint)
            let control = try context.socket(.dealer)
            try control.set(.linger(milliseconds: 0))
            try control.connect("ipc://" + cluster.data("planner-1") + "/control.sock")
            // Replies are read and thrown away, so no queue fills up.
            let drain = Task {
                await withTaskGroup(of: Void.self) { group in
                    for socket in [dealer, control] { group.addTask { while (try? await socket.receiveBatch()) != nil {} } }
                }
            }
            let forged = Event(id: "x-1", origin: "planner-1", seq: 1, stream: "planner", type: .planReady, timestamp: Date(), payload: ["a": [1, 2]])
            let eventSeed: [[UInt8]] = [Topic.bytes(type: .planReady, stream: "planner"), EnvelopeCodec.encode(forged), Array(#"{"plan_ready":0}"#.utf8)]
            let heartbeatSeed: [[UInt8]] = [Array("_hb/mallory".utf8), Array(#"{"origin":"mallory","pool":"intruder","seq":3,"marks":{"plan_ready":2}}"#.utf8)]
            let requestSeeds: [[[UInt8]]] = [
                [[], Array(#"{"v":1,"request_id":"r1","from_node":"mallory","from_pool":"intruder","pool":"planner","question":"q"}"#.utf8)],
                [[], Array(#"{"v":1,"kind":"replay","origin":"planner-1","after":0,"from_node":"mallory"}"#.utf8)],
                [[], Array(#"{"v":1,"kind":"last_seen","origin":"mallory","from_node":"mallory"}"#.utf8)],
            ]
            let controlSeeds: [[[UInt8]]] = [[[], Array(#"{"cmd":"status"}"#.utf8)], [[], Array(#"{"cmd":"nothing","x":[1,{"y":null}]}"#.utf8)]]
            var sent = 0
            for i in 0..<100_000 {
                let message: [[UInt8]]
                let socket: Socket
                switch i % 10 {
                case 0..<6:
                    (socket, message) = (pub, Self.mutate(i % 2 == 0 ? eventSeed : heartbeatSeed, &random))
                case 6..<9:
                    (socket, message) = (dealer, Self.mutate(requestSeeds[i % requestSeeds.count], &random))
                default:
                    (socket, message) = (control, Self.mutate(controlSeeds[i % controlSeeds.count], &random))
                }
                try await socket.send(Message(message.map(Frame.init)))
                sent += 1
            }
            #expect(sent == 100_000)
            // Still up and answering, on every endpoint.
            try await eventually(30, "planner-1 answers its control endpoint after the barrage") {
                (try? await cluster.status("planner-1")) != nil
            }
            #expect(cluster.processes["planner-1"]!.isRunning)
            #expect(try await cluster.status("planner-1")["counters"]?["rejected"]?.intValue ?? 0 > 0)
            let stored = try await cluster.history("planner-1")
            #expect(stored.isEmpty, "stored from the barrage: \(stored.prefix(3)) (seed \(seed))")
            let genuine = try await cluster.emit("planner-1", "plan_ready", ["after": "barrage"])
            #expect(genuine["seq"]?.intValue == 1)
            drain.cancel()
            dealer.close()
            control.close()
            await context.shutdown()
            _ = await drain.value
        }
    }
}
