import CECore
@testable import CENode
import Foundation
import Testing

/// The replay loop's decisions, driven without sockets.
@Suite("Replay plan")
struct ReplayPlanTests {
    static let topology = try! TopologyLoader.parse(yaml: """
        version: 1
        nodes:
          - {name: o, pool: p, host: 127.0.0.1, ports: {pub: 7001, rep: 7002}}
          - {name: r1, pool: p, host: 127.0.0.1, ports: {pub: 7003, rep: 7004}}
          - {name: r2, pool: p, host: 127.0.0.1, ports: {pub: 7005, rep: 7006}}
        settings: {security: none}
        """)
    static func node(_ name: String) -> NodeSpec { topology.node(named: name)! }

    @Test func theOriginServesItsLineAndRelaysComeFirstWhileItIsDown() {
        let origin = Self.node("o"), relays = [Self.node("r1"), Self.node("r2")]
        #expect(ReplayPlan.sources(origin: origin, retired: false, originDown: false, relays: relays).map(\.name) == ["o", "r1", "r2"])
        #expect(ReplayPlan.sources(origin: origin, retired: false, originDown: true, relays: relays).map(\.name) == ["r1", "r2", "o"])
        #expect(ReplayPlan.sources(origin: origin, retired: true, originDown: false, relays: relays).map(\.name) == ["r1", "r2"])
        #expect(ReplayPlan.sources(origin: nil, retired: false, originDown: true, relays: relays).map(\.name) == ["r1", "r2"])
    }

    @Test func failuresBackOffToTwoSecondsAndAPageResets() {
        var plan = ReplayPlan(askTimeoutMilliseconds: 500)
        #expect(plan.timeout == .seconds(1), "until a source answered: the ask timeout, at least a second")
        var waits: [Duration] = []
        var logged: [Int] = []
        for n in 1...25 {
            guard case .retry(let wait, let log) = plan.failed(unreachable: 1, originServes: true, originUp: false) else {
                Issue.record("round \(n) did not retry")
                return
            }
            waits.append(wait)
            if log { logged.append(n) }
        }
        #expect(Array(waits.prefix(6)) == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .seconds(2)])
        #expect(waits.allSatisfy { $0 <= .seconds(2) })
        #expect(logged == [1, 20], "said at the first failure and every twentieth")
        plan.gotPage()
        #expect(plan.failures == 0 && plan.timeout == .seconds(5), "pages flow: a page may take longer")
        #expect(plan.failed(unreachable: 1, originServes: true, originUp: false) == .retry(after: .milliseconds(100), log: true))
    }

    @Test func anAliveOriginThatNeverAnswersHasItsEventsTakenAfterFiveRounds() {
        var plan = ReplayPlan(askTimeoutMilliseconds: 5000)
        for _ in 1..<ReplayPlan.aliveButSilentRounds {
            #expect(plan.failed(unreachable: 1, originServes: true, originUp: true) != .takeAsTheyCame)
        }
        #expect(plan.failed(unreachable: 1, originServes: true, originUp: true) == .takeAsTheyCame)
        // A down origin is waited for, however long.
        var down = ReplayPlan(askTimeoutMilliseconds: 5000)
        for _ in 1...100 { #expect(down.failed(unreachable: 1, originServes: true, originUp: false) != .takeAsTheyCame) }
    }

    @Test func anOlderLineEndsWhenNoPeerHasMoreOrAfterAMinuteOfFailures() {
        var plan = ReplayPlan(askTimeoutMilliseconds: 5000)
        #expect(plan.failed(unreachable: 0, originServes: false, originUp: false) == .end, "every peer answered with nothing more")
        var failing = ReplayPlan(askTimeoutMilliseconds: 5000)
        for _ in 1..<ReplayPlan.olderLineRounds {
            #expect(failing.failed(unreachable: 2, originServes: false, originUp: false) != .end)
        }
        #expect(failing.failed(unreachable: 2, originServes: false, originUp: false) == .end)
    }
}
