import CECore
import CECoordinator
import CENode
import Foundation
import Logging
import MCP
import Synchronization
import ZeroMQ

/// `ce-node mcp`: an MCP server (the official Swift SDK) that gives the agent of one node's
/// pool the bus as tools, the event catalog and the topology as resources, and
/// `notifications/resources/updated` for the event and question resources it subscribes to.
public final class BusServer: Sendable {
    public static let version = "1.0.0"
    public let tools: BusTools
    let context: Context
    let logger: Logger
    /// Resource URIs the client subscribed to.
    let subscriptions = Mutex<Set<String>>([])
    /// The SUB socket on the node's feed, while `run` runs.
    let feed = Mutex<Socket?>(nil)

    public init(settings: BusTools.Settings, logger: Logger) throws {
        var zmq = Context.Settings()
        zmq.linger = 0
        context = try Context(zmq)
        tools = BusTools(settings: settings, context: context)
        self.logger = logger
    }

    var instructions: String {
        let node = tools.settings.node
        return """
            You are the agent of pool \(node.pool) on the coordination bus of cluster \(tools.topology.cluster), \
            through node \(node.name). Other pools: \(tools.topology.poolNames.subtracting([node.pool]).sorted().joined(separator: ", ")). \
            Announce your progress with emit; follow the others with wait_for_events (keep its next_cursor between \
            calls); ask other pools with ask; check pending_questions and answer them; report_sync_point at quality \
            gates; report_conflict when you disagree, and resolve conflicts addressed to your pool. Read \
            ce://catalog for the event types and ce://topology for who subscribes to what.
            """
    }

    /// Serves MCP on `transport` until the client closes it (or the task is cancelled).
    public func run(transport: any Transport) async throws {
        let server = Server(
            name: "ce-node", version: Self.version, title: "coordination bus (\(tools.settings.node.name))",
            instructions: instructions,
            capabilities: .init(resources: .init(subscribe: true, listChanged: false), tools: .init(listChanged: false)))
        await register(on: server)
        let sub = try context.socket(.sub)
        try sub.connect(tools.link.feedEndpoint)
        feed.withLock { $0 = sub }
        try await server.start(transport: transport)
        logger.info("MCP server up", metadata: ["ce.node": .string(tools.settings.node.name), "ce.data": .string(tools.link.dataDirectory)])
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await server.waitUntilCompleted()
                return true
            }
            group.addTask {
                await self.forwardEvents(from: sub, to: server)
                return false
            }
            group.addTask {
                await self.watchQuestions(server)
                return false
            }
            group.addTask {
                // Returns when the task is cancelled (SIGTERM): the server is stopped below.
                try? await Task.sleep(for: .seconds(100 * 365 * 86400))
                return false
            }
            // The client closed stdin, or the task was cancelled (the loops end only then).
            if await group.next() == true, let lines = transport as? StdioLines {
                // Requests read before the end of input still get their replies.
                await lines.waitForReplies(upTo: .seconds(10))
            }
            await server.stop()
            group.cancelAll()
        }
        feed.withLock { $0 = nil }
        await context.shutdown()
        logger.info("MCP server down")
    }

    // MARK: Handlers

    func register(on server: Server) async {
        await server.withMethodHandler(ListTools.self) { [tools] _ in .init(tools: tools.definitions) }
        await server.withMethodHandler(CallTool.self) { [tools, logger] params in
            let started = ContinuousClock.now
            let result = await tools.call(params.name, params.arguments)
            logger.debug("tool call", metadata: [
                "mcp.tool": .string(params.name), "mcp.error": .stringConvertible(result.isError ?? false),
                "mcp.ms": .stringConvertible((ContinuousClock.now - started).components.attoseconds / 1_000_000_000_000_000),
            ])
            return result
        }
        await server.withMethodHandler(ListResources.self) { _ in .init(resources: Self.resources, nextCursor: nil) }
        await server.withMethodHandler(ListResourceTemplates.self) { _ in
            .init(templates: [
                Resource.Template(
                    uriTemplate: "ce://events/{event_type}", name: "events of one type",
                    description: "The newest 20 events of this type stored at the node; subscribe to be notified when one is stored.",
                    mimeType: "application/json")
            ])
        }
        await server.withMethodHandler(ReadResource.self) { [self] params in
            .init(contents: [.text(try await self.read(params.uri), uri: params.uri, mimeType: "application/json")])
        }
        await server.withMethodHandler(ResourceSubscribe.self) { [self] params in
            try self.subscribe(params.uri)
            return Empty()
        }
        await server.withMethodHandler(ResourceUnsubscribe.self) { [self] params in
            self.unsubscribe(params.uri)
            return Empty()
        }
    }

    static let resources: [Resource] = [
        Resource(name: "event catalog", uri: "ce://catalog", description: "The event types: the standard vocabulary by category, the coordinator's decisions, the topology's own types and what each pool subscribes to.", mimeType: "application/json"),
        Resource(name: "topology", uri: "ce://topology", description: "The cluster: nodes, pools and their subscriptions, quality gates, conflict resolvers, settings.", mimeType: "application/json"),
        Resource(name: "events", uri: "ce://events", description: "The newest 20 events stored at the node (ce://events/{event_type} for one type); subscribe to be notified when one is stored.", mimeType: "application/json"),
        Resource(name: "pending questions", uri: "ce://questions", description: "Questions to this pool waiting for an answer; subscribe to be notified when one arrives.", mimeType: "application/json"),
    ]

    func read(_ uri: String) async throws -> String {
        switch uri {
        case "ce://catalog": return catalog().serializedString
        case "ce://topology": return topologyJSON().serializedString
        case "ce://questions":
            do { return try await tools.pendingQuestions(nil).serializedString } catch { throw MCPError.internalError(error.description) }
        case "ce://events": return try await events(type: nil)
        default:
            if let type = try eventType(in: uri) { return try await events(type: type) }
            throw MCPError.invalidParams("unknown resource \(uri) (resources: ce://catalog, ce://topology, ce://events, ce://events/{event_type}, ce://questions)")
        }
    }

    func events(type: String?) async throws -> String {
        do {
            return JSONValue.object(["events": .array(try await tools.latest(type: type, count: 20))]).serializedString
        } catch {
            throw MCPError.internalError("\(error)")
        }
    }

    /// The type of a `ce://events/{event_type}` URI; nil for another URI.
    func eventType(in uri: String) throws -> String? {
        guard uri.hasPrefix("ce://events/") else { return nil }
        let name = String(uri.dropFirst("ce://events/".count))
        do { return try EventType(validating: name).rawValue } catch { throw MCPError.invalidParams("\(uri): \(error)") }
    }

    func catalog() -> JSONValue {
        var standard: [String: JSONValue] = [:]
        for category in EventType.Category.allCases {
            standard[category.rawValue] = .array(EventType.standard(in: category).map { .string($0.rawValue) })
        }
        let decisions: [String: JSONValue] = [
            "sync_point_reached": "sent by a pool: {gate, round?}; use report_sync_point",
            "gate_passed": "every pool of a gate reported: {gate, round, pools, waited_s}",
            "gate_timed_out": "a gate's deadline passed: {gate, round, missing, waited_s}",
            "gate_rejected": "a sync point report was refused: {gate, pool, node, reason}",
            "conflict_detected": "sent by a pool: {subject, parties, description}; use report_conflict",
            "resolution_needed": "a resolver is asked to decide: {conflict_id, subject, parties, descriptions, resolver, level}",
            "conflict_resolved": "sent by a resolver: {conflict_id, decision}; use resolve",
            "conflict_closed": "the decision, for the parties: {conflict_id, subject, decision, resolved_by, parties}",
            "pool_up": "a pool came up: {pool, nodes}", "pool_down": "a pool went down: {pool, nodes}",
        ]
        let standardNames = Set(EventType.catalog.keys.map(\.rawValue))
        let own = tools.knownTypes.filter { !standardNames.contains($0) && decisions[$0] == nil }
        var subscriptions: [String: JSONValue] = [:]
        for pool in tools.topology.poolNames.sorted() {
            subscriptions[pool] = Node.subscribedTypes(pool: pool, topology: tools.topology).map { .array($0.map { .string($0.rawValue) }) } ?? "all"
        }
        return [
            "standard": .object(standard), "coordination": .object(decisions), "topology_types": .array(own.map(JSONValue.string)),
            "subscriptions": .object(subscriptions),
            "rules": .string("event types are a-z, 0-9 and _, 1-64 bytes; an event (envelope included) is at most \(tools.topology.settings.maxMessageBytes) bytes"),
        ]
    }

    func topologyJSON() -> JSONValue {
        let t = tools.topology
        let nodes: [JSONValue] = t.nodes.map { ["name": .string($0.name), "pool": .string($0.pool), "host": .string($0.host)] }
        let gates: [JSONValue] = t.gates.map { g in
            var o: [String: JSONValue] = [
                "name": .string(g.name), "pools": .array(g.pools.map(JSONValue.string)),
                "require_events": .array(g.requireEvents.map { .string($0.rawValue) }), "every_node": .bool(g.everyNode),
            ]
            if let d = g.deadlineSeconds { o["deadline_s"] = .number(d) }
            if let s = g.subject { o["subject"] = .string(s) }
            return .object(o)
        }
        return [
            "file": .string(t.file), "cluster": .string(t.cluster),
            "this_node": .string(tools.settings.node.name), "this_pool": .string(tools.pool),
            "nodes": .array(nodes), "gates": .array(gates),
            "conflicts": ["resolvers": .array(t.conflicts.resolvers.map(JSONValue.string)), "escalate_after_s": .number(t.conflicts.escalateAfterSeconds)],
            "settings": [
                "heartbeat_ms": .number(Double(t.settings.heartbeatMilliseconds)), "ask_timeout_ms": .number(Double(t.settings.askTimeoutMilliseconds)),
                "ask_retries": .number(Double(t.settings.askRetries)), "max_message_bytes": .number(Double(t.settings.maxMessageBytes)),
            ],
            "subscriptions": catalog()["subscriptions"] ?? [:],
        ]
    }

    // MARK: Subscriptions and notifications

    /// The feed prefix a URI needs: "" for every event, "<type>/" for one type, nil for none.
    func feedPrefix(_ uri: String) throws -> [UInt8]? {
        if uri == "ce://events" { return [] }
        if let type = try eventType(in: uri) { return Array("\(type)/".utf8) }
        return nil
    }

    func subscribe(_ uri: String) throws {
        guard uri == "ce://events" || uri == "ce://questions" || uri.hasPrefix("ce://events/") else {
            throw MCPError.invalidParams("cannot subscribe to \(uri) (subscribable: ce://events, ce://events/{event_type}, ce://questions)")
        }
        let prefix = try feedPrefix(uri)
        let added = subscriptions.withLock { $0.insert(uri).inserted }
        if added, let prefix, let sub = feed.withLock({ $0 }) { try? sub.set(.subscribe(prefix)) }
    }

    func unsubscribe(_ uri: String) {
        let removed = subscriptions.withLock { $0.remove(uri) != nil }
        if removed, let prefix = try? feedPrefix(uri), let sub = feed.withLock({ $0 }) { try? sub.set(.unsubscribe(prefix)) }
    }

    /// Tells the client which subscribed event resources changed, once per URI per batch of
    /// events stored at the node (the node's feed: every event it stores, after it is stored).
    func forwardEvents(from sub: Socket, to server: Server) async {
        while !Task.isCancelled {
            let batch: [ZeroMQ.Message]
            do {
                batch = try await sub.receiveBatch()
            } catch {
                if Task.isCancelled { return }
                logger.warning("reading the node's feed failed: \(error)")
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            let subscribed = subscriptions.withLock { $0 }
            var changed = Set<String>()
            for message in batch where message.count >= 1 {
                guard let (type, _) = try? Topic.parse(message[0].bytes) else { continue }
                if subscribed.contains("ce://events") { changed.insert("ce://events") }
                let uri = "ce://events/\(type.rawValue)"
                if subscribed.contains(uri) { changed.insert(uri) }
            }
            for uri in changed.sorted() { await notify(server, uri) }
        }
    }

    /// Keeps a `questions` call open at the node while the server runs: the node then holds
    /// questions to this pool for the agent (see PROTOCOL.md), and a new one is announced to a
    /// client subscribed to ce://questions.
    func watchQuestions(_ server: Server) async {
        var known: [String] = []
        while !Task.isCancelled {
            do {
                let reply = try await tools.link.call(.questions(waitMilliseconds: 20_000, known: known), timeout: .seconds(25))
                guard case .questions(let list) = reply else { throw NodeLink.mismatch }
                let ids = list.map(\.requestID)
                if !Set(ids).subtracting(known).isEmpty, subscriptions.withLock({ $0.contains("ce://questions") }) {
                    await notify(server, "ce://questions")
                }
                known = ids
            } catch {
                // The node is not running (yet): look again in a moment.
                try? await Task.sleep(for: .seconds(2))
            }
        }
    }

    func notify(_ server: Server, _ uri: String) async {
        do {
            try await server.notify(ResourceUpdatedNotification.message(.init(uri: uri)))
        } catch {
            logger.warning("cannot send resources/updated for \(uri): \(error)")
        }
    }
}
