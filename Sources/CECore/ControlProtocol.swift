import Foundation

// The local control endpoint's protocol (ipc://<data>/control.sock; docs/PROTOCOL.md, "Control
// endpoint"): one JSON object a request, `{"v": 1, "cmd": ..., ...}`, answered by one JSON
// object, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. The requests, their replies and
// their codec live here, once: the node decodes with it and every client (CLI, MCP, the demo,
// the benchmarks, tests) encodes with it.

/// A control request, checked: a value of this type is well formed (names, ranges, types).
public enum ControlRequest: Sendable, Equatable {
    /// The node's status: peers, counters, endpoints, store.
    case status
    /// One event, stored before the reply.
    case emit(EmitItem)
    /// Several events in this order (1-10000), stored together.
    case emitBatch([EmitItem])
    /// A question to a pool; the reply is the answer.
    case ask(pool: String, question: JSONValue, timeoutMilliseconds: Int?)
    /// Events stored after a cursor (the store's row id), optionally waiting for the first.
    case eventsAfter(EventsAfter)
    /// The questions waiting for an answer through the control endpoint.
    case questions(waitMilliseconds: Int, known: [String])
    /// Answers a waiting question.
    case answer(requestID: String, answer: JSONValue)
    /// The node's stored events (its audit trail).
    case history(HistoryQuery)
    /// The coordinator's gates and open conflicts (coordinator only).
    case gates
    /// Moves the active coordinator's role to its standby (the active coordinator only).
    case handover
    /// Re-reads the topology file and applies what changed while the node runs.
    case reload

    /// The protocol version this release speaks; a request may say `"v"`, and a node refuses another.
    public static let version = 1
    /// The longest a request may wait (`wait_ms`).
    public static let maxWaitMilliseconds = 600_000
    /// The most events one emit request carries.
    public static let maxBatch = 10_000

    /// The commands, as they appear in `cmd`.
    public enum Command: String, Sendable, CaseIterable {
        case status, emit, ask, events_after, questions, answer, history, gates, handover, reload
    }

    public var command: Command {
        switch self {
        case .status: .status
        case .emit, .emitBatch: .emit
        case .ask: .ask
        case .eventsAfter: .events_after
        case .questions: .questions
        case .answer: .answer
        case .history: .history
        case .gates: .gates
        case .handover: .handover
        case .reload: .reload
        }
    }

    /// One event of an emit request.
    public struct EmitItem: Sendable, Equatable {
        public var type: EventType
        public var payload: JSONValue
        public var stream: String?
        public var correlationID: String?
        public var target: String?
        /// The caller's id: emitting it again returns the stored event, not a second one.
        public var id: String?
        /// Admit a type that neither the catalog nor the topology names.
        public var allowCustomType: Bool

        public init(
            _ type: EventType, payload: JSONValue = .null, stream: String? = nil, correlationID: String? = nil,
            target: String? = nil, id: String? = nil, allowCustomType: Bool = false
        ) {
            self.type = type
            self.payload = payload
            self.stream = stream
            self.correlationID = correlationID
            self.target = target
            self.id = id
            self.allowCustomType = allowCustomType
        }
    }

    /// Where `events_after` starts.
    public enum Cursor: Sendable, Equatable {
        case row(Int64)
        /// After the newest event stored now.
        case now
    }

    public struct EventsAfter: Sendable, Equatable {
        public var after: Cursor = .row(0)
        public var types: [EventType]?
        public var origin: String?
        public var stream: String?
        public var since: Date?
        /// 1-1000.
        public var limit = 100
        /// 0 to ``maxWaitMilliseconds``.
        public var waitMilliseconds = 0
        public init() {}
    }

    /// What `history` selects; the reply says when it stopped at `limit`.
    public struct HistoryQuery: Sendable, Equatable {
        public var types: [EventType]?
        public var stream: String?
        public var origin: String?
        /// Only events of `origin` with a larger sequence.
        public var afterSeq: UInt64?
        public var since: Date?
        public var until: Date?
        /// 1 to ``maxHistory``.
        public var limit = 100
        public var newestFirst = false
        /// Large enough for "everything" in scripts (a census reads whole stores); the reply holds
        /// what matched, so a caller that wants less says so.
        public static let maxHistory = 100_000_000
        public init() {}
    }
}

/// A request or reply that does not follow the protocol, naming the field and what is wrong.
public struct ControlError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

// MARK: Requests: the codec

extension ControlRequest {
    /// The request as it goes on the wire.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["v": .number(Double(Self.version)), "cmd": .string(command.rawValue)]
        switch self {
        case .status, .gates, .handover, .reload:
            break
        case .emit(let item):
            o.merge(item.fields) { a, _ in a }
        case .emitBatch(let items):
            o["events"] = .array(items.map { .object($0.fields) })
        case .ask(let pool, let question, let timeout):
            o["pool"] = .string(pool)
            o["question"] = question
            if let timeout { o["timeout_ms"] = .number(Double(timeout)) }
        case .eventsAfter(let q):
            switch q.after {
            case .row(let n): o["after"] = .number(Double(n))
            case .now: o["after"] = "now"
            }
            if let types = q.types { o["types"] = .array(types.map { .string($0.rawValue) }) }
            if let origin = q.origin { o["origin"] = .string(origin) }
            if let stream = q.stream { o["stream"] = .string(stream) }
            if let since = q.since { o["since"] = .string(Timestamp.format(since)) }
            o["limit"] = .number(Double(q.limit))
            if q.waitMilliseconds > 0 { o["wait_ms"] = .number(Double(q.waitMilliseconds)) }
        case .questions(let wait, let known):
            if wait > 0 { o["wait_ms"] = .number(Double(wait)) }
            if !known.isEmpty { o["known"] = .array(known.map(JSONValue.string)) }
        case .answer(let id, let answer):
            o["request_id"] = .string(id)
            o["answer"] = answer
        case .history(let q):
            if let types = q.types { o["types"] = .array(types.map { .string($0.rawValue) }) }
            if let stream = q.stream { o["stream"] = .string(stream) }
            if let origin = q.origin { o["origin"] = .string(origin) }
            if let after = q.afterSeq { o["after_seq"] = .number(Double(after)) }
            if let since = q.since { o["since"] = .string(Timestamp.format(since)) }
            if let until = q.until { o["until"] = .string(Timestamp.format(until)) }
            o["limit"] = .number(Double(q.limit))
            if q.newestFirst { o["newest_first"] = true }
        }
        return .object(o)
    }

    /// Reads and checks a request; the error names the command, the field and what is wrong.
    public init(json value: JSONValue) throws(ControlError) {
        guard case .object(let o) = value else { throw ControlError("a control request is a JSON object, not \(value.kind)") }
        if let v = o["v"], v != .null {
            guard let n = v.intValue, n == Self.version else {
                throw ControlError("control protocol version \(v) is not spoken here (this node speaks \(Self.version))")
            }
        }
        guard let name = o["cmd"]?.stringValue else { throw ControlError("a control request needs \"cmd\"") }
        guard let command = Command(rawValue: name) else {
            let names = Command.allCases.map(\.rawValue)
            let hint = Admission.nearest(name, among: names).map { " (did you mean \($0)?)" } ?? ""
            throw ControlError("unknown command \"\(name)\"\(hint) (commands: \(names.joined(separator: ", ")))")
        }
        let f = Fields(o, command: name)
        switch command {
        case .status: self = .status
        case .gates: self = .gates
        case .handover: self = .handover
        case .reload: self = .reload
        case .emit:
            if let events = o["events"] {
                guard case .array(let items) = events, (1...Self.maxBatch).contains(items.count) else {
                    throw ControlError("emit: \"events\" must be an array of 1 to \(Self.maxBatch) events")
                }
                let all = try f.bool("allow_custom_type") ?? false
                var out: [EmitItem] = []
                out.reserveCapacity(items.count)
                for (index, item) in items.enumerated() {
                    guard case .object(let fields) = item else { throw ControlError("emit: events[\(index)] must be an object, not \(item.kind)") }
                    var parsed = try EmitItem(Fields(fields, command: "emit events[\(index)]"))
                    parsed.allowCustomType = parsed.allowCustomType || all
                    out.append(parsed)
                }
                self = .emitBatch(out)
            } else {
                self = .emit(try EmitItem(f))
            }
        case .ask:
            guard let pool = try f.name("pool") else { throw ControlError("ask: needs \"pool\"") }
            self = .ask(pool: pool, question: o["question"] ?? .null, timeoutMilliseconds: try f.int("timeout_ms", in: 1...3_600_000))
        case .events_after:
            var q = EventsAfter()
            switch o["after"] {
            case nil, .null?: break
            case .string("now")?: q.after = .now
            case let value?:
                guard let n = value.intValue, n >= 0 else {
                    throw ControlError("events_after: \"after\" must be a cursor (an integer ≥ 0) or \"now\", not \(value)")
                }
                q.after = .row(Int64(n))
            }
            q.types = try f.types("types")
            q.origin = try f.name("origin")
            q.stream = try f.name("stream")
            q.since = try f.timestamp("since")
            q.limit = try f.int("limit", in: 1...1000) ?? 100
            q.waitMilliseconds = try f.int("wait_ms", in: 0...Self.maxWaitMilliseconds) ?? 0
            self = .eventsAfter(q)
        case .questions:
            var known: [String] = []
            if let value = o["known"], value != .null {
                guard let items = value.arrayValue else { throw ControlError("questions: \"known\" must be an array of request ids") }
                known = items.compactMap(\.stringValue)
            }
            self = .questions(waitMilliseconds: try f.int("wait_ms", in: 0...Self.maxWaitMilliseconds) ?? 0, known: known)
        case .answer:
            guard let id = o["request_id"]?.stringValue, (1...128).contains(id.utf8.count) else {
                throw ControlError("answer: needs \"request_id\", a string of 1-128 bytes (see the questions command)")
            }
            guard let answer = o["answer"] else { throw ControlError("answer: needs \"answer\" (any JSON)") }
            self = .answer(requestID: id, answer: answer)
        case .history:
            var q = HistoryQuery()
            q.types = try f.types("types")
            q.stream = try f.name("stream")
            q.origin = try f.name("origin")
            if let after = try f.int("after_seq", in: 0...9_007_199_254_740_992) {
                guard q.origin != nil else { throw ControlError("history: \"after_seq\" counts in one origin's sequence; give \"origin\" too") }
                q.afterSeq = UInt64(after)
            }
            q.since = try f.timestamp("since")
            q.until = try f.timestamp("until")
            q.limit = try f.int("limit", in: 1...HistoryQuery.maxHistory) ?? 100
            q.newestFirst = try f.bool("newest_first") ?? false
            self = .history(q)
        }
    }
}

extension ControlRequest.EmitItem {
    var fields: [String: JSONValue] {
        var o: [String: JSONValue] = ["event_type": .string(type.rawValue), "payload": payload]
        if let stream { o["stream"] = .string(stream) }
        if let correlationID { o["correlation_id"] = .string(correlationID) }
        if let target { o["target"] = .string(target) }
        if let id { o["id"] = .string(id) }
        if allowCustomType { o["allow_custom_type"] = true }
        return o
    }

    init(_ f: ControlRequest.Fields) throws(ControlError) {
        guard let typeName = f.object["event_type"]?.stringValue else { throw ControlError("\(f.command): needs \"event_type\"") }
        let type: EventType
        do { type = try EventType(validating: typeName) } catch { throw ControlError("\(f.command): \(error)") }
        var id: String?
        if let value = f.object["id"], value != .null {
            guard let text = value.stringValue else { throw ControlError("\(f.command): \"id\" must be a string") }
            do { try RequestID.validate(text) } catch { throw ControlError("\(f.command): \"id\": \(error)") }
            id = text
        }
        self.init(
            type, payload: f.object["payload"] ?? .null, stream: try f.string("stream"), correlationID: try f.string("correlation_id"),
            target: try f.string("target"), id: id, allowCustomType: try f.bool("allow_custom_type") ?? false)
    }
}

extension ControlRequest {
    /// Typed reads of a request's fields, with errors that name the command and the field.
    struct Fields {
        let object: [String: JSONValue]
        let command: String
        init(_ object: [String: JSONValue], command: String) {
            self.object = object
            self.command = command
        }

        func value(_ key: String) -> JSONValue? {
            guard let v = object[key], v != .null else { return nil }
            return v
        }

        func string(_ key: String) throws(ControlError) -> String? {
            guard let v = value(key) else { return nil }
            guard let s = v.stringValue else { throw ControlError("\(command): \"\(key)\" must be a string, not \(v.kind)") }
            return s
        }

        func name(_ key: String) throws(ControlError) -> String? {
            guard let s = try string(key) else { return nil }
            guard Name.isValid(s) else { throw ControlError("\(command): \"\(key)\" must be a name ([A-Za-z0-9_.-], 1-64 bytes), not \"\(s.prefix(80))\"") }
            return s
        }

        func bool(_ key: String) throws(ControlError) -> Bool? {
            guard let v = value(key) else { return nil }
            guard let b = v.boolValue else { throw ControlError("\(command): \"\(key)\" must be true or false, not \(v)") }
            return b
        }

        func int(_ key: String, in range: ClosedRange<Int>) throws(ControlError) -> Int? {
            guard let v = value(key) else { return nil }
            guard let n = v.intValue, range.contains(n) else {
                throw ControlError("\(command): \"\(key)\" must be an integer from \(range.lowerBound) to \(range.upperBound), not \(v)")
            }
            return n
        }

        func timestamp(_ key: String) throws(ControlError) -> Date? {
            guard let s = try string(key) else { return nil }
            guard let date = Timestamp.parse(s) else {
                throw ControlError("\(command): \"\(key)\" must be an ISO 8601 date-time with a zone (2026-11-25T03:40:14Z), not \"\(s.prefix(80))\"")
            }
            return date
        }

        func types(_ key: String) throws(ControlError) -> [EventType]? {
            guard let v = value(key) else { return nil }
            guard let items = v.arrayValue, !items.isEmpty else { throw ControlError("\(command): \"\(key)\" must be a non-empty array of event types") }
            var out: [EventType] = []
            for item in items {
                guard let name = item.stringValue else { throw ControlError("\(command): \"\(key)\" must hold strings, not \(item)") }
                do { out.append(try EventType(validating: name)) } catch { throw ControlError("\(command): \(error)") }
            }
            return out
        }
    }
}

// MARK: Replies

/// A control reply, typed by the request it answers.
public enum ControlReply: Sendable, Equatable {
    /// The node's status object (PROTOCOL.md lists its keys).
    case status(JSONValue)
    /// The event as stored (single emit).
    case event(JSONValue)
    /// Id and sequence of each event of an emit batch, in order.
    case events([EmittedID])
    case answer(JSONValue)
    case eventsAfter(events: [JSONValue], cursor: Int64)
    case questions([PendingQuestion])
    case answered(requestID: String)
    /// Events in the order asked; `truncated` when more matched than `limit`.
    case history(events: [JSONValue], truncated: Bool)
    /// The coordinator's gates and conflicts.
    case gates(JSONValue)
    /// The handover begun: `{"term": N, "to": name}`.
    case handover(JSONValue)
    /// The reload applied: `{"digest", "previous"?, "changed": [lines]}`.
    case reloaded(JSONValue)
    case failure(String)

    public struct EmittedID: Sendable, Equatable {
        public var id: String
        public var seq: UInt64
        public init(id: String, seq: UInt64) {
            self.id = id
            self.seq = seq
        }
    }

    public struct PendingQuestion: Sendable, Equatable {
        public var requestID: String
        public var fromNode: String
        public var fromPool: String
        public var question: JSONValue
        public var askedAt: Date
        public var waitingMilliseconds: Int
        public init(requestID: String, fromNode: String, fromPool: String, question: JSONValue, askedAt: Date, waitingMilliseconds: Int) {
            self.requestID = requestID
            self.fromNode = fromNode
            self.fromPool = fromPool
            self.question = question
            self.askedAt = askedAt
            self.waitingMilliseconds = waitingMilliseconds
        }
    }

    /// The reply as it goes on the wire.
    public var json: JSONValue {
        switch self {
        case .status(let s): ["ok": true, "status": s]
        case .event(let e): ["ok": true, "event": e]
        case .events(let ids): ["ok": true, "events": .array(ids.map { ["id": .string($0.id), "seq": .number(Double($0.seq))] })]
        case .answer(let a): ["ok": true, "answer": a]
        case .eventsAfter(let events, let cursor): ["ok": true, "events": .array(events), "cursor": .number(Double(cursor))]
        case .questions(let list):
            ["ok": true, "questions": .array(list.map { q in
                [
                    "request_id": .string(q.requestID), "from_node": .string(q.fromNode), "from_pool": .string(q.fromPool),
                    "question": q.question, "asked_at": .string(Timestamp.format(q.askedAt)),
                    "waiting_ms": .number(Double(q.waitingMilliseconds)),
                ]
            })]
        case .answered(let id): ["ok": true, "request_id": .string(id)]
        case .history(let events, let truncated): ["ok": true, "events": .array(events), "truncated": .bool(truncated)]
        case .gates(let g): ["ok": true, "coordinator": g]
        case .handover(let h): ["ok": true, "handover": h]
        case .reloaded(let r): ["ok": true, "reload": r]
        case .failure(let text): ["ok": false, "error": .string(text)]
        }
    }

    /// Reads the reply to `request`; a reply with `"ok": false` is `.failure`.
    public init(json value: JSONValue, answering request: ControlRequest) throws(ControlError) {
        guard case .object(let o) = value, let ok = o["ok"]?.boolValue else { throw ControlError("a control reply is a JSON object with \"ok\"") }
        guard ok else {
            self = .failure(o["error"]?.stringValue ?? "the node refused the request")
            return
        }
        func field(_ key: String) throws(ControlError) -> JSONValue {
            guard let v = o[key] else { throw ControlError("the reply to \(request.command.rawValue) lacks \"\(key)\"") }
            return v
        }
        switch request {
        case .status: self = .status(try field("status"))
        case .emit: self = .event(try field("event"))
        case .emitBatch:
            let items = try field("events").arrayValue ?? []
            self = .events(items.compactMap { item in
                guard let id = item["id"]?.stringValue, let seq = item["seq"]?.intValue else { return nil }
                return EmittedID(id: id, seq: UInt64(seq))
            })
        case .ask: self = .answer(try field("answer"))
        case .eventsAfter:
            self = .eventsAfter(events: try field("events").arrayValue ?? [], cursor: Int64(try field("cursor").intValue ?? 0))
        case .questions:
            self = .questions((try field("questions").arrayValue ?? []).compactMap { q in
                guard let id = q["request_id"]?.stringValue else { return nil }
                return PendingQuestion(
                    requestID: id, fromNode: q["from_node"]?.stringValue ?? "", fromPool: q["from_pool"]?.stringValue ?? "",
                    question: q["question"] ?? .null, askedAt: q["asked_at"]?.stringValue.flatMap(Timestamp.parse) ?? Date(),
                    waitingMilliseconds: q["waiting_ms"]?.intValue ?? 0)
            })
        case .answer: self = .answered(requestID: try field("request_id").stringValue ?? "")
        case .history: self = .history(events: try field("events").arrayValue ?? [], truncated: o["truncated"]?.boolValue ?? false)
        case .gates: self = .gates(try field("coordinator"))
        case .handover: self = .handover(try field("handover"))
        case .reload: self = .reloaded(try field("reload"))
        }
    }
}

// MARK: Paths

/// Where a node keeps its files, from its data folder: the one place this rule is written.
public struct NodePaths: Sendable, Hashable {
    /// The data folder, absolute.
    public let data: String

    public init(dataDirectory: String) {
        data = dataDirectory.hasPrefix("/")
            ? dataDirectory
            : URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(dataDirectory).standardizedFileURL.path
    }

    /// The control endpoint's socket file.
    public var controlSocket: String { data + "/control.sock" }
    public var controlEndpoint: String { "ipc://" + controlSocket }
    /// Where the node publishes every event it stores (`ce-node tail`).
    public var feedSocket: String { data + "/feed.sock" }
    public var feedEndpoint: String { "ipc://" + feedSocket }
    /// The event store (SQLite).
    public var store: String { data + "/events.sqlite" }
}
