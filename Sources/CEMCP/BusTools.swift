import CECore
import CECoordinator
import CENode
import Foundation
import MCP
import Synchronization
import ZeroMQ

/// The bus as MCP tools for the agent of one node's pool: each tool is a control request to
/// the running node, with its arguments checked first so that a bad call gets a sentence
/// saying what is wrong (the node checks again: it decides).
public final class BusTools: Sendable {
    /// What the tools need to know; everything but the topology and the node is defaulted.
    public struct Settings: Sendable {
        public var topology: Topology
        public var node: NodeSpec
        /// The node's data folder (store, control and feed sockets).
        public var dataDirectory: String
        /// The longest any call may wait (`timeout_s`).
        public var maxWait: Duration = .seconds(600)
        /// The wait of `wait_for_events` when no `timeout_s` is given.
        public var defaultWait: Duration = .seconds(30)

        public init(topology: Topology, node: String, dataDirectory: String? = nil) throws(ToolError) {
            guard let spec = topology.node(named: node) else {
                throw ToolError("no node \"\(node)\" in \(topology.file) (nodes: \(topology.nodes.map(\.name).joined(separator: ", ")))")
            }
            self.topology = topology
            self.node = spec
            self.dataDirectory = dataDirectory ?? spec.data
        }
    }

    public let settings: Settings
    let link: NodeLink
    let coordinator: NodeLink?

    public init(settings: Settings, context: Context) {
        self.settings = settings
        self.link = NodeLink(name: settings.node.name, dataDirectory: settings.dataDirectory, context: context)
        if let spec = settings.topology.coordinator {
            let data = spec.name == settings.node.name ? settings.dataDirectory : spec.data
            coordinator = NodeLink(name: spec.name, dataDirectory: data, context: context)
        } else {
            coordinator = nil
        }
    }

    var topology: Topology { settings.topology }
    var pool: String { settings.node.pool }
    var maxWaitSeconds: Double { Double(settings.maxWait.components.seconds) }

    /// The event types this cluster knows: the catalog, the coordinator's, and every type the
    /// topology names (subscriptions, gates). Others need `allow_custom_type`.
    var knownTypes: [String] { Admission(topology: topology, busTypes: Node.busTypes).knownTypes.map(\.rawValue).sorted() }

    var poolList: String { topology.poolNames.sorted().joined(separator: ", ") }

    // MARK: Calling

    /// Runs a tool; every failure is a tool error (`isError: true`) with a sentence to act on.
    public func call(_ name: String, _ arguments: [String: Value]?) async -> CallTool.Result {
        do {
            let value: JSONValue
            switch name {
            case "emit": value = try await emit(arguments)
            case "wait_for_events": value = try await waitForEvents(arguments)
            case "history": value = try await history(arguments)
            case "ask": value = try await ask(arguments)
            case "pending_questions": value = try await pendingQuestions(arguments)
            case "answer": value = try await answer(arguments)
            case "report_sync_point": value = try await reportSyncPoint(arguments)
            case "gates": value = try await gates(arguments)
            case "report_conflict": value = try await reportConflict(arguments)
            case "conflicts": value = try await conflicts(arguments)
            case "resolve": value = try await resolve(arguments)
            case "status": value = try await status(arguments)
            default:
                throw ToolError("unknown tool \"\(name)\" (tools: \(Self.names.joined(separator: ", ")))")
            }
            let structured: Value? = Value(value)
            return .init(content: [.text(text: value.serializedString, annotations: nil, _meta: nil)], structuredContent: structured, isError: false)
        } catch let error as ToolError {
            return .init(content: [.text(text: error.description, annotations: nil, _meta: nil)], isError: true)
        } catch {
            return .init(content: [.text(text: "\(name): \(error)", annotations: nil, _meta: nil)], isError: true)
        }
    }

    // MARK: emit

    func emit(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "emit", values: values, allowed: ["event_type", "payload", "target", "correlation_id", "stream", "events", "allow_custom_type"])
        let custom = try args.bool("allow_custom_type") ?? false
        if args.has("events") {
            if args.has("event_type") || args.has("payload") {
                throw ToolError("emit: give either event_type and payload (one event) or events (several), not both")
            }
            guard case .array(let items)? = args.values["events"], (1...10_000).contains(items.count) else {
                throw ToolError("emit: argument \"events\" must be an array of 1 to 10000 event objects")
            }
            var events: [ControlRequest.EmitItem] = []
            for (index, item) in items.enumerated() {
                guard case .object(let object) = item else { throw ToolError("emit: events[\(index)] must be an object, not \(item.kind)") }
                let itemArgs = try Arguments(
                    tool: "emit events[\(index)]", values: object, allowed: ["event_type", "payload", "target", "correlation_id", "stream"])
                events.append(try checkedEvent(itemArgs, allowCustom: custom))
            }
            guard case .events(let ids) = try await link.call(.emitBatch(events), timeout: .seconds(60)) else { throw NodeLink.mismatch }
            let stored: [JSONValue] = ids.map { ["id": .string($0.id), "seq": .number(Double($0.seq))] }
            return ["events": .array(stored), "count": .number(Double(stored.count)), "durable": true]
        }
        return Self.stamped(try await link.emit(try checkedEvent(args, allowCustom: custom)))
    }

    /// What the agent needs of an emitted event.
    static func stamped(_ event: JSONValue) -> JSONValue {
        var out: [String: JSONValue] = ["durable": true]
        for key in ["id", "seq", "event_type", "origin", "stream", "timestamp", "correlation_id", "target"] {
            if let v = event[key] { out[key] = v }
        }
        return .object(out)
    }

    /// One event's control request fields, checked: its type known (or allowed as custom),
    /// names well formed, the target a pool, the whole event within the cluster's message size.
    func checkedEvent(_ args: Arguments, allowCustom: Bool) throws(ToolError) -> ControlRequest.EmitItem {
        let typeName = try args.requiredString("event_type", "the event type, e.g. plan_ready; see the resource ce://catalog")
        let type: EventType
        do { type = try EventType(validating: typeName) } catch { throw ToolError("\(args.tool): \(error)") }
        if !allowCustom && !knownTypes.contains(type.rawValue) {
            throw ToolError("\(args.tool): unknown event type \"\(type.rawValue)\" (known: \(knownTypes.joined(separator: ", "))); to introduce a new type on purpose, call again with allow_custom_type: true")
        }
        let payload = args.json("payload") ?? .null
        let stream = try args.name("stream")
        let target = try args.name("target")
        if let target {
            let targets = topology.poolNames.union(topology.conflicts.resolvers)
            guard targets.contains(target) else {
                throw ToolError("\(args.tool): target \"\(target)\" is not a pool of \(topology.file) (pools: \(targets.sorted().joined(separator: ", ")))")
            }
        }
        let correlation = try args.string("correlation_id")
        if let correlation {
            guard (1...128).contains(correlation.utf8.count) else {
                throw ToolError("\(args.tool): correlation_id must be 1-128 bytes (got \(correlation.utf8.count))")
            }
        }
        // The event as it will travel (a sequence and an id of the largest size), against the limit.
        let probe = Event(
            id: String(repeating: "f", count: 36), origin: settings.node.name, seq: 9_007_199_254_740_992,
            stream: stream ?? pool, type: type, timestamp: Date(), payload: payload, correlationID: correlation, target: target)
        let size = EnvelopeCodec.encode(probe).count
        let limit = topology.settings.maxMessageBytes
        if size > limit {
            throw ToolError("\(args.tool): the event would be \(size) bytes, more than the cluster's limit of \(limit) bytes (settings.max_message_bytes); send a smaller payload, e.g. a path or a summary instead of the content")
        }
        return ControlRequest.EmitItem(type, payload: payload, stream: stream, correlationID: correlation, target: target, allowCustomType: allowCustom)
    }

    // MARK: wait_for_events, history

    func waitForEvents(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "wait_for_events", values: values, allowed: ["types", "origin", "pool", "after", "since", "max_count", "timeout_s"])
        var request = ControlRequest.EventsAfter()
        var notes: [String] = []
        if let types = try args.strings("types") {
            guard !types.isEmpty else { throw ToolError("wait_for_events: \"types\" must name at least one event type (leave it out for every type)") }
            var checked: [EventType] = []
            let subscribed = Node.subscribedTypes(pool: pool, topology: topology)?.map(\.rawValue)
            for name in types {
                do { checked.append(try EventType(validating: name)) } catch { throw ToolError("wait_for_events: \(error)") }
                if let subscribed, !subscribed.contains(name) {
                    notes.append("node \(settings.node.name) (pool \(pool)) does not subscribe to \(name): only \(name) events emitted through this node reach its store")
                }
            }
            request.types = checked
        }
        if let origin = try args.name("origin") {
            guard topology.node(named: origin) != nil else {
                throw ToolError("wait_for_events: origin \"\(origin)\" is not a node of \(topology.file) (nodes: \(topology.nodes.map(\.name).joined(separator: ", ")))")
            }
            request.origin = origin
        }
        if let pool = try args.name("pool") {
            guard topology.poolNames.contains(pool) else { throw ToolError("wait_for_events: pool \"\(pool)\" is not a pool of \(topology.file) (pools: \(poolList))") }
            request.stream = pool
        }
        switch args.values["after"] {
        case nil, .null?: break
        case .string("now")?: request.after = .now
        case .int(let n)? where n >= 0: request.after = .row(Int64(n))
        case .double(let d)? where d >= 0 && d.rounded() == d && d <= 9_007_199_254_740_992: request.after = .row(Int64(d))
        case let other?:
            throw ToolError("wait_for_events: \"after\" must be a cursor (the next_cursor of an earlier call, an integer ≥ 0) or \"now\", not \(other)")
        }
        request.since = try args.timestamp("since").flatMap(Timestamp.parse)
        request.limit = try args.int("max_count", in: 1...1000) ?? 50
        let wait = try args.seconds("timeout_s", max: maxWaitSeconds) ?? settings.defaultWait
        request.waitMilliseconds = Self.milliseconds(wait)
        guard case .eventsAfter(let events, let cursor) = try await link.call(.eventsAfter(request), timeout: wait + .seconds(5)) else {
            throw NodeLink.mismatch
        }
        var out: [String: JSONValue] = [
            "events": .array(events), "count": .number(Double(events.count)),
            "next_cursor": .number(Double(cursor)), "timed_out": .bool(events.isEmpty),
        ]
        if !notes.isEmpty { out["notes"] = .array(notes.map(JSONValue.string)) }
        return .object(out)
    }

    func history(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "history", values: values, allowed: ["event_type", "pool", "origin", "after_seq", "since", "until", "limit", "newest_first"])
        var query = ControlRequest.HistoryQuery()
        if let name = try args.string("event_type") {
            do { query.types = [try EventType(validating: name)] } catch { throw ToolError("history: \(error)") }
        }
        query.stream = try args.name("pool")
        query.origin = try args.name("origin")
        if let after = try args.int("after_seq", in: 0...9_007_199_254_740_992) {
            guard query.origin != nil else { throw ToolError("history: after_seq counts in one origin's sequence; give origin too") }
            query.afterSeq = UInt64(after)
        }
        query.since = try args.timestamp("since").flatMap(Timestamp.parse)
        query.until = try args.timestamp("until").flatMap(Timestamp.parse)
        query.limit = try args.int("limit", in: 1...1000) ?? 100
        query.newestFirst = try args.bool("newest_first") ?? false
        guard case .history(let events, let truncated) = try await link.call(.history(query), timeout: .seconds(30)) else { throw NodeLink.mismatch }
        return ["events": .array(events), "count": .number(Double(events.count)), "truncated": .bool(truncated)]
    }

    /// The newest `count` events of a type (nil: any), oldest first: what the event resources show.
    func latest(type: String?, count: Int) async throws -> [JSONValue] {
        var query = ControlRequest.HistoryQuery()
        query.types = try type.map { [try EventType(validating: $0)] }
        query.limit = count
        query.newestFirst = true
        guard case .history(let events, _) = try await link.call(.history(query), timeout: .seconds(30)) else { throw NodeLink.mismatch }
        return events.reversed()
    }

    /// A duration in whole milliseconds.
    static func milliseconds(_ d: Duration) -> Int {
        Int(d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000)
    }

    // MARK: ask, pending_questions, answer

    func ask(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "ask", values: values, allowed: ["pool", "question", "timeout_s"])
        guard let target = try args.name("pool") else { throw args.missing("pool", "the pool to ask, e.g. planner") }
        guard topology.poolNames.contains(target) else { throw ToolError("ask: no pool \"\(target)\" in \(topology.file) (pools: \(poolList))") }
        guard let question = args.json("question"), question != .null else { throw args.missing("question", "the question, text or JSON") }
        let attempts = topology.settings.askRetries + 1
        let perAttempt = Int64(topology.settings.askTimeoutMilliseconds)
        let wait = try args.seconds("timeout_s", max: maxWaitSeconds) ?? .milliseconds(min(perAttempt * Int64(attempts), Int64(maxWaitSeconds * 1000)))
        let total = wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000
        // The node retries on a fresh socket with the same request id (answered once); the
        // attempts share the wait.
        let attemptMs = max(1, total / Int64(attempts))
        guard case .answer(let answer) = try await link.call(
            .ask(pool: target, question: question, timeoutMilliseconds: Int(attemptMs)), timeout: wait + .seconds(5))
        else { throw NodeLink.mismatch }
        return ["pool": .string(target), "answer": answer]
    }

    func pendingQuestions(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "pending_questions", values: values, allowed: ["timeout_s"])
        let wait = try args.seconds("timeout_s", max: maxWaitSeconds)
        let request = ControlRequest.questions(waitMilliseconds: wait.map(Self.milliseconds) ?? 0, known: [])
        let reply = try await link.call(request, timeout: (wait ?? .zero) + .seconds(5))
        let questions = reply.json["questions"]?.arrayValue ?? []
        return ["questions": .array(questions), "count": .number(Double(questions.count)), "pool": .string(pool)]
    }

    func answer(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "answer", values: values, allowed: ["request_id", "answer"])
        let id = try args.requiredString("request_id", "the request_id of a question from pending_questions")
        guard let answer = args.json("answer"), answer != .null else { throw args.missing("answer", "the answer, text or JSON") }
        _ = try await link.call(.answer(requestID: id, answer: answer), timeout: .seconds(10))
        return ["request_id": .string(id), "answered": true]
    }

    // MARK: The coordinator's workflow

    func reportSyncPoint(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "report_sync_point", values: values, allowed: ["gate", "round"])
        guard let gate = try args.name("gate") else { throw args.missing("gate", "the gate's name; see the gates tool") }
        guard let spec = topology.gates.first(where: { $0.name == gate }) else {
            throw ToolError("report_sync_point: no gate \"\(gate)\" in \(topology.file) (gates: \(topology.gates.map(\.name).joined(separator: ", ")))")
        }
        guard spec.pools.contains(pool) else {
            throw ToolError("report_sync_point: gate \(gate) waits for pools \(spec.pools.joined(separator: ", ")), not for \(pool) (this node's pool)")
        }
        var payload: [String: JSONValue] = ["gate": .string(gate)]
        if let round = try args.int("round", in: 1...1_000_000_000) { payload["round"] = .number(Double(round)) }
        var out = Self.stamped(try await link.emit(.init(.syncPointReached, payload: .object(payload))))
        if case .object(var o) = out {
            o["gate"] = .string(gate)
            o["next"] = "the coordinator emits gate_passed when every pool of the gate has reported; wait_for_events with types [gate_passed, gate_rejected] to see it"
            out = .object(o)
        }
        return out
    }

    /// The coordinator's gates and open conflicts, through its control endpoint.
    func coordinatorStatus(_ tool: String) async throws(ToolError) -> JSONValue {
        guard let coordinator, let spec = topology.coordinator else {
            throw ToolError("\(tool): \(topology.file) has no coordinator section, so there are no gates or tracked conflicts")
        }
        guard coordinator.isRunning else {
            throw ToolError("\(tool): the coordinator (node \(spec.name)) is not running on this host (no process listens on \(coordinator.controlPath)); its gates and conflicts are read through its local control endpoint")
        }
        guard case .gates(let gates) = try await coordinator.call(.gates, timeout: .seconds(10)) else { throw NodeLink.mismatch }
        return gates
    }

    func gates(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        _ = try Arguments(tool: "gates", values: values, allowed: [])
        let status = try await coordinatorStatus("gates")
        return ["gates": status["gates"] ?? []]
    }

    func conflicts(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        _ = try Arguments(tool: "conflicts", values: values, allowed: [])
        let status = try await coordinatorStatus("conflicts")
        return ["conflicts": status["conflicts"] ?? []]
    }

    func reportConflict(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "report_conflict", values: values, allowed: ["subject", "parties", "description"])
        let subject = try args.requiredString("subject", "what the disagreement is about, e.g. architecture")
        guard subject.utf8.count <= 200 else { throw ToolError("report_conflict: subject must be at most 200 bytes (got \(subject.utf8.count))") }
        guard let parties = try args.strings("parties"), !parties.isEmpty else {
            throw args.missing("parties", "the pools that disagree with this one, e.g. [\"builder\"]")
        }
        for party in parties where !topology.poolNames.contains(party) {
            throw ToolError("report_conflict: party \"\(party)\" is not a pool of \(topology.file) (pools: \(poolList))")
        }
        let description = try args.requiredString("description", "what each side holds")
        // An open conflict on the same subject takes this report in (the coordinator merges it).
        let open = (try? await coordinatorStatus("report_conflict"))?["conflicts"]?.arrayValue ?? []
        let existing = open.first { $0["subject"]?.stringValue == subject }?["conflict_id"]?.stringValue
        let event = try await link.emit(.init(
            .conflictDetected,
            payload: ["subject": .string(subject), "parties": .array(parties.map(JSONValue.string)), "description": .string(description)]))
        return [
            "conflict_id": .string(existing ?? event["id"]?.stringValue ?? ""), "merged_into_open_conflict": .bool(existing != nil),
            "event": Self.stamped(event),
            "next": "the coordinator sends resolution_needed to the first resolver; the decision arrives as conflict_closed",
        ]
    }

    func resolve(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        let args = try Arguments(tool: "resolve", values: values, allowed: ["conflict_id", "decision"])
        let id = try args.requiredString("conflict_id", "the conflict_id from conflicts or resolution_needed")
        guard let decision = args.json("decision"), decision != .null else { throw args.missing("decision", "the decision, text or JSON") }
        if let coordinator, coordinator.isRunning {
            let open = try await coordinatorStatus("resolve")["conflicts"]?.arrayValue ?? []
            let ids = open.compactMap { $0["conflict_id"]?.stringValue }
            guard ids.contains(id) else {
                throw ToolError("resolve: no open conflict \"\(id)\" (open: \(ids.isEmpty ? "none" : ids.joined(separator: ", ")))")
            }
        }
        let event = try await link.emit(.init(
            .conflictResolved, payload: ["conflict_id": .string(id), "decision": decision, "resolved_by": .string(pool)], correlationID: id))
        return ["conflict_id": .string(id), "event": Self.stamped(event),
                "next": "the coordinator closes the conflict and tells the parties with conflict_closed"]
    }

    // MARK: status

    func status(_ values: [String: Value]?) async throws(ToolError) -> JSONValue {
        _ = try Arguments(tool: "status", values: values, allowed: [])
        guard case .status(let reply) = try await link.call(.status, timeout: .seconds(10)) else { throw NodeLink.mismatch }
        guard case .object(var status) = reply else { return reply }
        // lag: how far this node's cursor is behind what the peer last said it emitted.
        if case .array(let peers)? = status["peers"] {
            status["peers"] = .array(peers.map { peer in
                guard case .object(var p) = peer, let last = p["last_seq"]?.doubleValue, let cursor = p["cursor"]?.doubleValue else { return peer }
                p["lag"] = .number(max(0, last - cursor))
                return .object(p)
            })
        }
        return .object(status)
    }
}
