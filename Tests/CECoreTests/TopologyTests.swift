import CECore
import Foundation
import Testing

@Suite("Topology files")
struct TopologyTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test(arguments: ["demo.yaml", "multi-host.yaml"])
    func shippedTopologiesAreValid(file: String) throws {
        let topology = try TopologyLoader.load(path: Self.repo + "/topology/" + file)
        #expect(topology.coordinator?.name == "coordinator" && topology.coordinator?.isCoordinator == true)
        #expect(topology.node(named: "coordinator")?.pool == "coordinator")
        #expect(topology.nodes.count == 5)
        #expect(topology.poolNames == ["coordinator", "planner", "builder", "reviewer"])
        #expect(topology.nodes(inPool: "builder").map(\.name) == ["builder-1", "builder-2"])
        #expect(topology.peers(of: "planner-1").count == 4)
        #expect(topology.gates.contains { $0.name == "architecture_approval" && $0.pools == ["planner", "builder", "reviewer"] && $0.subject == "architecture" })
        #expect(topology.conflicts.resolvers == ["planner", "human"])
        #expect(topology.subscriptions(forPool: "reviewer") == nil)
        let planner = try #require(topology.subscriptions(forPool: "planner"))
        for type in ["build_ready", "review_complete", "conflict_detected", "resolution_needed", "sync_point_reached"] {
            #expect(planner.contains(try EventType(validating: type)), "\(type)")
        }
        #expect(topology.subscriptions(forPool: "builder")?.contains(.planReady) == true)
        for node in topology.nodes {
            #expect(node.replayEndpoint != nil)
            #expect(node.pubEndpoint.hasPrefix("tcp://") && node.bindPubEndpoint.hasPrefix("tcp://"))
        }
    }

    @Test func demoSpecifics() throws {
        let demo = try TopologyLoader.load(path: Self.repo + "/topology/demo.yaml")
        #expect(demo.cluster == "demo")
        #expect(demo.nodes.allSatisfy { $0.host == "127.0.0.1" && (7100...7199).contains($0.pubPort) && (7100...7199).contains($0.repPort) })
        #expect(try demo.subscriptions(forPool: "planner")?.contains(EventType(validating: "early_feedback")) == true)
        #expect(demo.gates.map(\.name) == ["architecture_approval", "release_readiness"])
        #expect(demo.gates[1].pools == ["builder", "reviewer"])
        let multi = try TopologyLoader.load(path: Self.repo + "/topology/multi-host.yaml")
        #expect(multi.nodes.map(\.host) == ["10.98.0.10", "10.98.0.11", "10.98.0.12", "10.98.0.13", "10.98.0.14"])
        #expect(multi.node(named: "builder-1")?.bindPubEndpoint == "tcp://0.0.0.0:7100")
        #expect(multi.node(named: "builder-1")?.pubEndpoint == "tcp://10.98.0.12:7100")
    }

    @Test func endpointsAndDefaults() throws {
        let t = try TopologyLoader.parse(yaml: """
            version: 1
            nodes:
              - { name: a, pool: p, host: 10.0.0.1, ports: { pub: 7000, rep: 7001 } }
              - { name: b, pool: q, host: builder.local, ports: { pub: 7000, rep: 7001 } }
              - { name: c, pool: q, host: "::1", ports: { pub: 7002, rep: 7003, replay: 7004, metrics: 7009 } }
              - { name: d, pool: q, host: "[fd00::5]", bind: "*", ports: { pub: 7005, rep: 7006, metrics: 7008 }, data: /var/ce/d, workspace: ws }
            pools:
              p: {}
              q: { subscribe: [plan_ready, schema_v1] }
            """)
        let a = t.node(named: "a")!, b = t.node(named: "b")!, c = t.node(named: "c")!, d = t.node(named: "d")!
        #expect(a.pubEndpoint == "tcp://10.0.0.1:7000" && a.bindPubEndpoint == "tcp://10.0.0.1:7000" && a.replayEndpoint == nil)
        #expect(b.bindRepEndpoint == "tcp://*:7001" && b.repEndpoint == "tcp://builder.local:7001" && b.data == ".ce-data/b")
        #expect(c.pubEndpoint == "tcp://[::1]:7002" && c.replayEndpoint == "tcp://[::1]:7004" && c.bindReplayEndpoint == "tcp://[::1]:7004")
        #expect(d.pubEndpoint == "tcp://[fd00::5]:7005" && d.bindPubEndpoint == "tcp://*:7005" && d.data == "/var/ce/d" && d.workspace == "ws")
        #expect(t.peers(of: "a").map(\.name) == ["b", "c", "d"])
        // The HTTP port is optional: absent, a node serves no HTTP.
        #expect(a.metricsPort == nil && a.metricsURL == nil)
        #expect(c.metricsURL == "http://[::1]:7009" && c.metricsBindHost == "::1")
        #expect(d.metricsURL == "http://[fd00::5]:7008" && d.metricsBindHost == "0.0.0.0")
        #expect(t.coordinator == nil && t.cluster == "cluster" && t.file == "topology.yaml")
        #expect(t.settings.askRetries == 2 && t.settings.heartbeatMilliseconds == 1000 && t.settings.maxMessageBytes == 1_048_576)
        #expect(t.subscriptions(forPool: "p") == nil)  // no subscribe key: all types
        #expect(t.subscriptions(forPool: "q") == [.planReady, try EventType(validating: "schema_v1")])
        #expect(t.subscriptions(forPool: "nobody") == nil)
        #expect(t.gates.isEmpty && t.conflicts.resolvers.isEmpty)
    }

    func problems(_ yaml: String) -> [String] {
        do {
            _ = try TopologyLoader.parse(yaml: yaml, file: "t.yaml")
            return ["(valid)"]
        } catch {
            #expect(error.description == error.problems.map { "t.yaml: \($0)" }.joined(separator: "\n"))
            return error.problems.map(\.description)
        }
    }

    /// Expects a problem that starts with `prefix` (the key path and message).
    func expectProblem(_ found: [String], _ prefix: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(found.contains { $0.hasPrefix(prefix) }, "no \"\(prefix)\" in:\n\(found.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    @Test func everyProblemIsReportedWithItsKeyPathAndLine() {
        let found = problems("""
            version: 1
            nodes:
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 } }
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7002 } }
              - { name: c, pool: q, host: 300.1.2.3, ports: { pub: 7010, rep: 7011 }, colour: red }
              - { name: d, pool: q, host: 127.0.0.1, ports: { pub: 7020, rep: 70000 } }
              - { name: e, pool: q, host: 127.0.0.1, ports: { pub: 7030, rep: 7031, replay: 7001 } }
              - { name: f, pool: q, host: 127.0.0.1, ports: { pub: 7040, rep: 7041, metrics: 7030 } }
            gates:
              - { name: g, pools: [p, ghosts] }
            conflicts:
              resolvers: [p, human, nobody]
            pools:
              p: { subscribe: [plan_ready, Bad] }
            """)
        expectProblem(found, #"nodes[1].name: duplicate node "a" (first at nodes[0]) (line 4)"#)
        expectProblem(found, "nodes[1].ports.pub: port 7000 on 127.0.0.1 is already used by nodes[0].ports.pub (line 4)")
        expectProblem(found, "nodes[4].ports.replay: port 7001 on 127.0.0.1 is already used by nodes[0].ports.rep (line 7)")
        expectProblem(found, #"nodes[2].host: bad address "300.1.2.3""#)
        expectProblem(found, #"nodes[2].colour: unknown key "colour" (allowed: name, pool, host, bind, ports, data, workspace, public_key, next_public_key) (line 5)"#)
        expectProblem(found, "nodes[3].ports.rep: 70000 is outside 1-65535 (line 6)")
        expectProblem(found, #"gates[0].pools[1]: unknown pool "ghosts" (pools: p, q) (line 10)"#)
        expectProblem(found, #"conflicts.resolvers[2]: unknown pool "nobody" (pools: p, q, or human) (line 12)"#)
        expectProblem(found, "pools.p.subscribe[1]: event type 'Bad' may only contain a-z, 0-9 and _ (line 14)")
        expectProblem(found, "nodes[5].ports.metrics: port 7030 on 127.0.0.1 is already used by nodes[4].ports.pub (line 8)")
        #expect(found.count == 10, "\(found.joined(separator: "\n"))")
    }

    @Test func namesAddressesAndTypes() {
        let found = problems("""
            version: 1
            cluster: "my cluster"
            settings: { heartbeat_ms: fast, ask_retries: 1000, tiemout: 3 }
            coordinator: { name: coordinator, host: 127.0.0.1, bind: somewhere, ports: { pub: 7100, rep: 7101 } }
            nodes:
              - { name: "bad name", pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 } }
              - { name: b, pool: coordinator, host: "-bad-.example", ports: [7002, 7003] }
              - { name: c, pool: "p/q", host: { ip: 1 }, ports: { pub: 7004 } }
              - { name: d, pool: p, host: 127.0.0.1, ports: { pub: 0, rep: 7006, port: 1, metrics: 99999 } }
              - "just text"
            pools:
              p: { subscribe: everything }
              ghosts: { subscribe: all }
            gates:
              - { name: g1, pools: [p], require_events: [_hb], deadline_s: -5, every_node: maybe }
              - { name: g1, pools: [] }
              - { pools: [p] }
              - { name: g2 }
            conflicts: { resolvers: human, escalate_after_s: soon }
            """)
        expectProblem(found, #"cluster: name "my cluster" may only contain"#)
        expectProblem(found, #"settings.heartbeat_ms: wrong type: expected an integer, got "fast""#)
        expectProblem(found, "settings.ask_retries: 1000 is outside 0-100")
        expectProblem(found, #"settings.tiemout: unknown key "tiemout" (allowed: heartbeat_ms, ask_timeout_ms, ask_retries, max_message_bytes, security, keys_file, http_token_file, coordinator_failover_ms)"#)
        expectProblem(found, #"coordinator.bind: bad address "somewhere": expected * or an IP address"#)
        expectProblem(found, #"nodes[0].name: name "bad name" may only contain"#)
        expectProblem(found, #"nodes[1].pool: the pool name "coordinator" is reserved"#)
        expectProblem(found, #"nodes[1].host: bad address "-bad-.example""#)
        expectProblem(found, "nodes[1].ports: wrong type: expected a mapping (key: value), got a list")
        expectProblem(found, #"nodes[2].pool: name "p/q" may only contain"#)
        expectProblem(found, "nodes[2].host: wrong type: expected text, got a mapping")
        expectProblem(found, "nodes[2].ports.rep: missing required key (line 8)")
        expectProblem(found, "nodes[3].ports.pub: 0 is outside 1-65535")
        expectProblem(found, #"nodes[3].ports.port: unknown key "port" (allowed: pub, rep, replay, metrics)"#)
        expectProblem(found, "nodes[3].ports.metrics: 99999 is outside 1-65535")
        expectProblem(found, "nodes[4]: wrong type: expected a mapping (key: value), got a value (line 10)")
        expectProblem(found, #"pools.p.subscribe: expected a list of event types or "all", got "everything""#)
        expectProblem(found, #"pools.ghosts: unknown pool "ghosts" (allowed: coordinator, p)"#)
        expectProblem(found, "gates[0].require_events[0]: event type '_hb' starts with _, which is reserved")
        expectProblem(found, #"gates[0].deadline_s: expected a positive number of seconds, got "-5""#)
        expectProblem(found, #"gates[0].every_node: expected true or false, got "maybe""#)
        expectProblem(found, #"gates[1].name: duplicate gate "g1" (first at gates[0])"#)
        expectProblem(found, "gates[1].pools: a gate needs at least one pool")
        expectProblem(found, "gates[2].name: missing required key (line 17)")
        #expect(!found.contains { $0.contains("unknown pool \"p\"") }, "a node with a bad port still declares its pool")
        expectProblem(found, "gates[3].pools: missing required key")
        expectProblem(found, "conflicts.resolvers: wrong type: expected a list, got a value")
        expectProblem(found, #"conflicts.escalate_after_s: expected a positive number of seconds, got "soon""#)
    }

    @Test func sharedDataFolderOnOneHost() {
        let found = problems("""
            version: 1
            nodes:
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 }, data: shared }
              - { name: b, pool: p, host: 127.0.0.1, ports: { pub: 7002, rep: 7003 }, data: shared }
              - { name: c, pool: p, host: 10.0.0.2, ports: { pub: 7000, rep: 7001 }, data: shared }
            """)
        #expect(found == [#"nodes[1].data: data folder "shared" on 127.0.0.1 is already used by nodes[0] (line 4)"#])
    }

    @Test func structuralProblems() {
        #expect(problems("version: 2\nnodes: []").contains("version: unsupported version 2 (this release reads version 1) (line 1)"))
        #expect(problems("version: 1\nnodes: []").contains("nodes: no nodes: at least one is needed (line 2)"))
        #expect(problems("version: 1\nnodes: {a: 1}") == ["nodes: wrong type: expected a list of nodes, got a mapping (line 2)"])
        #expect(problems("version: 1") == ["nodes: missing required key"])
        #expect(problems("- 1\n- 2") == ["(top level): wrong type: expected a mapping (key: value), got a list (line 1)"])
        #expect(problems("") == ["(file): the file is empty"])
        let invalid = problems("version: 1\nnodes:\n  - [ {name: a\n")
        #expect(invalid.count == 1 && invalid[0].hasPrefix("(yaml): invalid YAML: ") && invalid[0].hasSuffix("(line 4)"), "\(invalid)")
        let duplicateKey = problems("version: 1\nversion: 1\nnodes: []")
        #expect(duplicateKey.count == 1 && duplicateKey[0].contains(#"duplicate key "version""#), "\(duplicateKey)")
        expectProblem(problems("nodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}"), "version: missing required key")
        expectProblem(problems("version: 1\nnodes:\n  - {name: a, host: h, ports: {pub: 1, rep: 2}}"), "nodes[0].pool: missing required key")
        expectProblem(problems("version: 1\nnodes:\n  - {name: a, pool: p, host: h}"), "nodes[0].ports: missing required key")
        expectProblem(problems("version: one\nnodes: []"), #"version: wrong type: expected an integer, got "one""#)
        expectProblem(problems("version: 1\nnodez: []\nnodes: []"), #"nodez: unknown key "nodez" (allowed: version, cluster, settings, coordinator, nodes, pools, gates, conflicts, custom_types) (line 2)"#)
        expectProblem(problems("version: 1\ncustom_types: [plan_ready, Bad]\nnodes: []"), "custom_types[0]: plan_ready is a standard type; list only types outside the catalog")
        expectProblem(problems("version: 1\ncustom_types: [plan_ready, Bad]\nnodes: []"), "custom_types[1]: event type 'Bad' may only contain a-z, 0-9 and _")
    }

    /// Paths in a topology are relative to its folder, whatever the working directory.
    @Test func pathsAreRelativeToTheTopologyFile() throws {
        let dir = NSTemporaryDirectory() + "topo-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: dir + "/conf", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
            version: 1
            settings: {keys_file: keys.yaml, security: none}
            nodes:
              - {name: a, pool: p, host: 127.0.0.1, ports: {pub: 1, rep: 2}, data: ../data/a, workspace: ws/a}
              - {name: b, pool: p, host: 127.0.0.1, ports: {pub: 3, rep: 4}}
              - {name: c, pool: p, host: 127.0.0.1, ports: {pub: 5, rep: 6}, data: /var/ce/c}
            """.write(toFile: dir + "/conf/t.yaml", atomically: true, encoding: .utf8)
        // Not the working directory's: the file's folder (the paths come out absolute, so no
        // later change of directory moves them).
        let topology = try TopologyLoader.load(path: dir + "/conf/../conf/t.yaml")
        let base = URL(fileURLWithPath: dir).standardizedFileURL.resolvingSymlinksInPath().path
        func real(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path }
        #expect(real(topology.node(named: "a")!.data) == base + "/data/a")
        #expect(real(topology.node(named: "a")!.workspace!) == base + "/conf/ws/a")
        #expect(real(topology.node(named: "b")!.data) == base + "/conf/.ce-data/b")
        #expect(topology.node(named: "c")!.data == "/var/ce/c")
        #expect(real(topology.settings.keysFile!) == base + "/conf/keys.yaml")
        #expect(topology.node(named: "a")!.data.hasPrefix("/"), "absolute once loaded")
    }

    @Test func knownTypesAreTheCatalogTheCustomTypesAndWhatTheFileNames() throws {
        let topology = try TopologyLoader.parse(yaml: """
            version: 1
            custom_types: [schema_v1]
            nodes:
              - {name: a, pool: p, host: 127.0.0.1, ports: {pub: 1, rep: 2}}
            pools:
              p: {subscribe: [lint_report]}
            gates:
              - {name: g, pools: [p], require_events: [security_clear]}
            """)
        let names = Set(topology.knownTypes.map(\.rawValue))
        #expect(names.isSuperset(of: ["plan_ready", "schema_v1", "lint_report", "security_clear"]))
        #expect(!names.contains("early_feedback"))
        let admission = Admission(topology: topology, busTypes: [])
        #expect(throws: AdmissionError.self) { try admission.check(type: EventType(validating: "schema_v2"), allowCustom: false) }
        #expect(Admission.nearest("schema_v2", among: names) == "schema_v1")
        #expect(Admission.nearest("zzzzzzzz", among: names) == nil)
        try admission.check(type: EventType(validating: "schema_v2"), allowCustom: true)
    }

    @Test func missingAndUnreadableFiles() throws {
        do {
            _ = try TopologyLoader.load(path: "/nonexistent/t.yaml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description == "/nonexistent/t.yaml: (file): file not found")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ce-topology-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.yaml").path
        try Data([0x76, 0x3A, 0xFF, 0xFE]).write(to: URL(fileURLWithPath: path))
        #expect(throws: TopologyError.self) { try TopologyLoader.load(path: path) }
        let good = dir.appendingPathComponent("good.yaml").path
        try Data("version: 1\nnodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}\n".utf8).write(to: URL(fileURLWithPath: good))
        #expect(try TopologyLoader.load(path: good).file == good)
    }

    // MARK: Security settings and keys

    static let keyA = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    static let keyB = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"

    @Test func aStandbyCoordinatorAndTheFailoverTime() throws {
        let yaml = """
            version: 1
            settings: { heartbeat_ms: 200, coordinator_failover_ms: 2000 }
            coordinator:
              name: coord-a
              host: 10.0.0.1
              ports: { pub: 7100, rep: 7101 }
              standby: { name: coord-b, host: 10.0.0.2, ports: { pub: 7100, rep: 7101 } }
            nodes:
              - { name: planner-1, pool: planner, host: 10.0.0.3, ports: { pub: 7110, rep: 7111 } }
            """
        let t = try TopologyLoader.parse(yaml: yaml)
        #expect(t.coordinators.map(\.name) == ["coord-a", "coord-b"])
        #expect(t.coordinator?.name == "coord-a" && t.standby?.name == "coord-b")
        #expect(t.standby?.pool == "coordinator" && t.standby?.isCoordinator == true)
        #expect(t.poolNodes.map(\.name) == ["planner-1"])
        #expect(t.settings.coordinatorFailoverMilliseconds == 2000)
        // The default: 5 s, or three heartbeats when they are longer.
        #expect(try TopologyLoader.parse(yaml: "version: 1\nnodes: [{ name: a, pool: p, host: h, ports: { pub: 1, rep: 2 } }]").settings.coordinatorFailoverMilliseconds == 5000)
        #expect(try TopologyLoader.parse(yaml: "version: 1\nsettings: { heartbeat_ms: 4000 }\nnodes: [{ name: a, pool: p, host: h, ports: { pub: 1, rep: 2 } }]").settings.coordinatorFailoverMilliseconds == 12000)
        // Shorter than three heartbeats, a standby of a standby, two nodes of one name.
        expectProblem(problems(yaml.replacingOccurrences(of: "coordinator_failover_ms: 2000", with: "coordinator_failover_ms: 500")),
                      "settings.coordinator_failover_ms: 500 ms is shorter than three heartbeats")
        expectProblem(problems(yaml.replacingOccurrences(of: "ports: { pub: 7100, rep: 7101 } }", with: "ports: { pub: 7100, rep: 7101 }, standby: {} }")),
                      "coordinator.standby.standby")
        expectProblem(problems(yaml.replacingOccurrences(of: "name: coord-b", with: "name: coord-a")), "coordinator.standby.name")
        #expect(problems(yaml.replacingOccurrences(of: "coordinator_failover_ms: 2000", with: "coordinator_failover_ms: 0")) == ["(valid)"])
    }

    @Test func securityIsCurveByDefaultAndNoneOnlyWhenSaid() throws {
        let base = "nodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}\n"
        #expect(try TopologyLoader.parse(yaml: "version: 1\n" + base).settings.security == .curve)
        #expect(try TopologyLoader.parse(yaml: "version: 1\nsettings: {security: none}\n" + base).settings.security == .none)
        expectProblem(problems("version: 1\nsettings: {security: off}\n" + base), #"settings.security: expected curve or none, got "off""#)
        // Without keys the file still loads (keys are made after it is written); nodes say which are missing.
        #expect(try TopologyLoader.parse(yaml: "version: 1\n" + base).nodesWithoutKeys == ["a"])
    }

    @Test func publicKeysInTheTopologyAndTheirProblems() throws {
        let t = try TopologyLoader.parse(yaml: """
            version: 1
            nodes:
              - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}, public_key: "\(Self.keyA)"}
              - {name: b, pool: p, host: h, ports: {pub: 3, rep: 4}, public_key: "\(Self.keyB)"}
            """)
        #expect(t.node(named: "a")?.publicKey == Self.keyA)
        #expect(t.node(withPublicKey: Self.keyB)?.name == "b")
        #expect(t.nodesWithoutKeys.isEmpty)
        let secretLike = "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6"
        let short = problems("version: 1\nnodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}, public_key: abc}")
        expectProblem(short, #"nodes[0].public_key: node "a": a CURVE public key is 40 Z85 characters, this one has 3"#)
        let badChar = problems("version: 1\nnodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}, public_key: \"\(String(secretLike.dropLast()))~\"}")
        expectProblem(badChar, #"nodes[0].public_key: node "a": character 40 of the key is not in the Z85 alphabet"#)
        // The offending value is never repeated (it might be a secret pasted by mistake).
        #expect(!badChar.joined().contains(String(secretLike.prefix(20))))
        let overflow = problems("version: 1\nnodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}, public_key: \"\(String(repeating: "#", count: 40))\"}")
        expectProblem(overflow, #"nodes[0].public_key: node "a": the key is not valid Z85"#)
        let shared = problems("""
            version: 1
            nodes:
              - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}, public_key: "\(Self.keyA)"}
              - {name: b, pool: p, host: h, ports: {pub: 3, rep: 4}, public_key: "\(Self.keyA)"}
            """)
        expectProblem(shared, #"nodes[1].public_key: node "b" has the same public key as "a""#)
    }

    @Test func aKeysFileNextToTheTopology() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ce-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let topology = dir + "/sub/t.yaml"
        func write(_ keys: String?) throws {
            try """
                version: 1
                settings: { keys_file: ../keys.yaml }
                nodes:
                  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}
                  - {name: b, pool: p, host: h, ports: {pub: 3, rep: 4}, public_key: "\(Self.keyB)"}
                """.write(toFile: topology, atomically: true, encoding: .utf8)
            try? FileManager.default.removeItem(atPath: dir + "/keys.yaml")
            if let keys { try keys.write(toFile: dir + "/keys.yaml", atomically: true, encoding: .utf8) }
        }
        // Not made yet: the topology loads, and says the file was not found.
        try write(nil)
        var t = try TopologyLoader.load(path: topology)
        #expect(t.settings.keysFile == dir + "/sub/../keys.yaml")
        #expect(t.settings.keysFileFound == false)
        #expect(t.nodesWithoutKeys == ["a"])
        try write("a: \"\(Self.keyA)\"\nb: \"\(Self.keyB)\"\n")
        t = try TopologyLoader.load(path: topology)
        #expect(t.settings.keysFileFound && t.nodesWithoutKeys.isEmpty && t.node(named: "a")?.publicKey == Self.keyA)
        func loadProblems() -> [String] {
            do {
                _ = try TopologyLoader.load(path: topology)
                return []
            } catch { return error.problems.map(\.description) }
        }
        try write("a: \"\(Self.keyA.dropLast())\"\n")
        expectProblem(loadProblems(), #"settings.keys_file: keys.yaml line 1: node "a": public key: a CURVE public key is 40 Z85 characters, this one has 39"#)
        try write("c: \"\(Self.keyA)\"\n")
        expectProblem(loadProblems(), #"settings.keys_file: keys.yaml line 1: unknown node "c" (nodes: a, b; "<node>.next" names a node's next key)"#)
        try write("b: \"\(Self.keyA)\"\n")
        expectProblem(loadProblems(), #"settings.keys_file: keys.yaml line 1: node "b": public key differs from its public_key in the topology"#)
        try write("- a\n")
        expectProblem(loadProblems(), "settings.keys_file: keys.yaml line 1: expected a mapping of node names to public keys")
    }
}
