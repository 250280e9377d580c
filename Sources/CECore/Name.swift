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
        for byte in utf8 where !allowed(byte) { throw NameError(name: name, problem: .badCharacter) }
    }

    /// `[A-Za-z0-9_.-]`
    static func allowed(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
            || byte == 0x5F || byte == 0x2E || byte == 0x2D
    }
}

/// Request ids: the ``Name`` characters, 1 to 128 bytes, not starting with '.'. A request id
/// becomes a file name in the event folder (`requests/{request_id}.json`), so one that
/// passes can neither leave its folder nor hide as a dot-file.
public enum RequestID {
    public static let maxLength = 128

    /// Accepts a well-formed request id; the error says what is wrong.
    public static func validate(_ id: String) throws(NameError) {
        guard !id.isEmpty else { throw NameError(name: id, problem: .empty) }
        guard id.utf8.count <= maxLength else { throw NameError(name: id, problem: .tooLong, limit: maxLength) }
        guard id.utf8.first != UInt8(ascii: ".") else { throw NameError(name: id, problem: .leadingDot) }
        for byte in id.utf8 where !Name.allowed(byte) { throw NameError(name: id, problem: .badCharacter) }
    }
}

/// Why a string is not a valid ``Name``.
public struct NameError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Problem: Sendable, Equatable {
        case empty, tooLong, badCharacter, leadingDot
    }

    public var name: String
    public var problem: Problem
    /// The longest allowed, for `tooLong`.
    public var limit: Int

    public init(name: String, problem: Problem, limit: Int = Name.maxLength) {
        self.name = name
        self.problem = problem
        self.limit = limit
    }

    public var description: String {
        switch problem {
        case .empty: "name is empty"
        case .tooLong: "name \"\(name.prefix(80))...\" is longer than \(limit) bytes"
        case .leadingDot: "name \"\(name.prefix(80))\" may not start with '.'"
        case .badCharacter: "name \"\(name.prefix(80))\" may only contain A-Z, a-z, 0-9, '_', '.' and '-'"
        }
    }
}
