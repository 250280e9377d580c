import CECore
import Foundation
import ZeroMQ

// The local control endpoint: a ROUTER on ipc://<data>/control.sock that takes one JSON
// object per request ({"cmd": "status" | "emit" | "ask", ...}) and answers one JSON object
// ({"ok": true, ...} or {"ok": false, "error": "..."}). PROTOCOL.md documents it.

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

    /// The caller's event id of an emit, if it gives one: the request-id rule (A-Z a-z 0-9
    /// _ . -, 1-128 bytes, not starting with '.').
    static func emitID(_ request: [String: JSONValue]) throws -> String? {
        guard let value = request["id"] else { return nil }
        guard let id = value.stringValue else { throw NodeError("\"id\" must be a string") }
        do { try RequestID.validate(id) } catch { throw NodeError("\"id\": \(error)") }
        return id
    }

    /// `"allow_custom_type": true` admits a type the catalog and the topology do not name.
    static func allowCustomType(_ request: [String: JSONValue]) throws -> Bool {
        guard let value = request["allow_custom_type"] else { return false }
        guard let flag = value.boolValue else { throw NodeError("\"allow_custom_type\" must be true or false") }
        return flag
    }

    func control(_ body: [UInt8]) async -> JSONValue {
        func failure(_ text: String) -> JSONValue { ["ok": false, "error": .string(text)] }
        let request: [String: JSONValue]
        do { request = try Wire.object(body, what: "control request") } catch { return failure(error.description) }
        switch request["cmd"]?.stringValue {
        case "status":
            return ["ok": true, "status": status()]
        case "emit" where request["events"] != nil:
            // Several events at once: {"cmd":"emit","events":[{"event_type":..., "payload":...}, ...]}
            guard let items = request["events"]?.arrayValue, !items.isEmpty, items.count <= 10_000 else {
                return failure("emit \"events\" must be an array of 1 to 10000 events")
            }
            var emissions: [Emission] = []
            for (index, item) in items.enumerated() {
                guard let typeName = item["event_type"]?.stringValue else { return failure("events[\(index)] needs \"event_type\"") }
                do {
                    emissions.append(Emission(
                        try EventType(validating: typeName), payload: item["payload"] ?? .null, stream: item["stream"]?.stringValue,
                        correlationID: item["correlation_id"]?.stringValue, target: item["target"]?.stringValue,
                        id: try Self.emitID(item.objectValue ?? [:]),
                        allowCustomType: try Self.allowCustomType(request) || Self.allowCustomType(item.objectValue ?? [:])))
                } catch {
                    return failure("events[\(index)]: \(error)")
                }
            }
            do {
                let events = try await emit(emissions)
                return ["ok": true, "events": .array(events.map { ["id": .string($0.id), "seq": .number(Double($0.seq))] })]
            } catch {
                return failure("\(error)")
            }
        case "emit":
            guard let typeName = request["event_type"]?.stringValue else { return failure("emit needs \"event_type\"") }
            do {
                let type = try EventType(validating: typeName)
                let event = try await emit(
                    type, payload: request["payload"] ?? .null, stream: request["stream"]?.stringValue,
                    correlationID: request["correlation_id"]?.stringValue, target: request["target"]?.stringValue,
                    id: try Self.emitID(request), allowCustomType: try Self.allowCustomType(request))
                return ["ok": true, "event": try JSONValue(parsing: EnvelopeCodec.encode(event))]
            } catch {
                return failure("\(error)")
            }
        case "ask":
            guard let pool = request["pool"]?.stringValue else { return failure("ask needs \"pool\"") }
            let timeout = request["timeout_ms"]?.intValue.map { Duration.milliseconds($0) }
            do {
                let answer = try await ask(pool: pool, question: request["question"] ?? .null, timeout: timeout)
                return ["ok": true, "answer": answer]
            } catch {
                return failure("\(error)")
            }
        case let other?:
            if let reply = await agentControl(request) { return reply }
            if let handler = state.withLock({ $0.controlCommands[other] }) { return await handler(request) }
            return failure("unknown command \"\(other)\" (status, emit, ask, events_after, questions, answer)")
        case nil:
            return failure("control request needs \"cmd\"")
        }
    }
}

/// Talks to a running node's control endpoint (what `ce-node emit/ask/status` use).
public struct ControlClient: Sendable {
    public let endpoint: String

    public init(dataDirectory: String) {
        self.endpoint = "ipc://" + absolute(dataDirectory) + "/control.sock"
    }

    /// Sends one request and waits for the reply; a node that does not answer within
    /// `timeout` is reported as not running.
    public func call(_ request: JSONValue, timeout: Duration = .seconds(10)) async throws -> JSONValue {
        let path = String(endpoint.dropFirst(6))
        guard FileManager.default.fileExists(atPath: path) else {
            throw NodeError("no node is running with its control endpoint at \(path) (start it with `ce-node run`)")
        }
        let context = try Context()
        let reply: Message
        do {
            let socket = try context.socket(.req)
            try socket.set(.linger(milliseconds: 0))
            try socket.connect(endpoint)
            try await socket.send(Message(request.serialized()))
            reply = try await socket.receive(timeout: timeout)
        } catch let error as ZMQError where error.code == .again {
            await context.shutdown()
            throw NodeError("the node at \(path) did not answer within \(timeout): is it running?")
        } catch {
            await context.shutdown()
            throw error
        }
        await context.shutdown()
        let value = try JSONValue(parsing: reply[0].bytes)
        if value["ok"]?.boolValue == false {
            throw NodeError(value["error"]?.stringValue ?? "the node refused the request")
        }
        return value
    }
}
