import Foundation
import Testing
import ZeroMQ

/// Runs `body` and fails the test if it takes longer than `seconds`.
func within<T: Sendable>(
    _ seconds: Double, _ what: String = "operation",
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let value = first else {
            throw TimeoutError(what: what, seconds: seconds)
        }
        return value
    }
}

/// Runs blocking code (a blocking send or receive) on a thread of its own: the tests share
/// the cooperative threads (two on a two-core machine), and a test blocked on one holds up
/// every other test (as the node tests' helper of the same name).
func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    let what: String
    let seconds: Double
    var description: String { "\(what) did not finish within \(seconds) s" }
}

/// Waits until `condition` holds, checking every 10 ms, for at most `seconds`.
func eventually(_ seconds: Double = 5, _ what: String, _ condition: @Sendable () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if try condition() { return }
        // Checked once more after the deadline: a test kept off the threads past it (the
        // machine busy with other tests) fails only if the condition still does not hold.
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TimeoutError(what: what, seconds: seconds)
}

enum Transport: String, CaseIterable, Sendable, CustomStringConvertible {
    case inproc, ipc, tcp
    var description: String { rawValue }

    /// A fresh endpoint to bind: ephemeral TCP port, unique ipc path, unique inproc name.
    func bindEndpoint() -> String {
        let unique = UUID().uuidString.prefix(8)
        switch self {
        case .inproc: return "inproc://test-\(unique)"
        case .ipc: return "ipc://\(NSTemporaryDirectory())zmq-test-\(unique).sock"
        case .tcp: return "tcp://127.0.0.1:*"
        }
    }
}

/// Binds `server` and connects `client` to the endpoint actually bound.
@discardableResult
func link(_ server: Socket, _ client: Socket, over transport: Transport) throws -> String {
    let endpoint = try server.bind(transport.bindEndpoint())
    try client.connect(endpoint)
    return endpoint
}

func text(_ message: Message) -> String {
    message.frames.map { $0.string ?? "<binary>" }.joined(separator: "|")
}
