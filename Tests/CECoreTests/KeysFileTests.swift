import CECore
import Foundation
import Testing

/// Every edit of a keys file is read back through the topology loader, as every command reads it.
@Suite("Keys file edits")
struct KeysFileTests {
    static let keyA = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    static let keyB = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    static let keyC = "0123456789abcdefghij0123456789ABCDEFGHI#"
    static let keyD = "ABCDEFGHIJklmnopqrst.-:+=^!/*?&<>()[]{}@"

    /// A topology with nodes a, b and c beside a keys file holding `keys` (none: no file).
    final class Folder {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ce-keysfile-\(UUID().uuidString)").path
        var topology: String { path + "/t.yaml" }
        var keys: String { path + "/keys/keys.yaml" }

        init(keys text: String?) throws {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try """
                version: 1
                settings: { keys_file: keys/keys.yaml }
                nodes:
                  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}
                  - {name: b, pool: p, host: h, ports: {pub: 3, rep: 4}}
                  - {name: c, pool: p, host: h, ports: {pub: 5, rep: 6}}
                """.write(toFile: topology, atomically: true, encoding: .utf8)
            if let text {
                try FileManager.default.createDirectory(atPath: path + "/keys", withIntermediateDirectories: true)
                try text.write(toFile: keys, atomically: true, encoding: .utf8)
            }
        }

        deinit { try? FileManager.default.removeItem(atPath: path) }

        func text() throws -> String { try String(contentsOfFile: keys, encoding: .utf8) }

        /// The public key of each node as the topology loader reads them.
        func loaded() throws -> [String: String] {
            let t = try TopologyLoader.load(path: topology)
            return Dictionary(uniqueKeysWithValues: t.nodes.compactMap { n in n.publicKey.map { (n.name, $0) } })
        }
    }

    @Test func theTestKeysAreKeys() {
        for key in [Self.keyA, Self.keyB, Self.keyC, Self.keyD] { #expect(CurveKeyText.problem(key) == nil) }
    }

    @Test(arguments: [
        ("missing file", nil),
        ("empty file", ""),
        ("only comments", "# keys of the cluster\n\n"),
        ("empty flow mapping", "{}\n"),
        ("empty flow mapping, no newline", "{}"),
        ("document marker", "---\n"),
        ("null document", "# none yet\n~\n"),
    ] as [(String, String?)])
    func aFirstKeyInAFileWithoutKeys(style: String, before: String?) throws {
        let folder = try Folder(keys: before)
        try KeysFile.set(node: "a", publicKey: Self.keyA, in: folder.keys)
        #expect(try folder.loaded() == ["a": Self.keyA], "\(style): \((try? folder.text()) ?? "")")
        try KeysFile.set(node: "b", publicKey: Self.keyB, in: folder.keys)
        #expect(try folder.loaded() == ["a": Self.keyA, "b": Self.keyB], "\(style): \((try? folder.text()) ?? "")")
    }

    @Test func onlyCommentsAreKept() throws {
        let folder = try Folder(keys: "# keys of the cluster\n")
        try KeysFile.set(node: "a", publicKey: Self.keyA, in: folder.keys)
        #expect(try folder.text() == "# keys of the cluster\na: \"\(Self.keyA)\"\n")
    }

    @Test func aBlockMappingKeepsItsCommentsAndOrder() throws {
        let before = """
            # made by ce-node keys generate
            b: "\(Self.keyB)"   # builder

            # the planner
            a: '\(Self.keyA)'
            # end

            """
        let folder = try Folder(keys: before)
        try KeysFile.set(node: "c", publicKey: Self.keyC, in: folder.keys)
        #expect(try folder.text() == before + "c: \"\(Self.keyC)\"\n")
        #expect(try folder.loaded() == ["a": Self.keyA, "b": Self.keyB, "c": Self.keyC])
        // Replacing a key in place: its line changes, nothing else.
        try KeysFile.set(node: "a", publicKey: Self.keyD, in: folder.keys)
        #expect(try folder.text() == """
            # made by ce-node keys generate
            b: "\(Self.keyB)"   # builder

            # the planner
            a: "\(Self.keyD)"
            # end
            c: "\(Self.keyC)"

            """)
        #expect(try folder.loaded() == ["a": Self.keyD, "b": Self.keyB, "c": Self.keyC])
    }

    @Test func aKeyOnTheLineAfterItsNameIsReplacedWhole() throws {
        let folder = try Folder(keys: "a:\n  \"\(Self.keyA)\"\n# b next\nb: \"\(Self.keyB)\"\n")
        try KeysFile.set(node: "a", publicKey: Self.keyC, in: folder.keys)
        #expect(try folder.text() == "a: \"\(Self.keyC)\"\n# b next\nb: \"\(Self.keyB)\"\n")
        #expect(try folder.loaded() == ["a": Self.keyC, "b": Self.keyB])
    }

    @Test func aFileWithoutTrailingNewline() throws {
        let folder = try Folder(keys: "a: \"\(Self.keyA)\"")
        try KeysFile.set(node: "b", publicKey: Self.keyB, in: folder.keys)
        #expect(try folder.text() == "a: \"\(Self.keyA)\"\nb: \"\(Self.keyB)\"\n")
        try KeysFile.set(node: "b", publicKey: Self.keyC, in: folder.keys)
        #expect(try folder.loaded() == ["a": Self.keyA, "b": Self.keyC])
    }

    @Test func windowsLineEndsStay() throws {
        let folder = try Folder(keys: "# keys\r\na: \"\(Self.keyA)\"\r\n")
        try KeysFile.set(node: "b", publicKey: Self.keyB, in: folder.keys)
        #expect(try folder.text() == "# keys\r\na: \"\(Self.keyA)\"\r\nb: \"\(Self.keyB)\"\r\n")
        #expect(try folder.loaded() == ["a": Self.keyA, "b": Self.keyB])
    }

    @Test func aFlowMappingBecomesABlockMappingAfterItsLeadingComments() throws {
        let folder = try Folder(keys: "# cluster keys\n{b: \"\(Self.keyB)\", a: \"\(Self.keyA)\"}\n")
        try KeysFile.set(node: "c", publicKey: Self.keyC, in: folder.keys)
        #expect(try folder.text() == "# cluster keys\nb: \"\(Self.keyB)\"\na: \"\(Self.keyA)\"\nc: \"\(Self.keyC)\"\n")
        #expect(try folder.loaded() == ["a": Self.keyA, "b": Self.keyB, "c": Self.keyC])
    }

    @Test func replacingAKeyInAFlowMapping() throws {
        let folder = try Folder(keys: "{a: \"\(Self.keyA)\", b: \"\(Self.keyB)\"}")
        try KeysFile.set(node: "a", publicKey: Self.keyC, in: folder.keys)
        #expect(try folder.text() == "a: \"\(Self.keyC)\"\nb: \"\(Self.keyB)\"\n")
        #expect(try folder.loaded() == ["a": Self.keyC, "b": Self.keyB])
    }

    @Test func aFileThatIsNotAMappingIsLeftAloneAndNamed() throws {
        for before in ["- a\n", "a: [1, 2]\n", "a: \"unclosed\n"] {
            let folder = try Folder(keys: before)
            #expect {
                try KeysFile.set(node: "b", publicKey: Self.keyB, in: folder.keys)
            } throws: { error in
                (error as? KeysFileError)?.description.hasPrefix(folder.keys + ": ") == true
            }
            #expect(try folder.text() == before)
        }
    }

    /// Values that are not keys are kept as they were (the loader then names the bad entry).
    @Test func otherEntriesSurviveARewriteVerbatim() throws {
        let text = try KeysFile.edited("{x: 'say \"hi\" \\ there', \"y z\": k}", node: "a", publicKey: Self.keyA)
        #expect(text == "x: \"say \\\"hi\\\" \\\\ there\"\n\"y z\": \"k\"\na: \"\(Self.keyA)\"\n")
        let again = try KeysFile.edited(text, node: "a", publicKey: Self.keyB)
        #expect(again.contains("x: \"say \\\"hi\\\" \\\\ there\"") && again.contains("a: \"\(Self.keyB)\""))
    }
}
