import Foundation
import Yams

/// The keys file named by `settings.keys_file`: a YAML mapping of node name -> CURVE public key,
/// one `node: "public key"` line per node as `ce-node keys` writes it.
///
/// People edit the file too, so an edit keeps what they wrote where it can: a block mapping
/// (or an empty file, or one holding only comments) is edited line by line, its comments and
/// order kept; any other mapping (flow style, `{}`) is rewritten as a block mapping, keeping
/// its leading comment lines. Every result is parsed again and must map each node to the key
/// it had (and the edited node to its new key) before it replaces the file.
public enum KeysFile {
    /// A node's line: `name: "key"` (Z85 has no `"` or `\`, so the key needs no escaping).
    public static func line(node: String, publicKey: String) -> String { "\(node): \(quoted(publicKey))" }

    /// Sets a node's public key in `file`, keeping the other nodes' (written beside, then
    /// renamed over). A missing file and its folder are made.
    public static func set(node: String, publicKey: String, in file: String) throws(KeysFileError) {
        try change(node: node, to: publicKey, in: file)
    }

    /// Removes a node's entry from `file` (a rotation's old key), keeping the others.
    public static func remove(node: String, in file: String) throws(KeysFileError) {
        try change(node: node, to: nil, in: file)
    }

    static func change(node: String, to publicKey: String?, in file: String) throws(KeysFileError) {
        var text = ""
        if let data = FileManager.default.contents(atPath: file) {
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw KeysFileError(file: file, code: .unreadable, message: "the file is not UTF-8 text")
            }
            text = decoded
        } else if FileManager.default.fileExists(atPath: file) {
            throw KeysFileError(file: file, code: .unreadable, message: "cannot read the file")
        }
        let edited = try self.edited(text, node: node, publicKey: publicKey, file: file)
        do {
            let folder = (file as NSString).deletingLastPathComponent
            if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            try edited.write(toFile: file, atomically: true, encoding: .utf8)
        } catch {
            throw KeysFileError(file: file, code: .unwritable, message: error.localizedDescription)
        }
    }

    /// The text of a keys file with `node` set to `publicKey`; `file` names it in errors.
    public static func edited(_ text: String, node: String, publicKey: String?, file: String = "keys.yaml") throws(KeysFileError) -> String {
        let before = try entries(text, file: file)
        var wanted = before.map
        wanted[node] = publicKey
        let newline = text.contains("\r\n") ? "\r\n" : "\n"
        var candidates: [String] = []
        if before.isBlock, let lineWise = editLines(text, newline: newline, root: before.root, node: node, publicKey: publicKey) {
            candidates.append(lineWise)
        }
        candidates.append(rewritten(text, newline: newline, order: before.order, values: wanted))
        for candidate in candidates {
            if let after = try? entries(candidate, file: file), after.map == wanted, after.order.count == wanted.count {
                return candidate
            }
        }
        throw KeysFileError(file: file, code: .editFailed, message: "could not \(publicKey == nil ? "remove" : "set") the key of \(node) without changing the other entries: edit the file by hand")
    }

    /// The file's entries in order; `map` holds them as text.
    struct Entries {
        var root: Yams.Node.Mapping?
        var order: [String] = []
        var map: [String: String] = [:]
        /// A block mapping, or no mapping yet: edited line by line.
        var isBlock: Bool { root.map { $0.style != .flow } ?? true }
    }

    static func entries(_ text: String, file: String) throws(KeysFileError) -> Entries {
        let root: Yams.Node?
        do { root = try Yams.compose(yaml: text) } catch {
            throw KeysFileError(file: file, code: .invalidYAML, message: TopologyLoader.yamlProblem(error).description)
        }
        // Empty, only comments, or a document holding nothing (`---`, `~`): no keys yet.
        guard let root, root.null == nil else { return Entries() }
        guard case .mapping(let mapping) = root else {
            throw KeysFileError(file: file, code: .notAMapping, message: "expected a mapping of node names to public keys (name: \"key\")")
        }
        var result = Entries(root: mapping)
        for (key, value) in mapping {
            guard let name = key.scalar?.string, let text = value.scalar?.string else {
                let line = key.mark.map { " (line \($0.line))" } ?? ""
                throw KeysFileError(file: file, code: .notAMapping, message: "every entry must be a node name and its key as text\(line)")
            }
            result.order.append(name)
            result.map[name] = text
        }
        return result
    }

    /// Replaces the node's entry in place, or appends its line; nil when the layout is not
    /// one this can edit (the caller rewrites the file then).
    static func editLines(_ text: String, newline: String, root: Yams.Node.Mapping?, node: String, publicKey: String?) -> String? {
        var lines = text.components(separatedBy: newline)
        if lines.last == "" { lines.removeLast() }
        let keys = (root.map { Array($0) } ?? []).compactMap { pair -> (name: String, line: Int, column: Int)? in
            guard let name = pair.key.scalar?.string, let mark = pair.key.mark else { return nil }
            return (name, mark.line - 1, mark.column - 1)
        }
        guard keys.count == root?.count ?? 0 else { return nil }
        for key in keys {
            guard key.line < lines.count, lines[key.line].prefix(key.column).allSatisfy({ $0 == " " }) else { return nil }
        }
        let indent = String(repeating: " ", count: keys.first?.column ?? 0)
        let entry = publicKey.map { [indent + line(node: node, publicKey: $0)] } ?? []
        if let index = keys.firstIndex(where: { $0.name == node }) {
            // The entry runs to the next key, less the comments and blank lines before that.
            let start = keys[index].line
            var end = keys.dropFirst(index + 1).map(\.line).min() ?? lines.count
            while end > start + 1, isBlankOrComment(lines[end - 1]) { end -= 1 }
            lines.replaceSubrange(start..<end, with: entry)
        } else {
            while let last = lines.last, last.allSatisfy(\.isWhitespace) { lines.removeLast() }
            lines += entry
        }
        return lines.joined(separator: newline) + newline
    }

    /// The entries as a block mapping, after the file's leading comment lines.
    static func rewritten(_ text: String, newline: String, order: [String], values: [String: String]) -> String {
        let leading = text.components(separatedBy: newline).prefix { isBlankOrComment($0) }
        var lines = Array(leading)
        while let last = lines.last, last.allSatisfy(\.isWhitespace) { lines.removeLast() }
        let names = order + values.keys.filter { !order.contains($0) }.sorted()
        for name in names {
            guard let value = values[name] else { continue }
            lines.append((Name.isValid(name) ? name : quoted(name)) + ": " + quoted(value))
        }
        return lines.joined(separator: newline) + newline
    }

    static func isBlankOrComment(_ line: String) -> Bool {
        let trimmed = line.drop { $0.isWhitespace }
        return trimmed.isEmpty || trimmed.hasPrefix("#")
    }

    /// A YAML double-quoted scalar.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: out += String(format: "\\x%02X", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Why a keys file could not be read or edited; names the file.
public struct KeysFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The file exists but cannot be read as UTF-8 text.
        case unreadable
        /// The file is not valid YAML.
        case invalidYAML
        /// The file holds something other than a mapping of names to text.
        case notAMapping
        /// No edit kept the other entries as they were (an unusual layout).
        case editFailed
        /// The new file could not be written.
        case unwritable
    }

    public var file: String
    public var code: Code
    public var message: String

    public init(file: String, code: Code, message: String) {
        self.file = file
        self.code = code
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}
