import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Ports handed out in this process: never the same twice, even to clusters made at once
/// (a free port is only free until someone binds it).
private let portsGiven = Mutex<Set<Int>>([])

/// Runs `body` (bind or connect) with 127.0.0.1:`port` as a socket address.
public func withLoopback<T>(_ port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral
/// range (which outgoing connections draw from, so a port taken from it can be gone by the
/// time a node binds it).
public func freePort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000..<32000)
        guard portsGiven.withLock({ $0.insert(port).inserted }) else { continue }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        let ok = withLoopback(port) { bind(fd, $0, $1) == 0 }
        if ok { return port }
    }
    throw ClusterError("no free port in 20000-31999")
}
