import CECluster
import CECore
import CENode
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP port of real `ce-node` processes (`ports.metrics`): Prometheus metrics that move
/// with the events, and a port that is taken stops the node with a clear error.
@Suite("ce-node HTTP port", .serialized)
struct HTTPTests {
    @Test func metricsOfRunningNodesMoveWithTheEvents() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", metrics: true), .init(name: "builder-1", pool: "builder", metrics: true)]) { cluster in
            let planner = cluster.topology.node(named: "planner-1")!.metricsPort!
            let builder = cluster.topology.node(named: "builder-1")!.metricsPort!
            let before = try await scrape(planner)
            #expect(value(before, "ce_events_emitted_total") == 0, "\(before)")
            for i in 0..<3 { try await cluster.emit("planner-1", "plan_ready", ["n": .number(Double(i))]) }
            let after = try await scrape(planner)
            #expect(value(after, "ce_events_emitted_total") == 3, "\(after)")
            #expect(value(after, #"ce_events_stored_total{origin="planner-1"}"#) == 3)
            #expect(value(after, "ce_emit_duration_seconds_count") == 3)
            #expect(value(after, #"ce_peer_up{peer="builder-1",pool="builder"}"#) == 1)
            try await eventually(10, "builder-1 counts planner-1's events as stored and delivered") {
                let text = try await scrape(builder)
                return value(text, #"ce_events_stored_total{origin="planner-1"}"#) == 3 && value(text, "ce_events_delivered_total") == 3
            }
            let status = try JSONValue(parsing: try await get(builder, "/status.json").body)
            #expect(status["node"]?["counters"]?["received"]?.intValue == 3)
            // Not the coordinator: no dashboard here.
            #expect(try await get(builder, "/").status == 404)
        }
    }

    @Test func aTakenMetricsPortStopsTheNodeNamingTheNodeAndThePort() async throws {
        let cluster = try Cluster([.init(name: "solo-1", pool: "p", metrics: true)], pools: "", settings: "heartbeat_ms: 200")
        do {
            try await startOnATakenPort(cluster)
        } catch {
            await cluster.tearDown()
            throw error
        }
        await cluster.tearDown()
    }

    func startOnATakenPort(_ cluster: Cluster) async throws {
        let port = cluster.topology.node(named: "solo-1")!.metricsPort!
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let bound = withLoopback(port) { bind(fd, $0, $1) == 0 }
        #expect(bound && listen(fd, 4) == 0)
        try cluster.start("solo-1")
        let process = cluster.processes["solo-1"]!
        try await eventually(20, "ce-node exits") { !process.isRunning }
        #expect(process.terminationStatus != 0)
        let log = cluster.log("solo-1")
        #expect(log.contains("node solo-1 cannot serve HTTP (ports.metrics) on 127.0.0.1:\(port): port \(port) is already in use"), "\(log)")
        #expect(!log.contains("node up"), "the node did not start: \(log)")
    }
}

/// `GET path` on 127.0.0.1 over a plain socket: the status code and the body.
func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
    try await offThePool { try getBlocking(port, path) }
}

private func getBlocking(_ port: Int, _ path: String) throws -> (status: Int, body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withLoopback(port) { connect(fd, $0, $1) == 0 }
    guard connected else { throw TestFailure("cannot connect to 127.0.0.1:\(port)") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        data += buffer[..<n]
    }
    let text = String(decoding: data, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 "), let code = Int(text.dropFirst(9).prefix(3)) else { throw TestFailure("not HTTP: \(text.prefix(200))") }
    return (code, text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? "")
}

func scrape(_ port: Int) async throws -> String {
    let (status, body) = try await get(port, "/metrics")
    guard status == 200 else { throw TestFailure("/metrics answered \(status)") }
    return body
}

/// One sample of Prometheus text, `name{labels}` as printed.
func value(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") { return Double(line.dropFirst(series.count + 1)) }
    return nil
}
