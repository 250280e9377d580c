import CECore
import CENode
import Foundation
import ZeroMQ

/// The MCP server's line to a node: the control endpoint's one client (``ControlClient``),
/// with its errors as tool errors (a sentence the agent can act on).
final class NodeLink: Sendable {
    let client: ControlClient
    var name: String { client.name }
    var dataDirectory: String { client.paths.data }
    var controlPath: String { client.paths.controlSocket }
    var feedEndpoint: String { client.paths.feedEndpoint }
    var isRunning: Bool { client.isRunning }

    init(name: String, dataDirectory: String, context: Context) {
        client = ControlClient(dataDirectory: dataDirectory, name: name, context: context)
    }

    func notRunning() -> ToolError {
        ToolError("node \(name) is not running (no process listens on \(controlPath)); start it with `ce-node run --node \(name)` and call again")
    }

    /// Sends one request; returns the node's reply, throws its refusal. `timeout` bounds the call.
    func call(_ request: ControlRequest, timeout: Duration) async throws(ToolError) -> ControlReply {
        guard isRunning else { throw notRunning() }
        do {
            return try await client.call(request, timeout: timeout)
        } catch let error as NodeError {
            throw ToolError(error.description)
        } catch {
            throw ToolError("cannot reach node \(name) at \(controlPath): \(error)")
        }
    }

    /// The event as stored, from an emit.
    func emit(_ item: ControlRequest.EmitItem) async throws(ToolError) -> JSONValue {
        guard case .event(let event) = try await call(.emit(item), timeout: .seconds(30)) else { throw Self.mismatch }
        return event
    }

    static let mismatch = ToolError("the node's reply does not answer the request (a node of another version?)")
}
