import CECore
import CEStore
import Foundation
import ZeroMQ

// The local control endpoint: a ROUTER on ipc://<data>/control.sock speaking the protocol of
// CECore's ControlRequest and ControlReply (PROTOCOL.md, "Control endpoint").

extension Node {
    func controlLoop(control: Socket) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for try await message in control.messages {
                guard message.count == 3, message[1].count == 0 else {
                    reject("control request with \(message.count) frames", .frames)
                    continue
                }
                let peer = message[0]
                group.addTask {
                    let reply = await self.control(message[2].bytes)
                    try? await control.send(Message([peer, Frame([]), Frame(reply.serialized())]))
                }
            }
        }
    }

    /// Serves one request: decoded and checked by the protocol's codec, then carried out.
    func control(_ body: [UInt8]) async -> JSONValue {
        let request: ControlRequest
        do {
            request = try ControlRequest(json: try JSONValue(parsing: body))
        } catch {
            return ControlReply.failure("\(error)").json
        }
        return await handle(request).json
    }

    /// Carries out a control request (what the control endpoint does with it).
    public func handle(_ request: ControlRequest) async -> ControlReply {
        switch request {
        case .status:
            return .status(status())
        case .emit(let item):
            do {
                let event = try await emit(
                    item.type, payload: item.payload, stream: item.stream, correlationID: item.correlationID, target: item.target,
                    id: item.id, allowCustomType: item.allowCustomType)
                return .event(try JSONValue(parsing: EnvelopeCodec.encode(event)))
            } catch {
                return .failure("\(error)")
            }
        case .emitBatch(let items):
            var ids: [ControlReply.EmittedID] = []
            for (index, result) in await emitEach(items).enumerated() {
                switch result {
                case .success(let event): ids.append(.init(id: event.id, seq: event.seq))
                case .failure(let error): return .failure("events[\(index)]: \(error)")
                }
            }
            return .events(ids)
        case .ask(let pool, let question, let timeout):
            do {
                return .answer(try await ask(pool: pool, question: question, timeout: timeout.map { .milliseconds($0) }))
            } catch {
                return .failure("\(error)")
            }
        case .eventsAfter(let query):
            return await eventsAfter(query)
        case .questions(let wait, let known):
            return await pendingQuestions(waitMilliseconds: wait, known: Set(known))
        case .answer(let id, let answer):
            return answerQuestion(id, answer)
        case .history(let query):
            return history(query)
        case .gates:
            guard let gates = hooks.withLock({ $0.gates }) else {
                return .failure("node \(spec.name) is not the coordinator: gates and conflicts are kept by the coordinator's node")
            }
            return await gates()
        case .handover:
            guard let handover = hooks.withLock({ $0.handover }) else {
                return .failure("node \(spec.name) is not a coordinator: only the active coordinator hands its role over")
            }
            return await handover()
        case .reload:
            return await reload()
        }
    }

    /// `history`: the events stored here, as the query selects; says when it stopped at its limit.
    func history(_ q: ControlRequest.HistoryQuery) -> ControlReply {
        do {
            let (events, truncated) = try store.history(q)
            return .history(events: events, truncated: truncated)
        } catch {
            return .failure("history: \(error)")
        }
    }
}
