import CECore
import CECoordinator
@testable import CENode
import Foundation
import Testing

/// Publishing's pure step, driven without a store or sockets: sequence numbers, marks, the
/// admission checks, and the ledgers a batch carries from one emit to the next.
@Suite("Stamping")
struct StamperTests {
    static let topology = try! TopologyLoader.parse(yaml: """
        version: 1
        cluster: t
        coordinator: { name: coord, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 } }
        nodes:
          - { name: planner-1, pool: planner, host: 127.0.0.1, ports: { pub: 7002, rep: 7003 } }
        settings: { security: none, max_message_bytes: 2048 }
        """)

    static func stamper(_ node: String = "planner-1", line: Publisher.Position = .init(lastSeq: 4, marks: ["plan_ready": 4]),
                        ledgers: Ledgers? = nil) -> Stamper {
        Stamper(
            origin: node, epoch: "e1", admission: Admission(topology: topology, busTypes: Node.busTypes),
            coordinators: ["coord"], isCoordinator: node == "coord", withMarks: true, line: line,
            ledgers: ledgers ?? Ledgers(decisions: DecisionLedger(topology: topology)))
    }

    static func emit(_ type: EventType, _ payload: JSONValue = [:], stream: String = "planner", correlation: String? = nil) -> Node.PendingEmit {
        Node.PendingEmit(type: type, stream: stream, payload: payload, correlationID: correlation, target: nil, id: nil, complete: { _ in })
    }

    @Test func sequencesFollowTheLineAndARefusedEmitTakesNone() throws {
        var stamper = Self.stamper()
        let now = Date()
        let first = try stamper.stamp(Self.emit(.planReady), now: now)
        #expect(first.event.seq == 5)
        #expect(String(decoding: first.marks ?? [], as: UTF8.self) == #"{"plan_ready":4}"#, "the marks before the event")
        #expect(throws: (any Error).self) { try stamper.stamp(Self.emit(try EventType(validating: "plan_redy")), now: now) }
        #expect(throws: (any Error).self) { try stamper.stamp(Self.emit(.planReady, ["text": .string(String(repeating: "x", count: 4000))]), now: now) }
        #expect(throws: (any Error).self) { try stamper.stamp(Self.emit(.planReady, stream: "no spaces"), now: now) }
        let second = try stamper.stamp(Self.emit(.buildReady), now: now)
        #expect(second.event.seq == 6, "three refusals between them took no sequence number")
        #expect(String(decoding: second.marks ?? [], as: UTF8.self) == #"{"plan_ready":5}"#)
        #expect(stamper.marks.marks == ["plan_ready": 5, "build_ready": 6])
        let decoded = try EnvelopeCodec.decode(second.envelope)
        #expect(decoded.id == second.event.id && decoded.seq == 6 && decoded.type == .buildReady && decoded.origin == "planner-1", "the envelope is the event")
    }

    @Test func aCustomTypeAdmittedOnPurposeIsNotAdmittedForTheNextEmitThatDidNotAsk() throws {
        var stamper = Self.stamper()
        var custom = Self.emit(try EventType(validating: "draft_notes"))
        custom.allowCustomType = true
        _ = try stamper.stamp(custom, now: Date())
        _ = try stamper.stamp(custom, now: Date())
        custom.allowCustomType = false
        #expect(throws: (any Error).self, "the type admitted just before was admitted on purpose, not for this emit") {
            try stamper.stamp(custom, now: Date())
        }
        #expect(stamper.next == 7)
    }

    @Test func aSecondResolveInTheSameBatchIsRefusedNamingTheFirst() throws {
        var ledgers = Ledgers(decisions: DecisionLedger(topology: Self.topology))
        let needed = Event(
            id: "r1", origin: "coord", epoch: "e0", seq: 1, stream: "coordinator", type: .resolutionNeeded, timestamp: Date(),
            payload: ["conflict_id": "c-1", "subject": "api", "level": 0], correlationID: nil, target: nil)
        _ = ledgers.take(needed)
        var stamper = Self.stamper(ledgers: ledgers)
        let resolved = try stamper.stamp(Self.emit(.conflictResolved, ["conflict_id": "c-1", "decision": "v2", "resolved_by": "someone"]), now: Date())
        #expect(resolved.event.payload["resolved_by"] == "planner", "the node says who resolved, not the caller")
        do {
            _ = try stamper.stamp(Self.emit(.conflictResolved, ["conflict_id": "c-1", "decision": "v3"]), now: Date())
            Issue.record("a second resolve was stamped")
        } catch {
            #expect("\(error)".contains("already resolved by planner"))
        }
        #expect(throws: (any Error).self) { try stamper.stamp(Self.emit(.conflictResolved, ["conflict_id": "nope", "decision": "x"]), now: Date()) }
    }

    @Test func decisionsOnlyFromACoordinatorOncePerKeyAndClaimsOnlyForANewerTerm() throws {
        var pool = Self.stamper()
        #expect(throws: (any Error).self) { try pool.stamp(Self.emit(.gatePassed, ["gate": "g", "round": 1], stream: "coordinator"), now: Date()) }
        var coordinator = Self.stamper("coord", line: .init(lastSeq: 0, marks: [:]))
        let passed = try coordinator.stamp(Self.emit(.gatePassed, ["gate": "g", "round": 1], stream: "coordinator"), now: Date())
        #expect(passed.event.seq == 1)
        do {
            _ = try coordinator.stamp(Self.emit(.gatePassed, ["gate": "g", "round": 1], stream: "coordinator"), now: Date())
            Issue.record("a gate round was decided twice")
        } catch {
            #expect("\(error)".contains("decided already"))
        }
        #expect(throws: (any Error).self) { try coordinator.stamp(Self.emit(.coordinatorActive, ["term": 0, "node": "coord"], stream: "coordinator"), now: Date()) }
        _ = try coordinator.stamp(Self.emit(.gatePassed, ["gate": "g", "round": 2], stream: "coordinator"), now: Date())
        #expect(coordinator.next == 3)
    }
}
