import CECore
import CEStore
import Foundation
import ZeroMQ

/// Replay: a subscriber that missed events (a gap in an origin's sequence, a silent tail, a
/// restart, a late start) asks the origin for them. The origin answers from its store.
///
/// Request (one frame, JSON): `{"v":1, "kind":"replay", "origin":O, "after":SEQ,
/// "types":[...] or absent for all, "since":TIMESTAMP (optional), "limit":N, "from_node":X}`.
/// Reply: a JSON header frame `{"v":1, "status":"ok", "origin":O, "last_seq":L,
/// "through":T, "count":K}` then K envelope frames, in sequence order. Every event of the
/// requested types with `after < seq <= through` is in the reply; `through == last_seq`
/// means the subscriber has caught up with the origin as of the reply.
enum Replay {
    /// The most events one reply carries; a subscriber further behind asks again.
    static let pageEvents = 1000
    /// The most envelope bytes one reply carries (at least one event is always sent).
    static let pageBytes = 4 << 20

    struct Request: Sendable {
        var origin: String
        var after: UInt64
        var types: [String]?
        var since: Date?
        var limit: Int
        var fromNode: String

        var json: JSONValue {
            var object: [String: JSONValue] = [
                "v": .number(Double(Wire.version)), "kind": "replay", "origin": .string(origin),
                "after": .number(Double(after)), "limit": .number(Double(limit)), "from_node": .string(fromNode),
            ]
            if let types { object["types"] = .array(types.map(JSONValue.string)) }
            if let since { object["since"] = .string(Timestamp.format(since)) }
            return .object(object)
        }

        init(origin: String, after: UInt64, types: [String]?, since: Date?, limit: Int = Replay.pageEvents, fromNode: String) {
            self.origin = origin
            self.after = after
            self.types = types
            self.since = since
            self.limit = limit
            self.fromNode = fromNode
        }

        init(_ object: [String: JSONValue]) throws(WireError) {
            origin = try Wire.string(object, "origin", what: "replay request")
            guard case .number(let after)? = object["after"], after >= 0, after < 9e15, after == after.rounded() else {
                throw WireError("replay request field \"after\" must be a sequence number (a whole number >= 0)")
            }
            self.after = UInt64(after)
            if let value = object["types"] {
                guard case .array(let items) = value else { throw WireError("replay request field \"types\" must be an array of event types") }
                var types: [String] = []
                for item in items {
                    guard case .string(let name) = item, (try? EventType(validating: name)) != nil else {
                        throw WireError("replay request field \"types\" holds \(item.serializedString), which is not an event type")
                    }
                    types.append(name)
                }
                self.types = types
            }
            if let value = object["since"] {
                guard case .string(let text) = value, let date = Timestamp.parse(text) else {
                    throw WireError("replay request field \"since\" must be a timestamp like 2026-11-25T08:00:00Z")
                }
                since = date
            }
            limit = min(Replay.pageEvents, max(1, object["limit"]?.intValue ?? Replay.pageEvents))
            fromNode = (try? Wire.string(object, "from_node", what: "replay request")) ?? "unknown"
        }
    }

    struct Reply: Sendable {
        var lastSeq: UInt64
        var through: UInt64
        var events: [(event: Event, envelope: [UInt8])]
    }
}

extension Node {
    /// Answers a replay request from this node's store: only this node's own events.
    func replayReply(_ object: [String: JSONValue]) -> [Frame] {
        let request: Replay.Request
        do {
            request = try Replay.Request(object)
        } catch {
            reject("\(error)", .request)
            return [Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(error)"))]
        }
        guard request.origin == spec.name else {
            return [Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(spec.name) replays its own events only, not \(request.origin)'s"))]
        }
        // Everything up to the last sequence is stored: the emit loop moves it after the write.
        let last = state.withLock { $0.lastSeq }
        var query = EventQuery()
        query.origin = spec.name
        query.afterSeq = request.after
        query.throughSeq = last
        query.types = request.types
        query.since = request.since
        query.bySeq = true
        query.limit = request.limit
        let stored: [StoredEvent]
        do { stored = try store.events(query) } catch {
            logger.error("replay for \(request.fromNode) failed: \(error)")
            return [Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(error)"))]
        }
        var frames: [Frame] = []
        var bytes = 0
        var through = last
        for (index, event) in stored.enumerated() {
            if index > 0 && bytes + event.envelope.count > Replay.pageBytes {
                through = stored[index - 1].seq
                break
            }
            bytes += event.envelope.count
            frames.append(Frame(event.envelope))
        }
        if frames.count == stored.count && stored.count == request.limit { through = stored.last!.seq }
        state.withLock { $0.counters.replayedOut += frames.count }
        metrics.replayRequestsServed.increment()
        metrics.replayedOut.increment(by: frames.count)
        let header: JSONValue = [
            "v": .number(Double(Wire.version)), "status": "ok", "origin": .string(spec.name),
            "last_seq": .number(Double(last)), "through": .number(Double(through)), "count": .number(Double(frames.count)),
        ]
        return [Frame(header.serialized())] + frames
    }

    /// Asks `origin` for its events after `after`; waits up to `timeout` for the reply.
    func fetchReplay(from origin: NodeSpec, _ request: Replay.Request, timeout: Duration) async throws -> Replay.Reply {
        let socket = try context.socket(.req)
        try socket.set([.linger(milliseconds: 0), .maxMessageSize(Int64(topology.settings.maxMessageBytes))])
        try security.dial(socket, to: origin)
        try socket.connect(origin.replayEndpoint ?? origin.repEndpoint)
        defer { socket.close() }
        try await socket.send(Message(request.json.serialized()))
        let reply = try await socket.receive(timeout: timeout)
        let header = try Wire.object(reply[0].bytes, what: "replay reply")
        guard header["status"]?.stringValue == "ok" else {
            throw NodeError("\(origin.name) refused a replay: \(header["error"]?.stringValue ?? "no reason given")")
        }
        guard let last = header["last_seq"]?.intValue, let through = header["through"]?.intValue, last >= 0, through >= 0 else {
            throw NodeError("replay reply from \(origin.name) lacks last_seq/through")
        }
        // The socket dialled the origin alone (by its key): a page that claims another origin is forged.
        let claimed = header["origin"]?.stringValue
        guard claimed == origin.name else {
            forged("replay page", claimed: claimed ?? "(no origin)", sender: origin.name)
            throw NodeError("replay reply from \(origin.name) claims to come from \(claimed ?? "no origin")")
        }
        var events: [(Event, [UInt8])] = []
        for frame in reply.dropFirst() {
            let bytes = frame.bytes
            let event = try EnvelopeCodec.decode(bytes)
            guard event.origin == origin.name else {
                forged("replayed event \(event.id) (seq \(event.seq))", claimed: event.origin, sender: origin.name)
                throw NodeError("replay reply from \(origin.name) holds an event of \(event.origin)")
            }
            events.append((event, bytes))
        }
        return Replay.Reply(lastSeq: UInt64(last), through: UInt64(through), events: events)
    }
}

// Sequence recovery: a node whose store holds none of its own events (a new node, or one
// whose store was lost) asks its peers for the highest sequence of its events they hold, and
// continues after it, so no sequence number is ever given to two different events.
// Request: `{"v":1, "kind":"last_seen", "origin":O, "from_node":N}`; reply
// `{"v":1, "status":"ok", "seq":S, "answered_by":P}`, taken only when P is the node asked.
extension Node {
    func lastSeenReply(_ object: [String: JSONValue]) -> [UInt8] {
        guard object["kind"]?.stringValue == "last_seen", let origin = object["origin"]?.stringValue else {
            reject("request of unknown kind \(object["kind"]?.serializedString ?? "null")", .request)
            return Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "unknown request kind \(object["kind"]?.serializedString ?? "null") (replay, last_seen, or a question)")
        }
        let held = (try? store.maxSeq(origin: origin)) ?? 0
        let cursor = intake.state.withLock { $0.tracks[origin]?.cursor } ?? 0
        return JSONValue.object([
            "v": .number(Double(Wire.version)), "status": "ok", "seq": .number(Double(max(held, cursor ?? 0))),
            "answered_by": .string(spec.name),
        ]).serialized()
    }

    /// Asks every peer at once. Done when every peer has answered, or once three heartbeat
    /// intervals have passed (every live peer has been heard by then) and every peer heard
    /// alive has answered, or after `timeout`: a peer that is down cannot answer.
    func recoverSequence(timeout: Duration) async {
        let peers = topology.peers(of: spec.name)
        guard state.withLock({ $0.lastSeq }) == 0, !peers.isEmpty else { return }
        let request = Message(JSONValue.object([
            "v": .number(Double(Wire.version)), "kind": "last_seen", "origin": .string(spec.name), "from_node": .string(spec.name),
        ]).serialized())
        let started = ContinuousClock.now
        let interval = Double(topology.settings.heartbeatMilliseconds) / 1000
        let highest = await withTaskGroup(of: (String, UInt64)?.self) { group in
            for peer in peers {
                group.addTask {
                    guard let socket = try? self.context.socket(.req) else { return nil }
                    defer { socket.close() }
                    do {
                        try socket.set(.linger(milliseconds: 0))
                        try self.security.dial(socket, to: peer)
                        try socket.connect(peer.repEndpoint)
                        try await socket.send(request)
                        let reply = try JSONValue(parsing: try await socket.receive(timeout: timeout)[0].bytes)
                        let claimed = reply["answered_by"]?.stringValue
                        guard claimed == peer.name else {
                            self.forged("last_seen reply", claimed: claimed ?? "(no answered_by)", sender: peer.name)
                            return nil
                        }
                        return (peer.name, UInt64(max(0, reply["seq"]?.intValue ?? 0)))
                    } catch {
                        return nil
                    }
                }
            }
            // A ticker, so the conditions are checked while answers are awaited.
            group.addTask {
                try? await Task.sleep(for: .milliseconds(50))
                return nil
            }
            var answered: [String: UInt64] = [:]
            while let result = await group.next() {
                if let (name, seq) = result { answered[name] = seq }
                if answered.count == peers.count { break }
                if ContinuousClock.now - started >= timeout { break }
                if ContinuousClock.now - started >= .seconds(interval * 3) {
                    let alive = peerHeartbeats.filter { Date().timeIntervalSince($0.value) < interval * 3 }.keys
                    if alive.allSatisfy({ answered[$0] != nil }) { break }
                }
                if result == nil {
                    group.addTask {
                        try? await Task.sleep(for: .milliseconds(50))
                        return nil
                    }
                }
            }
            group.cancelAll()
            return answered.values.max() ?? 0
        }
        guard highest > 0 else { return }
        state.withLock { s in s.lastSeq = max(s.lastSeq, highest) }
        logger.warning("""
            this node's store holds none of its own events, but peers hold them up to sequence \(highest): \
            continuing from \(highest + 1) so no sequence is reused (was the store \(store.path) replaced?)
            """)
    }
}
