import CECore
import CENode
import Foundation
import Synchronization

/// What a node's HTTP server shows of the events it stores: the last few hundred (for
/// `/status.json`) and a live stream (`/events`), fed from the node's in-process listener.
final class NodeFeed: Sendable {
    struct State {
        var recent: [Event] = []
        /// How many events were taken since start; `recent.last` is number `taken`.
        var taken = 0
    }

    let node: Node
    let hub: Hub
    let state = Mutex(State())
    static let keep = 500

    init(node: Node, hub: Hub) {
        self.node = node
        self.hub = hub
    }

    /// Takes the node's events until cancelled; `onEvent` sees each one too.
    func run(onEvent: @Sendable (Event) -> Void) async {
        for await event in node.events(buffer: 10_000) {
            state.withLock { s in
                s.taken += 1
                s.recent.append(event)
                if s.recent.count > 2 * Self.keep { s.recent.removeFirst(s.recent.count - Self.keep) }
            }
            // Rendered only for someone: with no stream client an event costs an append.
            if hub.clientCount > 0 {
                hub.publish(Hub.frame("stored", Self.summary(event, pool: node.topology.node(named: event.origin)?.pool).serializedString))
            }
            onEvent(event)
        }
    }

    /// The events kept (the last 500 at least), after the `after`-th taken, and the count taken.
    func recent(after: Int) -> (events: [JSONValue], taken: Int) {
        let (events, taken) = state.withLock { s -> ([Event], Int) in
            let kept = s.recent.suffix(Self.keep)
            let first = s.taken - kept.count
            let skip = max(0, after - first)
            return (skip >= kept.count ? [] : Array(kept.dropFirst(skip)), s.taken)
        }
        return (events.map { Self.summary($0, pool: node.topology.node(named: $0.origin)?.pool) }, taken)
    }

    /// An event as the dashboard shows it: everything but a long payload, which is cut.
    static func summary(_ event: Event, pool: String?) -> JSONValue {
        var payload = event.payload
        let text = payload.serializedString
        if text.utf8.count > 400 { payload = .string(String(text.prefix(400)) + "…") }
        var object: [String: JSONValue] = [
            "id": .string(event.id), "origin": .string(event.origin), "seq": .number(Double(event.seq)),
            "type": .string(event.type.rawValue), "stream": .string(event.stream),
            "pool": .string(pool ?? event.stream), "timestamp": .string(Timestamp.format(event.timestamp)), "payload": payload,
        ]
        if let c = event.correlationID { object["correlation_id"] = .string(c) }
        if let t = event.target { object["target"] = .string(t) }
        return .object(object)
    }
}
