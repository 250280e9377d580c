import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Hosts for a cluster on this machine: one network namespace per node, each with one
/// veth link into a bridge in a "switch" namespace, addresses only inside those namespaces.
/// Where namespaces cannot be made (no privileges, no `ip`), every node runs on loopback
/// with its own ports, and `mode` says so.
public final class Hosts: Sendable {
    public enum Mode: String, Sendable { case namespaces, loopback }
    public let mode: Mode
    /// Why the hosts are on loopback, when they are.
    public let reason: String
    let prefix: String
    let subnet: String
    /// node name -> index (address .10+index, namespace and link names)
    let index: [String: Int]

    private static let counter = Atomic<Int>(0)

    init(nodes: [String], namespaces wanted: Bool = true) {
        let n = Self.counter.add(1, ordering: .relaxed).newValue
        // Short names (interface names stop at 15 bytes): pid and cluster number.
        prefix = "ce\(getpid())c\(n % 100)"
        subnet = "10.211.\(Int(getpid() % 200) + 20 + n % 30)"
        index = Dictionary(uniqueKeysWithValues: nodes.enumerated().map { ($1, $0) })
        Self.sweepLeftovers()
        guard wanted else {
            mode = .loopback
            reason = "namespaces not requested"
            return
        }
        var failure: String?
        do {
            try Self.ip(["netns", "add", prefix + "sw"])
            try Self.ip(["-n", prefix + "sw", "link", "add", "br0", "type", "bridge"])
            try Self.ip(["-n", prefix + "sw", "link", "set", "br0", "up"])
            for i in index.values.sorted() { try Self.addHost(i, prefix: prefix, subnet: subnet) }
        } catch {
            failure = "\(error)"
        }
        if let failure {
            mode = .loopback
            reason = "network namespaces could not be made here (\(failure))"
            removeNamespaces()
        } else {
            mode = .namespaces
            reason = ""
        }
    }

    /// One host: a namespace with a veth link into the switch's bridge and its address.
    private static func addHost(_ i: Int, prefix: String, subnet: String) throws {
        let ns = prefix + "h\(i)"
        try ip(["netns", "add", ns])
        try ip(["link", "add", "\(prefix)s\(i)", "type", "veth", "peer", "name", "\(prefix)n\(i)"])
        try ip(["link", "set", "\(prefix)s\(i)", "netns", prefix + "sw"])
        try ip(["link", "set", "\(prefix)n\(i)", "netns", ns])
        try ip(["-n", prefix + "sw", "link", "set", "\(prefix)s\(i)", "master", "br0", "up"])
        try ip(["-n", ns, "link", "set", "lo", "up"])
        try ip(["-n", ns, "addr", "add", "\(subnet).\(10 + i)/24", "dev", "\(prefix)n\(i)"])
        try ip(["-n", ns, "link", "set", "\(prefix)n\(i)", "up"])
    }

    /// Replaces the node's host with a new one at the same address (the old machine is
    /// gone and another takes its name): its namespace and link are deleted and made anew.
    /// Stop the node first. On loopback there is nothing to replace.
    public func replace(_ node: String) throws {
        guard mode == .namespaces else { return }
        let i = index[node]!
        try Self.ip(["netns", "del", prefix + "h\(i)"])
        try Self.addHost(i, prefix: prefix, subnet: subnet)
    }

    func address(of node: String) -> String { mode == .namespaces ? "\(subnet).\(10 + index[node]!)" : "127.0.0.1" }

    /// The executable and arguments that run `binary arguments` on the node's host.
    func command(for node: String, _ binary: URL, _ arguments: [String]) -> (URL, [String]) {
        guard mode == .namespaces else { return (binary, arguments) }
        // `ip netns exec` replaces itself with the command: the PID is the node's.
        return (URL(fileURLWithPath: Self.ipPath), ["netns", "exec", prefix + "h\(index[node]!)", binary.path] + arguments)
    }

    /// Cuts the node's host off the switch (its link goes down); `heal` brings it back.
    func cut(_ node: String) throws {
        try Self.ip(["-n", prefix + "sw", "link", "set", "\(prefix)s\(index[node]!)", "down"])
    }

    func heal(_ node: String) throws {
        try Self.ip(["-n", prefix + "sw", "link", "set", "\(prefix)s\(index[node]!)", "up"])
    }

    /// Cuts the path between two hosts only: each drops whatever comes from the other, as a
    /// broken link between two racks would, while both still reach every other host. The
    /// rules live in the two hosts' namespaces and go with them; `healLink` removes them.
    func cutLink(_ a: String, _ b: String) throws {
        try filter(a, ["-I", "INPUT", "-s", address(of: b), "-j", "DROP"])
        try filter(b, ["-I", "INPUT", "-s", address(of: a), "-j", "DROP"])
    }

    func healLink(_ a: String, _ b: String) throws {
        try filter(a, ["-D", "INPUT", "-s", address(of: b), "-j", "DROP"])
        try filter(b, ["-D", "INPUT", "-s", address(of: a), "-j", "DROP"])
    }

    /// Changes the packet filter inside the node's host. Dropping on the way in on both sides,
    /// never on the way out: a packet refused on its way out fails the sender's system call,
    /// which a real broken link does not.
    private func filter(_ node: String, _ rule: [String]) throws {
        guard mode == .namespaces, let iptables = Self.iptablesPath else {
            throw ClusterError("no link between two hosts can be cut here (\(mode == .namespaces ? "no iptables" : reason))")
        }
        try Self.ip(["netns", "exec", prefix + "h\(index[node]!)", iptables, "-w"] + rule)
    }

    /// Whether this machine can cut the link between two hosts: namespaces (root and `ip`) and iptables.
    public static var linksCanBeCut: Bool { getuid() == 0 && FileManager.default.isExecutableFile(atPath: ipPath) && iptablesPath != nil }

    static let iptablesPath = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Deletes the namespaces (their links go with them). Stop the nodes first.
    func tearDown() { removeNamespaces() }

    private func removeNamespaces() {
        for i in index.values { try? Self.ip(["netns", "del", prefix + "h\(i)"]) }
        try? Self.ip(["netns", "del", prefix + "sw"])
    }

    /// Namespaces left by a test process that died before tearing down (its pid is gone).
    private static func sweepLeftovers() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/run/netns") else { return }
        for name in names where name.hasPrefix("ce") {
            let digits = name.dropFirst(2).prefix { $0.isNumber }
            guard let pid = Int32(digits), name.dropFirst(2 + digits.count).first == "c", pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { try? ip(["netns", "del", name]) }
        }
    }

    static let ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/sbin/ip"

    static func ip(_ arguments: [String]) throws {
        let (status, output) = try runProcess(URL(fileURLWithPath: ipPath), arguments)
        guard status == 0 else {
            throw ClusterError("ip \(arguments.joined(separator: " ")) failed: \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
