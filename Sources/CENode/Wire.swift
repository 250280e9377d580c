import CECore
import Foundation

/// Request-response and control messages: one JSON object per frame, as PROTOCOL.md says.
enum Wire {
    static let version = 1

    /// A question sent to a pool's REP endpoint.
    struct Request: Sendable {
        var requestID: String
        var fromNode: String
        var fromPool: String
        var pool: String
        var question: JSONValue
        /// `wait_ms`: how long the asker still waits for the answer from when it sent this
        /// request (its timeout times the attempts it has left); nil from an asker that does
        /// not say.
        var waitMilliseconds: Int?

        /// The largest `wait_ms` taken (30 days); an asker that waits longer says this.
        static let maxWaitMilliseconds = 30 * 24 * 3_600_000

        var json: JSONValue {
            var object: [String: JSONValue] = [
                "v": .number(Double(Wire.version)), "request_id": .string(requestID), "from_node": .string(fromNode),
                "from_pool": .string(fromPool), "pool": .string(pool), "question": question,
            ]
            if let waitMilliseconds { object["wait_ms"] = .number(Double(waitMilliseconds)) }
            return .object(object)
        }

        init(requestID: String, fromNode: String, fromPool: String, pool: String, question: JSONValue, waitMilliseconds: Int? = nil) {
            self.requestID = requestID
            self.fromNode = fromNode
            self.fromPool = fromPool
            self.pool = pool
            self.question = question
            self.waitMilliseconds = waitMilliseconds
        }

        /// Parses a request body; the error names what is wrong.
        init(parsing bytes: [UInt8]) throws(WireError) {
            let object = try Wire.object(bytes, what: "request")
            try Wire.checkVersion(object)
            self.requestID = try Wire.string(object, "request_id", what: "request")
            do { try RequestID.validate(requestID) } catch { throw WireError("request field \"request_id\": \(error)") }
            self.fromNode = (try? Wire.string(object, "from_node", what: "request")) ?? "unknown"
            self.fromPool = (try? Wire.string(object, "from_pool", what: "request")) ?? "unknown"
            self.pool = try Wire.string(object, "pool", what: "request")
            for (key, value) in [("from_node", fromNode), ("from_pool", fromPool), ("pool", pool)] {
                do { try Name.validate(value) } catch { throw WireError("request field \"\(key)\": \(error)") }
            }
            guard let question = object["question"] else { throw WireError("request is missing \"question\"") }
            self.question = question
            if let value = object["wait_ms"], value != .null {
                guard let n = value.intValue, (0...Self.maxWaitMilliseconds).contains(n) else {
                    throw WireError("request field \"wait_ms\" must be an integer from 0 to \(Self.maxWaitMilliseconds), not \(value.serializedString)")
                }
                self.waitMilliseconds = n
            }
        }
    }

    /// A reply: an answer, or an error a person can act on.
    static func reply(requestID: String, answeredBy: String, answer: JSONValue) -> [UInt8] {
        JSONValue.object([
            "v": .number(Double(version)), "request_id": .string(requestID), "status": "ok",
            "answered_by": .string(answeredBy), "answer": answer,
        ]).serialized()
    }

    static func errorReply(requestID: String?, answeredBy: String, error: String) -> [UInt8] {
        JSONValue.object([
            "v": .number(Double(version)), "request_id": requestID.map(JSONValue.string) ?? .null, "status": "error",
            "answered_by": .string(answeredBy), "error": .string(error),
        ]).serialized()
    }

    static func object(_ bytes: [UInt8], what: String) throws(WireError) -> [String: JSONValue] {
        let value: JSONValue
        do { value = try JSONValue(parsing: bytes) } catch { throw WireError("\(what) is not valid JSON: \(error)") }
        guard case .object(let object) = value else { throw WireError("\(what) must be a JSON object") }
        return object
    }

    static func checkVersion(_ object: [String: JSONValue]) throws(WireError) {
        if let v = object["v"] {
            guard case .number(let n) = v, n == Double(version) else {
                throw WireError("unsupported protocol version \(v.serializedString) (this node speaks \(version))")
            }
        }
    }

    static func string(_ object: [String: JSONValue], _ key: String, what: String) throws(WireError) -> String {
        guard let value = object[key] else { throw WireError("\(what) is missing \"\(key)\"") }
        guard case .string(let s) = value else { throw WireError("\(what) field \"\(key)\" must be a string") }
        return s
    }
}

/// A malformed request or control message.
public struct WireError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
