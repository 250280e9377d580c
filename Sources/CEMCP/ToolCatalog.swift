import CECore
import MCP

// The tools as an agent sees them: a name, a description it can act on and a JSON schema.
// docs/MCP.md documents the same.

private func property(_ type: String?, _ description: String, _ extra: [String: Value] = [:]) -> Value {
    var object = extra
    if let type { object["type"] = .string(type) }
    object["description"] = .string(description)
    return .object(object)
}

private func schema(_ properties: [String: Value], required: [String] = []) -> Value {
    [
        "type": "object", "properties": .object(properties),
        "required": .array(required.map(Value.string)), "additionalProperties": false,
    ]
}

private let stringArray: [String: Value] = ["items": ["type": "string"]]

extension BusTools {
    static let names = [
        "emit", "wait_for_events", "history", "ask", "pending_questions", "answer", "report_sync_point", "gates",
        "report_conflict", "conflicts", "resolve", "status",
    ]

    /// The tools, described for the agent of this node's pool.
    public var definitions: [Tool] {
        let me = "node \(settings.node.name) of pool \(pool)"
        let pools = poolList
        let gates = topology.gates.map(\.name).joined(separator: ", ")
        let eventFields: [String: Value] = [
            "event_type": property("string", "The event type: one of \(knownTypes.joined(separator: ", ")); a new type needs allow_custom_type."),
            "payload": property(nil, "The event's content, any JSON (an object is usual). Keep it small: a summary or a path, not a file's content."),
            "target": property("string", "The pool the event is meant for (\(pools)); every subscriber still receives it."),
            "correlation_id": property("string", "Ties this event to an earlier one (e.g. the id of the event it answers)."),
            "stream": property("string", "The emitting stream; default this node's pool (\(pool))."),
        ]
        var emitFields = eventFields
        emitFields["events"] = property(
            "array", "Several events at once, emitted in this order with consecutive sequence numbers (instead of event_type/payload).",
            ["items": schema(eventFields, required: ["event_type"])])
        emitFields["allow_custom_type"] = property("boolean", "Set true to emit an event type that is not in the catalog or the topology.")
        return [
            Tool(
                name: "emit",
                description: """
                    Publish an event from \(me) to every pool that subscribes to its type. Returns the event's id and \
                    sequence number once it is stored durably at this node (it then reaches subscribers exactly once, \
                    also those that are down now). Use it to announce progress: plan_ready, build_ready, \
                    implementation_complete, review_complete, ...
                    """,
                inputSchema: schema(emitFields),
                annotations: .init(readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false)),
            Tool(
                name: "wait_for_events",
                description: """
                    Wait for events stored at \(me) (its own and those of the types its pool subscribes to), \
                    oldest first. Returns at once when matching events are stored after the cursor, else waits up to \
                    timeout_s for the first one. Pass the returned next_cursor as "after" in the next call: no event \
                    is missed or returned twice between calls. First call: leave "after" out to start from the oldest \
                    stored event, or give "now" for only new ones.
                    """,
                inputSchema: schema([
                    "types": property("array", "Only these event types (default: every type).", stringArray),
                    "origin": property("string", "Only events emitted by this node."),
                    "pool": property("string", "Only events emitted by this pool (\(pools))."),
                    "after": property(nil, "The next_cursor of the previous call (an integer), or \"now\".", ["type": ["integer", "string"]]),
                    "since": property("string", "Only events stamped at or after this ISO 8601 time, e.g. 2026-11-25T03:40:14Z."),
                    "max_count": property("integer", "At most this many events per call, 1-1000 (default 50).", ["minimum": 1, "maximum": 1000]),
                    "timeout_s": property(
                        "number", "Seconds to wait for the first event, more than 0 and at most \(Int(maxWaitSeconds)) (default \(settings.defaultWait.components.seconds)).",
                        ["exclusiveMinimum": 0, "maximum": .double(maxWaitSeconds)]),
                ]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
            Tool(
                name: "history",
                description: "Query the events stored at \(me) (works while the node is stopped too), oldest first unless newest_first.",
                inputSchema: schema([
                    "event_type": property("string", "Only this event type."),
                    "pool": property("string", "Only events of this stream (the emitting pool)."),
                    "origin": property("string", "Only events emitted by this node."),
                    "after_seq": property("integer", "Only events after this sequence number of origin (needs origin)."),
                    "since": property("string", "Only events stamped at or after this ISO 8601 time."),
                    "until": property("string", "Only events stamped at or before this ISO 8601 time."),
                    "limit": property("integer", "At most this many events, 1-1000 (default 100).", ["minimum": 1, "maximum": 1000]),
                    "newest_first": property("boolean", "Newest first (default false)."),
                ]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
            Tool(
                name: "ask",
                description: """
                    Ask another pool a question and wait for its answer (request-response). The question goes to a \
                    node of that pool, whose agent answers it (pending_questions/answer, or its event folder); it is \
                    answered once even if the request is retried. Pools: \(pools).
                    """,
                inputSchema: schema([
                    "pool": property("string", "The pool to ask (\(pools))."),
                    "question": property(nil, "The question: text or JSON."),
                    "timeout_s": property(
                        "number", "Seconds to wait for the answer, more than 0 and at most \(Int(maxWaitSeconds)) (default: the topology's ask timeout times its attempts).",
                        ["exclusiveMinimum": 0, "maximum": .double(maxWaitSeconds)]),
                ], required: ["pool", "question"]),
                annotations: .init(readOnlyHint: false, destructiveHint: false, openWorldHint: true)),
            Tool(
                name: "pending_questions",
                description: """
                    The questions other pools asked pool \(pool) that reached \(me) and wait for an answer: each with \
                    request_id, from_pool, question and how long it has waited. With timeout_s, waits for one when \
                    none is pending. Answer each with the answer tool; the asker waits meanwhile.
                    """,
                inputSchema: schema([
                    "timeout_s": property(
                        "number", "Wait up to this many seconds for a question when none is pending (more than 0, at most \(Int(maxWaitSeconds))).",
                        ["exclusiveMinimum": 0, "maximum": .double(maxWaitSeconds)])
                ]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
            Tool(
                name: "answer",
                description: "Answer a pending question (request_id from pending_questions). Each question is answered once; a second answer is refused.",
                inputSchema: schema([
                    "request_id": property("string", "The request_id of the question."),
                    "answer": property(nil, "The answer: text or JSON."),
                ], required: ["request_id", "answer"]),
                annotations: .init(readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false)),
            Tool(
                name: "report_sync_point",
                description: """
                    Tell the coordinator that pool \(pool) is aligned at a quality gate (emits sync_point_reached). The \
                    gate passes (gate_passed) when every pool it names has reported. Gates: \(gates.isEmpty ? "none" : gates).
                    """,
                inputSchema: schema([
                    "gate": property("string", "The gate's name."),
                    "round": property("integer", "The gate's round this report is for (default: the current one)."),
                ], required: ["gate"]),
                annotations: .init(readOnlyHint: false, destructiveHint: false, openWorldHint: false)),
            Tool(
                name: "gates",
                description: "The quality gates: for each, its round, the pools aligned, the pools missing (and whether they are down), the wait so far, and whether an open conflict holds it shut.",
                inputSchema: schema([:]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
            Tool(
                name: "report_conflict",
                description: """
                    Report a disagreement with other pools (emits conflict_detected). The coordinator tracks it, asks \
                    the resolvers in turn (resolution_needed) and announces the decision (conflict_closed). A gate \
                    with the same subject stays shut while it is open. Returns the conflict_id.
                    """,
                inputSchema: schema([
                    "subject": property("string", "What the disagreement is about (e.g. architecture); reports on one subject are merged."),
                    "parties": property("array", "The pools this one disagrees with (\(pools)).", stringArray),
                    "description": property("string", "What each side holds."),
                ], required: ["subject", "parties", "description"]),
                annotations: .init(readOnlyHint: false, destructiveHint: false, openWorldHint: false)),
            Tool(
                name: "conflicts",
                description: "The open conflicts: id, subject, parties, who is asked to resolve it now, how long it has been open.",
                inputSchema: schema([:]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
            Tool(
                name: "resolve",
                description: "Decide an open conflict (emits conflict_resolved); the coordinator closes it and tells the parties with conflict_closed.",
                inputSchema: schema([
                    "conflict_id": property("string", "The conflict's id (from conflicts or the resolution_needed event)."),
                    "decision": property(nil, "The decision: text or JSON."),
                ], required: ["conflict_id", "decision"]),
                annotations: .init(readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false)),
            Tool(
                name: "status",
                description: "The state of \(me): its peers (up or down, last heard, their last sequence, this node's cursor and lag behind each), its subscriptions and counters.",
                inputSchema: schema([:]),
                annotations: .init(readOnlyHint: true, openWorldHint: false)),
        ]
    }
}
