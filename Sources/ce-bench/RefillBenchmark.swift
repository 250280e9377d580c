import ArgumentParser
import CECluster
import CECore
import CENode
import CEStore
import Foundation

/// A node whose store is lost, restarted in a cluster that holds `--events` events of another
/// origin and some of its own: the time from its start until its store holds every line as
/// the others do (by `status`, then checked event by event after it stopped). Then a
/// coordinator whose disk is lost with `--gates` gates half reported and as many conflicts
/// open: the time from its start until `gates` answers with all of them back.
struct RefillBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refill",
        abstract: "A node restarting with its store lost: refill rate and time until its store matches the census; a coordinator rebuilding open gates and conflicts.")

    @Option(help: "Events of planner-1 the cluster holds (builder-1 emits a fiftieth as many of its own).")
    var events = 500_000

    @Option(help: "Gates left half reported, and as many conflicts left open, for the coordinator to rebuild.")
    var gates = 100

    @OptionGroup var security: SecurityOptions

    func validate() throws {
        try requirePositive(["--events": events, "--gates": gates])
    }

    @MainActor func run() async throws {
        /// Written at once (not held in stdout's buffer), so a figure is kept if a later step fails.
        func say(_ line: String) { FileHandle.standardOutput.write(Data((line + "\n").utf8)) }
        let (count, gates) = (events, gates)
        let own = max(1, count / 50)
        let cluster = try ClusterFolder(security)
        defer { cluster.remove() }
        var gateList = ""
        for g in 1...gates { gateList += "  - { name: g\(g), pools: [planner, builder] }\n" }
        let path = try cluster.write(topology: """
            version: 1
            settings: { heartbeat_ms: 200\(cluster.securitySetting) }
            nodes:
              - { name: planner-1, pool: planner, \(try cluster.place("planner-1")) }
              - { name: builder-1, pool: builder, \(try cluster.place("builder-1")) }
            coordinator: { name: coordinator, \(try cluster.place("coordinator")) }
            gates:
            \(gateList)conflicts: { resolvers: [planner, human], escalate_after_s: 3600 }

            """)
        let topology = try TopologyLoader.load(path: path)
        let planner = try Node(options: try Node.Options(topology: topology, name: "planner-1"))
        let plannerTask = Task { try await planner.run() }
        defer { plannerTask.cancel() }
        var processes: [String: Process] = [:]
        func start(_ name: String) throws {
            processes[name] = try startNode(topology: path, node: name, logLevel: "notice", log: cluster.logPath(name))
        }
        func stop(_ name: String) {
            guard let child = processes[name], child.isRunning else { return }
            stopNode(child, signal: SIGKILL)
        }
        defer { for name in processes.keys { stop(name) } }
        /// Deletes the store (a lost disk), keeping the node's key (its identity, restored from a backup).
        func wipe(_ name: String) throws {
            let dir = topology.node(named: name)!.data
            for file in try FileManager.default.contentsOfDirectory(atPath: dir) where file.hasPrefix("events.sqlite") {
                try FileManager.default.removeItem(atPath: dir + "/" + file)
            }
        }
        func status(_ name: String) async -> JSONValue? {
            try? await ControlClient(dataDirectory: topology.node(named: name)!.data).status(timeout: .seconds(5))
        }
        func waitUntil(_ what: String, _ seconds: Double = 900, _ condition: () async -> Bool) async throws {
            let deadline = ContinuousClock.now + .seconds(seconds)
            while !(await condition()) {
                guard ContinuousClock.now < deadline else { throw BenchmarkFailure("refill: timed out waiting for \(what)") }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        /// Every line `name` holds as far as every other node holds it (origin: its last sequence).
        func matches(_ name: String) async -> Bool {
            guard let mine = await status(name), mine["refill"]?["done"]?.boolValue != false else { return false }
            var held: [String: Int] = [:]
            for line in mine["lines"]?.arrayValue ?? [] { held["\(line["origin"]?.stringValue ?? "")@\(line["epoch"]?.stringValue ?? "")"] = line["through"]?.intValue }
            for other in ["planner-1", "builder-1", "coordinator"] where other != name {
                guard let theirs = await status(other) else { return false }
                for line in theirs["lines"]?.arrayValue ?? [] {
                    let key = "\(line["origin"]?.stringValue ?? "")@\(line["epoch"]?.stringValue ?? "")"
                    if line["origin"]?.stringValue == name && line["current"]?.boolValue == true && line["epoch"]?.stringValue == mine["epoch"]?.stringValue { continue }
                    if (held[key] ?? -1) < (line["through"]?.intValue ?? 0) { return false }
                }
            }
            return true
        }

        // The history first, then the other nodes, which take it by replay.
        var started = ContinuousClock.now
        var left = count
        while left > 0 {
            let k = min(1000, left)
            _ = try await planner.emit((0..<k).map { _ in Node.Emission(.planReady, payload: payload) })
            left -= k
        }
        try start("builder-1")
        try start("coordinator")
        let builderClient = ControlClient(dataDirectory: topology.node(named: "builder-1")!.data)
        try await waitUntil("builder-1 to answer") { await status("builder-1") != nil }
        left = own
        while left > 0 {
            let k = min(1000, left)
            _ = try await builderClient.emit((0..<k).map { _ in .init(.buildReady, payload: payload) }, timeout: .seconds(60))
            left -= k
        }
        try await waitUntil("the cluster to hold every event everywhere") { await matches("builder-1") }
        say(String(format: "refill: the cluster holds %d events of planner-1 and %d of builder-1 (256 B payloads), set up in %.1f s", count, own, seconds(since: started)))

        stop("builder-1")
        try wipe("builder-1")
        try start("builder-1")
        started = ContinuousClock.now
        try await waitUntil("builder-1's refill") { await matches("builder-1") }
        let took = seconds(since: started)
        let refilled = (await status("builder-1"))?["refill"]?["events"]?.intValue ?? -1
        say(String(format: "refill: builder-1 restarted with its store lost: %d events refilled (planner-1's and its own) in %.1f s from its start: %.0f events/s, its store matching the census", refilled, took, Double(refilled) / took))
        stop("builder-1")
        // The census, event by event: builder-1's store holds every id the others hold.
        let ids = { (name: String, origin: String) throws -> Set<String> in
            var q = EventQuery()
            q.origin = origin
            q.limit = Int.max
            return Set(try EventStore(directory: topology.node(named: name)!.data, durability: .normal).events(q).map(\.id))
        }
        let plannerHeld = try ids("builder-1", "planner-1") == ids("coordinator", "planner-1")
        let ownHeld = try ids("builder-1", "builder-1").isSuperset(of: ids("coordinator", "builder-1"))
        say("refill: census after the stop: planner-1's events \(plannerHeld ? "all present, none extra" : "DIFFER"); builder-1's own \(ownHeld ? "all back" : "MISSING")")
        try start("builder-1")
        try await waitUntil("builder-1 to answer") { await status("builder-1") != nil }

        // The coordinator: every gate half reported, as many conflicts open.
        for g in 1...gates { _ = try await planner.emit(.syncPointReached, payload: ["gate": .string("g\(g)")]) }
        for c in 1...gates {
            _ = try await planner.emit(.conflictDetected, payload: ["subject": .string("s\(c)"), "parties": ["builder"], "description": "bench"])
        }
        let coordinatorClient = ControlClient(dataDirectory: topology.node(named: "coordinator")!.data)
        func rebuilt() async -> Bool {
            guard let coordinator = try? await coordinatorClient.gates(timeout: .seconds(5)) else { return false }
            let open = coordinator["conflicts"]?.arrayValue?.count ?? 0
            let aligned = coordinator["gates"]?.arrayValue?.filter { ($0["aligned"]?.arrayValue?.count ?? 0) == 1 }.count ?? 0
            return open == gates && aligned == gates
        }
        try await waitUntil("the coordinator to open every gate and conflict") { await rebuilt() }
        try await waitUntil("the pools to hold every decision") { await matches("coordinator") }
        stop("coordinator")
        let dir = topology.node(named: "coordinator")!.data
        for file in try FileManager.default.contentsOfDirectory(atPath: dir) where file != "curve.key" {
            try FileManager.default.removeItem(atPath: dir + "/" + file)
        }
        try start("coordinator")
        started = ContinuousClock.now
        try await waitUntil("the coordinator to rebuild") { await rebuilt() }
        let rebuildTook = seconds(since: started)
        var asks = EventQuery()
        asks.type = "resolution_needed"
        asks.limit = Int.max
        // Counted once the pools hold every line the rebuilt coordinator holds (its decisions included).
        try await waitUntil("the pools to hold the coordinator's decisions", 5) { await matches("coordinator") }
        let decisions = try EventStore(directory: topology.node(named: "planner-1")!.data, durability: .normal).count(asks)
        say(String(format: "refill: coordinator with its disk lost rebuilt %d half-reported gates and %d open conflicts from the pools in %.2f s from its start (resolution_needed at planner-1: %d, one per conflict)",
                     gates, gates, rebuildTook, decisions))
        plannerTask.cancel()
        _ = await plannerTask.result
    }
}
