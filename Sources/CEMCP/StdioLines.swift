import CECore
import Foundation
import Logging
import Synchronization
import MCP
#if canImport(Glibc)
import Glibc
#endif

/// MCP over stdin/stdout, one JSON-RPC message per line, with a thread blocked in read(2).
///
/// The SDK's `StdioTransport` puts stdin in non-blocking mode and polls it every 10 ms, which
/// costs an idle server CPU and each request up to 10 ms; this transport waits in the kernel
/// instead (docs/BENCHMARKS.md has both). Same framing, same protocol.
public actor StdioLines: Transport {
    public nonisolated let logger: Logger
    private let input: Int32
    private let output: Int32
    private let stream: AsyncThrowingStream<Data, any Error>
    private let continuation: AsyncThrowingStream<Data, any Error>.Continuation
    private var reader: Thread?
    /// Requests read minus replies sent.
    private let unanswered = Counter()
    final class Counter: Sendable {
        let value = Mutex(0)
        func add(_ n: Int) { value.withLock { $0 += n } }
        var current: Int { value.withLock { $0 } }
    }

    public init(input: Int32 = STDIN_FILENO, output: Int32 = STDOUT_FILENO, logger: Logger = Logger(label: "ce.mcp.stdio")) {
        self.input = input
        self.output = output
        self.logger = logger
        (stream, continuation) = AsyncThrowingStream.makeStream()
    }

    public func connect() async throws {
        guard reader == nil else { return }
        let (input, continuation, logger, unanswered) = (self.input, self.continuation, self.logger, self.unanswered)
        // A thread of its own: it spends its life blocked in read(2), which must not hold a
        // thread of the cooperative pool.
        let thread = Thread {
            var pending: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n < 0 {
                    logger.error("reading stdin failed: \(String(cString: strerror(errno)))")
                    break
                }
                if n == 0 { break }  // the client closed our stdin: the session is over
                pending.append(contentsOf: buffer[0..<n])
                var start = 0
                while let newline = pending[start...].firstIndex(of: 0x0A) {
                    let line = pending[start..<newline]
                    if !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) {
                        let requests = Self.count(line, requests: true)
                        if requests > 0 { unanswered.add(requests) }
                        continuation.yield(Data(line))
                    }
                    start = newline + 1
                }
                pending.removeFirst(start)
            }
            continuation.finish()
        }
        thread.name = "mcp-stdin"
        thread.start()
        reader = thread
    }

    public func disconnect() async {
        continuation.finish()
    }

    /// Writes the message and a newline in full (the actor keeps messages from interleaving).
    public func send(_ data: Data) async throws {
        var bytes = [UInt8](data)
        let replies = Self.count(bytes, requests: false)
        defer { if replies > 0 { unanswered.add(-replies) } }
        bytes.append(0x0A)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(output, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MCPError.transportError(POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO))
            }
            offset += n
        }
    }

    /// Waits until every request read has had its reply, or `limit` has passed (the client
    /// closed stdin right after its last requests).
    public func waitForReplies(upTo limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while unanswered.current > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    /// JSON-RPC requests (an id and a method) or replies (an id, no method) in a message or batch.
    static func count(_ bytes: some Collection<UInt8>, requests: Bool) -> Int {
        guard let value = try? JSONValue(parsing: bytes) else { return 0 }
        let messages = value.arrayValue ?? [value]
        return messages.filter { m in
            guard m["id"] != nil && m["id"] != .null else { return false }
            return (m["method"] != nil) == requests
        }.count
    }

    public nonisolated func receive() -> AsyncThrowingStream<Data, any Error> { stream }
}
