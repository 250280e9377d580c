import Foundation
import Synchronization
import Testing
import ZeroMQ

/// The calling thread's name as the system knows it.
func threadName() -> String {
    ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Tasks that prefer the context's reactor thread as their executor (`Context.taskExecutor`).
/// Outcomes are read from atomics with a deadline, so a task that never runs fails the test
/// instead of hanging it.
@Suite struct ExecutorTests {
    @Test(arguments: [Transport.inproc, .tcp])
    func requestReplyOnTheReactorThreadRunsThereAndKeepsEveryAnswer(over transport: Transport) async throws {
        let context = try Context()
        let rep = try context.socket(.rep)
        let req = try context.socket(.req)
        try link(rep, req, over: transport)
        let rounds = 2000
        let answered = Atomic<Int>(0)
        let wrong = Atomic<Int>(0)
        let elsewhere = Atomic<Int>(0)
        let onReactor: @Sendable () -> Bool = { threadName() == "zmq-reactor" }
        let server = Task(executorPreference: context.taskExecutor) { @Sendable in
            var served = 0
            for try await request in rep.messages {
                if !onReactor() { elsewhere.add(1, ordering: .relaxed) }
                try await rep.send(Message("re:" + (request[0].string ?? "")))
                served += 1
                if served == rounds { return }
            }
        }
        let client = Task(executorPreference: context.taskExecutor) { @Sendable in
            for i in 0..<rounds {
                try await req.send(Message("\(i)"))
                let reply = try await req.receive()
                if !onReactor() { elsewhere.add(1, ordering: .relaxed) }
                if reply[0].string != "re:\(i)" { wrong.add(1, ordering: .relaxed) }
                answered.add(1, ordering: .relaxed)
            }
        }
        try await eventually(30, "\(rounds) round trips on the reactor") { answered.load(ordering: .relaxed) == rounds }
        try await client.value
        try await server.value
        #expect(wrong.load(ordering: .relaxed) == 0)
        #expect(elsewhere.load(ordering: .relaxed) == 0, "every step after a wait ran on the reactor thread")
        await context.shutdown()
    }

    @Test func tasksOnTheReactorOutliveItsShutdown() async throws {
        let context = try Context()
        let rep = try context.socket(.rep)
        try rep.bind(Transport.inproc.bindEndpoint())
        let failure = Mutex<ZMQError?>(nil)
        let waiting = Atomic<Bool>(false)
        let ended = Atomic<Bool>(false)
        // Waits for a request that never comes; the shutdown ends the wait.
        Task(executorPreference: context.taskExecutor) { @Sendable in
            waiting.store(true, ordering: .releasing)
            do { _ = try await rep.receive() } catch let error as ZMQError { failure.withLock { $0 = error } } catch {}
            ended.store(true, ordering: .releasing)
        }
        try await eventually(5, "the receiver waits") { waiting.load(ordering: .acquiring) }
        // A task that shuts the context down from the reactor thread itself returns.
        let shutDown = Atomic<Bool>(false)
        Task(executorPreference: context.taskExecutor) { @Sendable in
            await context.shutdown()
            shutDown.store(true, ordering: .releasing)
        }
        try await eventually(10, "shutdown from a task on the reactor returns") { shutDown.load(ordering: .acquiring) }
        try await eventually(5, "the waiting receiver is resumed") { ended.load(ordering: .acquiring) }
        let code = failure.withLock { $0?.code }
        #expect(code == .terminated || code == .closed, "the receive failed with \(String(describing: code))")
        // After the thread has gone, tasks that prefer it still run (elsewhere).
        let ranLater = Atomic<Bool>(false)
        Task(executorPreference: context.taskExecutor) { @Sendable in
            try? await Task.sleep(for: .milliseconds(1))
            ranLater.store(true, ordering: .releasing)
        }
        try await eventually(5, "a task made after the shutdown runs") { ranLater.load(ordering: .acquiring) }
    }
}
