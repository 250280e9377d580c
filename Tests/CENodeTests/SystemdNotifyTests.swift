import CECluster
import CECore
import CENode
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ce-node run` under a stand-in for systemd: the test binds the notification socket a
/// `Type=notify` unit would get, starts a real node with `$NOTIFY_SOCKET` naming it, and reads
/// what the node says (sd_notify(3): READY=1, STATUS=, WATCHDOG=1, STOPPING=1).
@Suite("systemd notifications from ce-node run", .serialized)
struct SystemdNotifyTests {
    @Test func readyOnceServingWatchdogPingsAndStoppingOnSIGTERM() async throws {
        try await withNotifiedNode(abstract: false, watchdogMicroseconds: 400_000) { cluster, listener, process in
            try await listener.waitFor("READY=1", seconds: 30, process)
            // Ready means serving: the control endpoint answers at once.
            let status = try await ControlClient(dataDirectory: cluster.data("planner-1")).status(timeout: .seconds(5))
            #expect(status["node"]?.stringValue == "planner-1")
            #expect(listener.fields.contains { $0.hasPrefix("STATUS=") && $0.contains("planner-1") })
            // Every 200 ms (half of WATCHDOG_USEC): two pings arrive well within the deadline.
            try await listener.waitFor("WATCHDOG=1", count: 2, seconds: 15, process)
            #expect(!listener.fields.contains("STOPPING=1"))
            process.terminate()
            try await listener.waitFor("STOPPING=1", seconds: 15, process, exited: true)
            try await eventually(15, "ce-node stops on SIGTERM") { !process.isRunning }
            #expect(process.terminationStatus == 0, "ce-node exited with \(process.terminationStatus):\n\(cluster.log("planner-1"))")
            #expect(listener.fields.firstIndex(of: "READY=1")! < listener.fields.firstIndex(of: "STOPPING=1")!)
        }
    }

    @Test func anAbstractSocketNameIsReached() async throws {
        try await withNotifiedNode(abstract: true, watchdogMicroseconds: nil) { cluster, listener, process in
            try await listener.waitFor("READY=1", seconds: 30, process)
            process.terminate()
            try await listener.waitFor("STOPPING=1", seconds: 15, process, exited: true)
            try await eventually(15, "ce-node stops on SIGTERM") { !process.isRunning }
            #expect(process.terminationStatus == 0, "ce-node exited with \(process.terminationStatus):\n\(cluster.log("planner-1"))")
        }
    }

    /// Starts planner-1 of a one-node cluster with `$NOTIFY_SOCKET` naming the listener (and
    /// `$WATCHDOG_USEC` when given); always stops it and removes everything.
    func withNotifiedNode(
        abstract: Bool, watchdogMicroseconds: Int?,
        _ body: (Cluster, NotifyListener, Process) async throws -> Void
    ) async throws {
        let cluster = try await Cluster.make([.init(name: "planner-1", pool: "planner")], pools: "", settings: "security: none\n  heartbeat_ms: 200")
        let listener = try NotifyListener(abstract: abstract, folder: cluster.root)
        defer { listener.close() }
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = listener.name
        environment["WATCHDOG_USEC"] = watchdogMicroseconds.map(String.init)
        environment["WATCHDOG_PID"] = nil
        let process = Process()
        process.executableURL = ceNodeBinary
        process.arguments = ["run", "--topology", cluster.topologyPath, "--node", "planner-1"]
        process.environment = environment
        let log = cluster.root + "/planner-1.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        do {
            try process.run()
            cluster.processes["planner-1"] = process
            try await body(cluster, listener, process)
        } catch {
            print("notifications: \(listener.fields)\n--- planner-1\n\(cluster.log("planner-1").suffix(3000))")
            await cluster.tearDown()
            throw error
        }
        await cluster.tearDown()
    }
}

/// The service manager's end of the notification socket: a datagram socket bound to a path in
/// the test's folder, or to an abstract name (`@...`), collecting each datagram's fields.
final class NotifyListener: Sendable {
    let fd: Int32
    /// The value for `$NOTIFY_SOCKET`.
    let name: String
    private let received = Mutex<[String]>([])

    /// Every field received so far, in order.
    var fields: [String] { received.withLock { $0 } }

    init(abstract: Bool, folder: String) throws {
        name = abstract ? "@ce-test-notify-\(UUID().uuidString.prefix(8))" : folder + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        let bytes = abstract ? [0] + Array(name.utf8.dropFirst()) : Array(name.utf8) + [0]
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        guard bytes.count <= MemoryLayout.size(ofValue: addr.sun_path) else { throw TestFailure("socket name too long: \(name)") }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count)
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let error = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("bind \(name): \(error)")
        }
    }

    func close() { Glibc.close(fd) }

    /// Waits (at most `seconds`) until `field` has arrived `count` times in all; fails early
    /// when ce-node exits first, unless `exited` says its exit is expected.
    func waitFor(_ field: String, count: Int = 1, seconds: Double, _ process: Process, exited: Bool = false) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while fields.filter({ $0 == field }).count < count {
            if Date() >= deadline { throw TestFailure("no \(field) (×\(count)) within \(seconds) s; received \(fields)") }
            if !exited && !process.isRunning && !readAvailable() { throw TestFailure("ce-node exited before \(field); received \(fields)") }
            // Blocks on a thread of its own for up to 100 ms, then checks again.
            _ = try await offThePool { [self] in readOne(milliseconds: 100) }
        }
    }

    /// Reads whatever is queued now without waiting; whether anything was.
    private func readAvailable() -> Bool {
        var any = false
        while readOne(milliseconds: 0) { any = true }
        return any
    }

    /// Reads one datagram, waiting at most `milliseconds`; whether one came.
    private func readOne(milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, milliseconds) == 1 else { return false }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        guard n > 0 else { return false }
        let text = String(decoding: buffer[..<n], as: UTF8.self)
        received.withLock { $0 += text.split(separator: "\n").map(String.init) }
        return true
    }
}
