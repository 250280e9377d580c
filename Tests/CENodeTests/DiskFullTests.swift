import CECluster
import CECore
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A full disk under the store: emits fail with an error naming the store, nothing stored is
/// lost, the node keeps serving, and it writes again once there is room.
@Suite("A full disk", .serialized)
struct DiskFullTests {
    /// Mounts a tmpfs of `megabytes` on `path`; false where this machine does not allow it.
    static func mountTmpfs(_ path: String, megabytes: Int) -> Bool {
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return mount("tmpfs", path, "tmpfs", 0, "size=\(megabytes)m,mode=0700") == 0
    }

    static func resize(_ path: String, megabytes: Int) -> Bool {
        mount("tmpfs", path, "tmpfs", UInt(MS_REMOUNT), "size=\(megabytes)m,mode=0700") == 0
    }

    /// Runs `body` with node `small`'s data folder on a 4 MiB tmpfs (skipped, and said so,
    /// where this machine does not allow the mount), then stops the nodes and unmounts, also
    /// when the body fails (printing `small`'s log).
    static func withSmallDisk(_ cluster: Cluster, for small: String, _ body: (String) async throws -> Void) async throws {
        let data = cluster.data(small)
        // The harness made the node's CURVE key in its data folder: keep it across the mount.
        let key = FileManager.default.contents(atPath: data + "/curve.key")
        guard mountTmpfs(data, megabytes: 4) else {
            print("SKIPPED: cannot mount a tmpfs here (\(String(cString: strerror(errno)))); the full-disk test needs root")
            await cluster.tearDown()
            return
        }
        if let key {
            #expect(FileManager.default.createFile(atPath: data + "/curve.key", contents: key, attributes: [.posixPermissions: 0o600]))
        }
        func tearDown() async {
            cluster.kill(small)
            umount2(data, Int32(MNT_DETACH))
            await cluster.tearDown()
        }
        do {
            try await body(data)
        } catch {
            print("--- \(small)\n\(cluster.log(small).suffix(3000))")
            await tearDown()
            throw error
        }
        await tearDown()
    }

    /// An origin whose disk fills: `emit` fails with an error naming the store, an event file
    /// dropped meanwhile waits where the agent put it (not quarantined), and both work again
    /// once there is room, numbered right after what was stored.
    @Test func emitFailsClearlyWhenTheDiskIsFullAndRecoversWhenRoomReturns() async throws {
        let cluster = try await Cluster.make([.init(name: "planner-1", pool: "planner", workspace: true)], pools: "", settings: "heartbeat_ms: 200")
        try await Self.withSmallDisk(cluster, for: "planner-1") { data in
            try await cluster.launch(["planner-1"])
            let big: JSONValue = ["blob": .string(String(repeating: "z", count: 60_000))]
            var stored = 0
            var failure: String?
            // Fill the 4 MiB until the store refuses (bounded: far more than fits).
            for _ in 0..<400 {
                do {
                    try await cluster.emit("planner-1", "plan_ready", big)
                    stored += 1
                } catch {
                    failure = "\(error)"
                    break
                }
            }
            let message = try #require(failure, "4 MiB never filled up after \(stored) events of 60 kB")
            #expect(message.contains("events.sqlite"), "the error names the store: \(message)")
            #expect(message.contains("full"), "the error says the disk is full: \(message)")
            // What a 60 kB event did not fit in may still hold small ones (the failed commit's
            // WAL frames stay allocated, and are written over by the next): fill it with events
            // of an event file's size, until the store refuses those too.
            var small = false
            for n in 0..<200 {
                do {
                    try await cluster.emit("planner-1", "plan_ready", ["small": .number(Double(n))])
                    stored += 1
                } catch {
                    small = true
                    break
                }
            }
            #expect(small, "the disk never filled up for small events")
            // Still serving: status answers, and everything acknowledged is there.
            #expect(try await cluster.status("planner-1")["last_seq"]?.intValue == stored)
            #expect(cluster.processes["planner-1"]!.isRunning)
            // An event file dropped now waits in the outbox: the file is fine, the disk is not.
            let outbox = cluster.workspace("planner-1") + "/.ce-events"
            let file = #"{"stream":"planner","event_type":"schema_v1","payload":{"tables":["user"]}}"#
            try Data(file.utf8).write(to: URL(fileURLWithPath: outbox + "/.writing"))
            try FileManager.default.moveItem(atPath: outbox + "/.writing", toPath: outbox + "/planner_schema_v1_1.json")
            try await eventually(10, "the node says the event file waits") {
                cluster.log("planner-1").contains("event file planner_schema_v1_1.json waits")
            }
            // Tried again every second (each try refused by the store, logged by the emit
            // loop), the file's waiting is logged once.
            func after(_ log: String) -> Substring { log[log.range(of: "event file planner_schema_v1_1.json waits")!.upperBound...] }
            try await eventually(10, "the file is tried twice more") { after(cluster.log("planner-1")).components(separatedBy: "store refused").count - 1 >= 2 }
            #expect(cluster.log("planner-1").components(separatedBy: "event file planner_schema_v1_1.json waits").count - 1 == 1)
            #expect(FileManager.default.fileExists(atPath: outbox + "/planner_schema_v1_1.json"), "the file stays in the outbox")
            #expect(!FileManager.default.fileExists(atPath: outbox + "/rejected/planner_schema_v1_1.json"), "the file is not quarantined")
            // Room again: the file is sent, and the next emit is numbered right after it.
            #expect(Self.resize(data, megabytes: 64))
            try await eventually(10, "the waiting event file is sent") {
                FileManager.default.fileExists(atPath: outbox + "/sent/planner_schema_v1_1.json")
            }
            let next = try await cluster.emit("planner-1", "plan_ready", ["after": true])
            #expect(next["seq"]?.intValue == stored + 2)
            try await cluster.stop("planner-1")
            let history = try await cluster.history("planner-1")
            #expect(history.count == stored + 2)
            #expect(history.map { $0["seq"]?.intValue ?? 0 } == Array(1...(stored + 2)))
            #expect(history.filter { $0["event_type"]?.stringValue == "schema_v1" }.count == 1)
        }
    }

    /// A subscriber whose disk fills while an origin streams to it: it keeps running and
    /// serving what it holds, the events its store refused are not skipped (the cursor stays
    /// before them), and once there is room it holds every event of the origin, in order, once.
    @Test func aSubscriberWhoseDiskIsFullCatchesUpWhenRoomReturns() async throws {
        let cluster = try await Cluster.make(
            [.init(name: "planner-1", pool: "planner"), .init(name: "builder-1", pool: "builder")],
            pools: "pools:\n  builder: { subscribe: [plan_ready] }\n", settings: "heartbeat_ms: 200")
        try await Self.withSmallDisk(cluster, for: "builder-1") { data in
            try await cluster.launch(["planner-1", "builder-1"])
            // 8 MB of events for a 4 MiB disk (the origin's disk has room).
            let big: JSONValue = ["blob": .string(String(repeating: "z", count: 60_000))]
            var emitted = 0
            for _ in 0..<140 {
                try await cluster.emit("planner-1", "plan_ready", big)
                emitted += 1
            }
            try await eventually(30, "builder-1 says its store refused events") {
                cluster.log("builder-1").contains("the store refused")
            }
            // Still running and serving: status answers, and what it stored is readable.
            #expect(cluster.processes["builder-1"]!.isRunning, "builder-1 exited:\n\(cluster.log("builder-1").suffix(2000))")
            let held = try await cluster.status("builder-1")["counters"]?["received"]?.intValue ?? -1
            #expect(held > 0 && held < emitted, "builder-1 holds part of the stream while its disk is full: \(held) of \(emitted)")
            // Room again: the refused events come back by replay, then the rest.
            #expect(Self.resize(data, megabytes: 64))
            try await cluster.emit("planner-1", "plan_ready", ["after": true])
            emitted += 1
            try await eventually(60, "builder-1 holds all \(emitted) events of planner-1") {
                try await cluster.status("builder-1")["counters"]?["received"]?.intValue == emitted
            }
            // The index file, refused too while the disk was full, catches up without an error.
            try await eventually(30, "builder-1's index reads its whole store again") {
                let index = try await cluster.status("builder-1")["index"]
                return index?["error"] == nil && index?["read_up_to"] != nil && index?["read_up_to"] == index?["stored_up_to"]
            }
            try await cluster.stop("builder-1")
            let seqs = try await cluster.history("builder-1", type: "plan_ready").compactMap { $0["seq"]?.intValue }
            #expect(seqs == Array(1...emitted), "builder-1 holds every event once, in order")
        }
    }
}
