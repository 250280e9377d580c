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

    struct Stamped {
        var event: Event
        var envelope: [UInt8]
        /// The marks before this event (nil without sequence tracking).
        var marks: [UInt8]?
    }

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

    /// Stamps one emit as made at `now`, or throws why it is refused (a refused emit takes
    /// no sequence number).
    mutating func stamp(_ pending: Node.PendingEmit, now: Date) throws -> Stamped {
        var pending = pending
        try admit(&pending)
        try admitDecision(pending)
        let event = Event(
            id: pending.id ?? EventID.make(now: now), origin: origin, epoch: epoch, seq: next, stream: pending.stream,
            type: pending.type, timestamp: now, payload: pending.payload,
            correlationID: pending.correlationID, target: pending.target)
        let envelope = EnvelopeCodec.encode(event)
        try admission.check(envelopeBytes: envelope.count)
        ledgers.conflicts.take(event)
        _ = ledgers.decisions.take(event)
        next += 1
        let frame = withMarks ? marks.bytes() : nil
        marks.advance(type: event.type.rawValue, seq: event.seq)
        return Stamped(event: event, envelope: envelope, marks: frame)
    }

    /// The checks every emit passes: a valid stream, a known type, a target of the cluster,
    /// a correlation id of 1-128 bytes; a resolve is checked against the conflicts as stored
    /// here and gets `resolved_by` set to who resolved.
    private func admit(_ pending: inout Node.PendingEmit) throws {
        guard Name.isValid(pending.stream) else {
            throw NodeError("stream \"\(pending.stream)\" is not a valid name ([A-Za-z0-9_.-], 1-64 bytes)")
        }
        try admission.check(type: pending.type, allowCustom: pending.allowCustomType)
        try admission.check(target: pending.target)
        try admission.check(correlationID: pending.correlationID)
        if pending.type == .conflictResolved {
            guard case .object(var payload) = pending.payload, let id = payload["conflict_id"]?.stringValue else {
                throw NodeError("conflict_resolved needs a payload with \"conflict_id\" and \"decision\"")
            }
            if let refusal = ledgers.conflicts.refusal(resolving: id) { throw NodeError("cannot resolve: \(refusal)") }
            if payload["resolved_by"]?.stringValue != "human" { payload["resolved_by"] = .string(pending.stream) }
            pending.payload = .object(payload)
        }
    }

    /// A coordinator decision is emitted only by a coordinator, in the current term, and once
    /// per gate round or conflict level; a claim of the active role only for a newer term.
    private func admitDecision(_ pending: Node.PendingEmit) throws {
        guard DecisionLedger.types.contains(pending.type) else { return }
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
            var stamped: [Stamper.Stamped] = []
            var waiting: [@Sendable (Result<Event, any Error>) -> Void] = []
            /// Ids given in this batch, and emits that repeat one of them.
            var batchIDs: [String: Int] = [:]
            var repeats: [(index: Int, complete: @Sendable (Result<Event, any Error>) -> Void)] = []
            let now = Date()
            for pending in batch {
                // An event emitted again with the id it already has (an event file found again
                // after a crash, a caller retrying an emit it got no answer for) is not stored or
                // sent twice: the caller gets the event as stored.
                if let id = pending.id {
                    if let index = batchIDs[id] {
                        repeats.append((index, pending.complete))
                        continue
                    }
                    if let stored = try? store.envelope(id: id), let event = try? EnvelopeCodec.decode(stored) {
                        if event.origin == spec.name {
                            pending.complete(.success(event))
                        } else {
                            pending.complete(.failure(NodeError("event id \(id) is taken by an event of \(event.origin)")))
                        }
                        continue
                    }
                }
                do {
                    stamped.append(try stamper.stamp(pending, now: now))
                    if let id = pending.id { batchIDs[id] = stamped.count - 1 }
                    waiting.append(pending.complete)
                } catch {
                    pending.complete(.failure(error))
                }
            }
            if stamped.isEmpty { continue }
            do {
                _ = try await writer.append(stamped.map { StoredEvent(event: $0.event, envelope: $0.envelope, receivedAt: now) })
            } catch {
                logger.error("store refused \(stamped.count) events: \(error)")
                for c in waiting { c(.failure(error)) }
                for r in repeats { r.complete(.failure(error)) }
                continue
            }
            count(.emitted(stamped.count))
            metrics.stored(stamped.count, from: spec.name)
            var wire: [Message] = []
            var local: [Message] = []
            wire.reserveCapacity(stamped.count)
            local.reserveCapacity(stamped.count)
            // By index: iterating the array would copy every event (a retain and a release
            // for each of its strings) to read three fields.
            for index in stamped.indices {
                let topic = Frame(Topic.bytes(type: stamped[index].event.type, stream: stamped[index].event.stream))
                let envelope = Frame(stamped[index].envelope)
                wire.append(Message(stamped[index].marks.map { [topic, envelope, Frame($0)] } ?? [topic, envelope]))
                local.append(Message([topic, envelope]))
            }
            let events = stamped.map(\.event)
            // The committed batch goes out in one go, in sequence order.
            try? await publisher.sending.run {
                publisher.published(through: events.last!.seq, marks: stamper.marks.marks)
                try? await pub.send(batch: wire)
            }
            try? await feed.send(batch: local)
            if events.contains(where: { DecisionLedger.types.contains($0.type) }) {
                ledgers.withLock { l in for e in events where DecisionLedger.types.contains(e.type) { _ = l.decisions.take(e) } }
            }
            broadcast(events)
            for (event, c) in zip(events, waiting) { c(.success(event)) }
            for r in repeats { r.complete(.success(events[r.index])) }
        }
    }
}
