import CECore
import CECoordinator
import CEStore
import Foundation
import Synchronization
import ZeroMQ

/// This node's own line: the last sequence it stamped and its last sequence per event type
/// (the marks sent beside each event and heartbeat), the queue of emits waiting to be
/// stamped, and the lock held while its events or a heartbeat go out.
final class Publisher: Sendable {
    /// How far the line is: its last sequence, and the last per event type.
    struct Position: Sendable {
        var lastSeq: UInt64
        var marks: [String: UInt64]
    }

    let queue = BatchQueue<Node.PendingEmit>()
    /// Held while this node's own events or a heartbeat go out on its PUB socket: a heartbeat
    /// reads the last sequence and is sent with no event published in between, so it never
    /// tells a subscriber a sequence older than events it has already sent.
    let sending = AsyncLock()
    private let line: Mutex<Position>

    init(lastSeq: UInt64, marks: [String: UInt64]) { line = Mutex(Position(lastSeq: lastSeq, marks: marks)) }

    var current: Position { line.withLock { $0 } }
    var lastSeq: UInt64 { line.withLock { $0.lastSeq } }

    /// Moves the line past a published batch.
    func published(through seq: UInt64, marks: [String: UInt64]) { line.withLock { $0 = Position(lastSeq: seq, marks: marks) } }
}

/// The pure step of publishing: admits each emit (the same checks whichever door it came
/// through), gives it the next sequence, and encodes its envelope and the marks sent beside
/// it. No I/O and no clock of its own; the emit loop stores what it returns, publishes it and
/// answers the callers.
struct Stamper {
    let origin: String
    let epoch: String
    let admission: Admission
    /// The coordinators' names, and whether this node is one (who may emit decisions).
    let coordinators: [String]
    let isCoordinator: Bool
    /// Marks frames are made only where subscribers track sequences.
    let withMarks: Bool
    private(set) var next: UInt64
    private(set) var marks: Marks.Writer
    /// The conflicts and decisions as stored, with this batch's stamped events taken in.
    private(set) var ledgers: Ledgers

    /// Whether this batch stamped an event a ledger reads (a decision or a conflict).
    private(set) var stampedLedgered = false
    /// The type last admitted, and whether a ledger reads it.
    private var lastType: (type: EventType, allowCustom: Bool, ledgered: Bool)?

    init(origin: String, epoch: String, admission: Admission, coordinators: [String], isCoordinator: Bool,
         withMarks: Bool, line: Publisher.Position, ledgers: Ledgers) {
        self.origin = origin
        self.epoch = epoch
        self.admission = admission
        self.coordinators = coordinators
        self.isCoordinator = isCoordinator
        self.withMarks = withMarks
        next = line.lastSeq + 1
        marks = Marks.Writer(line.marks)
        self.ledgers = ledgers
    }

    /// Stamps one emit as made at `now`: the event, its envelope and the marks before it
    /// (nil without sequence tracking). Throws why it is refused (a refused emit takes no
    /// sequence number).
    mutating func stamp(_ pending: Node.PendingEmit, now: Date) throws -> (event: Event, envelope: [UInt8], marks: [UInt8]?) {
        guard Name.isValid(pending.stream) else {
            throw NodeError("stream \"\(pending.stream)\" is not a valid name ([A-Za-z0-9_.-], 1-64 bytes)")
        }
        // A batch mostly repeats one type: the last one admitted is recognised by a
        // comparison instead of two lookups.
        let ledgered: Bool
        if let last = lastType, last.type == pending.type, last.allowCustom == pending.allowCustomType {
            ledgered = last.ledgered
        } else {
            try admission.check(type: pending.type, allowCustom: pending.allowCustomType)
            // Nearly every event is of a type no ledger reads: one lookup passes it over.
            ledgered = Ledgers.typeSet.contains(pending.type)
            lastType = (pending.type, pending.allowCustomType, ledgered)
        }
        try admission.check(target: pending.target)
        try admission.check(correlationID: pending.correlationID)
        var payload = pending.payload
        if ledgered {
            try admitDecision(pending)
            if pending.type == .conflictResolved { payload = try admitResolve(pending) }
        }
        let event = Event(
            id: pending.id ?? EventID.make(now: now), origin: origin, epoch: epoch, seq: next, stream: pending.stream,
            type: pending.type, timestamp: now, payload: payload,
            correlationID: pending.correlationID, target: pending.target)
        let envelope = EnvelopeCodec.encode(event)
        try admission.check(envelopeBytes: envelope.count)
        if ledgered {
            _ = ledgers.take(event)
            stampedLedgered = true
        }
        next += 1
        let frame = withMarks ? marks.bytes() : nil
        marks.advance(type: event.type.rawValue, seq: event.seq)
        return (event, envelope, frame)
    }

    /// A resolve is checked against the conflicts as stored here (and stamped in this
    /// batch); its payload gets `resolved_by` set to who resolved.
    private func admitResolve(_ pending: Node.PendingEmit) throws -> JSONValue {
        guard case .object(var payload) = pending.payload, let id = payload["conflict_id"]?.stringValue else {
            throw NodeError("conflict_resolved needs a payload with \"conflict_id\" and \"decision\"")
        }
        if let refusal = ledgers.conflicts.refusal(resolving: id) { throw NodeError("cannot resolve: \(refusal)") }
        if payload["resolved_by"]?.stringValue != "human" { payload["resolved_by"] = .string(pending.stream) }
        return .object(payload)
    }

    /// A coordinator decision is emitted only by a coordinator, in the current term, and once
    /// per gate round or conflict level; a claim of the active role only for a newer term.
    private func admitDecision(_ pending: Node.PendingEmit) throws {
        guard Ledgers.decisionTypes.contains(pending.type) else { return }
        let decisions = ledgers.decisions
        guard isCoordinator else {
            throw NodeError("\(pending.type) is a coordinator's decision: only \(coordinators.isEmpty ? "a coordinator" : coordinators.joined(separator: " or ")) emits it")
        }
        let term = max(0, pending.payload["term"]?.intValue ?? 0)
        if pending.type == .coordinatorActive {
            guard term > decisions.term else {
                throw NodeError("coordinator_active for term \(term), but term \(decisions.term) (\(decisions.active ?? "?")) has begun already")
            }
            return
        }
        guard term >= decisions.term else {
            throw NodeError("\(pending.type) of term \(term) is fenced: \(decisions.active ?? "?") is the active coordinator in term \(decisions.term)")
        }
        if let key = DecisionLedger.key(pending.type, pending.payload, pending.correlationID), decisions.taken.contains(key) {
            throw NodeError("\(key) was decided already")
        }
    }
}

extension Node {
    /// Takes every emit queued so far, stamps and stores them in one transaction, publishes
    /// them in sequence order, then answers the callers.
    func emitLoop(pub: Socket, feed: Socket) async throws {
        while let batch = await publisher.queue.take() {
            // The admission rules are read once a batch: a reload may change them between
            // batches, never within one.
            var stamper = Stamper(
                origin: spec.name, epoch: store.epoch, admission: admission, coordinators: topology.coordinators.map(\.name),
                isCoordinator: spec.isCoordinator, withMarks: options.replay, line: publisher.current, ledgers: ledgers.withLock { $0 })
            var events: [Event] = []
            var records: [StoredEvent] = []
            var markFrames: [[UInt8]?] = []
            var waiting: [@Sendable (Result<Event, any Error>) -> Void] = []
            /// Ids given in this batch, and emits that repeat one of them.
            var batchIDs: [String: Int] = [:]
            var repeats: [(index: Int, complete: @Sendable (Result<Event, any Error>) -> Void)] = []
            let now = Date()
            // By index: iterating would copy every emit (a retain and a release for each of
            // its strings and its payload).
            for i in batch.indices {
                // An event emitted again with the id it already has (an event file found again
                // after a crash, a caller retrying an emit it got no answer for) is not stored or
                // sent twice: the caller gets the event as stored.
                if let id = batch[i].id {
                    if let index = batchIDs[id] {
                        repeats.append((index, batch[i].complete))
                        continue
                    }
                    if let stored = try? store.envelope(id: id), let event = try? EnvelopeCodec.decode(stored) {
                        if event.origin == spec.name {
                            batch[i].complete(.success(event))
                        } else {
                            batch[i].complete(.failure(NodeError("event id \(id) is taken by an event of \(event.origin)")))
                        }
                        continue
                    }
                }
                do {
                    let (event, envelope, marks) = try stamper.stamp(batch[i], now: now)
                    if let id = batch[i].id { batchIDs[id] = events.count }
                    records.append(StoredEvent(event: event, envelope: envelope, receivedAt: now))
                    events.append(event)
                    markFrames.append(marks)
                    waiting.append(batch[i].complete)
                } catch {
                    batch[i].complete(.failure(error))
                }
            }
            if events.isEmpty { continue }
            do {
                _ = try await writer.append(records)
            } catch {
                logger.error("store refused \(events.count) events: \(error)")
                for c in waiting { c(.failure(error)) }
                for r in repeats { r.complete(.failure(error)) }
                continue
            }
            count(.emitted(events.count))
            metrics.stored(events.count, from: spec.name)
            var wire: [Message] = []
            var local: [Message] = []
            wire.reserveCapacity(events.count)
            local.reserveCapacity(events.count)
            // By index: iterating the arrays would copy every event and record (a retain and
            // a release for each of their strings) to read three fields.
            for index in events.indices {
                let topic = Frame(Topic.bytes(type: events[index].type, stream: events[index].stream))
                let envelope = Frame(records[index].envelope)
                wire.append(Message(markFrames[index].map { [topic, envelope, Frame($0)] } ?? [topic, envelope]))
                local.append(Message([topic, envelope]))
            }
            // The committed batch goes out in one go, in sequence order.
            try? await publisher.sending.run {
                publisher.published(through: events.last!.seq, marks: stamper.marks.marks)
                try? await pub.send(batch: wire)
            }
            try? await feed.send(batch: local)
            if stamper.stampedLedgered {
                ledgers.withLock { l in for i in events.indices where Ledgers.decisionTypes.contains(events[i].type) { _ = l.decisions.take(events[i]) } }
            }
            broadcast(events, mayHoldConflicts: stamper.stampedLedgered)
            for i in events.indices { waiting[i](.success(events[i])) }
            for r in repeats { r.complete(.success(events[r.index])) }
        }
    }
}
