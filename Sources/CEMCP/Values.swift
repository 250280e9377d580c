import CECore
import Foundation
import MCP

// The node speaks CECore's JSONValue; the SDK speaks MCP.Value. Both are plain JSON.

extension JSONValue {
    /// The same JSON; integers and doubles both become numbers, data becomes its data URL.
    init(_ value: MCP.Value) {
        switch value {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .number(Double(i))
        case .double(let d): self = .number(d)
        case .string(let s): self = .string(s)
        case .data(let mimeType, let data): self = .string(data.dataURLEncoded(mimeType: mimeType))
        case .array(let items): self = .array(items.map { JSONValue($0) })
        case .object(let object): self = .object(object.mapValues { JSONValue($0) })
        }
    }
}

extension Value {
    /// The same JSON; whole numbers that fit exactly become integers.
    init(_ json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let n):
            if n.rounded() == n, abs(n) <= 9_007_199_254_740_992 { self = .int(Int(n)) } else { self = .double(n) }
        case .string(let s): self = .string(s)
        case .array(let items): self = .array(items.map(Value.init))
        case .object(let object): self = .object(object.mapValues(Value.init))
        }
    }

    /// What kind of JSON value this is, for error messages.
    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .int: "an integer"
        case .double: "a number"
        case .string, .data: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A tool call that cannot be carried out, with the sentence the agent gets (as an MCP tool
/// error, `isError: true`).
public struct ToolError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A tool call's arguments, checked against what the tool takes: unknown keys, missing keys
/// and wrong types are errors that name the argument.
struct Arguments {
    let tool: String
    let values: [String: Value]

    init(tool: String, values: [String: Value]?, allowed: [String]) throws(ToolError) {
        self.tool = tool
        self.values = values ?? [:]
        for key in self.values.keys.sorted() where !allowed.contains(key) {
            throw ToolError("\(tool): unknown argument \"\(key)\" (\(tool) takes: \(allowed.joined(separator: ", ")))")
        }
    }

    func has(_ key: String) -> Bool { values[key].map { $0 != .null } ?? false }

    private func wrongType(_ key: String, _ expected: String, _ value: Value) -> ToolError {
        ToolError("\(tool): argument \"\(key)\" must be \(expected), not \(value.kind)")
    }

    func missing(_ key: String, _ what: String) -> ToolError {
        ToolError("\(tool): missing argument \"\(key)\" (\(what))")
    }

    func string(_ key: String) throws(ToolError) -> String? {
        guard let value = values[key], value != .null else { return nil }
        switch value {
        case .string(let s): return s
        case .data(let mimeType, let data): return data.dataURLEncoded(mimeType: mimeType)
        default: throw wrongType(key, "a string", value)
        }
    }

    func requiredString(_ key: String, _ what: String) throws(ToolError) -> String {
        guard let s = try string(key), !s.isEmpty else { throw missing(key, what) }
        return s
    }

    /// A node, pool, stream or gate name.
    func name(_ key: String) throws(ToolError) -> String? {
        guard let s = try string(key) else { return nil }
        guard Name.isValid(s) else { throw ToolError("\(tool): argument \"\(key)\": \"\(s.prefix(80))\" is not a name (A-Z, a-z, 0-9, '_', '.', '-'; 1-64 bytes)") }
        return s
    }

    func bool(_ key: String) throws(ToolError) -> Bool? {
        guard let value = values[key], value != .null else { return nil }
        guard case .bool(let b) = value else { throw wrongType(key, "true or false", value) }
        return b
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws(ToolError) -> Int? {
        guard let value = values[key], value != .null else { return nil }
        let n: Int
        switch value {
        case .int(let i): n = i
        case .double(let d) where d.rounded() == d && abs(d) < 1e15: n = Int(d)
        default: throw wrongType(key, "an integer", value)
        }
        guard range.contains(n) else {
            throw ToolError("\(tool): argument \"\(key)\" must be from \(range.lowerBound) to \(range.upperBound), not \(n)")
        }
        return n
    }

    /// A wait in seconds: more than zero and at most `max`.
    func seconds(_ key: String, max: Double) throws(ToolError) -> Duration? {
        guard let value = values[key], value != .null else { return nil }
        let s: Double
        switch value {
        case .int(let i): s = Double(i)
        case .double(let d): s = d
        default: throw wrongType(key, "a number of seconds", value)
        }
        guard s > 0, s.isFinite else {
            throw ToolError("\(tool): argument \"\(key)\" must be more than 0 seconds (got \(s)); to look without waiting, use history")
        }
        guard s <= max else {
            throw ToolError("\(tool): argument \"\(key)\" must be at most \(Int(max)) seconds (got \(s)); call again to wait longer")
        }
        return .milliseconds(Int64((s * 1000).rounded()))
    }

    /// Any JSON.
    func json(_ key: String) -> JSONValue? { values[key].map { JSONValue($0) } }

    func strings(_ key: String) throws(ToolError) -> [String]? {
        guard let value = values[key], value != .null else { return nil }
        guard case .array(let items) = value else { throw wrongType(key, "an array of strings", value) }
        var out: [String] = []
        for item in items {
            guard case .string(let s) = item else { throw ToolError("\(tool): argument \"\(key)\" must hold strings, not \(item.kind)") }
            out.append(s)
        }
        return out
    }

    func timestamp(_ key: String) throws(ToolError) -> String? {
        guard let s = try string(key) else { return nil }
        guard Timestamp.parse(s) != nil else {
            throw ToolError("\(tool): argument \"\(key)\": \"\(s.prefix(80))\" is not an ISO 8601 date-time with a zone, e.g. 2026-11-25T03:40:14Z")
        }
        return s
    }
}
