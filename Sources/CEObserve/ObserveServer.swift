import CECoordinator
import CECore
import CENode
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import Synchronization

/// A node's HTTP server (Hummingbird), on the topology's `ports.metrics`:
///
///     GET  /metrics          Prometheus text format (docs/METRICS.md)
///     GET  /status.json      the node's status, the coordinator's gates and conflicts, recent events (`?after=N`)
///     GET  /events           server-sent events: every event the node stores, as it is stored
///     GET  /                 the live dashboard (coordinator and `ce-node dashboard` only)
///     GET  /cluster.json     the dashboard's picture of the cluster
///     GET  /cluster/stream   server-sent events: `snapshot` twice a second, `ev` per event
///     POST /resolve          {"conflict_id", "decision"}: close a conflict as the human resolver
///
/// Made for a node (``init(node:coordinator:registry:host:port:dashboard:)``) or for a
/// dashboard alone (``init(dashboard:host:port:)``).
public struct ObserveServer: Sendable {
    public let host: String
    public let port: Int
    let node: Node?
    let coordinator: CoordinatorService?
    let registry: PrometheusCollectorRegistry?
    let cluster: ClusterView?
    let feed: NodeFeed?
    let gauges: ScrapeGauges?
    let logger: Logger

    /// A node's server; `dashboard` adds the dashboard (the coordinator does).
    public init(node: Node, coordinator: CoordinatorService?, registry: PrometheusCollectorRegistry?, host: String, port: Int, dashboard: Bool) {
        self.host = host
        self.port = port
        self.node = node
        self.coordinator = coordinator
        self.registry = registry
        self.cluster = dashboard ? ClusterView(topology: node.topology, local: .init(node: node, coordinator: coordinator), logger: node.options.logger) : nil
        self.feed = NodeFeed(node: node, hub: Hub(buffer: 256))
        self.gauges = registry.map { ScrapeGauges(registry: $0) }
        self.logger = node.options.logger
    }

    /// The server of `ce-node dashboard`: the dashboard alone, fed over HTTP by the nodes.
    public init(dashboard: ClusterView, host: String, port: Int, logger: Logger = Logger(label: "ce.dashboard")) {
        self.host = host
        self.port = port
        self.node = nil
        self.coordinator = nil
        self.registry = nil
        self.cluster = dashboard
        self.feed = nil
        self.gauges = nil
        self.logger = logger
    }

    /// Who serves, for error messages.
    var owner: String { node.map { "node \($0.spec.name)" } ?? "the dashboard" }

    /// Serves until cancelled. `ready` is called once the port is bound; a port that cannot
    /// be bound throws an ``NodeError`` naming the node, the address and the port.
    public func run(ready: @escaping @Sendable () -> Void = {}) async throws {
        let router = Router()
        addRoutes(router)
        let started = Mutex(false)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "ce-node", reuseAddress: true),
            onServerRunning: { [logger, host, port] _ in
                started.withLock { $0 = true }
                logger.info("serving HTTP on \(host):\(port)")
                ready()
            },
            logger: Self.quietLogger)
        let hubs = [feed?.hub, cluster?.hub].compactMap { $0 }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await withTaskCancellationHandler {
                        try await app.run()
                    } onCancel: {
                        // Open streams end, so the server's graceful shutdown does not wait on them.
                        for hub in hubs { hub.close() }
                    }
                }
                if let feed {
                    let gauges = gauges, isCoordinator = coordinator != nil, cluster = cluster
                    group.addTask {
                        await feed.run { event in
                            if isCoordinator, event.type == .gatePassed { gauges?.gatePassed(event) }
                            cluster?.ingestLocal(event)
                        }
                    }
                }
                if let cluster { group.addTask { await cluster.run() } }
                group.addTask {
                    // A comment line now and then: a client that went away is noticed by the write.
                    while !Task.isCancelled {
                        try await Task.sleep(for: .seconds(2))
                        for hub in hubs { hub.publish(":\n\n") }
                    }
                }
                try await group.next()
                group.cancelAll()
                for hub in hubs { hub.close() }
            }
        } catch where !started.withLock({ $0 }) && !(error is CancellationError) {
            let text = "\(error)"
            let reason = text.contains("Address already in use") ? "port \(port) is already in use" : text
            throw NodeError("\(owner) cannot serve HTTP (ports.metrics) on \(host):\(port): \(reason)")
        } catch where Task.isCancelled {
            // Stopped: a normal end, whatever the server's tasks threw on the way out.
        }
    }

    /// Hummingbird's own logger: it reports a cancelled shutdown as an error, and what it
    /// would log otherwise (bind failures) this server throws with the node and port named.
    static let quietLogger: Logger = {
        var logger = Logger(label: "ce.http")
        logger.logLevel = .critical
        return logger
    }()

    func addRoutes(_ router: Router<BasicRequestContext>) {
        if let registry, let node {
            let gauges = gauges, coordinator = coordinator, feed = feed, cluster = cluster
            router.get("/metrics") { _, _ -> Response in
                gauges?.update(node: node, coordinator: coordinator, hub: feed!.hub, clusterHub: cluster?.hub)
                let text = registry.emitToBuffer()
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(bytes: text)))
            }
        }
        if let node, let feed {
            let coordinator = coordinator
            router.get("/status.json") { request, _ -> Response in
                let after = request.uri.queryParameters.get("after").flatMap { Int($0) } ?? 0
                let (recent, taken) = feed.recent(after: max(0, after))
                var value: [String: JSONValue] = ["node": node.status(), "recent": .array(recent), "taken": .number(Double(taken))]
                if let coordinator { value["coordinator"] = coordinator.status() }
                return Self.json(.ok, .object(value))
            }
            router.get("/events") { _, _ -> Response in
                guard let stream = feed.hub.subscribe(first: [":\n\n"]) else {
                    return Self.json(.serviceUnavailable, ["ok": false, "error": "too many stream clients"])
                }
                return Self.eventStream(stream)
            }
        }
        if let cluster {
            router.get("/") { _, _ -> Response in
                // The page comes with the picture of now, so it shows the cluster before its
                // stream connects (and a browser that only reads the page once sees it too).
                let initial = cluster.snapshot().serializedString.replacingOccurrences(of: "</", with: "<\\/")
                let page = DashboardAssets.indexHTML
                    .replacingOccurrences(of: "<!--initial-->", with: "<script>window.ceInitial = \(initial);</script>")
                return Self.asset(page, "text/html; charset=utf-8")
            }
            router.get("/dashboard.js") { _, _ in Self.asset(DashboardAssets.javaScript, "text/javascript; charset=utf-8") }
            router.get("/dashboard.css") { _, _ in Self.asset(DashboardAssets.css, "text/css; charset=utf-8") }
            router.get("/cluster.json") { _, _ in Self.json(.ok, cluster.snapshot()) }
            router.get("/cluster/stream") { _, _ -> Response in
                let first = Hub.frame("snapshot", cluster.snapshot().serializedString)
                guard let stream = cluster.hub.subscribe(first: [first]) else {
                    return Self.json(.serviceUnavailable, ["ok": false, "error": "too many dashboard clients"])
                }
                return Self.eventStream(stream)
            }
        }
        let resolver: (@Sendable (String, JSONValue) async throws -> JSONValue)?
        if let cluster {
            resolver = { try await cluster.resolve(conflictID: $0, decision: $1) }
        } else if let node, node.spec.isCoordinator {
            resolver = { try await ClusterView.resolve(on: node, conflictID: $0, decision: $1) }
        } else {
            resolver = nil
        }
        if let resolver {
            router.post("/resolve") { request, _ -> Response in
                let body: JSONValue
                do {
                    let buffer = try await request.body.collect(upTo: 64 << 10)
                    body = try JSONValue(parsing: Array(buffer.readableBytesView))
                } catch {
                    return Self.json(.badRequest, ["ok": false, "error": .string("the body must be a JSON object of at most 64 KiB: \(error)")])
                }
                guard let id = body["conflict_id"]?.stringValue, !id.isEmpty else {
                    return Self.json(.badRequest, ["ok": false, "error": "\"conflict_id\" is required"])
                }
                guard let decision = body["decision"], decision != .null, decision != .string("") else {
                    return Self.json(.badRequest, ["ok": false, "error": "\"decision\" is required"])
                }
                do {
                    return Self.json(.ok, try await resolver(id, decision))
                } catch {
                    return Self.json(.badGateway, ["ok": false, "error": .string("\(error)")])
                }
            }
        }
    }

    static func json(_ status: HTTPResponse.Status, _ value: JSONValue) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: value.serialized())))
    }

    static func eventStream(_ stream: AsyncStream<String>) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
            body: .init { writer in
                for await frame in stream { try await writer.write(ByteBuffer(string: frame)) }
                try await writer.finish(nil)
            })
    }

    static func asset(_ text: String, _ type: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .cacheControl: "no-store"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
