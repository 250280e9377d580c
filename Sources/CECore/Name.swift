/// Names of nodes, pools, streams, gates and clusters: `[A-Za-z0-9_.-]`, 1 to 64 bytes.
///
/// One rule for every name that can appear in a topic, a file name or a topology file, so a
/// name is always safe in a path, a ZeroMQ topic and a log line.
public enum Name {
    /// The longest accepted name, in bytes.
    public static let maxLength = 64

    /// True when `name` is well formed.
    public static func isValid(_ name: String) -> Bool {
        (try? validate(name)) != nil
    }

    /// Accepts a well-formed name; throws ``NameError`` naming what is wrong.
    public static func validate(_ name: String) throws(NameError) {
        let utf8 = name.utf8
        guard !utf8.isEmpty else { throw NameError(name: name, problem: .empty) }
        guard utf8.count <= maxLength else { throw NameError(name: name, problem: .tooLong) }
        for byte in utf8 {
            let ok = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x5F || byte == 0x2E || byte == 0x2D
            guard ok else { throw NameError(name: name, problem: .badCharacter) }
        }
    }
}

/// Why a string is not a valid ``Name``.
public struct NameError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Problem: Sendable, Equatable {
        case empty, tooLong, badCharacter
    }

    public var name: String
    public var problem: Problem

    public init(name: String, problem: Problem) {
        self.name = name
        self.problem = problem
    }

    public var description: String {
        switch problem {
        case .empty: "name is empty"
        case .tooLong: "name \"\(name.prefix(80))...\" is longer than \(Name.maxLength) bytes"
        case .badCharacter: "name \"\(name.prefix(80))\" may only contain A-Z, a-z, 0-9, '_', '.' and '-'"
        }
    }
}
