import CECore
import CENode

/// What `ask` adds when the pool gave no answer: where the question waited, how an agent
/// answers it there, and how to wait longer.
enum Unanswered {
    /// Whether the node's error says the asked pool gave no answer (its nodes let the wait
    /// run out, or have nobody to answer), not that the request was refused. The control
    /// protocol carries the node's sentence only, so this reads Node.ask's wording.
    static func matches(_ error: NodeError, pool: String) -> Bool {
        error.description.contains("pool \"\(pool)\" did not answer") || error.description.contains("nobody answers questions")
    }

    /// The question's places at the pool's nodes (from the topology, when known) and the
    /// `--timeout-ms` hint.
    static func explanation(pool: String, topology: Topology?, timeoutMilliseconds: Int?) -> String {
        let reply = "writing a reply file {request_id}.json holding {\"answer\": ...} into <workspace>/.ce-events/replies/"
            + " (under a name starting with \".\", then renamed)"
        guard let topology else {
            return """
                The question waited at the nodes of pool \(pool): at one with a workspace as \
                <workspace>/.ce-events/requests/{request_id}.json, where a file-only agent picks it \
                up and answers by \(reply); at one without, for an agent attached through `ce-node mcp`. \
                Name the topology (--topology, --node or $CE_TOPOLOGY) to see the folders. Give the \
                agents longer with --timeout-ms MS.
                """
        }
        var lines = ["The question waited at the nodes of pool \(pool):"]
        for node in topology.nodes(inPool: pool) {
            if let workspace = node.workspace {
                let folder = workspace + "/.ce-events"
                lines.append(
                    "  \(node.name): as \(folder)/requests/{request_id}.json, where a file-only agent picks it up and answers by"
                        + " writing \(folder)/replies/{request_id}.json holding {\"answer\": ...} (under a name starting with \".\","
                        + " then renamed); unanswered, it moved to requests/expired/ when the wait ran out")
            } else {
                lines.append("  \(node.name): no workspace; an agent answers there through `ce-node mcp --node \(node.name)`")
            }
        }
        let settings = topology.settings
        let each = timeoutMilliseconds ?? settings.askTimeoutMilliseconds
        lines.append(
            "Is an agent watching? To give it longer: --timeout-ms MS (this ask waited \(each) ms per attempt,"
                + " \(settings.askRetries + 1) attempts).")
        return lines.joined(separator: "\n")
    }
}
