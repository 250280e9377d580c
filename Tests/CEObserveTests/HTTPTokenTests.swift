import CECore
import CENode
@testable import CEObserve
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The token file of `settings.http_token_file`, the comparison and the header it is sent in.
@Suite("the HTTP token")
struct HTTPTokenTests {
    /// Writes `text` into a fresh file with `mode`; its path.
    func tokenFile(_ text: String, mode: Int) throws -> String {
        let path = NSTemporaryDirectory() + "ce-token-" + UUID().uuidString.prefix(8)
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw TestFailure("cannot write \(path)")
        }
        return path
    }

    @Test func aTokenFileIsReadWithoutItsNewlineAndOnlyWhenPrivate() throws {
        let good = try tokenFile("abc123\r\n", mode: 0o600)
        defer { try? FileManager.default.removeItem(atPath: good) }
        let token = try HTTPToken.load(good)
        #expect(token.matches("abc123".utf8))
        #expect(!token.matches("abc123\n".utf8))

        let missing = NSTemporaryDirectory() + "ce-token-none-" + UUID().uuidString.prefix(8)
        let none = #expect(throws: HTTPTokenError.self) { try HTTPToken.load(missing) }
        #expect(none?.code == .missing && "\(none!)".contains(missing), "\(String(describing: none))")

        let blank = try tokenFile("\n", mode: 0o600)
        defer { try? FileManager.default.removeItem(atPath: blank) }
        let empty = #expect(throws: HTTPTokenError.self) { try HTTPToken.load(blank) }
        #expect(empty?.code == .empty && "\(empty!)".contains(blank))

        for mode in [0o644, 0o640, 0o604, 0o660] {
            let open = try tokenFile("abc123\n", mode: mode)
            defer { try? FileManager.default.removeItem(atPath: open) }
            let exposed = #expect(throws: HTTPTokenError.self) { try HTTPToken.load(open) }
            #expect(exposed?.code == .exposed, "mode \(String(mode, radix: 8))")
            #expect("\(exposed!)".contains("chmod 600 \(open)") && "\(exposed!)".contains(String(mode, radix: 8)), "\(exposed!)")
        }
        let folder = NSTemporaryDirectory() + "ce-token-dir-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(throws: HTTPTokenError.self) { try HTTPToken.load(folder) }
    }

    @Test func onlyTheWholeTokenMatches() throws {
        let token = try #require(HTTPToken(Array("s3cret".utf8)))
        #expect(token.matches("s3cret".utf8))
        for guess in ["s3cres", "S3cret", "s3cre", "s3crett", "", "s3crets3cret", "s3cret\u{0}", String(repeating: "s3cret", count: 43)] {
            #expect(!token.matches(guess.utf8), "\(guess.debugDescription) matched")
        }
        // Lengths that differ by a multiple of 256 (a byte-sized length check would miss them).
        let long = try #require(HTTPToken(Array(repeating: UInt8(ascii: "a"), count: 300)))
        #expect(!long.matches(Array(repeating: UInt8(ascii: "a"), count: 44)))
        #expect(HTTPToken([]) == nil)
    }

    @Test func theBearerTokenIsTakenFromExactlyOneHeader() {
        #expect(HTTPWriteAccess.bearerToken(["Bearer abc"]) == "abc")
        #expect(HTTPWriteAccess.bearerToken(["bearer  abc"]) == "abc")
        for values in [[], ["Bearer"], ["Bearer "], ["Basic abc"], ["abc"], ["Bearer abc", "Bearer abc"], ["Bearerabc"]] {
            #expect(HTTPWriteAccess.bearerToken(values) == nil, "\(values)")
        }
        let token = HTTPToken(Array("abc".utf8))!
        #expect(HTTPWriteAccess.token(token, path: "t").refusal(authorization: ["Bearer abc"]) == nil)
        #expect(HTTPWriteAccess.token(token, path: "t").refusal(authorization: ["Bearer abd"])?.status == .unauthorized)
        #expect(HTTPWriteAccess.readOnly.refusal(authorization: ["Bearer abc"])?.status == .forbidden)
        #expect(HTTPWriteAccess.forwarded.refusal(authorization: ["Bearer x"]) == nil)
        #expect(HTTPWriteAccess.forwarded.refusal(authorization: [])?.status == .unauthorized)
    }

    @Test func aCoordinatorWithAnExposedTokenFileDoesNotStart() async throws {
        let root = NSTemporaryDirectory() + "ce-token-start-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        FileManager.default.createFile(atPath: root + "/http.token", contents: Data("abc\n".utf8), attributes: [.posixPermissions: 0o644])
        try """
            version: 1
            settings: { security: none, http_token_file: http.token }
            coordinator: { name: coord, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()), metrics: \(try freePort()) }, data: \(root)/coord }
            nodes:
              - { name: p-1, pool: p, host: 127.0.0.1, ports: { pub: \(try freePort()), rep: \(try freePort()) }, data: \(root)/p-1 }
            """.write(toFile: root + "/topology.yaml", atomically: true, encoding: .utf8)
        let topology = try TopologyLoader.load(path: root + "/topology.yaml")
        #expect(topology.settings.httpTokenFile == root + "/http.token")
        let node = try Node(options: try Node.Options(topology: topology, name: "coord"))
        let server = ObserveServer(node: node, coordinator: nil, registry: nil, host: "127.0.0.1", port: topology.coordinator!.metricsPort!, dashboard: true)
        do {
            try await server.run()
            Issue.record("the server started with a token file others can read")
        } catch {
            let text = "\(error)"
            #expect(text.contains("settings.http_token_file: \(root)/http.token") && text.contains("chmod 600"), "\(text)")
        }
        // A plain node's port does not read the file: it has nothing to change.
        let pool = try Node(options: try Node.Options(topology: topology, name: "p-1"))
        let plain = ObserveServer(node: pool, coordinator: nil, registry: nil, host: "127.0.0.1", port: 1, dashboard: false)
        guard case .nothingToChange = try plain.writeAccess() else {
            Issue.record("a pool node's port reads the token file")
            return
        }
    }
}
