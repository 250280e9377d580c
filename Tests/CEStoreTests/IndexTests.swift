import CECore
@testable import CEStore
import Foundation
import GRDB
import Testing

/// The indexes by type and stream live in `index.sqlite`, filled by a thread of their own
/// after each commit. These tests hold that thread back and break its file to show that a
/// query's answer never depends on how far the index has got or what became of its file.
@Suite("The store's index file")
struct IndexTests {
    func temporary() -> String { NSTemporaryDirectory() + "ce-index-" + UUID().uuidString.prefix(8) }

    static let types: [EventType] = [.planReady, .buildReady, .reviewComplete, .conflictDetected]
    static let streams = ["planning", "building", "review"]
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    /// Event `n` of a spread of origins, types, streams and times (a second apart).
    func event(_ n: Int, origin: String? = nil, type: EventType? = nil) -> StoredEvent {
        let e = Event(id: "e-\(origin ?? "")\(n)", origin: origin ?? "o\(n % 3)", seq: UInt64(n), stream: Self.streams[(n / 2) % 3],
                      type: type ?? Self.types[n % 4], timestamp: Self.t0 + Double(n), payload: ["n": .number(Double(n))])
        return StoredEvent(event: e, envelope: EnvelopeCodec.encode(e))
    }

    /// Queries that the index leads, and what each must select from `all` (in store order).
    /// (name, query, its events in its order and limit, how many it selects without the limit)
    func cases(_ all: [StoredEvent]) -> [(String, EventQuery, [StoredEvent], Int)] {
        var out: [(String, EventQuery, [StoredEvent], Int)] = []
        func add(_ name: String, _ configure: (inout EventQuery) -> Void, _ keep: (StoredEvent) -> Bool) {
            var q = EventQuery()
            q.limit = Int.max
            configure(&q)
            var expected = all.filter(keep)
            if let after = q.afterRowID { expected = expected.filter { $0.rowID > after } }
            if q.descending { expected.reverse() }
            out.append((name, q, Array(expected.prefix(q.limit)), expected.count))
        }
        let middle = all[all.count / 2].rowID
        add("type", { $0.type = "build_ready" }, { $0.eventType == "build_ready" })
        add("stream", { $0.stream = "review" }, { $0.stream == "review" })
        add("types", { $0.types = ["plan_ready", "conflict_detected"] }, { ["plan_ready", "conflict_detected"].contains($0.eventType) })
        add("one type in types", { $0.types = ["review_complete"] }, { $0.eventType == "review_complete" })
        add("no types", { $0.types = [] }, { _ in false })
        add("type and stream", { $0.type = "plan_ready"; $0.stream = "planning" }, { $0.eventType == "plan_ready" && $0.stream == "planning" })
        add("type, first 7", { $0.type = "review_complete"; $0.limit = 7 }, { $0.eventType == "review_complete" })
        add("type, last 7", { $0.type = "review_complete"; $0.limit = 7; $0.descending = true }, { $0.eventType == "review_complete" })
        add("stream after the middle", { $0.stream = "building"; $0.afterRowID = middle }, { $0.stream == "building" })
        add("stream after the middle, 5", { $0.stream = "building"; $0.afterRowID = middle; $0.limit = 5 }, { $0.stream == "building" })
        add("types after the middle, newest 9", { $0.types = ["build_ready", "plan_ready"]; $0.afterRowID = middle; $0.limit = 9; $0.descending = true },
            { ["build_ready", "plan_ready"].contains($0.eventType) })
        add("type and time", { $0.type = "plan_ready"; $0.since = Self.t0 + 100; $0.until = Self.t0 + 300 },
            { $0.eventType == "plan_ready" && $0.timestampMillis >= StoredEvent.millis(Self.t0 + 100) && $0.timestampMillis <= StoredEvent.millis(Self.t0 + 300) })
        add("type of one origin", { $0.type = "plan_ready"; $0.origin = "o1" }, { $0.eventType == "plan_ready" && $0.origin == "o1" })
        return out
    }

    func check(_ store: EventStore, _ all: [StoredEvent], _ stage: String) throws {
        for (name, query, expected, count) in cases(all) {
            #expect(try store.events(query).map(\.id) == expected.map(\.id), "\(stage): \(name)")
            #expect(try store.envelopes(query).map(\.seq) == expected.map(\.seq), "\(stage): \(name), envelopes")
            #expect(try store.count(query) == count, "\(stage): \(name), count")
        }
    }

    /// Appends with the index held back (commits do not wait for it), then checks every query
    /// with nothing indexed, with the first half indexed, and with everything indexed.
    @Test func queriesGiveTheSameAnswerWhereverTheIndexHasGot() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        store.index.pause()
        let writer = store.writer()
        defer { writer.close() }
        for batch in 0..<6 { _ = try await writer.append((batch * 100 + 1...batch * 100 + 100).map { event($0) }) }
        var q = EventQuery()
        q.limit = Int.max
        var all = try store.events(q)
        #expect(all.count == 600)
        #expect(store.index.upto == 0)
        // Nothing indexed: every query reads the event table.
        try check(store, all, "nothing indexed")

        store.index.resume()
        #expect(store.index.waitUntilIndexed(through: all.last!.rowID))
        store.index.pause()
        _ = try await writer.append((601...1000).map { event($0) })
        all = try store.events(q)
        #expect(store.index.upto == all[599].rowID)
        var typed = EventQuery()
        typed.type = "plan_ready"
        typed.limit = 10
        // Two statements: the index walked in rowid order up to `upto` (no sort, so the limit
        // stops the walk), then the event table after `upto` by rowid.
        let parts = EventStore.sql(typed, select: StoredEvent.columns, indexedUpTo: store.index.upto)
        #expect(parts.count == 2)
        let plans = try parts.map { part in
            try store.pool.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + part.sql, arguments: part.arguments).map { $0["detail"] as String }.joined(separator: "; ")
            }
        }
        #expect(plans[0].contains("SEARCH x USING PRIMARY KEY (name=? AND row<?)") && !plans[0].contains("TEMP B-TREE"), "\(plans[0])")
        #expect(plans[1].contains("SEARCH event USING INTEGER PRIMARY KEY (rowid>?)") && !plans[1].contains("TEMP B-TREE"), "\(plans[1])")
        try check(store, all, "the first 600 of 1000 indexed")

        store.index.resume()
        #expect(store.index.waitUntilIndexed(through: all.last!.rowID))
        try check(store, all, "everything indexed")
        #expect(store.index.failure == nil)
    }

    /// The index is derived: a lost index file, a damaged one and another store's are made
    /// again from the event table when the store opens.
    @Test func theIndexIsMadeAgainWhenItsFileIsLostDamagedOrAnotherStores() throws {
        let dir = temporary()
        let other = temporary()
        defer {
            try? FileManager.default.removeItem(atPath: dir)
            try? FileManager.default.removeItem(atPath: other)
        }
        let all = (1...500).map { event($0) }
        do {
            let store = try EventStore(directory: dir)
            try store.append(all)
            #expect(store.index.waitUntilIndexed(through: try store.lastRowID()))
        }
        do {
            // Another store, other events, its own epoch.
            let store = try EventStore(directory: other)
            try store.append((1...300).map { event($0, origin: "x", type: .approvalGranted) })
            #expect(store.index.waitUntilIndexed(through: try store.lastRowID()))
        }
        let index = dir + "/" + EventIndex.fileName
        let stages: [(String, () throws -> Void)] = [
            ("lost", { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: index + suffix) } }),
            ("damaged", { try Data(repeating: 0x5A, count: 64 * 1024).write(to: URL(fileURLWithPath: index)) }),
            ("another store's", {
                for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: index + suffix) }
                try FileManager.default.copyItem(atPath: other + "/" + EventIndex.fileName, toPath: index)
            }),
        ]
        for (name, breakIt) in stages {
            try breakIt()
            let store = try EventStore(directory: dir)
            let stored = try store.events({ var q = EventQuery(); q.limit = Int.max; return q }())
            #expect(store.index.waitUntilIndexed(through: try store.lastRowID()), "\(name)")
            try check(store, stored, "index file \(name)")
            var granted = EventQuery()
            granted.type = "approval_granted"
            #expect(try store.count(granted) == 0, "index file \(name)")
        }
    }

    /// An event table replaced under the same epoch (two stores made before epochs existed
    /// both have epoch ""): the index sees another event at the last row it read and is made
    /// again, instead of answering with the other table's types.
    @Test func anIndexOfAnotherEventTableWithTheSameEpochIsMadeAgain() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try EventStore(directory: dir)
            try store.append((1...100).map { event($0, origin: "p", type: .planReady) })
            #expect(store.index.waitUntilIndexed(through: 100))
        }
        // Other events in the same rows, the epoch kept.
        let raw = try Connection(path: dir + "/events.sqlite")
        try raw.execute("UPDATE event SET id = 'other-' || id, event_type = 'build_ready'", "replace the events")
        raw.close()
        let store = try EventStore(directory: dir)
        #expect(store.index.waitUntilIndexed(through: 100))
        var built = EventQuery()
        built.type = "build_ready"
        #expect(try store.count(built) == 100)
        var planned = EventQuery()
        planned.type = "plan_ready"
        #expect(try store.events(planned).isEmpty)
    }

    /// An index that read commits the event table then lost (`--durability normal` and a power
    /// loss) is cut back at open: the rows that take those rowids again are indexed as what
    /// they are.
    @Test func anIndexAheadOfItsStoreIsCutBack() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try EventStore(directory: dir, durability: .normal)
            try store.append((1...100).map { event($0, origin: "p", type: .planReady) })
            #expect(store.index.waitUntilIndexed(through: 100))
        }
        // The event table loses its last 50 commits' rows; the index keeps them.
        let raw = try Connection(path: dir + "/events.sqlite")
        try raw.execute("DELETE FROM event WHERE rowid > 50", "lose rows")
        raw.close()
        let store = try EventStore(directory: dir, durability: .normal)
        #expect(store.index.upto <= 50)
        try store.append((51...100).map { event($0, origin: "b", type: .buildReady) })
        #expect(try store.lastRowID() == 100)
        #expect(store.index.waitUntilIndexed(through: 100))
        var built = EventQuery()
        built.type = "build_ready"
        #expect(try store.count(built) == 50)
        #expect(try store.events(built).map(\.rowID) == Array(51...100))
        var planned = EventQuery()
        planned.type = "plan_ready"
        #expect(try store.events(planned).map(\.rowID) == Array(1...50))
    }
}
