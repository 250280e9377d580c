import CECore
import CENode
@testable import CEObserve
import Foundation
import Prometheus
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One node in this process with its HTTP server on a free loopback port, its own metrics
/// registry (nothing process-global), in a temporary folder; stopped and removed at the end.
struct SoloNode {
    let node: Node
    let registry: PrometheusCollectorRegistry
    let port: Int
    let root: String
}

func withSoloNode(_ body: (SoloNode) async throws -> Void) async throws {
    // The ports are chosen free but bound later, and other tests in this process choose
    // theirs meanwhile: a node that finds one taken is started again on fresh ports.
    for attempt in 1...3 {
        do {
            return try await withSoloNodeOnce(body)
        } catch let error as StartFailure where "\(error)".contains("in use") && attempt < 3 {
            print("solo node not started (\(error)); trying fresh ports")
        }
    }
}

/// The node or its HTTP server ended before the server answered: what they threw.
struct StartFailure: Error, CustomStringConvertible {
    let description: String
}

private func withSoloNodeOnce(_ body: (SoloNode) async throws -> Void) async throws {
    let root = NSTemporaryDirectory() + "ce-observe-" + UUID().uuidString.prefix(8)
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: root) }
    let port = try freePort()
    let yaml = """
        version: 1
        settings: { heartbeat_ms: 200, security: none }  # one node alone: no peer to authenticate
        nodes:
          - { name: solo, pool: p, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()), metrics: \(port) }, data: \(root)/solo }
        """
    let topology = try TopologyLoader.parse(yaml: yaml)
    let registry = PrometheusCollectorRegistry()
    var options = try Node.Options(topology: topology, name: "solo")
    options.metricsFactory = Observability.factory(registry: registry)
    options.durability = .normal
    let node = try Node(options: options)
    let server = ObserveServer(node: node, coordinator: nil, registry: registry, host: "127.0.0.1", port: port, dashboard: false)
    let ended = Mutex<String?>(nil)
    let running = Task {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                group.addTask { try await node.run() }
                try await group.next()
                group.cancelAll()
            }
            ended.withLock { $0 = $0 ?? "ended without an error" }
        } catch {
            ended.withLock { $0 = $0 ?? "\(error)" }
        }
    }
    do {
        try await eventually(30, "the node's HTTP server answers") {
            if let reason = ended.withLock({ $0 }) { throw StartFailure(description: reason) }
            return (try? await httpGet(port, "/status.json").status) == 200
        }
        try await body(SoloNode(node: node, registry: registry, port: port, root: root))
    } catch {
        running.cancel()
        _ = await running.result
        throw error
    }
    running.cancel()
    _ = await running.result
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Waits until `condition` holds, checking every 20 ms, for at most `seconds`.
func eventually(_ seconds: Double, _ what: @autoclosure () -> String, _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if try await condition() { return }
        // Checked once more after the deadline: a test kept off the threads past it (the
        // machine busy with other tests) fails only if the condition still does not hold.
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out after \(seconds) s: \(what())")
}

/// A TCP port on 127.0.0.1 that nothing listens on now, below the ephemeral range.
func freePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000..<32000)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        if bindLoopback(fd, port) { return port }
    }
    throw TestFailure("no free port in 20000-31999")
}

func bindLoopback(_ fd: Int32, _ port: Int) -> Bool {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

/// Runs blocking socket code on a thread of its own. The node's HTTP server answers on the
/// cooperative threads (two on a two-core machine); a test blocked reading there holds one
/// of them, and two such tests starve the server they are waiting for until their reads
/// time out.
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// A plain TCP connection to 127.0.0.1 (blocking, 5 s receive timeout): the tests speak
/// HTTP on it by hand, malformed requests included. It is used by one test at a time.
final class Connection: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let ok = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        if !ok {
            // Not closed here: `deinit` runs for an initializer that throws once every stored
            // property is set, and closing twice closed whatever descriptor had taken the
            // number meanwhile (a node's libzmq listener: "Socket operation on non-socket").
            throw TestFailure("cannot connect to 127.0.0.1:\(port): errno \(errno)")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { throw TestFailure("send failed: errno \(errno)") }
            sent += n
        }
    }

    /// Reads, on a thread of its own, until `done` holds for what arrived, the peer closes,
    /// or 5 s pass without data.
    func receive(until done: @escaping @Sendable (String) -> Bool = { _ in false }) async throws -> String {
        try await offThePool { self.receiveBlocking(until: done) }
    }

    private func receiveBlocking(until done: (String) -> Bool) -> String {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            data += buffer[..<n]
            if done(String(decoding: data, as: UTF8.self)) { break }
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// `GET path` with `Connection: close`: the status code and the body.
func httpGet(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
    try await httpRequest(port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

func httpRequest(_ port: Int, _ request: String) async throws -> (status: Int, body: String) {
    let connection = try Connection(port: port)
    try connection.send(request)
    let response = try await connection.receive()
    guard response.hasPrefix("HTTP/1.1 "), let code = Int(response.dropFirst(9).prefix(3)) else {
        throw TestFailure("not an HTTP response: \(response.prefix(200))")
    }
    let body = response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) } ?? ""
    return (code, body)
}

/// The value of one sample of the Prometheus text, `name{labels}` exactly as printed.
func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}
