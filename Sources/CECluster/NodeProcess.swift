import Foundation
#if canImport(Glibc)
import Glibc
#endif

// `ce-node run` processes: found, started, stopped, waited for.

/// The `ce-node` built beside the running executable: the test bundle under `swift test`,
/// `ce-bench` in `.build/debug` or `.build/release`. Both are products of the same build.
public let ceNodeBinary: URL = {
    let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    return here.appendingPathComponent("ce-node")
}()

/// Starts `ce-node run` for node `node` of the topology at `topology`, with `arguments` after
/// its own. Its output is appended to the file at `log` when given (else it goes to this
/// process's). On `hosts`, it runs on the node's host.
public func startNode(topology: String, node: String, logLevel: String, _ arguments: [String] = [],
                      log: String? = nil, on hosts: Hosts? = nil) throws -> Process {
    let process = Process()
    let command = ["run", "--topology", topology, "--node", node, "--log-level", logLevel] + arguments
    let (executable, all) = hosts?.command(for: node, ceNodeBinary, command) ?? (ceNodeBinary, command)
    process.executableURL = executable
    process.arguments = all
    if let log {
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
    }
    try process.run()
    return process
}

/// Stops a node's process: `signal`, then SIGKILL after 10 s; returns once it has exited or
/// 15 s have passed.
public func stopNode(_ process: Process, signal: Int32 = SIGTERM) {
    guard process.isRunning else { return }
    kill(process.processIdentifier, signal)
    let start = Date()
    while process.isRunning && Date().timeIntervalSince(start) < 15 {
        if signal != SIGKILL && Date().timeIntervalSince(start) >= 10 { kill(process.processIdentifier, SIGKILL) }
        usleep(10_000)
    }
}

/// Waits (at most `seconds`) until a process that was sent SIGKILL has exited. A bounded poll:
/// `Process.waitUntilExit` was once seen spinning for minutes after its child had been reaped.
public func awaitExit(_ process: Process, seconds: Double = 10) {
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(5_000) }
}

/// Runs a program to its end; returns its exit status and its output (stdout and stderr).
func runProcess(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Runs blocking code (a child process to its end, a socket read) on a thread of its own.
/// Tasks share the cooperative threads (two on a two-core machine), and one blocked on them
/// holds up every other task's deadlines.
public func offThePool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}
