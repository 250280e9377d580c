import ArgumentParser
import CECore
@_spi(Measuring) import CENode
import CEObserve
import CEStore
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
import ZeroMQ

@main
struct CENodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ce-node",
        abstract: "A node of the coordination bus: agent pools on separate hosts exchange events and questions.",
        subcommands: [Run.self, Reload.self, CoordinatorCommand.self, Emit.self, Tail.self, Ask.self, History.self, Status.self,
                      Gates.self, Conflicts.self, Resolve.self, MCPCommand.self, Dashboard.self, Demo.self, Keys.self])
}

/// `--topology FILE --node NAME`, or `--data DIR` for commands that only need the data folder.
struct NodeSelection: ParsableArguments {
    @Option(name: .customLong("topology"), help: "The topology file (default: $CE_TOPOLOGY, else topology/demo.yaml).")
    var topologyFile: String?

    /// `--topology`, else `$CE_TOPOLOGY`, else the demo's.
    var topology: String { topologyFile ?? ProcessInfo.processInfo.environment["CE_TOPOLOGY"] ?? "topology/demo.yaml" }

    /// Whether the user named a topology (`--topology`, `--node` or `$CE_TOPOLOGY`): then the
    /// names given to flags are checked against it (``KnownNames``).
    var namesTopology: Bool {
        topologyFile != nil || nodeName != nil || ProcessInfo.processInfo.environment["CE_TOPOLOGY"] != nil
    }

    @Option(name: .long, help: "The node's name in the topology (default: $CE_NODE).")
    var node: String?

    /// `--node`, else `$CE_NODE` (a container sets it once for every command run in it).
    var nodeName: String? { node ?? ProcessInfo.processInfo.environment["CE_NODE"] }

    @Option(name: .long, help: "The node's data folder (default: the topology's).")
    var data: String?

    func load() throws -> Topology {
        do { return try TopologyLoader.load(path: topology) } catch { throw ValidationError("\(error)") }
    }

    /// The data folder of the selected node.
    func dataDirectory() throws -> String {
        if let data { return data }
        guard let node = nodeName else { throw ValidationError("say which node: --node NAME (or --data DIR)") }
        let topology = try load()
        guard let spec = topology.node(named: node) else {
            throw ValidationError("no node \"\(node)\" in \(self.topology) (nodes: \(topology.nodes.map(\.name).joined(separator: ", ")))")
        }
        return spec.data
    }
}

func printJSON(_ value: JSONValue) {
    print(value.serializedString)
}

func bootstrapLogging(_ level: Logger.Level) {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a node until SIGINT or SIGTERM.")
    @OptionGroup var selection: NodeSelection
    @Option(help: "The workspace whose .ce-events/ folder agents use (default: the topology's).")
    var workspace: String?
    @Option(help: "Store durability: full (fsync each batch, survives power loss) or normal.")
    var durability: String = "full"
    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"
    @Option(help: ArgumentHelp(
        "Where to start on an origin this node holds nothing from: beginning, now, a sequence number, or a timestamp.",
        valueName: "point"))
    var catchUp: String = "beginning"
    // Switches for measuring only (ce-bench uses them): kept out of the help a user reads.
    @Flag(help: ArgumentHelp(
        "Plain PUB/SUB: no sequence tracking, no replay (events missed while away stay missed); for measuring what the guarantees cost.",
        visibility: .hidden))
    var noReplay = false
    @Flag(help: ArgumentHelp(
        "Record no metrics (swift-metrics' no-op handlers; /metrics answers 404); for measuring what they cost.", visibility: .hidden))
    var noMetrics = false
    @Flag(help: "Refuse to start on a damaged store (leave it for inspection) and do not refill a new store from the peers.")
    var noRefill = false
    @Option(help: ArgumentHelp(
        "Live events held per origin behind a gap while a replay fills it; beyond that they are dropped (and come back by replay) and the origin's live stream pauses until the replay ends.",
        valueName: "events"))
    var maxHeld: Int = Node.Options.defaultMaxHeld

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        guard let durability = EventStore.Durability(rawValue: durability) else {
            throw ValidationError("--durability must be full or normal, not \(durability)")
        }
        let catchUp: CatchUp
        do { catchUp = try CatchUp(parsing: self.catchUp) } catch { throw ValidationError("--catch-up: \(error)") }
        guard maxHeld >= 1 else { throw ValidationError("--max-held must be at least 1, not \(maxHeld)") }
        guard let name = selection.nodeName else { throw ValidationError("say which node to run: --node NAME") }
        bootstrapLogging(level)
        // Metrics go to one registry for the process; /metrics renders it (ports.metrics).
        let registry = noMetrics ? nil : Observability.bootstrap()
        var options = try Node.Options(topology: try selection.load(), name: name, dataDirectory: selection.data, workspace: workspace)
        options.durability = durability
        options.catchUp = catchUp
        options.replay = !noReplay
        options.refill = !noRefill
        options.maxHeld = maxHeld
        let node = try Node(options: options)
        // Under systemd (Type=notify): READY=1 once the node serves, watchdog pings, STOPPING=1.
        let systemd = SystemdNotifier()
        let systemdLogger = Logger(label: "ce.systemd")
        if let problem = systemd.problem { systemdLogger.warning("\(problem)") }
        // The coordinator node also runs the coordinator's state machines.
        let service = node.spec.isCoordinator ? CoordinatorService(node: node) : nil
        let http = node.spec.metricsPort.map { port in
            ObserveServer(
                node: node, coordinator: service, registry: registry, host: node.spec.metricsBindHost, port: port,
                dashboard: node.spec.isCoordinator)
        }
        let process = NodeService { try await withThrowingTaskGroup(of: Void.self) { group in
                if let http {
                    // The HTTP port first: one that is taken stops the node before it starts.
                    let (bound, ready) = AsyncStream<Bool>.makeStream()
                    group.addTask {
                        defer { ready.finish() }
                        try await http.run {
                            ready.yield(true)
                            ready.finish()
                        }
                    }
                    var up = false
                    for await value in bound { up = value }
                    if !up {
                        try await group.next()  // the server's error
                        return
                    }
                }
                group.addTask { try await node.run() }
                // SIGHUP: re-read the topology and apply what changed (as `ce-node reload`).
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        if case .failure(let why) = await node.reload() { Logger(label: "ce.reload").error("SIGHUP: \(why)") }
                    }
                }
                if systemd.isActive { group.addTask { await systemd.serve(node: node, logger: systemdLogger) } }
                if let service { group.addTask { try await service.run() } }
                try await group.next()
                group.cancelAll()
            }
        } stopping: {
            systemd.send("STOPPING=1", logger: systemdLogger)
        }
        // SIGTERM and SIGINT shut the group down gracefully: the node's parts are cancelled
        // and it closes its sockets and store before the process ends.
        let group = ServiceGroup(
            services: [process], gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "ce.lifecycle"))
        try await group.run()
    }
}

/// A node with its coordinator service, HTTP side and systemd notifications, as one
/// swift-service-lifecycle service: a graceful shutdown of its group cancels them together.
struct NodeService: Service {
    let body: @Sendable () async throws -> Void
    let stopping: @Sendable () -> Void

    init(_ body: @escaping @Sendable () async throws -> Void, stopping: @escaping @Sendable () -> Void) {
        self.body = body
        self.stopping = stopping
    }

    func run() async throws {
        do {
            try await withGracefulShutdownHandler {
                try await cancelWhenGracefulShutdown { try await body() }
            } onGracefulShutdown: {
                stopping()
            }
        } catch is CancellationError {
            // Cancelled by a graceful shutdown: a clean stop.
        }
    }
}

/// Turns SIGINT/SIGTERM into a call, so a node shuts down cleanly.
final class SignalWatcher: @unchecked Sendable {
    // @unchecked Sendable: `sources` is set once in init and only cancelled afterwards;
    // dispatch sources are thread-safe.
    private let sources: [any DispatchSourceSignal]
    init(_ signals: [Int32], _ handler: @escaping @Sendable () -> Void) {
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }
    func cancel() { for s in sources { s.cancel() } }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-read the topology file (and its keys file) on a running node and apply what changed, without a restart.",
        discussion: """
            Peers added are dialled and admitted, peers removed are disconnected and refused (their \
            events stay), subscription lists and gates follow the file. A file that does not validate, \
            or that changes this node's own entry or the cluster's settings, is refused whole and the \
            node keeps the topology it runs. SIGHUP does the same.
            """)
    @OptionGroup var selection: NodeSelection
    @Flag(help: "Print the reply as JSON (for scripts).") var json = false

    func run() async throws {
        let reply = try await ControlClient(dataDirectory: try selection.dataDirectory()).reload(timeout: .seconds(60))
        if json { printJSON(reply); return }
        let changed = (reply["changed"]?.arrayValue ?? []).compactMap(\.stringValue)
        let digest = reply["digest"]?.stringValue ?? "?"
        if changed.isEmpty {
            print("\(selection.nodeName ?? "the node") runs topology \(digest): nothing changed for it")
        } else {
            print("\(selection.nodeName ?? "the node") now runs topology \(digest):")
            for line in changed { print("  \(line)") }
        }
    }
}

struct Emit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Emit an event through a running node.")
    @OptionGroup var selection: NodeSelection
    @Option(name: .customLong("type"), help: "The event type (plan_ready, schema_v1, ...).")
    var eventType: String?
    @Option(help: "The payload as JSON.")
    var payload: String = "null"
    @Option(help: "The emitting stream (default: the node's pool).")
    var stream: String?
    @Option(help: "Correlation id.")
    var correlationId: String?
    @Option(help: "Target pool.")
    var target: String?
    @Option(help: "An event file (keys stream, event_type, payload) instead of flags.")
    var file: String?
    @Flag(help: "Emit a type that neither the catalog nor the topology names, on purpose.")
    var customType = false

    func run() async throws {
        var item: ControlRequest.EmitItem
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("cannot read \(file)") }
            let parsed: AgentEventFile
            do { parsed = try AgentEventFile.parse([UInt8](data)) } catch { throw ValidationError("\(file): \(error)") }
            item = .init(parsed.type, payload: parsed.payload, stream: parsed.stream, correlationID: parsed.correlationID, target: parsed.target)
        } else {
            guard let eventType else { throw ValidationError("give --type TYPE (or --file FILE)") }
            let type: EventType
            do { type = try EventType(validating: eventType) } catch { throw ValidationError("--type: \(error)") }
            let value: JSONValue
            do { value = try JSONValue(parsing: payload) } catch { throw ValidationError("--payload is not valid JSON: \(error)") }
            item = .init(type, payload: value, stream: stream, correlationID: correlationId, target: target)
        }
        item.allowCustomType = customType
        printJSON(try await ControlClient(dataDirectory: try selection.dataDirectory()).emit(item))
    }
}

struct Ask: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Ask a pool a question through a running node; print the answer.")
    @OptionGroup var selection: NodeSelection
    @Option(help: "The pool to ask.")
    var pool: String
    @Option(help: "The question as JSON (a plain string is taken as text).")
    var question: String
    @Option(help: "Milliseconds to wait per attempt (default: the topology's).")
    var timeoutMs: Int?

    func run() async throws {
        let q = (try? JSONValue(parsing: question)) ?? .string(question)
        if let timeoutMs, timeoutMs < 1 { throw ValidationError("--timeout-ms must be at least 1, not \(timeoutMs)") }
        let names = try selection.knownNames()
        if let problem = names?.unknownPool(pool) { throw CommandError(problem) }
        let client = ControlClient(dataDirectory: try selection.dataDirectory(), name: selection.nodeName)
        do {
            printJSON(try await client.ask(pool: pool, question: q, timeoutMilliseconds: timeoutMs))
        } catch let error as NodeError where Unanswered.matches(error, pool: pool) {
            throw CommandError(error.description + "\n" + Unanswered.explanation(pool: pool, topology: names?.topology, timeoutMilliseconds: timeoutMs))
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a running node's peers (up, lag, last heard), subscriptions and counters.")
    @OptionGroup var selection: NodeSelection
    @Flag(help: "Print the status as JSON (for scripts).") var json = false

    func run() async throws {
        let status = try await ControlClient(dataDirectory: try selection.dataDirectory()).status(timeout: .seconds(5))
        if json { printJSON(status) } else { print(Tables.status(status), terminator: "") }
    }
}

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the topology's coordinator node (gates, conflicts, liveness), or its standby with --node.",
        subcommands: [Handover.self])
    @Option(help: "The topology file ($CE_TOPOLOGY when set).")
    var topology: String = ProcessInfo.processInfo.environment["CE_TOPOLOGY"] ?? "topology/demo.yaml"
    @Option(help: "Which coordinator to run: the coordinator section's name (the default) or its standby's.")
    var node: String?
    @Option(help: "Log level.") var logLevel: String = "info"
    @Option(help: "Store durability: full or normal.") var durability: String = "full"

    func run() async throws {
        let loaded: Topology
        do { loaded = try TopologyLoader.load(path: topology) } catch { throw ValidationError("\(error)") }
        guard let coordinator = loaded.coordinator else { throw ValidationError("\(topology) has no coordinator section") }
        let name = node ?? coordinator.name
        guard loaded.coordinators.contains(where: { $0.name == name }) else {
            throw ValidationError("\(name) is not a coordinator in \(topology) (coordinators: \(loaded.coordinators.map(\.name).joined(separator: ", ")))")
        }
        let run = try Run.parse(["--topology", topology, "--node", name, "--log-level", logLevel, "--durability", durability])
        try await run.run()
    }

    struct Handover: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move the active coordinator's role to the standby (for maintenance); run it on the active coordinator's host.")
        /// `--topology` and `--node` are the coordinator command's (given before or after `handover`).
        @ParentCommand var coordinator: CoordinatorCommand

        func run() async throws {
            var selection = try NodeSelection.parse(["--topology", coordinator.topology])
            selection.node = coordinator.node
            let reply = try await ControlClient(dataDirectory: try coordinatorData(selection)).handover(timeout: .seconds(30))
            let to = reply["to"]?.stringValue ?? "?"
            let term = reply["term"]?.intValue ?? 0
            if reply["confirmed"]?.boolValue == true {
                print("\(to) is the active coordinator in term \(term)")
            } else {
                print("handed over to \(to) in term \(term); it has not said it is active yet (ce-node gates shows the role)")
            }
        }
    }
}

/// The data folder of the coordinator on this host: `--data`, `--node`, else the first of the
/// coordinator and its standby whose control socket is here.
func coordinatorData(_ selection: NodeSelection) throws -> String {
    if let data = selection.data { return data }
    if selection.nodeName != nil { return try selection.dataDirectory() }
    let topology = try selection.load()
    guard let first = topology.coordinator else { throw ValidationError("\(selection.topology) has no coordinator section") }
    let here = topology.coordinators.first { FileManager.default.fileExists(atPath: NodePaths(dataDirectory: $0.data).controlSocket) }
    return (here ?? first).data
}

struct Gates: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the quality gates: who has aligned, who is missing (and whether it is down), for how long.")
    @OptionGroup var selection: NodeSelection
    @Flag(help: "Print the gates as JSON (for scripts).") var json = false

    func run() async throws {
        let reply = try await ControlClient(dataDirectory: try coordinatorData(selection)).gates(timeout: .seconds(5))
        let gates = reply["gates"] ?? .array([])
        if json { printJSON(gates) } else {
            if let role = reply["role"]?.stringValue, let term = reply["term"]?.intValue {
                var line = "this coordinator: \(role), term \(term); active: \(reply["active"]?.stringValue ?? "none")"
                if let last = reply["last_takeover"], let at = last["at"]?.stringValue {
                    line += "; since \(at): \(last["reason"]?.stringValue ?? "")"
                }
                print(line)
            }
            print(Tables.gates(gates), terminator: "")
        }
    }
}

struct Conflicts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the open conflicts and who is asked to resolve them.")
    @OptionGroup var selection: NodeSelection
    @Flag(help: "Print the conflicts as JSON (for scripts).") var json = false

    func run() async throws {
        let conflicts = try await ControlClient(dataDirectory: try coordinatorData(selection)).gates(timeout: .seconds(5))["conflicts"] ?? .array([])
        if json { printJSON(conflicts) } else { print(Tables.conflicts(conflicts), terminator: "") }
    }
}

struct Dashboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the live dashboard of a cluster, fed by its nodes' HTTP ports (ports.metrics), from any host that reaches them.")
    @Option(help: "The topology file ($CE_TOPOLOGY when set).")
    var topology: String = ProcessInfo.processInfo.environment["CE_TOPOLOGY"] ?? "topology/demo.yaml"
    @Option(help: ArgumentHelp("Where to serve the dashboard.", valueName: "host:port"))
    var listen: String = "127.0.0.1:7199"
    @Option(help: "Log level.") var logLevel: String = "notice"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        let loaded: Topology
        do { loaded = try TopologyLoader.load(path: topology) } catch { throw ValidationError("\(error)") }
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65535).contains(port) else {
            throw ValidationError("--listen must be HOST:PORT, like 127.0.0.1:7199, not \(listen)")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let observed = loaded.nodes.filter { $0.metricsPort != nil }.map(\.name)
        if observed.isEmpty {
            throw ValidationError("no node of \(topology) has ports.metrics: the dashboard has nothing to read (see docs/METRICS.md)")
        }
        bootstrapLogging(level)
        var logger = Logger(label: "ce.dashboard")
        logger.logLevel = level
        let view = ClusterView(topology: loaded, logger: logger)
        let server = ObserveServer(dashboard: view, host: host, port: port, logger: logger)
        let task = Task {
            try await server.run {
                print("dashboard of \(loaded.cluster) on http://\(listen)/ (reading \(observed.joined(separator: ", ")))")
                fflush(nil)
            }
        }
        let signals = SignalWatcher([SIGINT, SIGTERM]) { task.cancel() }
        defer { signals.cancel() }
        try await task.value
    }
}

struct Resolve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Close a conflict as a human resolver would.")
    @OptionGroup var selection: NodeSelection
    @Argument(help: "The conflict id (see `ce-node conflicts`).") var conflictID: String
    @Option(help: "The decision, as text or JSON.") var decision: String

    func run() async throws {
        let value = (try? JSONValue(parsing: decision)) ?? .string(decision)
        printJSON(try await ControlClient(dataDirectory: try coordinatorData(selection)).emit(
            .init(.conflictResolved, payload: ["conflict_id": .string(conflictID), "decision": value, "resolved_by": "human"])))
    }
}
