import CECoordinator
import CECore
import CENode
import Foundation
import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

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
/// Read-only unless the topology names `settings.http_token_file`: then a request that is not
/// GET or HEAD must carry `Authorization: Bearer <the file's token>` (``HTTPWriteAccess``).
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
        // Before the port is bound: a token file that cannot be used stops the start.
        let access = try writeAccess()
        switch access {
        case .readOnly where resolves: logger.notice("HTTP is read-only (POST /resolve refused): the topology names no settings.http_token_file")
        case .token(_, let path): logger.info("HTTP requests that change state need the token of \(path)")
        default: break
        }
        let router = Router()
        addRoutes(router, access: access)
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
                    // Stopped by a graceful shutdown, not by cancelling the server's task:
                    // cancelled, swift-nio traps on a connection accepted but not yet served
                    // ("Deinited NIOAsyncWriter without calling finish()"). The server runs in
                    // a task of its own, which the caller's cancellation does not reach; it is
                    // cancelled only if the graceful shutdown has not ended within 5 s.
                    let services = ServiceGroup(configuration: .init(services: [app], logger: Self.quietLogger))
                    let serving = Task { try await services.run() }
                    try await withTaskCancellationHandler {
                        try await serving.value
                    } onCancel: {
                        // Open streams end, so the server's graceful shutdown does not wait on them.
                        for hub in hubs { hub.close() }
                        Task {
                            await services.triggerGracefulShutdown()
                            try? await Task.sleep(for: .seconds(5))
                            serving.cancel()
                        }
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

    /// Whether this server takes `POST /resolve`: the coordinator's, and a dashboard's.
    var resolves: Bool { cluster != nil || node?.spec.isCoordinator == true }

    /// Who may change state here, from the topology: the token file is read (and checked)
    /// only by the server that compares tokens, the coordinator's.
    func writeAccess() throws -> HTTPWriteAccess {
        guard resolves else { return .nothingToChange(owner: owner) }
        let topology = node?.topology ?? cluster!.topology
        guard let path = topology.settings.httpTokenFile else { return .readOnly }
        // A dashboard outside the coordinator passes the header on; the coordinator checks it.
        guard let node, node.spec.isCoordinator else { return .forwarded }
        do {
            return .token(try HTTPToken.load(path), path: path)
        } catch {
            throw NodeError("\(owner) cannot take requests that change state over HTTP: \(topology.file): \(error)")
        }
    }

    func addRoutes(_ router: Router<BasicRequestContext>, access: HTTPWriteAccess) {
        // First, so that it wraps every route (and the not-found answer) added after it.
        router.add(middleware: WriteGuard(access: access, logger: logger))
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
        // The request's Authorization header goes along: a dashboard outside the coordinator
        // passes it on for the coordinator to check.
        let resolver: (@Sendable (String, JSONValue, String?) async throws -> JSONValue)?
        if let cluster {
            resolver = { try await cluster.resolve(conflictID: $0, decision: $1, authorization: $2) }
        } else if let node, node.spec.isCoordinator {
            resolver = { id, decision, _ in try await ClusterView.resolve(on: node, conflictID: id, decision: decision) }
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
                    return Self.json(.ok, try await resolver(id, decision, request.headers[.authorization]))
                } catch let refusal as ClusterView.CoordinatorRefusal {
                    return Self.json(.init(code: refusal.status), ["ok": false, "error": .string(refusal.message)])
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

/// Who may change state over an HTTP port. Requests that only read (GET, HEAD) are never
/// asked; every other request is checked by ``WriteGuard`` before it is routed.
enum HTTPWriteAccess: Sendable {
    /// The server has nothing that changes state (a node's port other than the coordinator's).
    case nothingToChange(owner: String)
    /// The topology names no `settings.http_token_file`: every such request is refused (403).
    case readOnly
    /// Only with `Authorization: Bearer <token>` (else 401).
    case token(HTTPToken, path: String)
    /// A dashboard outside the coordinator: the request needs a bearer token (else 401), which
    /// goes on to the coordinator with it; the coordinator compares it.
    case forwarded

    /// Why a request with these `Authorization` header values may not change state, or nil
    /// when it may.
    func refusal(authorization values: [String]) -> (status: HTTPResponse.Status, error: String)? {
        let enable = "write a token into a file only the coordinator's user may read (chmod 600), name it in the topology as settings.http_token_file, restart the coordinator, and send \"Authorization: Bearer <token>\""
        switch self {
        case .nothingToChange(let owner):
            return (.forbidden, "\(owner) changes nothing over HTTP (POST /resolve is served by the coordinator and by ce-node dashboard)")
        case .readOnly:
            return (.forbidden, "this HTTP port is read-only: the topology names no settings.http_token_file. To resolve conflicts over HTTP, \(enable). Without it: ce-node resolve CONFLICT_ID --decision TEXT on the coordinator's host")
        case .token(let token, _):
            guard let presented = Self.bearerToken(values) else { return (.unauthorized, Self.missing) }
            return token.matches(presented.utf8) ? nil : (.unauthorized, "the bearer token does not match settings.http_token_file")
        case .forwarded:
            return Self.bearerToken(values) == nil ? (.unauthorized, Self.missing) : nil
        }
    }

    static let missing = "this request changes state: send exactly one \"Authorization: Bearer <token>\" header, with the token of the topology's settings.http_token_file"

    /// The token of the one `Authorization: Bearer <token>` header (the scheme in any case);
    /// nil for none, several, another scheme or an empty token.
    static func bearerToken(_ values: [String]) -> Substring? {
        guard values.count == 1, let space = values[0].firstIndex(of: " ") else { return nil }
        let value = values[0]
        guard value[..<space].lowercased() == "bearer" else { return nil }
        let token = value[space...].drop { $0 == " " || $0 == "\t" }
        return token.isEmpty ? nil : token
    }
}

/// Refuses the requests that would change state (any method but GET and HEAD) unless
/// ``HTTPWriteAccess`` lets them through: 403 on a read-only port, 401 without the token.
struct WriteGuard: RouterMiddleware {
    typealias Context = BasicRequestContext
    let access: HTTPWriteAccess
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.method == .get || request.method == .head { return try await next(request, context) }
        guard let refusal = access.refusal(authorization: request.headers[values: .authorization]) else {
            return try await next(request, context)
        }
        logger.notice("refused \(request.method) \(request.uri.path) (\(refusal.status.code)): \(refusal.error)")
        var response = ObserveServer.json(refusal.status, ["ok": false, "error": .string(refusal.error)])
        if refusal.status == .unauthorized { response.headers[.wwwAuthenticate] = #"Bearer realm="ce-node""# }
        return response
    }
}

/// The token of `settings.http_token_file`: the file's text without its trailing newline.
struct HTTPToken: Sendable {
    private let bytes: [UInt8]

    init?(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return nil }
        self.bytes = bytes
    }

    /// Reads the token file: it must be a regular file, not empty, and readable by its owner
    /// alone (no group or other permission bits: it is a password).
    static func load(_ path: String) throws(HTTPTokenError) -> HTTPToken {
        // Opened once, then checked and read through the same descriptor.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw HTTPTokenError(.missing, path, "no such file (write the token into it, then chmod 600 it)") }
            throw HTTPTokenError(.unreadable, path, "cannot open it: \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw HTTPTokenError(.unreadable, path, "cannot stat it: \(String(cString: strerror(errno)))") }
        guard info.st_mode & 0o170000 == 0o100000 else { throw HTTPTokenError(.notAFile, path, "not a regular file") }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw HTTPTokenError(
                .exposed, path,
                "mode \(String(mode, radix: 8)) lets group or others at the token; it must be readable by its owner alone (chmod 600 \(path))")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw HTTPTokenError(.unreadable, path, "cannot read it: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[..<n]
            guard bytes.count <= 4096 else { throw HTTPTokenError(.unreadable, path, "longer than 4096 bytes: a token is one line") }
        }
        while let last = bytes.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { bytes.removeLast() }
        guard let token = HTTPToken(bytes) else { throw HTTPTokenError(.empty, path, "empty: write the token into it") }
        return token
    }

    /// Whether `presented` is the token, in a time that depends on `presented`'s length alone:
    /// every byte is compared (no early exit), so the time says nothing of how much of a
    /// guess was right, nor of the token's length.
    func matches(_ presented: some Collection<UInt8>) -> Bool {
        var difference = UInt(bitPattern: presented.count ^ bytes.count)
        var i = 0
        for byte in presented {
            difference |= UInt(byte ^ bytes[i % bytes.count])
            i += 1
        }
        return difference == 0
    }
}

/// Why `settings.http_token_file` cannot be used.
struct HTTPTokenError: Error, CustomStringConvertible {
    enum Code: Sendable { case missing, unreadable, notAFile, exposed, empty }
    let code: Code
    let path: String
    let reason: String

    init(_ code: Code, _ path: String, _ reason: String) {
        self.code = code
        self.path = path
        self.reason = reason
    }

    var description: String { "settings.http_token_file: \(path): \(reason)" }
}
