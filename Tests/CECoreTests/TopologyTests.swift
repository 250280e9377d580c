import CECore
import Foundation
import Testing

@Suite("Topology files")
struct TopologyTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    @Test(arguments: ["demo.yaml", "multi-host.yaml"])
    func shippedTopologiesAreValid(file: String) throws {
        let topology = try TopologyLoader.load(path: Self.repo + "/topology/" + file)
        #expect(topology.coordinator?.name == "coordinator")
        #expect(topology.nodes(inPool: "builder").count == 2)
        #expect(topology.gates.contains { $0.name == "architecture_approval" && $0.pools == ["planner", "builder", "reviewer"] })
        #expect(topology.conflicts.resolvers == ["planner", "human"])
        #expect(topology.subscriptions(forPool: "reviewer") == nil)
        #expect(topology.subscriptions(forPool: "builder")?.contains(.planReady) == true)
    }

    @Test func endpointsAndDefaults() throws {
        let t = try TopologyLoader.parse(yaml: """
            version: 1
            nodes:
              - { name: a, pool: p, host: 10.0.0.1, ports: { pub: 7000, rep: 7001 } }
              - { name: b, pool: q, host: builder.local, ports: { pub: 7000, rep: 7001 } }
              - { name: c, pool: q, host: "::1", ports: { pub: 7002, rep: 7003, replay: 7004 } }
            """)
        let a = t.node(named: "a")!, b = t.node(named: "b")!, c = t.node(named: "c")!
        #expect(a.pubEndpoint == "tcp://10.0.0.1:7000" && a.bindPubEndpoint == "tcp://10.0.0.1:7000")
        #expect(b.bindRepEndpoint == "tcp://*:7001" && b.data == ".ce-data/b")
        #expect(c.pubEndpoint == "tcp://[::1]:7002" && c.replayEndpoint == "tcp://[::1]:7004")
        #expect(t.peers(of: "a").map(\.name) == ["b", "c"])
        #expect(t.settings.askRetries == 2)
    }

    func problems(_ yaml: String) -> String {
        do {
            _ = try TopologyLoader.parse(yaml: yaml, file: "t.yaml")
            return "(valid)"
        } catch { return error.description }
    }

    @Test func everyProblemIsNamedWithItsKey() {
        let text = problems("""
            version: 1
            nodes:
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 } }
              - { name: a, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7002 } }
              - { name: c, pool: q, host: 300.1.2.3, ports: { pub: 7010, rep: 7011 }, colour: red }
              - { name: d, pool: q, host: 127.0.0.1, ports: { pub: 7020, rep: 70000 } }
            gates:
              - { name: g, pools: [p, ghosts] }
            conflicts:
              resolvers: [p, human, nobody]
            pools:
              p: { subscribe: [plan_ready, Bad] }
            """)
        #expect(text.contains("t.yaml: nodes[1].name: duplicate node \"a\" (first at nodes[0])"), "\(text)")
        #expect(text.contains("nodes[3].ports.rep") && text.contains("70000 is outside 1-65535"), "\(text)")
        #expect(text.contains("nodes[1].ports.pub: port 7000 on 127.0.0.1 is already used by nodes[0].ports.pub"), "\(text)")
        #expect(text.contains("nodes[2].host") && text.contains("300.1.2.3"), "\(text)")
        #expect(text.contains("nodes[2].colour") && text.contains("unknown key"), "\(text)")
        #expect(text.contains("gates[0].pools[1]") && text.contains("unknown pool \"ghosts\""), "\(text)")
        #expect(text.contains("conflicts.resolvers[2]") && text.contains("\"nobody\""), "\(text)")
        #expect(text.contains("pools.p.subscribe[1]"), "\(text)")
    }

    @Test func structuralProblems() {
        #expect(problems("version: 2\nnodes: []").contains("unsupported version 2"))
        #expect(problems("version: 1\nnodes: []").contains("at least one node"))
        #expect(problems("version: 1").contains("nodes (line") || problems("version: 1").contains("nodes: missing required key"))
        #expect(problems("version: 1\nnodes: [ {name: a").contains("invalid YAML"))
        #expect(problems("nodes:\n  - {name: a, pool: p, host: h, ports: {pub: 1, rep: 2}}").contains("version: missing required key"))
        #expect(problems("version: 1\nnodes:\n  - {name: a, host: h, ports: {pub: 1, rep: 2}}").contains("nodes[0].pool: missing required key"))
        do {
            _ = try TopologyLoader.load(path: "/nonexistent/t.yaml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description.contains("/nonexistent/t.yaml") && error.description.contains("cannot read"))
        }
    }
}
