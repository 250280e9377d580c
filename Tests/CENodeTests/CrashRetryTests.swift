import CECore
import CENode
import Foundation
import Synchronization
import Testing

/// kill -9 of an origin while emits are in flight: each event is either stored and
/// acknowledged, or not acknowledged; a caller that retries what got no reply, with the same
/// ids, ends with every event stored once, numbered without a gap, at the origin and at its
/// subscriber.
@Suite("An origin killed between its commit and its reply", .serialized)
struct CrashRetryTests {
    @Test func unacknowledgedEmitsRetriedWithTheirIdsAreStoredOnce() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")],
                              settings: "heartbeat_ms: 200") { cluster in
            final class Ledger: Sendable {
                /// id -> the sequence it was acknowledged with.
                let acknowledged = Mutex<[String: Int]>([:])
                let unanswered = Mutex<[String]>([])
            }
            let ledger = Ledger()
            let callers = 4
            let batch = 25
            func emit(_ ids: [String]) async throws -> [Int] {
                let events: [JSONValue] = ids.map { ["event_type": "plan_ready", "id": .string($0), "payload": ["id": .string($0)]] }
                let reply = try await cluster.control("planner-1", ["cmd": "emit", "events": .array(events)], timeout: .seconds(5))
                return (reply["events"]?.arrayValue ?? []).map { $0["seq"]?.intValue ?? -1 }
            }
            // Callers stream batches until the origin dies under them (bounded in count).
            let streaming = Task {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for caller in 0..<callers {
                        group.addTask {
                            for round in 0..<400 {
                                let ids = (0..<batch).map { "c\(caller)-r\(round)-e\($0)" }
                                do {
                                    let seqs = try await emit(ids)
                                    ledger.acknowledged.withLock { for (id, seq) in zip(ids, seqs) { $0[id] = seq } }
                                } catch {
                                    ledger.unanswered.withLock { $0 += ids }
                                    return  // the origin is gone: this caller stops
                                }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            try await eventually(30, "some batches acknowledged before the kill") { ledger.acknowledged.withLock { $0.count } >= 500 }
            cluster.kill("planner-1")
            try await streaming.value
            let acknowledged = ledger.acknowledged.withLock { $0 }
            let unanswered = ledger.unanswered.withLock { $0 }
            #expect(!unanswered.isEmpty, "the kill came while emits were in flight")
            // Restart and retry what got no reply, with the same ids.
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            for chunk in stride(from: 0, to: unanswered.count, by: batch) {
                let ids = Array(unanswered[chunk..<min(unanswered.count, chunk + batch)])
                let seqs = try await emit(ids)
                #expect(seqs.count == ids.count)
                for (id, seq) in zip(ids, seqs) where acknowledged[id] != nil {
                    #expect(acknowledged[id] == seq, "\(id) was acknowledged with \(acknowledged[id]!), retried as \(seq)")
                }
            }
            let total = acknowledged.count + unanswered.count
            // The origin: every id once, sequences 1...total, each acknowledged one where it was acknowledged.
            let origin = try await cluster.history("planner-1")
            #expect(origin.count == total)
            #expect(Set(origin.compactMap { $0["id"]?.stringValue }).count == total)
            #expect(origin.compactMap { $0["seq"]?.intValue }.sorted() == Array(1...total))
            let stored = Dictionary(origin.map { ($0["id"]?.stringValue ?? "", $0["seq"]?.intValue ?? -1) }, uniquingKeysWith: { a, _ in a })
            for (id, seq) in acknowledged { #expect(stored[id] == seq, "acknowledged \(id) at \(seq), stored at \(stored[id] ?? -1)") }
            // The subscriber catches up to the same events, none twice.
            try await eventually(60, "builder-1 holds all \(total) events") {
                try await cluster.history("builder-1", type: "plan_ready").count >= total
            }
            let copy = try await cluster.history("builder-1", type: "plan_ready")
            #expect(copy.count == total)
            #expect(copy.compactMap { $0["seq"]?.intValue } == Array(1...total), "in origin order, none missing or doubled")
        }
    }

    @Test func eventFilesFoundAgainAfterAKillAreEmittedOnce() async throws {
        try await withCluster([.init(name: "planner-1", pool: "planner", workspace: true)], start: []) { cluster in
            let count = 12_000
            let outbox = try cluster.dropEventFiles("planner-1", count: count)
            func sent() -> Int { ((try? FileManager.default.contentsOfDirectory(atPath: outbox + "/sent")) ?? []).count }
            try cluster.start("planner-1")
            // Killed while it works through the folder: some batches stored and moved, one
            // perhaps stored and not yet moved, the rest still waiting.
            try await eventually(60, "the node has sent some of the files") { sent() >= 1000 }
            cluster.kill("planner-1")
            let before = sent()
            #expect(before < count, "the kill came before the folder was done")
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            try await eventually(120, "every file is moved to sent/") { sent() == count }
            // The window a kill may or may not hit, made certain: every file is stored, and
            // none of the moves reached the disk (all back in the folder, as after a crash
            // right after the commits).
            cluster.kill("planner-1")
            for name in try FileManager.default.contentsOfDirectory(atPath: outbox + "/sent") {
                try FileManager.default.moveItem(atPath: outbox + "/sent/" + name, toPath: outbox + "/" + name)
            }
            try cluster.start("planner-1")
            try await cluster.waitUntilUp("planner-1")
            try await eventually(120, "every file is moved to sent/ again") { sent() == count }
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: outbox + "/rejected")) ?? []).isEmpty)
            try await cluster.expectEventFilesStoredInOrder("planner-1", count: count)
        }
    }
}
