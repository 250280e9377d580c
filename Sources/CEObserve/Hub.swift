import Foundation
import Synchronization

/// Fans server-sent-event frames out to HTTP clients. Each client has a bounded buffer: a
/// client that reads slower than updates come loses the oldest of its own updates (counted),
/// and publishing never waits for any client, so a slow dashboard never slows the node.
public final class Hub: Sendable {
    struct State {
        var clients: [UInt64: AsyncStream<String>.Continuation] = [:]
        var next: UInt64 = 0
        var dropped = 0
        var closed = false
    }

    let state = Mutex(State())
    /// Frames buffered per client before its oldest are dropped.
    public let buffer: Int
    /// The most clients at once; more are refused (HTTP 503).
    public let maxClients: Int

    public init(buffer: Int = 256, maxClients: Int = 1000) {
        self.buffer = buffer
        self.maxClients = maxClients
    }

    /// A new client's stream of frames, or nil when the hub is full or closed. `first` is
    /// queued before anything published later.
    public func subscribe(first: [String] = []) -> AsyncStream<String>? {
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingNewest(buffer))
        for frame in first { continuation.yield(frame) }
        let id = state.withLock { s -> UInt64? in
            guard !s.closed, s.clients.count < maxClients else { return nil }
            s.next += 1
            s.clients[s.next] = continuation
            return s.next
        }
        guard let id else {
            continuation.finish()
            return nil
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.clients.removeValue(forKey: id) }
        }
        return stream
    }

    /// Queues a frame for every client; returns at once.
    public func publish(_ frame: String) {
        let clients = state.withLock { Array($0.clients.values) }
        var dropped = 0
        for client in clients {
            if case .dropped = client.yield(frame) { dropped += 1 }
        }
        if dropped > 0 { state.withLock { $0.dropped += dropped } }
    }

    /// Ends every client's stream and refuses new ones (the server is stopping).
    public func close() {
        let clients = state.withLock { s in
            s.closed = true
            defer { s.clients.removeAll() }
            return Array(s.clients.values)
        }
        for client in clients { client.finish() }
    }

    public var clientCount: Int { state.withLock { $0.clients.count } }
    /// Updates dropped for clients that fell behind, since the hub was made.
    public var droppedCount: Int { state.withLock { $0.dropped } }

    /// One server-sent event: `event: NAME` and the data on one line.
    public static func frame(_ event: String, _ data: String) -> String {
        "event: \(event)\ndata: \(data.replacingOccurrences(of: "\n", with: "\\n"))\n\n"
    }
}
