import CECore
import Foundation
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// The MCP server's line to a node's local control endpoint (`ipc://<data>/control.sock`).
///
/// One ZeroMQ context for the server's life; each call has its own REQ socket, so calls run
/// side by side (a long `wait_for_events` does not hold up an `emit`). While a call waits, the
/// node is checked every second: a node that stops mid-call ends the call with an error at
/// once instead of at its timeout.
final class NodeLink: Sendable {
    let name: String
    /// Absolute path of the node's data folder.
    let dataDirectory: String
    let context: Context

    init(name: String, dataDirectory: String, context: Context) {
        self.name = name
        self.dataDirectory = dataDirectory.hasPrefix("/") ? dataDirectory : FileManager.default.currentDirectoryPath + "/" + dataDirectory
        self.context = context
    }

    var controlPath: String { dataDirectory + "/control.sock" }
    var feedEndpoint: String { "ipc://" + dataDirectory + "/feed.sock" }

    /// Whether a node listens on the control socket now: the file is there and accepts a connection
    /// (a node killed with SIGKILL leaves the file behind, but nothing accepts on it).
    var isRunning: Bool {
        FileManager.default.fileExists(atPath: controlPath) && Self.accepts(path: controlPath)
    }

    func notRunning() -> ToolError {
        ToolError("node \(name) is not running (no process listens on \(controlPath)); start it with `ce-node run --node \(name)` and call again")
    }

    /// Sends one control request; returns the reply of a node that said `"ok": true`, throws
    /// the node's error otherwise. `timeout` bounds the whole call.
    func call(_ request: JSONValue, timeout: Duration) async throws(ToolError) -> JSONValue {
        guard isRunning else { throw notRunning() }
        let reply: Message?
        do {
            let socket = try context.socket(.req)
            defer { socket.close() }
            try socket.set(.linger(milliseconds: 0))
            try socket.connect("ipc://" + controlPath)
            try await socket.send(Message(request.serialized()))
            reply = try await withThrowingTaskGroup(of: Message?.self) { group in
                group.addTask { try await socket.receive(timeout: timeout) }
                group.addTask {
                    while true {
                        try await Task.sleep(for: .seconds(1))
                        if !self.isRunning { return nil }
                    }
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
        } catch let error as ZMQError where error.code == .again {
            throw ToolError("node \(name) did not answer within \(Self.describe(timeout)): is it running? (control socket \(controlPath))")
        } catch {
            throw ToolError("cannot reach node \(name) at \(controlPath): \(error)")
        }
        guard let reply else { throw ToolError("node \(name) stopped while the call was waiting; start it again and call again") }
        let value: JSONValue
        do { value = try JSONValue(parsing: reply[0].bytes) } catch { throw ToolError("node \(name) sent a reply that is not JSON: \(error)") }
        if value["ok"]?.boolValue != true {
            throw ToolError(value["error"]?.stringValue ?? "node \(name) refused the request")
        }
        return value
    }

    static func describe(_ d: Duration) -> String {
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms"
    }

    /// Connects a Unix stream socket to `path` and closes it: true when something accepts.
    static func accepts(path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        return withUnsafePointer(to: &address) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) == 0 }
        }
    }
}
