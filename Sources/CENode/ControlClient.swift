import CECore
import Foundation
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// The one client of a node's control endpoint: the CLI, the MCP server, the demo, the
/// benchmarks and the tests all talk to a node through it, with CECore's ``ControlRequest``.
///
/// Each call has its own REQ socket, so calls run side by side (a long `events_after` does not
/// hold up an `emit`). While a call waits, the node is checked every second: a node that stops
/// mid-call ends the call at once with an error instead of at its timeout.
public final class ControlClient: Sendable {
    public let paths: NodePaths
    /// The node's name, for messages (the data folder when not known).
    public let name: String
    /// A context to share across calls; nil: one per call.
    let context: Context?

    public init(dataDirectory: String, name: String? = nil, context: Context? = nil) {
        paths = NodePaths(dataDirectory: dataDirectory)
        self.name = name ?? paths.data
        self.context = context
    }

    /// Whether a node listens on the control socket now: the file is there and accepts a
    /// connection (a node killed with SIGKILL leaves the file behind, but nothing accepts on it).
    public var isRunning: Bool {
        FileManager.default.fileExists(atPath: paths.controlSocket) && Self.accepts(path: paths.controlSocket)
    }

    /// Sends a request and returns the node's reply; a refusal is thrown as a ``NodeError``
    /// carrying the node's sentence.
    @discardableResult
    public func call(_ request: ControlRequest, timeout: Duration = .seconds(10)) async throws -> ControlReply {
        let reply = try ControlReply(json: try await exchange(request.json, timeout: timeout), answering: request)
        if case .failure(let text) = reply { throw NodeError(text) }
        return reply
    }

    /// Sends a request as raw JSON (tests of the wire use it); throws the node's refusal.
    @discardableResult
    public func call(_ request: JSONValue, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let value = try await exchange(request, timeout: timeout)
        if value["ok"]?.boolValue != true {
            throw NodeError(value["error"]?.stringValue ?? "the node refused the request")
        }
        return value
    }

    // MARK: Typed calls

    public func status(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        guard case .status(let s) = try await call(.status, timeout: timeout) else { throw Self.mismatch }
        return s
    }

    /// Emits one event; returns it as stored.
    public func emit(_ item: ControlRequest.EmitItem, timeout: Duration = .seconds(30)) async throws -> JSONValue {
        guard case .event(let e) = try await call(.emit(item), timeout: timeout) else { throw Self.mismatch }
        return e
    }

    /// Emits events in this order; returns each one's id and sequence.
    public func emit(_ items: [ControlRequest.EmitItem], timeout: Duration = .seconds(60)) async throws -> [ControlReply.EmittedID] {
        guard case .events(let ids) = try await call(.emitBatch(items), timeout: timeout) else { throw Self.mismatch }
        return ids
    }

    public func ask(pool: String, question: JSONValue, timeoutMilliseconds: Int? = nil, timeout: Duration = .seconds(600)) async throws -> JSONValue {
        guard case .answer(let a) = try await call(.ask(pool: pool, question: question, timeoutMilliseconds: timeoutMilliseconds), timeout: timeout)
        else { throw Self.mismatch }
        return a
    }

    public func eventsAfter(_ query: ControlRequest.EventsAfter, timeout: Duration) async throws -> (events: [JSONValue], cursor: Int64) {
        guard case .eventsAfter(let events, let cursor) = try await call(.eventsAfter(query), timeout: timeout) else { throw Self.mismatch }
        return (events, cursor)
    }

    public func questions(waitMilliseconds: Int = 0, known: [String] = [], timeout: Duration) async throws -> [ControlReply.PendingQuestion] {
        guard case .questions(let list) = try await call(.questions(waitMilliseconds: waitMilliseconds, known: known), timeout: timeout)
        else { throw Self.mismatch }
        return list
    }

    public func answer(_ requestID: String, with answer: JSONValue, timeout: Duration = .seconds(10)) async throws {
        try await call(.answer(requestID: requestID, answer: answer), timeout: timeout)
    }

    public func history(_ query: ControlRequest.HistoryQuery, timeout: Duration = .seconds(60)) async throws -> (events: [JSONValue], truncated: Bool) {
        guard case .history(let events, let truncated) = try await call(.history(query), timeout: timeout) else { throw Self.mismatch }
        return (events, truncated)
    }

    /// The coordinator's gates and conflicts (`{"gates": [...], "conflicts": [...], ...}`).
    public func gates(timeout: Duration = .seconds(10)) async throws -> JSONValue {
        guard case .gates(let g) = try await call(.gates, timeout: timeout) else { throw Self.mismatch }
        return g
    }

    /// Re-reads the node's topology file and applies what changed: `{"digest", "changed": [lines]}`.
    public func reload(timeout: Duration = .seconds(30)) async throws -> JSONValue {
        guard case .reloaded(let r) = try await call(.reload, timeout: timeout) else { throw Self.mismatch }
        return r
    }

    /// Hands the active coordinator's role to its standby: `{"term": N, "to": name}`.
    public func handover(timeout: Duration = .seconds(30)) async throws -> JSONValue {
        guard case .handover(let h) = try await call(.handover, timeout: timeout) else { throw Self.mismatch }
        return h
    }

    static let mismatch = NodeError("the node's reply does not answer the request (a node of another version?)")

    // MARK: The exchange

    private func exchange(_ request: JSONValue, timeout: Duration) async throws -> JSONValue {
        let path = paths.controlSocket
        guard FileManager.default.fileExists(atPath: path) else {
            throw NodeError("no node is running with its control endpoint at \(path) (start it with `ce-node run`)")
        }
        let context = try self.context ?? Context()
        let owned = self.context == nil
        let reply: Message?
        do {
            let socket = try context.socket(.req)
            defer { socket.close() }
            try socket.set(.linger(milliseconds: 0))
            try socket.connect(paths.controlEndpoint)
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
            if owned { await context.shutdown() }
            throw NodeError("node \(name) did not answer within \(Self.describe(timeout)): is it running? (control socket \(path))")
        } catch {
            if owned { await context.shutdown() }
            throw error
        }
        if owned { await context.shutdown() }
        guard let reply else { throw NodeError("node \(name) stopped while the call was waiting (control socket \(path))") }
        do {
            return try JSONValue(parsing: reply[0].bytes)
        } catch {
            throw NodeError("node \(name) sent a reply that is not JSON: \(error)")
        }
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
