import ArgumentParser
import CEMCP
import Foundation
import Logging
import MCP

/// `ce-node mcp`: the bus as MCP tools for one pool's agent, over stdio, through a running node.
struct MCPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcp",
        abstract: "Serve the bus to an agent as MCP tools (stdio), through a running node's control endpoint.",
        discussion: "Configure it in an MCP client as the command `ce-node mcp --node NAME --topology FILE`. Logs go to stderr.")
    @OptionGroup var selection: NodeSelection
    @Option(help: "Log level (stderr): trace, debug, info, notice, warning, error.")
    var logLevel: String = "notice"
    @Option(help: "The stdio transport: lines (waits in read(2)) or sdk (the SDK's StdioTransport, which polls stdin every 10 ms).")
    var stdio: String = "lines"

    func run() async throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level \(logLevel)") }
        guard stdio == "lines" || stdio == "sdk" else { throw ValidationError("--stdio must be lines or sdk, not \(stdio)") }
        guard let name = selection.nodeName else { throw ValidationError("say which node the agent works through: --node NAME") }
        let settings: BusTools.Settings
        do {
            settings = try BusTools.Settings(topology: try selection.load(), node: name, dataDirectory: selection.data)
        } catch let error as ToolError {
            throw ValidationError(error.description)
        }
        bootstrapLogging(level)
        var logger = Logger(label: "ce.mcp")
        logger[metadataKey: "ce.node"] = .string(name)
        let server = try BusServer(settings: settings, logger: logger)
        let transport: any Transport = stdio == "sdk" ? StdioTransport() : StdioLines()
        let task = Task { try await server.run(transport: transport) }
        let signals = SignalWatcher([SIGINT, SIGTERM]) { task.cancel() }
        defer { signals.cancel() }
        try await task.value
    }
}
