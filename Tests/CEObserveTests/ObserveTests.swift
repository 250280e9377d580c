import CECore
import CENode
@testable import CEObserve
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("the node's HTTP side", .serialized)
struct ObserveTests {
    @Test func countersMoveAfterEmits() async throws {
        try await withSoloNode { solo in
            let before = try await httpGet(solo.port, "/metrics")
            #expect(before.status == 200)
            #expect(sample(before.body, "ce_events_emitted_total") == 0, "\(before.body)")
            for i in 0..<5 { _ = try await solo.node.emit(.planReady, payload: ["n": .number(Double(i))]) }
            _ = try await solo.node.emit([Node.Emission(.buildReady), Node.Emission(.buildReady)])
            let after = try await httpGet(solo.port, "/metrics").body
            #expect(sample(after, "ce_events_emitted_total") == 7, "\(after)")
            #expect(sample(after, #"ce_events_stored_total{origin="solo"}"#) == 7, "\(after)")
            #expect(sample(after, "ce_emit_duration_seconds_count") == 6, "one per emit call")
            #expect((sample(after, "ce_store_commit_duration_seconds_count") ?? 0) >= 2)
            #expect((sample(after, "ce_store_commit_batch_events_sum") ?? 0) >= 7)
            #expect(sample(after, "ce_node_last_seq") == 7)
            #expect(after.contains("# TYPE ce_emit_duration_seconds histogram"))
            // The JSON status and the recent events beside it.
            let status = try JSONValue(parsing: Array(try await httpGet(solo.port, "/status.json?after=0").body.utf8))
            #expect(status["node"]?["counters"]?["emitted"]?.intValue == 7)
            #expect(status["recent"]?.arrayValue?.count == 7)
            #expect(status["recent"]?[0]?["type"]?.stringValue == "plan_ready")
            let later = try JSONValue(parsing: Array(try await httpGet(solo.port, "/status.json?after=5").body.utf8))
            #expect(later["recent"]?.arrayValue?.map { $0["seq"]?.intValue } == [6, 7])
        }
    }

    @Test func aTakenPortIsAClearErrorNamingTheNodeAndThePort() async throws {
        let root = NSTemporaryDirectory() + "ce-observe-" + UUID().uuidString.prefix(8)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var port = 0
        for _ in 0..<50 {
            port = try freePort()
            if bindLoopback(fd, port) { break }
        }
        #expect(listen(fd, 4) == 0)
        let topology = try TopologyLoader.parse(yaml: """
            version: 1
            settings: { security: none }
            nodes:
              - { name: busy-node, pool: p, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()), metrics: \(port) }, data: \(root)/n }
            """)
        let node = try Node(options: try Node.Options(topology: topology, name: "busy-node"))
        let server = ObserveServer(node: node, coordinator: nil, registry: nil, host: "127.0.0.1", port: port, dashboard: false)
        do {
            try await server.run()
            Issue.record("the server ran on a taken port")
        } catch {
            let text = "\(error)"
            #expect(text.contains("busy-node") && text.contains("port \(port) is already in use"), "\(text)")
        }
    }

    @Test func aMalformedRequestIsAnsweredWithAnError() async throws {
        try await withSoloNode { solo in
            let garbage = try await httpRequest(solo.port, "NOT HTTP AT ALL\r\n\r\n")
            #expect(garbage.status == 400)
            let badHeader = try await httpRequest(solo.port, "GET /metrics HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n")
            #expect(badHeader.status == 400)
            #expect(try await httpGet(solo.port, "/nothing-here").status == 404)
            // The server still answers after them.
            #expect(try await httpGet(solo.port, "/metrics").status == 200)
        }
    }

    @Test func aHundredStreamClientsEachGetTheEvent() async throws {
        try await withSoloNode { solo in
            var clients: [Connection] = []
            for _ in 0..<100 {
                let c = try Connection(port: solo.port)
                try c.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                clients.append(c)
            }
            try await eventually(10, "100 stream clients connected") {
                sample(try await httpGet(solo.port, "/metrics").body, #"ce_http_stream_clients{stream="events"}"#) == 100
            }
            let event = try await solo.node.emit(.planReady, payload: ["for": "everyone"])
            var got = 0
            for c in clients {
                let id = event.id
                if try await c.receive(until: { $0.contains(id) }).contains(id) { got += 1 }
            }
            #expect(got == 100)
            clients.removeAll()
            // A client that left is noticed when the next update (or keep-alive) is written to it.
            try await eventually(15, "the clients that left are gone") {
                sample(try await httpGet(solo.port, "/metrics").body, #"ce_http_stream_clients{stream="events"}"#) == 0
            }
        }
    }

    @Test func aClientThatNeverReadsOnlyLosesItsOwnUpdates() async throws {
        try await withSoloNode { solo in
            let stalled = try Connection(port: solo.port)
            var small: Int32 = 4096
            setsockopt(stalled.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
            try stalled.send("GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try await eventually(10, "the stalled client is connected") {
                sample(try await httpGet(solo.port, "/metrics").body, #"ce_http_stream_clients{stream="events"}"#) == 1
            }
            // Events towards a client that reads nothing, until its updates drop: the kernel's
            // buffers on loopback (up to 4 MB) and the server's take the first few megabytes
            // (an update is about 600 bytes: the payload is cut to 400), so how many it takes
            // depends on how the threads run. Emits go on meanwhile.
            let payload = JSONValue.string(String(repeating: "x", count: 1_000))
            let start = ContinuousClock.now
            var batches = 0
            var dropped = 0.0
            while dropped == 0 && batches < 60 {
                _ = try await solo.node.emit(Array(repeating: Node.Emission(.buildReady, payload: payload), count: 500))
                batches += 1
                dropped = sample(try await httpGet(solo.port, "/metrics").body, #"ce_http_stream_dropped{stream="events"}"#) ?? 0
            }
            let elapsed = ContinuousClock.now - start
            #expect(solo.node.counters.emitted == batches * 500)
            try await eventually(20, "updates for the stalled client are dropped and counted") {
                (sample(try await httpGet(solo.port, "/metrics").body, #"ce_http_stream_dropped{stream="events"}"#) ?? 0) > 0
            }
            print("\(batches * 500) events of 1 KB emitted in \(elapsed) with a stalled stream client")
        }
    }

    @Test func hubBuffersAreBoundedAndDropsCounted() async throws {
        let hub = Hub(buffer: 4, maxClients: 2)
        let a = try #require(hub.subscribe())
        let b = try #require(hub.subscribe())
        #expect(hub.subscribe() == nil, "a third client is refused")
        for i in 0..<10 { hub.publish("\(i)") }
        #expect(hub.droppedCount == 12, "each client keeps its newest 4 of 10")
        hub.close()
        var kept: [String] = []
        for await frame in a { kept.append(frame) }
        #expect(kept == ["6", "7", "8", "9"])
        _ = b
        #expect(hub.subscribe() == nil, "a closed hub takes no clients")
    }

    @Test func urlsAreParsed() throws {
        let v4 = try HTTPClient.parse("http://10.0.0.1:7103/status.json?after=3")
        #expect(v4.host == "10.0.0.1" && v4.port == 7103 && v4.path == "/status.json?after=3")
        let v6 = try HTTPClient.parse("http://[::1]:7103")
        #expect(v6.host == "::1" && v6.port == 7103 && v6.path == "/")
        #expect(throws: NodeError.self) { try HTTPClient.parse("https://x:1/") }
        #expect(throws: NodeError.self) { try HTTPClient.parse("http://x:99999/") }
    }
}
