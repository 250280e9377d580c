import ArgumentParser
import CECluster
import CECore
import Foundation

// What the benchmarks share beside CECluster's folder and node processes: their options, the
// figures they compute and the process counters they read.

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

extension ClusterFolder {
    /// A benchmark's folder for a cluster on loopback: every node's data folder and the
    /// topology file, with CURVE keys as every cluster has them by default (none with `--no-curve`).
    init(_ security: SecurityOptions) throws {
        try self.init(prefix: "ce-bench-", curve: !security.noCurve)
    }

    /// The topology's `settings` entry for the security: nothing for CURVE (the default).
    var securitySetting: String { curve ? "" : ", security: none" }
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
