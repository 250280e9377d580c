import CECore
import CEStore
import Foundation
import ZeroMQ

/// Replay: a subscriber that missed events of a line (an origin's events in one epoch: a gap,
/// a silent tail, a restart, a late start, a refill) asks the origin for them, or, while the
/// origin is down or the epoch is an older one, a peer that holds them (a relay). Each
/// answers from its store.
///
/// Request (one frame, JSON): `{"v":1, "kind":"replay", "origin":O, "epoch":E, "after":SEQ,
/// "types":[...] or absent for all, "since":TIMESTAMP (optional), "limit":N, "from_node":X}`
/// (no `epoch`: the origin's current one). Reply: a JSON header frame `{"v":1, "status":"ok",
/// "origin":O, "epoch":E, "answered_by":P, "last_seq":L, "through":T, "count":K}` then K
/// envelope frames, in sequence order. Every event of the requested types with
/// `after < seq <= through` is in the reply; `last_seq` is the last sequence the answerer
/// holds the line through (the origin: its last sequence), so `through == last_seq` means
/// the subscriber holds what the answerer holds.
enum Replay {
    /// The most events one reply carries; a subscriber further behind asks again. Each page
    /// costs a round trip and a transaction: pages of 1000 caught a subscriber up at 30 k
    /// events/s, pages of 4000 at 50 k, pages of 8000 no faster (`ce-bench replay`).
    static let pageEvents = 4000
    /// The most envelope bytes one reply carries (at least one event is always sent).
    static let pageBytes = 4 << 20

    struct Request: Sendable {
        var origin: String
        /// nil: the origin's current epoch (a request from a node older than epochs).
        var epoch: String?
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
            if let epoch { object["epoch"] = .string(epoch) }
            if let types { object["types"] = .array(types.map(JSONValue.string)) }
            if let since { object["since"] = .string(Timestamp.format(since)) }
            return .object(object)
        }

        init(line: Line, after: UInt64, types: [String]?, since: Date?, limit: Int = Replay.pageEvents, fromNode: String) {
            self.origin = line.origin
            self.epoch = line.epoch
            self.after = after
            self.types = types
            self.since = since
            self.limit = limit
            self.fromNode = fromNode
        }

        init(_ object: [String: JSONValue]) throws(WireError) {
            origin = try Wire.string(object, "origin", what: "replay request")
            if let value = object["epoch"] {
                guard case .string(let text) = value, text.isEmpty || Epoch.isValid(text) else {
                    throw WireError("replay request field \"epoch\" must be an epoch id (letters, digits and dashes, at most 64)")
                }
                epoch = text
            }
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
        /// Decoded, held as the delivery decisions take them.
        var events: [Intake.Held]
    }

    /// A reply whose header was checked and whose events are still bytes (see ``Node/decode(_:)``).
    struct RawPage: Sendable {
        var lastSeq: UInt64
        var through: UInt64
        var origin: String
        var epoch: String
        var source: String
        var frames: [Frame]
    }
}

extension Node {
    /// Answers a replay request from this node's store: this node's own current line, or, as
    /// a relay, a line it holds through its cursor (every event of the types it subscribes
    /// to up to the cursor is stored here), when it subscribes to every type asked for.
    func replayReply(_ object: [String: JSONValue]) async -> [Frame] {
        let request: Replay.Request
        do {
            request = try Replay.Request(object)
        } catch {
            reject("\(error)", .request)
            return [Frame(Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "\(error)"))]
        }
        let refuse = { (why: String) in [Frame(Wire.errorReply(requestID: nil, answeredBy: self.spec.name, error: why))] }
        let epoch = request.epoch ?? (request.origin == spec.name ? store.epoch : "")
        let line = Line(request.origin, epoch)
        if line == Line(spec.name, store.epoch) {
            // Everything up to the last sequence is stored: the emit loop moves it after the write.
            return page(of: line, request, through: publisher.lastSeq)
        } else {
            guard let cursor = intake.state.withLock({ $0.tracks[line]?.cursor }) else {
                return refuse("\(spec.name) holds no events of \(line)\(request.origin == spec.name ? " (its store's epoch is \(store.epoch))" : "")")
            }
            let own = intake.state.withLock { $0.tracks[line]?.own == true }
            if !own, let mine = intake.types {
                guard let asked = request.types, Set(asked).isSubset(of: mine) else {
                    let missing = request.types.map { Set($0).subtracting(mine).sorted().joined(separator: ", ") } ?? "every type"
                    return refuse("\(spec.name) does not subscribe to \(missing), so it cannot relay all of \(line)'s events asked for")
                }
            }
            if !own, let relayable = intake.state.withLock({ $0.relayable }) {
                guard let asked = request.types, Set(asked).isSubset(of: relayable) else {
                    let joined = request.types.map { Set($0).subtracting(relayable).sorted().joined(separator: ", ") } ?? "every type"
                    return refuse("\(spec.name) subscribes to \(joined) only since a reload, so it cannot relay all of \(line)'s events of them")
                }
            }
            // A cursor moves before its events are written: read it and the events while no
            // intake step is between the two (one holds the turn from its decision to its write).
            return (try? await intake.turn.run {
                page(of: line, request, through: intake.state.withLock { $0.tracks[line]?.cursor } ?? cursor)
            }) ?? refuse("\(spec.name) is stopping")
        }
    }

    /// A replay page of `line` from this node's store: events after `request.after`, through `last` at most.
    private func page(of line: Line, _ request: Replay.Request, through last: UInt64) -> [Frame] {
        var query = EventQuery()
        query.origin = line.origin
        query.epoch = line.epoch
        query.afterSeq = request.after
        query.throughSeq = last
        query.types = request.types
        query.since = request.since
        query.bySeq = true
        query.limit = request.limit
        let stored: [(seq: UInt64, envelope: [UInt8])]
        do { stored = try store.envelopes(query) } catch {
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
        count(.replayServed(frames.count))
        let header: JSONValue = [
            "v": .number(Double(Wire.version)), "status": "ok", "origin": .string(line.origin), "epoch": .string(line.epoch),
            "answered_by": .string(spec.name),
            "last_seq": .number(Double(last)), "through": .number(Double(through)), "count": .number(Double(frames.count)),
        ]
        return [Frame(header.serialized())] + frames
    }

    /// Asks `source` (the origin, or a relay) for a line's events after `request.after`;
    /// waits up to `timeout` for the reply.
    /// The socket comes from `kept` (the one the replay loop keeps for its source) and goes
    /// back there once the reply arrived, so a catch-up pays one connection and handshake,
    /// not one per page.
    func fetchReplay(from source: NodeSpec, _ request: Replay.Request, timeout: Duration, kept: KeptSockets) async throws -> Replay.Reply {
        try decode(try await requestPage(from: source, request, timeout: timeout, kept: kept))
    }

    /// ``fetchReplay(from:_:timeout:kept:)`` without decoding the events: the reply's header
    /// is checked, so the page after it can be asked for while this one is decoded.
    func requestPage(from source: NodeSpec, _ request: Replay.Request, timeout: Duration, kept: KeptSockets) async throws -> Replay.RawPage {
        let socket: Socket
        if let reused = kept.take(for: source.name) {
            socket = reused
        } else {
            socket = try context.socket(.req)
            do {
                try socket.set([.linger(milliseconds: 0), .maxMessageSize(Self.receiveCeiling(topology.settings))])
                try security.dial(socket, to: source)
                try socket.connect(source.replayEndpoint ?? source.repEndpoint)
            } catch {
                socket.close()
                throw error
            }
        }
        // A REQ socket that got its reply is ready for the next request; one that did not is closed.
        var answered = false
        defer { if answered { kept.giveBack(socket, to: source.name) } else { socket.close() } }
        try await socket.send(Message(request.json.serialized()))
        let reply = try await socket.receive(timeout: timeout)
        answered = true
        let header = try Wire.object(reply[0].bytes, what: "replay reply")
        guard header["status"]?.stringValue == "ok" else {
            throw NodeError("\(source.name) refused a replay: \(header["error"]?.stringValue ?? "no reason given")")
        }
        guard let last = header["last_seq"]?.intValue, let through = header["through"]?.intValue, last >= 0, through >= 0 else {
            throw NodeError("replay reply from \(source.name) lacks last_seq/through")
        }
        // The socket dialled one node (by its key): a reply that says another answered is
        // forged. The origin's own events come from it; a relay is trusted to pass them on
        // as they are (CURVE proves who relayed them, not who wrote them).
        let answeredBy = header["answered_by"]?.stringValue ?? header["origin"]?.stringValue
        guard answeredBy == source.name else {
            forged("replay page", claimed: answeredBy ?? "(no answered_by)", sender: source.name)
            throw NodeError("replay reply from \(source.name) claims to come from \(answeredBy ?? "nobody")")
        }
        let origin = header["origin"]?.stringValue
        let epoch = header["epoch"]?.stringValue ?? ""
        guard origin == request.origin, request.epoch == nil || epoch == request.epoch else {
            throw NodeError("replay reply from \(source.name) is for \(origin ?? "no origin")@\(epoch), not \(request.origin)@\(request.epoch ?? "")")
        }
        return Replay.RawPage(
            lastSeq: UInt64(last), through: UInt64(through), origin: request.origin, epoch: epoch, source: source.name,
            frames: Array(reply.dropFirst()))
    }

    /// Decodes a page's events; one of another line fails the page (and counts as forged
    /// when the origin itself sent it).
    func decode(_ page: Replay.RawPage) throws -> Replay.Reply {
        var events: [Intake.Held] = []
        events.reserveCapacity(page.frames.count)
        for frame in page.frames {
            let bytes = frame.bytes
            let event = try EnvelopeCodec.decode(bytes)
            guard event.origin == page.origin, event.epoch == page.epoch else {
                if page.source == page.origin {
                    forged("replayed event \(event.id) (seq \(event.seq))", claimed: event.origin, sender: page.source)
                }
                throw NodeError("replay reply from \(page.source) holds an event of \(event.line), not of \(page.origin)@\(page.epoch)")
            }
            events.append(Intake.Held(event: event, envelope: bytes, marks: nil))
        }
        return Replay.Reply(lastSeq: page.lastSeq, through: page.through, events: events)
    }
}

// The survey: every node asks its peers which lines they hold and how far, at start and
// every few seconds while an origin it follows is down or its store is being refilled.
// Lines it does not know yet are taken on (a refill, an epoch missed while away), and lines
// a peer holds further than this node are replayed (from that peer, while the origin is down).
// Request: `{"v":1, "kind":"lines", "from_node":N}`; reply `{"v":1, "status":"ok",
// "answered_by":P, "lines":[{"origin":O, "epoch":E, "through":S}, ...]}`, taken only when P
// is the node asked. `through` is the answerer's cursor (its last sequence, for its own line).
extension Node {
    func linesReply(_ object: [String: JSONValue]) -> [UInt8] {
        guard object["kind"]?.stringValue == "lines" else {
            reject("request of unknown kind \(object["kind"]?.serializedString ?? "null")", .request)
            return Wire.errorReply(requestID: nil, answeredBy: spec.name, error: "unknown request kind \(object["kind"]?.serializedString ?? "null") (replay, lines, or a question)")
        }
        var lines: [JSONValue] = [["origin": .string(spec.name), "epoch": .string(store.epoch), "through": .number(Double(publisher.lastSeq))]]
        for (line, track) in intake.state.withLock({ $0.tracks }) {
            lines.append(["origin": .string(line.origin), "epoch": .string(line.epoch), "through": .number(Double(track.cursor ?? 0))])
        }
        return JSONValue.object([
            "v": .number(Double(Wire.version)), "status": "ok", "answered_by": .string(spec.name), "lines": .array(lines),
        ]).serialized()
    }

    /// Asks one peer which lines it holds; nil when it does not answer in time.
    func askLines(_ peer: NodeSpec, timeout: Duration) async -> [Line: UInt64]? {
        guard let socket = try? context.socket(.req) else { return nil }
        defer { socket.close() }
        do {
            try socket.set([.linger(milliseconds: 0), .maxMessageSize(Int64(topology.settings.maxMessageBytes))])
            try security.dial(socket, to: peer)
            try socket.connect(peer.repEndpoint)
            try await socket.send(Message(JSONValue.object([
                "v": .number(Double(Wire.version)), "kind": "lines", "from_node": .string(spec.name),
            ]).serialized()))
            let reply = try JSONValue(parsing: try await socket.receive(timeout: timeout)[0].bytes)
            let claimed = reply["answered_by"]?.stringValue
            guard claimed == peer.name else {
                forged("lines reply", claimed: claimed ?? "(no answered_by)", sender: peer.name)
                return nil
            }
            var lines: [Line: UInt64] = [:]
            for item in reply["lines"]?.arrayValue ?? [] {
                guard let origin = item["origin"]?.stringValue, let epoch = item["epoch"]?.stringValue,
                      epoch.isEmpty || Epoch.isValid(epoch), let through = item["through"]?.intValue, through >= 0 else { continue }
                lines[Line(origin, epoch)] = UInt64(through)
            }
            return lines
        } catch {
            return nil
        }
    }

    /// Surveys the peers now and then (see above) and acts on what they hold.
    func surveyLoop() async throws {
        let interval = Duration.milliseconds(max(1000, topology.settings.heartbeatMilliseconds * 10))
        let timeout = Duration.milliseconds(max(1000, topology.settings.askTimeoutMilliseconds))
        var first = true
        while true {
            // The first round waits a little, so peers' heartbeats show who is up.
            try await Task.sleep(for: first ? .milliseconds(min(1000, topology.settings.heartbeatMilliseconds * 2)) : interval)
            let peers = topology.peers(of: spec.name)
            let anyDown = peers.contains { !self.peers.isUp($0.name) }
            if intake.state.withLock({ $0.surveyDue(first: first, anyDown: anyDown) }) {
                await survey(peers, timeout: timeout)
            }
            first = false
            checkRefill(peers)
        }
    }

    func survey(_ peers: [NodeSpec], timeout: Duration) async {
        let answers = await withTaskGroup(of: (String, [Line: UInt64]?).self) { group in
            for peer in peers { group.addTask { (peer.name, await self.askLines(peer, timeout: timeout)) } }
            var all: [String: [Line: UInt64]] = [:]
            for await (name, lines) in group { if let lines { all[name] = lines } }
            return all
        }
        let context = Delivery.SurveyContext(
            me: spec.name, epoch: store.epoch, origins: Set(topology.nodes.map(\.name)),
            fromTheBeginning: options.catchUp == .beginning, up: peers.filter { self.peers.isUp($0.name) }.map(\.name))
        let outcome = intake.state.withLock { $0.surveyed(answers, context) }
        if !outcome.added.isEmpty {
            logger.notice("peers hold \(outcome.added.count) lines this node had none of: \(outcome.added.map(\.description).sorted().joined(separator: ", "))")
        }
        for line in outcome.replay { startReplay(of: line) }
    }

    /// Ends the refill when ``Delivery/checkRefill(now:)`` says so, and says how it goes.
    func checkRefill(_ peers: [NodeSpec]) {
        let (step, r) = intake.state.withLock { d in (d.checkRefill(now: .now), d.refill) }
        switch step {
        case .none:
            return
        case .going(let short):
            let still = r.targets == nil ? "; waiting for every peer that is up to answer the survey" : "; short: \(short.joined(separator: ", "))"
            logger.info("refilling from peers: \(r.events) events of \(r.lines.count) lines so far, \(r.answered.count) of \(peers.count) peers answered\(still)")
        case .done:
            let seconds = Double((ContinuousClock.now - r.started).components.seconds)
            logger.notice("refill done: \(r.events) events of \(r.lines.count) lines from \(r.answered.count) of \(peers.count) peers in about \(Int(seconds)) s")
            refillFinished()
        }
    }
}
