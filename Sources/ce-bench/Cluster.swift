import ArgumentParser
import CECore
import CENode
import Foundation

// What the benchmarks share: the cluster on loopback they build, the `ce-node` processes they
// start and stop, the figures they compute and the process counters they read.

/// A benchmark that could not go on, saying what it waited for or what was refused.
struct BenchmarkFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The 256-byte payload of the benchmarks' events.
let payload: JSONValue = .string(String(repeating: "x", count: 256))

// MARK: Options

/// `--no-curve`, for the benchmarks that build a cluster.
struct SecurityOptions: ParsableArguments {
    @Flag(help: "Security none between the nodes, instead of CURVE as every cluster has it by default.")
    var noCurve = false
}

/// Throws the parser's error for the first flag whose number is not positive.
func requirePositive(_ values: KeyValuePairs<String, Int>) throws {
    for (flag, value) in values where value <= 0 { throw ValidationError("\(flag) needs a positive number, not \(value)") }
}

// MARK: The cluster

/// A benchmark's cluster on loopback: a temporary folder holding its topology file and every
/// node's data folder, loopback ports, and CURVE keys as every cluster has them by default
/// (none with `--no-curve`).
@MainActor final class BenchCluster {
    /// The temporary folder; ``remove()`` deletes it.
    let root: String
    let curve: Bool
    private var portsGiven = Set<Int>()

    init(_ security: SecurityOptions) throws {
        root = NSTemporaryDirectory() + "ce-bench-" + UUID().uuidString.prefix(8)
        curve = !security.noCurve
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// The topology's `settings` entry for the security: nothing for CURVE (the default).
    var securitySetting: String { curve ? "" : ", security: none" }

    /// The data folder of node `name`.
    func data(_ name: String) -> String { root + "/" + name }

    /// A node's place in the topology, for its line (`{ name: N, pool: P, <this> }`): loopback
    /// host, two new ports, its data folder and, with CURVE, its public key (its secret key is
    /// written to its data folder).
    func place(_ name: String) throws -> String {
        "host: 127.0.0.1, ports: { pub: \(port()), rep: \(port()) }, data: \(data(name))\(try key(name))"
    }

    /// A loopback port, never the same twice in a run, below the kernel's ephemeral range
    /// (32768-60999), which outgoing connections take.
    func port() -> Int {
        while true {
            let p = Int.random(in: 20000..<32000)
            if portsGiven.insert(p).inserted { return p }
        }
    }

    /// With CURVE: the node's secret key in its data folder, and the `public_key` entry for its
    /// line of the topology. Without: nothing.
    private func key(_ name: String) throws -> String {
        guard curve else { return "" }
        let pair = try NodeKeyFile.generate(dataDirectory: data(name), node: name, force: true)
        return ", public_key: \"\(pair.publicKey)\""
    }

    /// Writes the topology file; returns its path.
    func write(topology yaml: String) throws -> String {
        let path = root + "/topology.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func remove() { try? FileManager.default.removeItem(atPath: root) }
}

// MARK: Node processes

/// The `ce-node` built beside this benchmark.
let ceNodeBinary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ce-node")

/// Starts `ce-node run` for node `node` of the topology at `topology`, with `more` arguments;
/// its output goes to `log` when given (else to this process's).
func startNode(topology: String, node: String, logLevel: String, _ more: [String] = [], log: FileHandle? = nil) throws -> Process {
    let child = Process()
    child.executableURL = ceNodeBinary
    child.arguments = ["run", "--topology", topology, "--node", node, "--log-level", logLevel] + more
    if let log {
        child.standardError = log
        child.standardOutput = log
    }
    try child.run()
    return child
}

/// Stops a child process: `signal`, then SIGKILL after 10 s; returns once it has exited or
/// 15 s have passed. Polls instead of `waitUntilExit`, which was seen spinning for minutes after
/// a child that had already been reaped.
func stopChild(_ child: Process, signal: Int32 = SIGTERM) {
    guard child.isRunning else { return }
    kill(child.processIdentifier, signal)
    let start = Date()
    while child.isRunning && Date().timeIntervalSince(start) < 15 {
        if signal != SIGKILL && Date().timeIntervalSince(start) >= 10 { kill(child.processIdentifier, SIGKILL) }
        usleep(10_000)
    }
}

// MARK: Figures

func seconds(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

func microseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
}

func milliseconds(_ d: Duration) -> Double {
    Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15
}

/// The value at share `p` (0-1) of sorted values; NaN when there are none.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted.isEmpty ? .nan : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

// MARK: Process counters

/// CPU time (user and system, every thread) a process has used so far, in seconds; -1 when
/// it cannot be read. Fields 14 and 15 of `/proc/PID/stat`, in clock ticks.
func cpuSeconds(_ pid: Int32? = nil) -> Double {
    let path = pid.map { "/proc/\($0)/stat" } ?? "/proc/self/stat"
    // The command name (field 2) may hold spaces: count the fields after its closing ')'.
    guard let text = try? String(contentsOfFile: path, encoding: .utf8), let close = text.lastIndex(of: ")") else { return -1 }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return -1 }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// Resident memory of a process, from /proc (KiB).
func residentKiB(_ pid: Int32? = nil) -> Int {
    let path = pid.map { "/proc/\($0)/status" } ?? "/proc/self/status"
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
        let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return -1 }
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}
