import CECore
import Foundation
import Synchronization
import ZeroMQ

/// A question addressed to this node's pool.
public struct Question: Sendable {
    public let requestID: String
    public let fromNode: String
    public let fromPool: String
    public let question: JSONValue
    /// When the asker stops waiting for the answer: an answer given later reaches nobody.
    public let deadline: ContinuousClock.Instant
}

/// REQ sockets that got their reply, kept per node they dial for the next request (at most
/// `limit` each: more are open only while that many requests to one node are in flight):
/// the node's questions to other pools, and each replay loop's pages.
final class KeptSockets: Sendable {
    private let idle = Mutex<[String: [Socket]]>([:])
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func take(for node: String) -> Socket? {
        idle.withLock { $0[node]?.popLast() }
    }

    func giveBack(_ socket: Socket, to node: String) {
        let kept = idle.withLock { idle -> Bool in
            guard idle[node, default: []].count < limit else { return false }
            idle[node, default: []].append(socket)
            return true
        }
        if !kept { socket.close() }
    }

    func closeAll() {
        for socket in idle.withLock({ idle in defer { idle = [:] }; return idle.values.joined() }) { socket.close() }
    }
}

/// Why an `ask` got no answer.
public struct AskError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case unknownPool, timedOut, refused }
    public let kind: Kind
    public let description: String
}

extension Node {
    /// Asks a pool a question over REQ/REP and returns the answer.
    ///
    /// Each attempt goes to one node of the pool (the first attempt of successive asks to
    /// successive nodes), on a REQ socket that dials that node alone (with CURVE, by its key),
    /// so the answer is known to come from it. Sockets that got their reply are kept per
    /// node and used again, so a question pays no connection or handshake once one is open.
    /// A reply that does not come within `timeout` is given up on: that socket is closed and
    /// the pool's next node is asked, on another socket, with the same request id (Lazy
    /// Pirate), so a responder answers a retried question once.
    /// After `retries` retries the error names the pool and the wait.
    public func ask(pool: String, question: JSONValue, timeout: Duration? = nil, retries: Int? = nil) async throws -> JSONValue {
        let responders = topology.nodes(inPool: pool)
        guard !responders.isEmpty else {
            throw AskError(kind: .unknownPool, description: "no pool \"\(pool)\" in \(topology.file) (pools: \(topology.poolNames.sorted().joined(separator: ", ")))")
        }
        let timeout = timeout ?? .milliseconds(topology.settings.askTimeoutMilliseconds)
        let retries = retries ?? topology.settings.askRetries
        var request = Wire.Request(
            requestID: EventID.make(), fromNode: spec.name, fromPool: spec.pool, pool: pool, question: question)
        count(.askSent)
        let first = Int(questions.nextResponder.add(1, ordering: .relaxed).oldValue % UInt64(responders.count))
        var forgedReplies = 0
        let start = ContinuousClock.now
        defer { NodeMetrics.record(metrics.askDuration, since: start) }
        for attempt in 0...retries {
            let node = responders[(first + attempt) % responders.count]
            let socket = try askSocket(to: node)
            // The responder learns how long this asker still waits (this attempt and the
            // retries left), so it stops waiting for its agents when the asker does.
            let waiting = timeout * (retries + 1 - attempt) / .milliseconds(1)
            request.waitMilliseconds = Int(min(waiting.rounded(.up), Double(Wire.Request.maxWaitMilliseconds)))
            let reply: Message
            do {
                try await socket.send(Message(request.json.serialized()))
                reply = try await socket.receive(timeout: timeout)
            } catch let error as ZMQError where error.code == .again {
                socket.close()
                logger.notice("no reply from \(node.name) of pool \(pool) within \(timeout) (attempt \(attempt + 1) of \(retries + 1))")
                continue
            } catch {
                socket.close()
                throw error
            }
            // A REQ socket that got its reply is ready for the next question.
            questions.sockets.giveBack(socket, to: node.name)
            guard let value = try answer(from: reply, pool: pool, node: node.name) else {
                forgedReplies += 1
                continue
            }
            return value
        }
        count(.askFailed)
        if forgedReplies > 0 {
            throw AskError(
                kind: .refused,
                description: "pool \"\(pool)\" gave no answer of its own in \(retries + 1) attempts: \(forgedReplies) replies claimed to come from another node than the one asked (rejected as forged)")
        }
        throw AskError(
            kind: .timedOut,
            description: "pool \"\(pool)\" did not answer within \(timeout) after \(retries + 1) attempts (responders: \(responders.map(\.repEndpoint).joined(separator: ", ")))")
    }

    /// A connected REQ socket to `node`: one kept from an earlier question, or a new one.
    private func askSocket(to node: NodeSpec) throws -> Socket {
        if let kept = questions.sockets.take(for: node.name) { return kept }
        let socket = try context.socket(.req)
        do {
            try socket.set([.linger(milliseconds: 0), .maxMessageSize(Int64(topology.settings.maxMessageBytes))])
            try security.dial(socket, to: node)
            try socket.connect(node.repEndpoint)
        } catch {
            socket.close()
            throw error
        }
        return socket
    }

    /// The answer in a reply from `node`; nil (try the next node) when the reply claims to
    /// come from another node.
    private func answer(from reply: Message, pool: String, node: String) throws -> JSONValue? {
        guard reply.count == 1 else { throw AskError(kind: .refused, description: "reply from pool \(pool) has \(reply.count) frames, expected 1") }
        let object: [String: JSONValue]
        do { object = try Wire.object(reply[0].bytes, what: "reply") } catch {
            throw AskError(kind: .refused, description: "\(error)")
        }
        let claimed = object["answered_by"]?.stringValue
        guard claimed == node else {
            forged("answer", claimed: claimed ?? "(no answered_by)", sender: node)
            return nil
        }
        if object["status"]?.stringValue == "ok", let answer = object["answer"] { return answer }
        count(.askFailed)
        let by = object["answered_by"]?.stringValue ?? pool
        throw AskError(kind: .refused, description: "\(by) could not answer: \(object["error"]?.stringValue ?? "no reason given")")
    }

    /// Sets the Swift handler that answers questions addressed to this node's pool. Each
    /// question is answered in a task of its own on the global pool, several at once; what
    /// the handler returns is recorded durably before it is sent, so a retried question gets
    /// the same answer without the handler being called again.
    public func answerQuestions(with handler: @escaping @Sendable (Question) async throws -> JSONValue) {
        questions.answer(with: handler)
    }

    /// Serves the pool's REP endpoint with a ROUTER, so several questions are answered at
    /// once. REQ clients see plain REQ/REP: [routing id, empty delimiter, body].
    /// It runs on the reactor's thread and keeps its own work small there (parsing a request,
    /// the in-flight table, the recorded answer of a question asked again); handlers and
    /// replay pages run in tasks of the global pool, so a slow handler never holds up the
    /// sockets.
    func answerLoop(router: Socket) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for try await message in router.messages {
                guard message.count == 3, message[1].count == 0 else {
                    reject("request with \(message.count) frames; expected a REQ envelope and one body frame", .frames)
                    if message.count >= 2 {
                        try? await router.send(Message([message[0], Frame([]), Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "expected exactly one body frame"))]))
                    }
                    continue
                }
                let peer = message[0]
                if let object = try? Wire.object(message[2].bytes, what: "request"), let kind = object["kind"]?.stringValue {
                    if let refusal = senderRefusal(object["from_node"]?.stringValue, of: message, what: "\(kind) request") {
                        try? await router.send(Message([peer, Frame([]), Frame(refusal)]))
                    } else if kind == "replay" {
                        // A relay page waits for the intake's turn: answered beside the loop,
                        // which goes on reading (questions are never held behind a replay).
                        group.addTask(executorPreference: globalConcurrentExecutor) {
                            let reply = await self.replayReply(object)
                            try? await router.send(Message([peer, Frame([])] + reply))
                        }
                    } else {
                        try? await router.send(Message([peer, Frame([]), Frame(linesReply(object))]))
                    }
                    continue
                }
                let request: Wire.Request
                do {
                    request = try Wire.Request(parsing: message[2].bytes)
                } catch {
                    reject("\(error)", .request)
                    try? await router.send(Message([peer, Frame([]), Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(error)"))]))
                    continue
                }
                if let refusal = senderRefusal(request.fromNode, of: message, what: "question", requestID: request.requestID, fromPool: request.fromPool) {
                    try? await router.send(Message([peer, Frame([]), Frame(refusal)]))
                    continue
                }
                // A retry of a question being answered waits for that answer. Looked for before
                // the store: an answer is committed before its question leaves `inFlight`, so a
                // question found in neither was never answered (the other order could miss
                // an answer committed between the two looks, and answer it twice).
                if questions.join(request.requestID, peer) {
                    count(.repeatedQuestion)
                    continue
                }
                if let stored = try? store.answer(for: request.requestID) {
                    count(.repeatedQuestion)
                    try? await router.send(Message([peer, Frame([]), Frame(stored)]))
                    continue
                }
                questions.begin(request.requestID, peer)
                group.addTask(executorPreference: globalConcurrentExecutor) { try? await self.answer(request, router: router) }  // its failures are its own: the loop goes on
            }
        }
    }

    /// Serves the node's own replay endpoint (when the topology gives it a port).
    func replayServeLoop(router: Socket) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for try await message in router.messages {
                guard message.count == 3, message[1].count == 0 else {
                    reject("replay request with \(message.count) frames; expected a REQ envelope and one body frame", .frames)
                    continue
                }
                let object: [String: JSONValue]
                do {
                    object = try Wire.object(message[2].bytes, what: "replay request")
                    try Wire.checkVersion(object)
                } catch {
                    reject("\(error)", .request)
                    try? await router.send(Message([message[0], Frame([]), Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(error)"))]))
                    continue
                }
                if let refusal = senderRefusal(object["from_node"]?.stringValue, of: message, what: "replay request") {
                    try? await router.send(Message([message[0], Frame([]), Frame(refusal)]))
                    continue
                }
                // Answered beside the loop (a relay page waits for the intake's turn).
                group.addTask {
                    let reply = await self.replayReply(object)
                    try? await router.send(Message([message[0], Frame([])] + reply))
                }
            }
        }
    }

    private func answer(_ request: Wire.Request, router: Socket) async throws {
        guard request.pool == spec.pool else {
            await sendReply(Wire.errorReply(requestID: request.requestID, answeredBy: spec.name, error: "\(spec.name) serves pool \(spec.pool), not \(request.pool)"), to: request, router: router)
            return
        }
        // The asker's deadline is the `wait_ms` its request carries, counted from now. An asker
        // that does not say (an older node, a raw client) is taken to wait as this node's own
        // asks do by default: the topology's ask timeout times its attempts.
        let settings = topology.settings
        let wait = request.waitMilliseconds ?? settings.askTimeoutMilliseconds * (settings.askRetries + 1)
        let question = Question(
            requestID: request.requestID, fromNode: request.fromNode, fromPool: request.fromPool, question: request.question,
            deadline: .now + .milliseconds(wait))
        do {
            let answered = Wire.reply(requestID: request.requestID, answeredBy: spec.name, answer: try await respond(to: question))
            // Recorded (so that a retry of this request gets the same answer, not a second
            // one) and sent from the writer's thread: the commit is followed by the reply with
            // no thread hand-off between them.
            try await withTaskExecutorPreference(writer.executor) {
                try await self.writer.recordAnswer(requestID: request.requestID, reply: answered)
                self.count(.questionAnswered)
                await self.sendReply(answered, to: request, router: router)
            }
        } catch is CancellationError {
            throw CancellationError()
        } catch is QuestionExpired {
            // The asker's deadline: it gets no reply, its last attempt ends on its own timeout
            // (a moment later, by the time it spent between attempts), as "did not answer".
            _ = questions.end(request.requestID)
        } catch {
            await sendReply(Wire.errorReply(requestID: request.requestID, answeredBy: spec.name, error: "\(error)"), to: request, router: router)
        }
    }

    /// Sends `reply` to every asker waiting for `request` (a retry that came while it was
    /// being answered waits beside the first).
    private func sendReply(_ reply: [UInt8], to request: Wire.Request, router: Socket) async {
        let peers = questions.end(request.requestID)
        for peer in peers {
            try? await router.send(Message([peer, Frame([]), Frame(reply)]))
        }
    }

    private func respond(to question: Question) async throws -> JSONValue {
        if let handler = questions.handler { return try await handler(question) }
        if eventFolder != nil || questions.desk.hasAnswerer { return try await answerThroughAgents(question) }
        throw NodeError("nobody answers questions on \(spec.name): no handler, no workspace and no agent attached to its control endpoint")
    }
}

extension Node {
    /// An error reply for a request whose `from_node` is not the node whose key sent it
    /// (counted and logged as forged); nil when the request may be served.
    func senderRefusal(_ fromNode: String?, of message: Message, what: String, requestID: String? = nil, fromPool: String? = nil) -> [UInt8]? {
        if fromNodeIsSender(fromNode, of: message, what: what) {
            guard security.isOn, let fromPool, let node = fromNode.flatMap(topology.node(named:)), node.pool != fromPool else { return nil }
            forged(what, claimed: "pool \(fromPool)", sender: "\(node.name) of pool \(node.pool)")
            return Wire.errorReply(requestID: requestID, answeredBy: spec.name, error: "from_pool \"\(fromPool)\" is not the pool of \(node.name) (\(node.pool))")
        }
        return Wire.errorReply(
            requestID: requestID, answeredBy: spec.name,
            error: "from_node \(fromNode.map { "\"\($0)\"" } ?? "missing"): a request must name the node whose key sends it")
    }
}

/// The questions this node answers and asks: the Swift handler, the questions being answered
/// with the askers waiting for each, the agents' answer desk, and the sockets kept for asking.
final class Questions: Sendable {
    private struct State {
        var handler: (@Sendable (Question) async throws -> JSONValue)?
        /// Request id -> the routing ids of the askers waiting for its answer.
        var inFlight: [String: [Frame]] = [:]
    }
    private let state = Mutex(State())
    /// Questions answered through the control endpoint (AgentControl.swift).
    let desk = AnswerDesk()
    let sockets = KeptSockets(limit: 8)
    /// Which node of a pool the next `ask` tries first.
    let nextResponder = Atomic<UInt64>(0)

    var handler: (@Sendable (Question) async throws -> JSONValue)? { state.withLock { $0.handler } }
    func answer(with handler: @escaping @Sendable (Question) async throws -> JSONValue) { state.withLock { $0.handler = handler } }

    /// A retry of a question being answered waits beside the first asker; false when it is not being answered.
    func join(_ requestID: String, _ asker: Frame) -> Bool {
        state.withLock { s in
            guard s.inFlight[requestID] != nil else { return false }
            s.inFlight[requestID]!.append(asker)
            return true
        }
    }

    func begin(_ requestID: String, _ asker: Frame) { state.withLock { $0.inFlight[requestID] = [asker] } }

    /// The askers waiting for a question's answer (none wait after this).
    func end(_ requestID: String) -> [Frame] { state.withLock { $0.inFlight.removeValue(forKey: requestID) ?? [] } }
}
