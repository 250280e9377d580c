import CECore
import CENode
@testable import CEObserve
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A coordinator in this process (its node, its state machines, its HTTP server with the
/// dashboard) and `ce-node dashboard`'s server beside it, with two conflicts open.
struct CoordinatorUnderTest {
    let node: Node
    /// The coordinator's HTTP port.
    let port: Int
    /// The stand-alone dashboard's HTTP port (it passes resolves on to `port`).
    let dashboardPort: Int
    /// The ids of the open conflicts.
    let conflicts: [String]
}

/// Runs `body` with a coordinator whose topology names `settings.http_token_file` holding
/// `token` (written with a trailing newline, mode 0600), or no token file when nil.
func withCoordinator(token: String?, _ body: (CoordinatorUnderTest) async throws -> Void) async throws {
    for attempt in 1...3 {
        do {
            return try await withCoordinatorOnce(token: token, body)
        } catch let error as StartFailure where "\(error)".contains("in use") && attempt < 3 {
            print("coordinator not started (\(error)); trying fresh ports")
        }
    }
}

private func withCoordinatorOnce(token: String?, _ body: (CoordinatorUnderTest) async throws -> Void) async throws {
    let root = NSTemporaryDirectory() + "ce-write-" + UUID().uuidString.prefix(8)
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: root) }
    if let token {
        guard FileManager.default.createFile(atPath: root + "/http.token", contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw TestFailure("cannot write the token file")
        }
    }
    let (port, dashboardPort) = (try freePort(), try freePort())
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 200, security: none\(token == nil ? "" : ", http_token_file: http.token") }
        coordinator: { name: coord, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()), metrics: \(port) }, data: \(root)/coord }
        nodes:
          - { name: p-1, pool: p, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()) }, data: \(root)/p-1 }
        conflicts: { resolvers: [human] }
        """
    try yaml.write(toFile: root + "/topology.yaml", atomically: true, encoding: .utf8)
    let topology = try TopologyLoader.load(path: root + "/topology.yaml")
    var options = try Node.Options(topology: topology, name: "coord")
    options.durability = .normal
    options.refill = false  // p-1 never runs: nothing to refill from
    let node = try Node(options: options)
    let service = CoordinatorService(node: node)
    let server = ObserveServer(node: node, coordinator: service, registry: nil, host: "127.0.0.1", port: port, dashboard: true)
    let dashboard = ObserveServer(dashboard: ClusterView(topology: topology), host: "127.0.0.1", port: dashboardPort)
    let ended = Mutex<String?>(nil)
    let running = Task {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                group.addTask { try await dashboard.run() }
                group.addTask { try await node.run() }
                group.addTask { try await service.run() }
                try await group.next()
                group.cancelAll()
            }
            ended.withLock { $0 = $0 ?? "ended without an error" }
        } catch {
            ended.withLock { $0 = $0 ?? "\(error)" }
        }
    }
    do {
        try await eventually(30, "both HTTP servers answer") {
            if let reason = ended.withLock({ $0 }) { throw StartFailure(description: reason) }
            let node = try? await httpGet(port, "/status.json").status
            let dashboard = try? await httpGet(dashboardPort, "/cluster.json").status
            return node == 200 && dashboard == 200
        }
        // Two conflicts, each asked of the human resolver (resolution_needed stored).
        for subject in ["auth", "schema"] {
            _ = try await node.emit(try EventType(validating: "conflict_detected"), payload: ["subject": .string(subject), "parties": ["p"], "description": "they disagree"])
        }
        var conflicts: [String] = []
        try await eventually(20, "the coordinator asks the human to resolve both conflicts") {
            conflicts = try await storedEvents(port, type: "resolution_needed").compactMap { $0["payload"]?["conflict_id"]?.stringValue }
            return conflicts.count == 2
        }
        try await body(CoordinatorUnderTest(node: node, port: port, dashboardPort: dashboardPort, conflicts: conflicts))
    } catch {
        running.cancel()
        _ = await running.result
        throw error
    }
    running.cancel()
    _ = await running.result
}

/// The events of `type` the node stored (its recent events, from `/status.json`).
func storedEvents(_ port: Int, type: String) async throws -> [JSONValue] {
    let status = try JSONValue(parsing: Array(try await httpGet(port, "/status.json?after=0").body.utf8))
    return (status["recent"]?.arrayValue ?? []).filter { $0["type"]?.stringValue == type }
}

/// `method path` with a JSON body and extra header lines, as a client writes it by hand:
/// the status, the raw response head and the body.
func send(_ port: Int, _ path: String, _ body: JSONValue, method: String = "POST", headers: [String] = []) async throws -> (status: Int, head: String, body: String) {
    let bytes = body.serializedString
    var request = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: \(bytes.utf8.count)\r\n"
    for header in headers { request += header + "\r\n" }
    request += "\r\n" + bytes
    let connection = try Connection(port: port)
    try connection.send(request)
    let response = try await connection.receive()
    guard response.hasPrefix("HTTP/1.1 "), let code = Int(response.dropFirst(9).prefix(3)), let end = response.range(of: "\r\n\r\n") else {
        throw TestFailure("not an HTTP response: \(response.prefix(200))")
    }
    return (code, String(response[..<end.lowerBound]), String(response[end.upperBound...]))
}

@Suite("HTTP requests that change state", .serialized)
struct WriteAccessTests {
    @Test func withoutATokenFileTheHTTPPortIsReadOnly() async throws {
        try await withCoordinator(token: nil) { c in
            let resolve: JSONValue = ["conflict_id": .string(c.conflicts[0]), "decision": "add the expiry test"]
            for port in [c.port, c.dashboardPort] {
                for headers in [[], ["Authorization: Bearer anything"]] {
                    let reply = try await send(port, "/resolve", resolve, headers: headers)
                    #expect(reply.status == 403, "\(reply)")
                    let error = try JSONValue(parsing: Array(reply.body.utf8))["error"]?.stringValue ?? ""
                    #expect(error.contains("read-only") && error.contains("settings.http_token_file"), "\(error)")
                }
            }
            #expect(try await storedEvents(c.port, type: "conflict_resolved").isEmpty)
            // The page is told, and shows the conflicts without a way to resolve them.
            for port in [c.port, c.dashboardPort] {
                let snapshot = try JSONValue(parsing: Array(try await httpGet(port, "/cluster.json").body.utf8))
                #expect(snapshot["resolve"]?.stringValue == "read_only")
                #expect(try await httpGet(port, "/").body.contains(#""resolve":"read_only""#))
            }
        }
    }

    @Test func withATokenFileOnlyTheTokenResolves() async throws {
        let token = "s3cret-Token_0123456789abcdef"
        try await withCoordinator(token: token) { c in
            let resolve: JSONValue = ["conflict_id": .string(c.conflicts[0]), "decision": "add the expiry test"]
            var wrong = Array(token.utf8)
            wrong[wrong.count - 1] ^= 1
            let cheats: [(String, [String], String)] = [
                ("no header", [], "/resolve"),
                ("a wrong token of the same length", ["Authorization: Bearer " + String(decoding: wrong, as: UTF8.self)], "/resolve"),
                ("a prefix of the token", ["Authorization: Bearer " + token.dropLast(4)], "/resolve"),
                ("the token and more", ["Authorization: Bearer " + token + "0"], "/resolve"),
                ("the token twice", ["Authorization: Bearer " + token + token], "/resolve"),
                ("an empty token", ["Authorization: Bearer "], "/resolve"),
                ("the token without the scheme", ["Authorization: " + token], "/resolve"),
                ("the token as Basic", ["Authorization: Basic " + Data(token.utf8).base64EncodedString()], "/resolve"),
                ("a wrong header beside the right one", ["Authorization: Bearer nope", "Authorization: Bearer " + token], "/resolve"),
                ("the right header beside a wrong one", ["Authorization: Bearer " + token, "Authorization: Bearer nope"], "/resolve"),
                ("the token in another header", ["X-Token: " + token], "/resolve"),
                ("the token in the query", [], "/resolve?token=" + token),
            ]
            for (what, headers, path) in cheats {
                let reply = try await send(c.port, path, resolve, headers: headers)
                #expect(reply.status == 401, "\(what): \(reply)")
                #expect(reply.head.lowercased().contains(#"www-authenticate: bearer realm="ce-node""#), "\(what): \(reply.head)")
            }
            // Another method or path that could change something is asked for the token too.
            #expect(try await send(c.port, "/", .null, method: "DELETE").status == 401)
            #expect(try await send(c.port, "/resolve", resolve, method: "PUT").status == 401)
            // Through the stand-alone dashboard: refused there without a token, by the coordinator with a wrong one.
            #expect(try await send(c.dashboardPort, "/resolve", resolve).status == 401)
            let relayed = try await send(c.dashboardPort, "/resolve", resolve, headers: ["Authorization: Bearer " + String(decoding: wrong, as: UTF8.self)])
            #expect(relayed.status == 401, "\(relayed)")
            #expect(try await storedEvents(c.port, type: "conflict_resolved").isEmpty, "a refused request resolved a conflict")

            // The token resolves, at the coordinator and through the dashboard.
            let direct = try await send(c.port, "/resolve", resolve, headers: ["Authorization: Bearer " + token])
            #expect(direct.status == 200, "\(direct)")
            let forwarded = try await send(
                c.dashboardPort, "/resolve", ["conflict_id": .string(c.conflicts[1]), "decision": "keep v1"], headers: ["authorization: bearer " + token])
            #expect(forwarded.status == 200, "\(forwarded)")
            let resolved = try await storedEvents(c.port, type: "conflict_resolved").compactMap { $0["payload"]?["conflict_id"]?.stringValue }
            #expect(resolved.sorted() == c.conflicts.sorted())

            // The page offers to resolve, asks for the token, and is never sent it.
            for port in [c.port, c.dashboardPort] {
                let page = try await httpGet(port, "/").body
                #expect(page.contains(#""resolve":"token""#) && page.contains("token-form"))
                #expect(!page.contains(token) && !page.contains(String(token.prefix(12))))
                #expect(!(try await httpGet(port, "/cluster.json").body.contains(String(token.prefix(12)))))
            }
        }
    }
}
