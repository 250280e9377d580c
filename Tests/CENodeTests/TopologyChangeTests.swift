import CECore
@testable import CENode
import Foundation
import Testing

/// What a reload changes for one node, worked out from the two files, without sockets.
@Suite("Topology change")
struct TopologyChangeTests {
    static let base = """
        version: 1
        settings: { security: none, heartbeat_ms: 200 }
        coordinator: { name: coord, host: 10.0.0.1, ports: { pub: 7000, rep: 7001 } }
        nodes:
          - { name: planner-1, pool: planner, host: 10.0.0.2, ports: { pub: 7000, rep: 7001 } }
          - { name: builder-1, pool: builder, host: 10.0.0.3, ports: { pub: 7000, rep: 7001 } }
          - { name: builder-2, pool: builder, host: 10.0.0.4, ports: { pub: 7000, rep: 7001 } }
        pools:
          planner: { subscribe: [build_ready] }
        gates:
          - { name: release, pools: [planner, builder] }
        """

    func change(_ edit: (String) -> String, node: String = "planner-1") throws -> TopologyChange {
        let old = try TopologyLoader.parse(yaml: Self.base)
        let new = try TopologyLoader.parse(yaml: edit(Self.base))
        return TopologyChange(from: old, to: new, node: node)
    }

    @Test func aJoiningHostARemovedOneAndAMovedOne() throws {
        let c = try change {
            $0.replacingOccurrences(of: "  - { name: builder-2, pool: builder, host: 10.0.0.4, ports: { pub: 7000, rep: 7001 } }\n",
                                    with: "  - { name: tester-1, pool: tester, host: 10.0.0.5, ports: { pub: 7000, rep: 7001 } }\n")
                .replacingOccurrences(of: "name: builder-1, pool: builder, host: 10.0.0.3", with: "name: builder-1, pool: builder, host: 10.0.0.6")
                .replacingOccurrences(of: "pools: [planner, builder] }", with: "pools: [planner, builder, tester] }")
        }
        #expect(c.refusals.isEmpty)
        #expect(c.added.map(\.name) == ["tester-1"])
        #expect(c.removed.map(\.name) == ["builder-2"])
        #expect(c.redialled.map(\.name) == ["builder-1"])
        #expect(c.subscriptions == nil)
        #expect(c.lines.contains { $0.hasPrefix("node tester-1 (pool tester, tcp://10.0.0.5:7000) added") })
        #expect(c.lines.contains { $0.hasPrefix("gates changed") })
    }

    @Test func aSubscriptionListThatGrows() throws {
        let c = try change { $0.replacingOccurrences(of: "subscribe: [build_ready]", with: "subscribe: [build_ready, build_log]") }
        #expect(c.refusals.isEmpty)
        let (before, after) = try #require(c.subscriptions)
        #expect(before?.contains(try EventType(validating: "build_log")) == false)
        #expect(after?.contains(try EventType(validating: "build_log")) == true)
        // Another node's pool is not this node's subscription.
        #expect(try change({ $0.replacingOccurrences(of: "subscribe: [build_ready]", with: "subscribe: all") }, node: "builder-1").subscriptions == nil)
    }

    @Test func whatNeedsARestartIsRefusedWithEveryReason() throws {
        let c = try change {
            $0.replacingOccurrences(of: "name: planner-1, pool: planner, host: 10.0.0.2, ports: { pub: 7000", with: "name: planner-1, pool: planner, host: 10.0.0.2, ports: { pub: 7100")
                .replacingOccurrences(of: "heartbeat_ms: 200", with: "heartbeat_ms: 300")
                .replacingOccurrences(of: "name: coord,", with: "name: coord-2,")
        }
        #expect(c.refusals.count == 3)
        #expect(c.refusals.contains("planner-1's own ports changed: restart this node to take it"))
        #expect(c.refusals.contains { $0.hasPrefix("settings changed") })
        #expect(c.refusals.contains { $0.hasPrefix("the coordinators changed") })
        let gone = try change({ $0.replacingOccurrences(of: "  - { name: builder-2, pool: builder, host: 10.0.0.4, ports: { pub: 7000, rep: 7001 } }\n", with: "") }, node: "builder-2")
        #expect(gone.refusals == ["this node, builder-2, is not in the new file: stop it instead"])
    }

    @Test func theDigestTellsFilesApartAndIgnoresNothing() throws {
        let a = try TopologyLoader.parse(yaml: Self.base)
        #expect(a.digest.count == 16)
        #expect(try TopologyLoader.parse(yaml: Self.base).digest == a.digest)
        #expect(try TopologyLoader.parse(yaml: Self.base + "\n# a comment").digest != a.digest)
    }
}
