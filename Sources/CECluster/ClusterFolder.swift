import CENode
import Foundation
import ZeroMQ

/// A temporary folder holding a cluster on this machine: its topology file, every node's data
/// folder and every node's log. With CURVE, as every cluster has it by default, each node gets
/// a key pair: the secret key in its data folder, the public key for the topology.
public struct ClusterFolder: Sendable {
    /// The folder; ``remove()`` deletes it.
    public let root: String
    /// Whether the nodes get CURVE keys (not with `security: none`).
    public let curve: Bool

    /// Makes a new folder in the system's temporary folder, named `prefix` and eight random characters.
    public init(prefix: String, curve: Bool = true) throws {
        root = NSTemporaryDirectory() + prefix + UUID().uuidString.prefix(8)
        self.curve = curve
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    var topologyPath: String { root + "/topology.yaml" }

    /// The data folder of node `name`.
    func data(_ name: String) -> String { root + "/" + name }

    /// The file that node `name`'s output is appended to.
    public func logPath(_ name: String) -> String { root + "/\(name).log" }

    /// With CURVE: a new key pair for node `name`, its secret key written to its data folder
    /// (made 0700). Without: nil.
    func makeKey(_ name: String) throws -> CurveKeyPair? {
        guard curve else { return nil }
        return try NodeKeyFile.generate(dataDirectory: data(name), node: name)
    }

    /// A loopback node's entries for its line of a topology (`{ name: N, pool: P, <these> }`):
    /// host, two free ports, its data folder and, with CURVE, its public key.
    public func place(_ name: String) throws -> String {
        let (pub, rep) = (try freePort(), try freePort())
        let key = try makeKey(name).map { ", public_key: \"\($0.publicKey)\"" } ?? ""
        return "host: 127.0.0.1, ports: { pub: \(pub), rep: \(rep) }, data: \(data(name))\(key)"
    }

    /// Writes the topology file whole or not at all (beside it, then renamed over it), as
    /// running nodes must find it on a reload; returns its path.
    @discardableResult
    public func write(topology text: String) throws -> String {
        try text.write(toFile: topologyPath, atomically: true, encoding: .utf8)
        return topologyPath
    }

    public func remove() { try? FileManager.default.removeItem(atPath: root) }
}
