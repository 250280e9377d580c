import CECluster
import CECore
@testable import CENode
import Foundation
import Synchronization
import Testing
import ZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// When a node dials a peer again: the redialer driven with made-up instants (storms of
/// drops, a server that fails every handshake, one that comes back), the SUB's own libzmq
/// back-off, and a real `ce-node` whose peer's port is held by a server with another key.
@Suite("Re-dialling peers")
struct RedialTests {
    static let a = "tcp://10.0.0.1:7000"
    static let b = "tcp://10.0.0.2:7000"

    /// Plays the node's part: events and the looks the redialer asks for, in time order.
    /// `answer` gives the events a dial brings (10 ms after it); none by default (a peer gone
    /// for good: a dial leaves the endpoint as silent as before).
    struct Driver {
        var redialer = Redialer(seed: 42)
        var answer: (String) -> [(MonitorEvent.Kind, UInt32)] = { _ in [] }
        var clock = ContinuousClock.now
        var looks: [(endpoint: String, at: ContinuousClock.Instant)] = []
        var arrivals: [(kind: MonitorEvent.Kind, endpoint: String, value: UInt32, at: ContinuousClock.Instant)] = []
        var dials: [(endpoint: String, at: ContinuousClock.Instant)] = []
        var notices: [Redialer.Notice] = []
        /// The most looks pending for one endpoint at any moment.
        var mostPending = 0

        init(answer: @escaping (String) -> [(MonitorEvent.Kind, UInt32)] = { _ in [] }) {
            self.answer = answer
            clock = ContinuousClock.now
        }

        func at(_ seconds: Double) -> ContinuousClock.Instant { clock + .seconds(seconds) }

        /// An event `seconds` after the start, once everything before it has run.
        mutating func event(_ kind: MonitorEvent.Kind, _ endpoint: String, value: UInt32 = 0, at seconds: Double) {
            arrivals.append((kind, endpoint, value, at(seconds)))
            run(until: seconds)
        }

        /// Runs every event and look due up to `seconds` after the start.
        mutating func run(until seconds: Double) {
            let end = at(seconds)
            while true {
                let look = looks.indices.min { looks[$0].at < looks[$1].at }
                let arrival = arrivals.indices.min { arrivals[$0].at < arrivals[$1].at }
                if let arrival, arrivals[arrival].at <= end, look.map({ arrivals[arrival].at <= looks[$0].at }) ?? true {
                    let e = arrivals.remove(at: arrival)
                    apply(redialer.handle(e.kind, endpoint: e.endpoint, value: e.value, now: e.at), now: e.at)
                } else if let look, looks[look].at <= end {
                    let l = looks.remove(at: look)
                    apply(redialer.due(l.endpoint, now: l.at), now: l.at)
                } else {
                    return
                }
            }
        }

        mutating func apply(_ directives: [Redialer.Directive], now: ContinuousClock.Instant) {
            for directive in directives {
                switch directive {
                case .dial(let endpoint):
                    dials.append((endpoint, now))
                    for (kind, value) in answer(endpoint) { arrivals.append((kind, endpoint, value, now + .milliseconds(10))) }
                case .wake(let endpoint, let at):
                    #expect(at > now)
                    looks.append((endpoint, at))
                    mostPending = max(mostPending, looks.count(where: { $0.endpoint == endpoint }))
                case .notice(let notice):
                    notices.append(notice)
                }
            }
        }

        func dialTimes(_ endpoint: String) -> [Double] {
            dials.filter { $0.endpoint == endpoint }.map { seconds($0.at - clock) }
        }
    }

    @Test func aStormOfDropsLeavesOneLookPerEndpointAndTheDialsBackOff() {
        var driver = Driver()
        // 1,000 drops within a second, over two endpoints; then nothing comes back.
        for i in 0..<1000 { driver.event(.disconnected, i % 2 == 0 ? Self.a : Self.b, at: Double(i) / 1000) }
        #expect(driver.dials.isEmpty, "nothing is dialled while drops still come")
        driver.run(until: 60)
        #expect(driver.mostPending == 1)
        #expect(driver.redialer.pending == 2)
        for endpoint in [Self.a, Self.b] {
            let times = driver.dialTimes(endpoint)
            // First look at 0.8-1 s, then 1.6-2 s after the last drop (it must be quiet 0.5 s).
            #expect(times.count >= 12 && times.count <= 17, "\(times)")
            #expect(times.first.map { $0 > 1.4 && $0 <= 2.01 } == true, "\(times)")
            // Each wait is the nominal one, shortened by at most a fifth: 2, 4, then 5 s.
            for (n, (t0, t1)) in zip(times, times.dropFirst()).enumerated() {
                let nominal = seconds(driver.redialer.nominalWait(afterDials: n + 1))
                #expect(t1 - t0 > nominal * 0.8 - 1e-9 && t1 - t0 <= nominal + 1e-9, "wait \(n + 1): \(t1 - t0) s, nominal \(nominal) s")
            }
        }
        #expect(driver.notices == [.diallingAgain(Self.a), .diallingAgain(Self.b)], "said once per endpoint, not per dial")
    }

    @Test func waitsDoubleFromOneSecondAndStopAtTheCap() {
        let redialer = Redialer(seed: 1)
        #expect((0..<6).map { redialer.nominalWait(afterDials: $0) } == [1, 2, 4, 5, 5, 5].map { Duration.seconds($0) })
        #expect(redialer.nominalWait(afterDials: 10_000) == .seconds(5))
    }

    @Test func aHandshakeThatSucceedsStartsTheWaitsOverAndAConnectionAloneDoesNot() {
        var driver = Driver()
        driver.event(.disconnected, Self.a, at: 0)
        driver.run(until: 20)
        #expect(driver.dialTimes(Self.a).count >= 4)
        // A TCP connection whose handshake fails (a server with another key) is no recovery.
        driver.event(.connected, Self.a, at: 20.1)
        driver.event(.handshakeFailedNoDetail, Self.a, value: 104, at: 20.11)
        driver.event(.disconnected, Self.a, at: 20.12)
        driver.run(until: 26)
        let times = driver.dialTimes(Self.a)
        let gaps = zip(times, times.dropFirst()).filter { $0.1 > 20.1 }.map { $0.1 - $0.0 }
        #expect(!gaps.isEmpty && gaps.allSatisfy { $0 > 3.9 }, "still at the cap: \(times)")
        // A handshake that succeeds: the next outage starts at one second again.
        driver.event(.connected, Self.a, at: 30)
        driver.event(.handshakeSucceeded, Self.a, at: 30.01)
        #expect(driver.notices.last == .restored(Self.a))
        driver.run(until: 40)
        #expect(driver.dialTimes(Self.a).allSatisfy { $0 < 30 }, "no dial while it is up")
        driver.event(.disconnected, Self.a, at: 40)
        driver.run(until: 42.2)
        let first = driver.dialTimes(Self.a).filter { $0 > 40 }
        #expect(first.count == 1 && first[0] <= 41, "\(first)")
    }

    /// A server with another key: libzmq connects, the handshake fails, it reconnects by
    /// itself every 100-200 ms. The node dials nothing of its own and says so once.
    @Test func whileLibzmqKeepsTryingNothingIsDialledAndTheFailureIsSaidOnce() {
        var driver = Driver()
        var t = 0.0
        while t < 30 {
            driver.event(.connected, Self.a, at: t)
            driver.event(.handshakeFailedNoDetail, Self.a, value: 104, at: t + 0.002)
            driver.event(.disconnected, Self.a, at: t + 0.003)
            driver.event(.connectRetried, Self.a, value: 100, at: t + 0.004)
            t += 0.15
        }
        driver.run(until: 31)
        #expect(driver.dials.isEmpty)
        #expect(driver.mostPending == 1)
        #expect(driver.notices == [.handshakeFails(Self.a, .handshakeFailedNoDetail, value: 104)])
    }

    /// A server that ends every handshake with a protocol error (libzmq gives up each time),
    /// then the right one, then the wrong one again: one line per change, not per attempt,
    /// also when one attempt reports two kinds of failure.
    @Test func noticesComeOncePerChangeNotPerAttempt() {
        final class Server { var good = false }
        let server = Server()
        var driver = Driver { _ in
            server.good
                ? [(.connected, 0), (.handshakeSucceeded, 0)]
                : [(.connected, 0), (.handshakeFailedNoDetail, 32), (.handshakeFailedProtocol, 0x1100_0002), (.disconnected, 0)]
        }
        driver.event(.connected, Self.a, at: 0)
        driver.event(.handshakeFailedProtocol, Self.a, value: 0x1100_0002, at: 0.01)
        driver.event(.disconnected, Self.a, at: 0.02)
        driver.run(until: 60)
        #expect(driver.dialTimes(Self.a).count >= 10)
        #expect(driver.notices == [
            .handshakeFails(Self.a, .handshakeFailedProtocol, value: 0x1100_0002), .diallingAgain(Self.a),
            .handshakeFails(Self.a, .handshakeFailedNoDetail, value: 32),
        ])
        server.good = true
        driver.run(until: 70)
        #expect(driver.notices.last == .restored(Self.a))
        let dials = driver.dials.count
        driver.run(until: 100)
        #expect(driver.dials.count == dials, "no dial while it is up")
        // Wrong again, and refused by ZAP this time: said again, once.
        server.good = false
        driver.event(.handshakeFailedAuth, Self.a, value: 400, at: 100)
        driver.event(.disconnected, Self.a, at: 100.01)
        driver.run(until: 160)
        #expect(Array(driver.notices.suffix(4)) == [
            .handshakeFails(Self.a, .handshakeFailedAuth, value: 400), .diallingAgain(Self.a),
            .handshakeFails(Self.a, .handshakeFailedNoDetail, value: 32),
            .handshakeFails(Self.a, .handshakeFailedProtocol, value: 0x1100_0002),
        ])
        #expect(driver.notices.count == 8)
    }

    /// libzmq's own reconnects back off too (ZMQ_RECONNECT_IVL_MAX), below the redialer's cap.
    @Test func aNodesSubscribersBackOffInLibzmqToo() async throws {
        let cluster = try await Cluster.make(
            [.init(name: "builder-1", pool: "builder"), .init(name: "planner-1", pool: "planner")], pools: "",
            settings: "security: none\n  heartbeat_ms: 200")
        let node = try Node(options: try Node.Options(topology: cluster.topology, name: "builder-1"))
        let running = Task { try await node.run() }
        var failure: (any Error)?
        do {
            try await eventually(10, "builder-1 subscribes to planner-1") { node.links.socket(of: "planner-1") != nil }
            let sub = node.links.socket(of: "planner-1")!
            let first = try sub.integerOption(.reconnectInterval(milliseconds: 0))
            let most = try sub.integerOption(.reconnectIntervalMax(milliseconds: 0))
            #expect(first > 0 && most > first, "reconnects every \(first) ms, backing off to \(most) ms")
            #expect(Duration.milliseconds(most) <= Redialer.Settings().cap)
        } catch { failure = error }
        running.cancel()
        _ = try? await running.value
        await cluster.tearDown()
        if let failure { throw failure }
    }

    enum Impostor: String, CaseIterable, Sendable {
        /// A CURVE server with a stranger's key: the server closes each connection at the
        /// client's HELLO, and libzmq reconnects by itself.
        case anotherKey
        /// A server without CURVE: a protocol error at each greeting, after which libzmq does
        /// not reconnect (the node dials).
        case noCurve
    }

    /// The peer's pub port is held by a server of the wrong kind: every handshake fails. Over
    /// the window the node keeps its log, its CPU and its descriptors small.
    @Test(arguments: Impostor.allCases)
    func aPeerPortHeldByTheWrongServerCostsLittle(_ impostor: Impostor) async throws {
        let window = 30.0
        try await withCluster(
            [.init(name: "builder-1", pool: "builder"), .init(name: "planner-1", pool: "planner")], start: ["builder-1"]) { cluster in
            let context = try cluster.rawContext()
            do {
                let pub = try context.socket(.pub)
                try pub.set(.linger(milliseconds: 0))
                if impostor == .anotherKey {
                    let stranger = try CurveKeyPair.generate()
                    try pub.set([.curveServer(true), .curvePublicKey(stranger.publicKey), .curveSecretKey(stranger.secretKey)])
                }
                let failures = Atomic<Int>(0)
                let events = try pub.monitor([.handshakeFailedNoDetail, .handshakeFailedProtocol, .handshakeFailedAuth])
                let counting = Task { for try await _ in events { failures.add(1, ordering: .relaxed) } }
                defer { counting.cancel() }
                let planner = cluster.topology.node(named: "planner-1")!
                try pub.bind(planner.bindPubEndpoint)
                try await eventually(15, "builder-1 tries the server with the stranger's key") { failures.load(ordering: .relaxed) > 0 }

                let pid = cluster.processes["builder-1"]!.processIdentifier
                let cpuBefore = try cpuSeconds(pid)
                let failuresBefore = failures.load(ordering: .relaxed)
                // The observation window itself: what the node does when left alone with it.
                try await Task.sleep(for: .seconds(window))
                let cpu = try cpuSeconds(pid) - cpuBefore
                let handshakes = failures.load(ordering: .relaxed) - failuresBefore
                let sockets = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
                let lines = cluster.log("builder-1").split(separator: "\n").filter { $0.contains("dialling again") || $0.contains("handshake with peer") }
                print("\(impostor): over \(window) s: \(lines.count) log lines, \(cpu) s of CPU, \(handshakes) failed handshakes, \(sockets) open descriptors")
                #expect(lines.count <= 30, "\(lines.count) lines of re-dials and failed handshakes, first: \(lines.prefix(3))")
                #expect(cpu < 3, "\(cpu) s of CPU over \(window) s")
                #expect(sockets < 200, "\(sockets) open descriptors")
                // libzmq's own reconnects (every 100-200 ms) and the node's dials, not a storm.
                #expect(handshakes <= Int(window) * 15, "\(handshakes) failed handshakes at the server")
                // Said, and said usefully: the endpoint and the key the node expects there.
                #expect(lines.contains { $0.contains(planner.pubEndpoint) && $0.contains(planner.publicKey!) }, "\(lines.prefix(3))")
                #expect(cluster.processes["builder-1"]!.isRunning)
            } catch {
                await context.shutdown()
                throw error
            }
            await context.shutdown()
        }
    }

    /// User plus system CPU time of a process so far, from /proc/PID/stat.
    func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        guard let close = stat.lastIndex(of: ")") else { throw TestFailure("unreadable /proc/\(pid)/stat") }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { throw TestFailure("unreadable /proc/\(pid)/stat") }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}

private func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
