import Foundation
import Synchronization
import Testing
import ZeroMQ

@Suite("Every pattern over every transport")
struct PatternTests {
    @Test(arguments: Transport.allCases)
    func publishSubscribeWithPrefixFilter(transport: Transport) async throws {
        let context = try Context()
        let pub = try context.socket(.pub)
        let sub = try context.socket(.sub)
        try sub.set(.subscribe(Array("plan_ready/".utf8)))
        try link(pub, sub, over: transport)
        // Slow joiner: publish a probe until the subscription has arrived.
        let received = try await within(5, "first subscribed message") {
            while true {
                try Task.checkCancellation()
                try await pub.send(Frame("plan_ready/planner"), Frame("probe"))
                if let m = try? await sub.receive(timeout: .milliseconds(50)) { return m }
            }
        }
        #expect(received[0].string == "plan_ready/planner")
        // Drain probes, then check that a prefix that is not ours is filtered out.
        while (try? await sub.receive(timeout: .milliseconds(20))) != nil {}
        try await pub.send(Frame("plan_ready_v2/planner"), Frame("not for us"))
        try await pub.send(Frame("plan_ready/planner"), Frame("for us"))
        let next = try await sub.receive(timeout: .seconds(5))
        #expect(text(next) == "plan_ready/planner|for us")
        await context.shutdown()
    }

    @Test(arguments: Transport.allCases)
    func requestReply(transport: Transport) async throws {
        let context = try Context()
        let rep = try context.socket(.rep)
        let req = try context.socket(.req)
        try link(rep, req, over: transport)
        let server = Task {
            for _ in 0..<10 {
                let request = try await rep.receive()
                try await rep.send(Message(Frame("re: " + (request[0].string ?? ""))))
            }
        }
        for i in 0..<10 {
            try await req.send(Message("q\(i)"))
            let reply = try await req.receive(timeout: .seconds(5))
            #expect(reply[0].string == "re: q\(i)")
        }
        try await server.value
        await context.shutdown()
    }

    @Test(arguments: Transport.allCases)
    func pushPullPipeline(transport: Transport) async throws {
        let context = try Context()
        let pull = try context.socket(.pull)
        let push = try context.socket(.push)
        try link(pull, push, over: transport)
        for i in 0..<1000 { try await push.send(Message("\(i)")) }
        var got: [Int] = []
        for try await m in pull.messages {
            got.append(Int(m[0].string!)!)
            if got.count == 1000 { break }
        }
        #expect(got == Array(0..<1000))
        await context.shutdown()
    }

    @Test(arguments: Transport.allCases)
    func dealerRouter(transport: Transport) async throws {
        let context = try Context()
        let router = try context.socket(.router)
        let dealer = try context.socket(.dealer)
        try dealer.set(.routingID(Array("builder-1".utf8)))
        try link(router, dealer, over: transport)
        try await dealer.send(Frame("hello"))
        let incoming = try await router.receive(timeout: .seconds(5))
        #expect(incoming.count == 2)
        #expect(incoming[0].string == "builder-1")
        try await router.send(Message([incoming[0], Frame("welcome")]))
        let reply = try await dealer.receive(timeout: .seconds(5))
        #expect(text(reply) == "welcome")
        await context.shutdown()
    }

    @Test(arguments: Transport.allCases)
    func pair(transport: Transport) async throws {
        let context = try Context()
        let a = try context.socket(.pair)
        let b = try context.socket(.pair)
        try link(a, b, over: transport)
        try await b.send(Message("ping"))
        #expect(text(try await a.receive(timeout: .seconds(5))) == "ping")
        try await a.send(Message("pong"))
        #expect(text(try await b.receive(timeout: .seconds(5))) == "pong")
        await context.shutdown()
    }

    @Test(arguments: Transport.allCases)
    func xpubSeesSubscriptionsFromXsub(transport: Transport) async throws {
        let context = try Context()
        let xpub = try context.socket(.xpub)
        let xsub = try context.socket(.xsub)
        try link(xpub, xsub, over: transport)
        // An XSUB subscribes by sending \u{1} + prefix.
        try await xsub.send(Message([1] + Array("build_ready/".utf8)))
        let subscription = try await xpub.receive(timeout: .seconds(5))
        #expect(subscription[0].bytes == [1] + Array("build_ready/".utf8))
        try await xpub.send(Frame("build_ready/builder"), Frame("x"))
        let event = try await xsub.receive(timeout: .seconds(5))
        #expect(text(event) == "build_ready/builder|x")
        await context.shutdown()
    }
}

/// A PUSH socket bound to an ephemeral port with no peer yet, in a context whose async
/// senders may queue `sendQueueLimit` messages per socket.
func pushWithoutPeer(sendQueueLimit: Int) throws -> (Context, Socket) {
    var settings = Context.Settings()
    settings.sendQueueLimit = sendQueueLimit
    let context = try Context(settings)
    let push = try context.socket(.push)
    try push.bind("tcp://127.0.0.1:*")
    return (context, push)
}

@Suite("Batch sends")
struct BatchSendTests {
    /// A no-drop publisher with a small high-water mark: the batch is sent directly until
    /// libzmq is full, the rest goes through the queue, and the subscriber gets every message
    /// once, in order.
    @Test func aBatchArrivesWholeAndInOrderAcrossTheHighWaterMark() async throws {
        let context = try Context()
        let pub = try context.socket(.pub)
        let sub = try context.socket(.sub)
        try pub.set([.publisherNoDrop(true), .sendHighWaterMark(100)])
        try sub.set([.subscribe([]), .receiveHighWaterMark(100)])
        let endpoint = try sub.bind("tcp://127.0.0.1:*")
        try pub.connect(endpoint)
        _ = try await within(10, "the subscription arrives") {
            while true {
                try await pub.send(Message("probe"))
                if (try? await sub.receive(timeout: .milliseconds(50))) != nil { return true }
            }
        }
        while (try? await sub.receive(timeout: .milliseconds(20))) != nil {}
        let count = 20_000
        let sender = Task {
            for start in stride(from: 0, to: count, by: 1000) {
                try await pub.send(batch: (start..<(start + 1000)).map { Message([Frame("n"), Frame("\($0)")]) })
            }
        }
        let received = try await within(30, "every message of the batches") {
            var next = 0
            var outOfOrder: [String] = []
            while next < count {
                for message in try await sub.receiveBatch() {
                    if message.count != 2 || message[1].string != "\(next)" { outOfOrder.append("\(next): \(message)") }
                    next += 1
                }
            }
            return (next, outOfOrder)
        }
        try await sender.value
        #expect(received.0 == count)
        #expect(received.1.isEmpty, "out of order: \(received.1.prefix(5))")
        await context.shutdown()
    }

    /// Two senders on a PUSH without a peer (libzmq takes nothing). The first whose own send
    /// libzmq refuses waits there, as a blocking send would; the other's messages queue
    /// behind it until the queue is full, and it waits too. So at most `limit` sends return
    /// (`limit - 1` when one sender waits at its own send; `limit` when the reactor held the
    /// socket at that moment and both went through the queue). Once a peer comes, every
    /// message arrives once, each sender's in order.
    @Test func sendersHeldByAFullSocketLoseNothingWhenAPeerComes() async throws {
        let limit = 16
        let (context, push) = try pushWithoutPeer(sendQueueLimit: limit)
        try push.set(.sendHighWaterMark(4))
        let endpoint = try push.lastEndpoint() ?? ""
        let count = 500
        let returned = SendCount()
        let senders = ["a", "b"].map { name in
            Task {
                for i in 0..<count {
                    try await push.send(Message("\(name)\(i)"))
                    returned.add()
                }
            }
        }
        let before = try await heldSends(limit: limit) { returned.value }
        #expect(before == limit - 1 || before == limit, "\(before) sends returned with nothing taken")
        let pull = try context.socket(.pull)
        try pull.connect(endpoint)
        let got = try await within(30, "every message after the peer came") {
            var got: [String] = []
            while got.count < 2 * count { got += try await pull.receiveBatch().map { $0[0].string ?? "?" } }
            return got
        }
        for sender in senders { try await sender.value }
        #expect(got.count == 2 * count)
        #expect(got.filter { $0.hasPrefix("a") } == (0..<count).map { "a\($0)" })
        #expect(got.filter { $0.hasPrefix("b") } == (0..<count).map { "b\($0)" })
        await context.shutdown()
    }

    /// Senders held by a full socket are let go when it closes (their messages were queued);
    /// their next sends say closed.
    @Test func closingLetsGoOfSendersHeldByAFullSocket() async throws {
        let limit = 4
        let (context, push) = try pushWithoutPeer(sendQueueLimit: limit)
        let returned = SendCount()
        // Each sender ends with the error its first failing send threw.
        let senders = (0..<2).map { _ in
            Task { () -> ZMQError.Code? in
                do {
                    for i in 0..<10 {
                        try await push.send(Message("\(i)"))
                        returned.add()
                    }
                } catch let error as ZMQError { return error.code } catch {}
                return nil
            }
        }
        let before = try await heldSends(limit: limit) { returned.value }
        push.close()
        let failures = try await within(10, "the held senders end") {
            var codes: [ZMQError.Code?] = []
            for sender in senders { codes.append(await sender.value) }
            return codes
        }
        #expect(returned.value == before + 2, "the two held sends return, the next ones fail")
        #expect(failures == [.closed, .closed])
        await context.shutdown()
    }

    /// Sends that returned, counted from several tasks.
    final class SendCount: Sendable {
        private let count = Atomic<Int>(0)
        func add() { count.add(1, ordering: .relaxed) }
        var value: Int { count.load(ordering: .relaxed) }
    }

    /// Waits until two senders with nothing taken are both held: `returned` reaches
    /// `limit - 1` and then stays put for 200 ms, never above `limit`. Returns where it stayed.
    func heldSends(limit: Int, _ returned: @Sendable () -> Int) async throws -> Int {
        try await eventually(10, "the queue fills") { returned() >= limit - 1 }
        var last = returned()
        var still = ContinuousClock.now
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now - still < .milliseconds(200) {
            let now = returned()
            #expect(now <= limit, "a send returned beyond a full queue")
            if now != last { (last, still) = (now, ContinuousClock.now) }
            guard ContinuousClock.now < deadline else { throw TimeoutError(what: "the senders settling (\(now) returned)", seconds: 10) }
            try await Task.sleep(for: .milliseconds(10))
        }
        return last
    }
}
