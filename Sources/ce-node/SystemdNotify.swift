import CENode
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Tells systemd how the node is doing (sd_notify(3)), spoken without libsystemd.
///
/// Each notification is one datagram of newline-separated `KEY=value` fields sent to the
/// AF_UNIX socket named by `$NOTIFY_SOCKET`: a path, or an abstract-namespace name written
/// with a leading `@`. Without `$NOTIFY_SOCKET` (the node was not started by systemd as
/// `Type=notify`) the notifier is inactive and every call does nothing.
struct SystemdNotifier: Sendable {
    /// `$NOTIFY_SOCKET` as given; nil when unset or empty.
    let socketName: String?
    /// The bytes of `sun_path` (a path ends in NUL, an abstract name starts with one); nil when
    /// inactive or when the name is of a kind this notifier does not speak (see `problem`).
    let address: [UInt8]?
    /// Why `$NOTIFY_SOCKET` is set but unusable (a `vsock:` address, a name too long).
    let problem: String?
    /// The watchdog's timeout from `$WATCHDOG_USEC`, when the watchdog is on and meant for this
    /// process (`$WATCHDOG_PID` unset or this process's id).
    let watchdogTimeout: Duration?

    init(environment: [String: String] = ProcessInfo.processInfo.environment, pid: Int32 = getpid()) {
        let name = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketName = name
        let maxPath = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        var address: [UInt8]?
        var problem: String?
        if let name {
            if name.hasPrefix("@") {
                address = [0] + Array(name.utf8.dropFirst())
            } else if name.hasPrefix("/") {
                address = Array(name.utf8) + [0]
            } else {
                problem = "NOTIFY_SOCKET=\(name) is neither a path nor an abstract name (@...); systemd is not told when the node is ready"
            }
            if let bytes = address, bytes.count > maxPath {
                address = nil
                problem = "NOTIFY_SOCKET=\(name) is longer than the \(maxPath) bytes an AF_UNIX address holds"
            }
        }
        self.address = address
        self.problem = problem
        let usec = environment["WATCHDOG_USEC"].flatMap { UInt64($0) } ?? 0
        let forUs = environment["WATCHDOG_PID"].map { Int32($0) == pid } ?? true
        watchdogTimeout = address != nil && usec > 0 && forUs ? .microseconds(usec) : nil
    }

    /// Whether systemd listens (`$NOTIFY_SOCKET` names a socket this notifier can reach).
    var isActive: Bool { address != nil }

    /// Sends the fields (`READY=1`, `STATUS=...`) as one datagram; does nothing when inactive.
    func notify(_ fields: [String]) throws(SystemdNotifyError) {
        guard let address, let socketName else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemdNotifyError(operation: "socket", errno: errno, socket: socketName) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: address) }
        // An abstract name is exactly as long as its bytes: no NUL may follow it in the length.
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + address.count)
        let datagram = Array(fields.joined(separator: "\n").utf8)
        let sent = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, datagram, datagram.count, Int32(MSG_NOSIGNAL), $0, length)
            }
        }
        guard sent == datagram.count else { throw SystemdNotifyError(operation: "sendto", errno: errno, socket: socketName) }
    }

    /// Tells systemd `READY=1` once the node answers on its control endpoint (its sockets are
    /// bound and its loops serve), then pings the watchdog every half timeout while the node
    /// keeps answering. Returns when cancelled, without an error: the node's stop is not a fault.
    func serve(node: Node, logger: Logger) async {
        let client = ControlClient(dataDirectory: node.options.dataDirectory, name: node.spec.name)
        func answers(within timeout: Duration) async -> Bool {
            guard client.isRunning else { return false }
            return (try? await client.status(timeout: timeout)) != nil
        }
        // Bounded by the unit's TimeoutStartSec: systemd stops a node that is never ready.
        while !(await answers(within: .seconds(1))) {
            guard (try? await Task.sleep(for: .milliseconds(50))) != nil else { return }
        }
        send("READY=1", "STATUS=serving as \(node.spec.name) (pool \(node.spec.pool))", logger: logger)
        guard let timeout = watchdogTimeout else {
            while (try? await Task.sleep(for: .seconds(3600))) != nil {}
            return
        }
        // A node whose control endpoint stops answering misses its pings and systemd restarts it.
        let interval = timeout / 2
        var next = ContinuousClock.now
        while !Task.isCancelled {
            next += interval
            if await answers(within: interval) {
                send("WATCHDOG=1", logger: logger)
            } else if !Task.isCancelled {
                logger.warning("the node did not answer on its control endpoint within \(interval); the watchdog is not pinged")
            }
            guard (try? await Task.sleep(until: next, clock: .continuous)) != nil else { return }
        }
    }

    /// Sends the fields, logging a failure: systemd's view of the node is then stale, but the
    /// node itself is fine and runs on.
    func send(_ fields: String..., logger: Logger) {
        do { try notify(fields) } catch { logger.warning("cannot notify systemd: \(error)") }
    }
}

/// A notification that could not be sent: the call that failed, its errno and the socket.
struct SystemdNotifyError: Error, CustomStringConvertible {
    let operation: String
    let errno: Int32
    let socket: String

    var description: String {
        "\(operation) to NOTIFY_SOCKET=\(socket) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}
