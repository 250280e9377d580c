import CECore
@testable import CEStore
import Foundation
import Synchronization
import Testing

@Suite("The durable event store")
struct StoreTests {
    func temporary() -> String { NSTemporaryDirectory() + "ce-store-" + UUID().uuidString.prefix(8) }

    func event(_ origin: String, _ seq: UInt64, type: EventType = .planReady, stream: String = "planner", id: String? = nil, at: Date = Date()) -> StoredEvent {
        let e = Event(id: id ?? "\(origin)-\(seq)", origin: origin, seq: seq, stream: stream, type: type, timestamp: at, payload: ["n": .number(Double(seq))])
        return StoredEvent(event: e, envelope: EnvelopeCodec.encode(e))
    }

    @Test func appendQueryAndDuplicates() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let fresh = try store.append([
            event("p", 1, at: t0), event("p", 2, type: .schemaV1Custom, at: t0 + 10), event("b", 1, type: .buildReady, stream: "builder", at: t0 + 20),
        ])
        #expect(fresh == [true, true, true])
        // Same id, or same origin and sequence: not new, not stored twice.
        #expect(try store.append([event("p", 1), event("p", 2, id: "other-id"), event("p", 3)]) == [false, false, true])
        #expect(try store.count() == 4)
        var q = EventQuery()
        q.type = "build_ready"
        #expect(try store.events(q).map(\.id) == ["b-1"])
        q = EventQuery()
        q.stream = "planner"
        #expect(try store.events(q).count == 3)
        q = EventQuery()
        q.origin = "p"
        q.afterSeq = 1
        #expect(try store.events(q).map(\.seq) == [2, 3])
        q = EventQuery()
        q.since = t0 + 5
        q.until = t0 + 25
        #expect(Set(try store.events(q).map(\.id)) == ["p-2", "b-1"])
        q = EventQuery()
        q.descending = true
        q.limit = 1
        #expect(try store.events(q).map(\.id) == ["p-3"])
        #expect(try store.envelope(id: "p-2").map { try EnvelopeCodec.decode($0) }?.seq == 2)
        #expect(try store.maxSeq(origin: "p") == 3)
        #expect(try store.lines() == [Line("p", ""): 3, Line("b", ""): 1])
    }

    @Test func envelopesReadWhatTheEventsQuerySelects() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let types: [EventType] = [.planReady, .buildReady, .schemaV1Custom]
        try store.append((1...300).map { event("p", $0, type: types[Int($0) % 3]) } + (1...50).map { event("b", $0) })
        var queries: [EventQuery] = []
        var q = EventQuery()
        q.origin = "p"
        q.epoch = ""
        q.afterSeq = 17
        q.throughSeq = 250
        q.types = ["plan_ready", "schema_v1"]
        q.bySeq = true
        q.limit = 40
        queries.append(q)
        q.types = nil
        q.limit = 1000
        queries.append(q)
        q.afterSeq = 300
        queries.append(q)
        for query in queries {
            let expected = try store.events(query).map { ($0.seq, $0.envelope) }
            let got = try store.envelopes(query)
            #expect(got.map(\.seq) == expected.map(\.0))
            #expect(got.map(\.envelope) == expected.map(\.1))
        }
        #expect(try store.envelopes(queries[0]).count == 40)
        #expect(try store.envelopes(queries[2]).isEmpty)
        #expect(try EnvelopeCodec.decode(store.envelopes(queries[1])[0].envelope).seq == 18)
    }

    @Test func timeBoundsIncludeAnEventStampedExactlyOnThem() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        // Fractions of a millisecond on both sides of a half.
        let stamps = [0.0003, 0.0007, 0.0012].map { Date(timeIntervalSince1970: 1_800_000_000 + $0) }
        try store.append(stamps.enumerated().map { event("t", UInt64($0.offset + 1), at: $0.element) })
        for (i, stamp) in stamps.enumerated() {
            var q = EventQuery()
            q.since = stamp
            q.until = stamp
            #expect(try store.events(q).map(\.seq).contains(UInt64(i + 1)), "event \(i + 1) at \(stamp.timeIntervalSince1970)")
        }
    }

    @Test func everythingSurvivesReopening() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try EventStore(directory: dir)
            try store.append((1...50).map { event("p", $0) }, advancing: [Line("x", ""): 9])
            try store.recordAnswer(requestID: "r1", reply: Array("yes".utf8))
            try store.setMeta("k", "v")
        }
        let store = try EventStore(directory: dir)
        #expect(try store.count() == 50)
        #expect(try store.maxSeq(origin: "p") == 50)
        #expect(try store.cursor(Line("x", "")) == 9)
        try store.setCursors([Line("x", ""): 3])  // cursors never move back
        #expect(try store.cursor(Line("x", "")) == 9)
        #expect(try store.answer(for: "r1") == Array("yes".utf8))
        #expect(try store.answer(for: "r2") == nil)
        #expect(try store.meta("k") == "v")
    }

    @Test func lookupsLeaveNoReadTransactionOpen() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        try store.append([event("p", 1)])
        try store.recordAnswer(requestID: "r1", reply: Array("yes".utf8))
        #expect(try store.answer(for: "nobody asked") == nil)
        #expect(try store.envelope(id: "p-2") == nil)
        #expect(try store.answer(for: "r1") == Array("yes".utf8))
        #expect(try store.envelope(id: "p-1").map { try EnvelopeCodec.decode($0) }?.seq == 1)
        // Written after the lookups: a lookup that kept its snapshot would hold these in the
        // WAL, and the checkpoint at a stop could not empty it.
        try store.append((2...20).map { event("p", UInt64($0)) })
        try store.recordAnswer(requestID: "r2", reply: Array("no".utf8))
        #expect(store.checkpointAtStop())
        #expect(try store.answer(for: "r2") == Array("no".utf8), "a lookup sees what was written after the last one")
    }

    /// Questions are checked against the ids of answers kept in memory before the store is
    /// read: every path that records an answer must add its id, or a retry is answered twice.
    @Test func anAnswerRecordedByTheWriterIsFoundByItsRetry() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        for i in 0..<200 {
            #expect(try store.answer(for: "q-\(i)") == nil)
            try await writer.recordAnswer(requestID: "q-\(i)", reply: Array("a\(i)".utf8))
            #expect(try store.answer(for: "q-\(i)") == Array("a\(i)".utf8))
        }
        try await writer.recordAnswer(requestID: "q-7", reply: Array("second".utf8))
        #expect(try store.answer(for: "q-7") == Array("a7".utf8), "a request answered before keeps its first reply")
        await writer.shutdown()
    }

    @Test func concurrentWritersAreGroupCommittedOnceEach() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<20 {
                group.addTask {
                    for i in 1...10 {
                        let isNew = try await writer.append(self.event("o\(task)", UInt64(i)))
                        #expect(isNew)
                    }
                }
            }
            try await group.waitForAll()
        }
        let again = try await writer.append(event("o0", 1))
        #expect(!again)
        #expect(try store.count() == 200)
        let (written, transactions) = writer.counts
        #expect(written == 200)
        #expect(transactions < 201)
        writer.close()
        await #expect(throws: StoreError.self) { _ = try await writer.append(self.event("late", 1)) }
    }

    @Test func aDamagedStoreIsRefusedAtOpen() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let store = try EventStore(directory: dir)
            try store.append((1...2000).map { event("p", $0) })
        }
        let path = dir + "/events.sqlite"
        // Closing the last connection checkpointed the WAL into the main file: the damage hits real pages.
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        let size = try handle.seekToEnd()
        #expect(size > 64 * 1024)
        for offset in stride(from: UInt64(8192), to: size - 4096, by: 16384) {
            try handle.seek(toOffset: offset)
            handle.write(Data(repeating: 0xA5, count: 512))
        }
        try handle.close()
        do {
            _ = try EventStore(directory: dir)
            Issue.record("a damaged store was opened")
        } catch let error as StoreError {
            #expect(error.path == path)
            #expect(error.operation == "integrity check" || error.operation == "open")
            #expect("\(error)".contains(path))
        }
    }

    @Test func aFileThatIsNotADatabaseIsRefusedAtOpen() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/events.sqlite"
        try Data(repeating: 0x5A, count: 64 * 1024).write(to: URL(fileURLWithPath: path))
        do {
            _ = try EventStore(directory: dir)
            Issue.record("a file that is not a database was opened")
        } catch let error as StoreError {
            #expect(error.path == path)
            #expect("\(error)".contains(path))
            #expect("\(error)".contains("not a database"))
        }
        // Nothing was written over it.
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(repeating: 0x5A, count: 64 * 1024))
    }

    /// The store's threads carry their names where `top -H` and `perf` read them (the kernel's
    /// `comm`), not only in Foundation's view of the thread.
    @Test func theStoresThreadsAreNamedForTheKernel() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        defer { writer.close() }
        func names() -> Set<String> {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return Set(tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) })
        }
        // The writer's own thread, read from that thread (a task that prefers it runs there).
        let writerName = await Task(executorPreference: writer.executor) {
            (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }.value
        #expect(writerName == "ce-store-writer")
        // The index and checkpoint threads have no executor to ask: they are looked for among
        // the process's threads (where another test's store may show them too).
        let wanted: Set = ["ce-store-index", "ce-checkpoint"]
        let deadline = ContinuousClock.now + .seconds(10)
        while !wanted.isSubset(of: names()) && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(wanted.subtracting(names()).isEmpty, "threads: \(names().sorted())")
    }

    /// Waits (with a deadline, never a fixed delay) until the paused writer holds `count` events.
    func waitUntilQueued(_ writer: EventWriter, _ count: Int) async {
        let deadline = ContinuousClock.now + .seconds(30)
        while writer.queuedEvents < count && ContinuousClock.now < deadline { await Task.yield() }
        #expect(writer.queuedEvents == count)
    }

    @Test func theWriterCommitsEverythingQueuedInOneTransaction() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        defer { writer.close() }
        writer.pause()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for task in 0..<20 {
                for i in 1...10 { group.addTask { try await writer.append(self.event("o\(task)", UInt64(i))) } }
            }
            await waitUntilQueued(writer, 200)
            writer.resume()
            for try await isNew in group { #expect(isNew) }
        }
        #expect(writer.counts.transactions == 1)
        #expect(writer.counts.events == 200)
        #expect(try store.count() == 200)
    }

    /// Callers that each append one event and wait for it come back together after their
    /// commit; the writer waits for them, so every later transaction takes all of them. The
    /// gathering time is long here (60 s) so the batches do not depend on the machine's speed
    /// or load: with 2 s, a run beside the fault tests on two cores saw a caller come back
    /// later than that. The writer stops waiting as soon as all 16 are back, so a long
    /// gathering time costs nothing when they are.
    @Test func callersThatComeBackTogetherShareTheNextCommit() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir, durability: .normal)
        let writer = EventWriter(store: store, gathering: .seconds(60))
        defer { writer.close() }
        writer.pause()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<16 {
                group.addTask {
                    for i in 1...10 {
                        let isNew = try await writer.append(self.event("c\(caller)", UInt64(i)))
                        #expect(isNew)
                    }
                }
            }
            await waitUntilQueued(writer, 16)
            writer.resume()
            try await group.waitForAll()
        }
        // Without the wait, the callers resumed first started a small transaction and the
        // rest waited for the next one: more than 10 transactions.
        #expect(writer.counts.transactions == 10)
        #expect(try store.count() == 160)
    }

    /// A caller the writer is not waiting for (the others did not come back) is written once
    /// the gathering time has passed, with nothing else to wake the writer.
    @Test func aLoneCallerIsWrittenWhenTheGatheringTimeEnds() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir, durability: .normal)
        let writer = EventWriter(store: store, gathering: .milliseconds(300))
        defer { writer.close() }
        writer.pause()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for caller in 0..<4 { group.addTask { try await writer.append(self.event("g\(caller)", 1)) } }
            await waitUntilQueued(writer, 4)
            writer.resume()
            for try await isNew in group { #expect(isNew) }
        }
        let lone = Task { try await writer.append(event("g0", 2)) }
        let deadline = ContinuousClock.now + .seconds(10)
        while writer.counts.transactions < 2 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(writer.counts.transactions == 2, "the lone caller's append was not written within 10 s")
        if writer.counts.transactions == 2 { #expect(try await lone.value) } else { writer.close() }
    }

    /// The commit observer is called at the same stack depth on every commit (it was once
    /// called through a chain of thunks that grew by two per commit).
    @Test func theCommitObserverIsCalledAtTheSameDepthEveryTime() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir, durability: .normal)
        let writer = store.writer()
        defer { writer.close() }
        let depths = Mutex<[Int]>([])
        writer.observeCommits { _, _ in
            var local = 0
            let address = withUnsafeMutablePointer(to: &local) { Int(bitPattern: $0) }
            depths.withLock { $0.append(address) }
        }
        for i in 1...200 { _ = try await writer.append(event("o", UInt64(i))) }
        let seen = depths.withLock { $0 }
        #expect(seen.count == 200)
        // 200 commits through a growing chain would sit over 10 KiB deeper than the first.
        #expect(abs(seen.last! - seen.first!) < 1024, "stack moved \(seen.first! - seen.last!) bytes over 200 commits")
    }

    @Test func aTransactionTakesAtMostMaxBatchEvents() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir, durability: .normal)
        let writer = store.writer()
        defer { writer.close() }
        writer.pause()
        // 9 requests of 500 events, queued in order: 4 + 4 + 1 requests per transaction.
        try await withThrowingTaskGroup(of: [Bool].self) { group in
            for r in 0..<9 {
                group.addTask { try await writer.append((1...500).map { self.event("r\(r)", UInt64($0)) }) }
                await waitUntilQueued(writer, (r + 1) * 500)
            }
            writer.resume()
            for try await fresh in group { #expect(fresh.count == 500 && fresh.allSatisfy { $0 }) }
        }
        #expect(writer.counts.transactions == 3)
        #expect(try store.count() == 4500)
    }

    @Test func shutdownWritesWhatIsQueuedThenRefusesAppends() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        writer.pause()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 1...50 { group.addTask { try await writer.append(self.event("s", UInt64(i))) } }
            await waitUntilQueued(writer, 50)
            await writer.shutdown()  // also lifts the pause: closing always flushes
            for try await isNew in group { #expect(isNew) }
        }
        #expect(try store.count() == 50)
        await writer.shutdown()  // a second shutdown returns at once
        do {
            _ = try await writer.append(event("s", 51))
            Issue.record("an append after shutdown was accepted")
        } catch let error as StoreError {
            #expect(error.operation == "append")
            #expect(error.message.contains("closed"))
        }
        #expect(try store.count() == 50)
    }

    @Test func aWriterDroppedWithoutClosingStopsItsThread() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        var writer: EventWriter? = store.writer()
        let core = writer!.core
        #expect(try await writer!.append(event("d", 1)))
        writer = nil
        let deadline = ContinuousClock.now + .seconds(30)
        while !core.stopped && ContinuousClock.now < deadline { await Task.yield() }
        #expect(core.stopped)
        #expect(try store.count() == 1)
    }

    @Test func aTaskThatPrefersTheWriterRunsOnItsThreadBetweenCommits() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        defer { writer.close() }
        // The writer's thread, as its commit observer sees it.
        let writerThreads = Mutex<Set<UInt>>([])
        writer.observeCommits { _, _ in writerThreads.withLock { _ = $0.insert(UInt(pthread_self())) } }
        // Other callers append meanwhile, from the cooperative pool: their events are written too.
        async let others: Void = withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask { for seq in 1...50 { _ = try await writer.append(event("o\(t)", UInt64(seq))) } }
            }
            try await group.waitForAll()
        }
        // The task runs on the writer's thread, before and after each append it waits for.
        let threads = try await Task(executorPreference: writer.executor) {
            var threads: Set<UInt> = []
            for seq in 1...50 {
                threads.insert(UInt(pthread_self()))
                let fresh = try await writer.append(event("w", UInt64(seq)))
                #expect(fresh)
                threads.insert(UInt(pthread_self()))
            }
            return threads
        }.value
        try await others
        #expect(writerThreads.withLock { $0.count } == 1)
        #expect(threads == writerThreads.withLock { $0 })
        #expect(try store.count() == 450)
        #expect(try store.maxSeq(origin: "w") == 50)
    }

    @Test(.timeLimit(.minutes(1)))
    func aTaskThatPrefersAStoppedWriterRunsElsewhere() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let writer = store.writer()
        await writer.shutdown()
        // Never left unrun: it goes on on the global executor and learns the writer is closed.
        let outcome = await Task(executorPreference: writer.executor) { () -> String in
            do { return "stored: \(try await writer.append(event("w", 1)))" } catch { return "\(error)" }
        }.value
        #expect(outcome.contains("closed"), "\(outcome)")
        #expect(try store.count() == 0)
    }

    @Test func duplicatesInsideOneTransactionAreStoredOnce() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        // One call: the same id twice, and the same origin and sequence under another id.
        #expect(try store.append([event("p", 1), event("p", 1), event("p", 1, id: "again"), event("p", 2)]) == [true, false, false, true])
        // Through the writer: requests from different callers that land in one transaction.
        let writer = EventWriter(store: store)
        defer { writer.close() }
        writer.pause()
        async let a = writer.append([event("q", 1), event("q", 2)])
        await waitUntilQueued(writer, 2)
        async let b = writer.append([event("q", 2, id: "q-2-again"), event("q", 3), event("p", 2)])
        await waitUntilQueued(writer, 5)
        writer.resume()
        #expect(try await a == [true, true])
        #expect(try await b == [false, true, false])
        #expect(writer.counts.transactions == 1)
        #expect(writer.counts.events == 3)
        #expect(try store.count() == 5)
        #expect(try store.lines() == [Line("p", ""): 2, Line("q", ""): 3])
    }

    @Test func aNewStoreIsTunedAndVersioned() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: URL(fileURLWithPath: dir))
        #expect(try store.pragma("page_size") == "16384")
        #expect(try store.pragma("journal_mode") == "wal")
        #expect(try store.pragma("user_version") == "\(EventStore.schemaVersion)")
    }

    /// Read where it acts: on the connection that commits, inside a write transaction (a
    /// reading connection's value says nothing about the commits; GRDB's pool once turned
    /// the writer to NORMAL behind a FULL that readers still showed).
    @Test func theWritingConnectionRunsTheDurabilityAskedFor() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let full = try EventStore(directory: dir)
        #expect(try full.writingPragma("synchronous") == "2")  // FULL
        #expect(try full.writingPragma("journal_mode") == "wal")
        // Checkpoints are not run by the commits: the automatic checkpoint is off where they happen.
        #expect(try full.writingPragma("wal_autocheckpoint") == "0")
        // The writer thread's commits go through the same connection.
        let writer = full.writer()
        #expect(try await writer.append(event("p", 1)))
        #expect(try full.writingPragma("synchronous") == "2")
        await writer.shutdown()
        let normalDir = temporary()
        defer { try? FileManager.default.removeItem(atPath: normalDir) }
        #expect(try EventStore(directory: normalDir, durability: .normal).writingPragma("synchronous") == "1")  // NORMAL
        #expect(try EventStore(directory: normalDir, checkpoints: .inline).writingPragma("wal_autocheckpoint") == "4000")
    }

    /// Past the threshold the WAL is copied back by the checkpoint thread, and everything
    /// written is still there, in order, afterwards.
    @Test func checkpointsRunOffTheCommitPath() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        let payload = String(repeating: "x", count: 2000)
        var seq: UInt64 = 0
        let deadline = ContinuousClock.now + .seconds(60)
        // 16 MiB of WAL is about 8000 events of 2 KB; stop once a checkpoint ran (bounded).
        while store.backgroundCheckpoints == 0, seq < 200_000, ContinuousClock.now < deadline {
            try store.append((1...500).map { _ in
                seq += 1
                let e = Event(id: "c-\(seq)", origin: "c", seq: seq, stream: "s", type: .planReady, timestamp: Date(), payload: ["p": .string(payload)])
                return StoredEvent(event: e, envelope: EnvelopeCodec.encode(e))
            })
        }
        #expect(store.backgroundCheckpoints > 0, "no checkpoint after \(seq) events")
        // It copied pages itself (a connection that had not read the file yet took it for
        // one without a WAL: every checkpoint did nothing, and the writer did the copying).
        #expect(store.backgroundPagesCopied > 0)
        #expect(try store.count() == Int(seq))
        #expect(try store.maxSeq(origin: "c") == seq)
    }

    /// Under commits that never pause the WAL still starts over from its beginning after
    /// checkpoints, so its file stays near the checkpoint threshold (it once grew by every
    /// commit: a PASSIVE checkpoint beside a busy writer never copies the newest frames).
    @Test func theWALStartsOverUnderContinuousCommits() async throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A checkpoint every 50 pages (800 KiB); 600 commits write about 2400 pages (38 MiB).
        let store = try EventStore(directory: dir, durability: .normal, walPagesBeforeCheckpoint: 50)
        let writer = store.writer()
        var largest: UInt64 = 0
        for i in 1...600 {
            _ = try await writer.append(event("w", UInt64(i)))
            if i % 20 == 0 {
                let size = (try? FileManager.default.attributesOfItem(atPath: store.path + "-wal")[.size] as? UInt64) ?? 0
                largest = max(largest, size)
            }
        }
        await writer.shutdown()
        #expect(store.backgroundCheckpoints > 0)
        #expect(largest < 8 << 20, "the WAL reached \(largest) bytes")
        #expect(try store.count() == 600)
        #expect(try store.maxSeq(origin: "w") == 600)
    }

    @Test func aStoreFromANewerVersionIsRefused() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try EventStore(directory: dir).setPragma("user_version", "\(EventStore.schemaVersion + 1)")
        #expect {
            _ = try EventStore(directory: dir)
        } throws: { error in
            "\(error)".contains("newer") && "\(error)".contains(dir + "/events.sqlite")
        }
    }

    @Test func readersResumeAfterARowID() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        #expect(try store.lastRowID() == 0)
        try store.append((1...5).map { event("p", $0) })
        let mark = try store.lastRowID()
        try store.append((6...8).map { event("p", $0) })
        var q = EventQuery()
        q.afterRowID = mark
        #expect(try store.events(q).map(\.seq) == [6, 7, 8])
        #expect(try store.count(q) == 3)
        #expect(try store.lastRowID() == mark + 3)
        #expect(try store.maxSeq(origin: "nobody") == 0)
    }
}

extension EventType {
    static let schemaV1Custom = try! EventType(validating: "schema_v1")
}

extension StoreTests {
    /// Each store has an epoch, made when it is created and kept across opens; an origin's
    /// events of two epochs are two lines, both numbered from 1.
    @Test func aNewStoreMakesAnEpochAndKeepsIt() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try EventStore(directory: dir)
        #expect(first.isNew && Epoch.isValid(first.epoch))
        let epoch = first.epoch
        let e = Event(id: "a", origin: "p", epoch: epoch, seq: 1, stream: "s", type: .planReady, timestamp: Date(), payload: .null)
        let f = Event(id: "b", origin: "p", epoch: "other", seq: 1, stream: "s", type: .planReady, timestamp: Date(), payload: .null)
        #expect(try first.append([StoredEvent(event: e, envelope: EnvelopeCodec.encode(e)), StoredEvent(event: f, envelope: EnvelopeCodec.encode(f))]) == [true, true])
        let again = try EventStore(directory: dir)
        #expect(!again.isNew && again.epoch == epoch)
        #expect(try again.lines() == [Line("p", epoch): 1, Line("p", "other"): 1])
        #expect(try again.maxSeq(origin: "p", epoch: epoch) == 1)
        #expect(try again.envelope(id: "a").map { try EnvelopeCodec.decode($0) }?.epoch == epoch, "the epoch travels in the envelope")
    }

    /// A store written by a version without epochs: its events keep their numbers in the
    /// epoch "", its cursors are kept, and its node goes on numbering where it was.
    @Test func aStoreMadeBeforeEpochsIsMigratedAsItWas() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/events.sqlite", contents: nil)  // an empty file is an empty database
        let old = try Connection(path: dir + "/events.sqlite")
        try old.execute("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE grdb_migrations(identifier TEXT NOT NULL PRIMARY KEY);
            INSERT INTO grdb_migrations VALUES ('v1');
            CREATE TABLE event(
                rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, seq INTEGER NOT NULL,
                stream TEXT NOT NULL, event_type TEXT NOT NULL, ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
                correlation_id TEXT, target TEXT, envelope BLOB NOT NULL, UNIQUE(origin, seq));
            CREATE INDEX event_by_type ON event(event_type, rowid);
            CREATE INDEX event_by_stream ON event(stream, rowid);
            CREATE INDEX event_by_time ON event(ts_ms);
            CREATE TABLE cursor(origin TEXT PRIMARY KEY, seq INTEGER NOT NULL);
            CREATE TABLE answered(request_id TEXT PRIMARY KEY, reply BLOB NOT NULL, answered_ms INTEGER NOT NULL);
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO event(id, origin, seq, stream, event_type, ts_ms, received_ms, envelope)
                VALUES ('me-1', 'me', 1, 's', 'plan_ready', 0, 0, x'7b7d'), ('me-2', 'me', 2, 's', 'plan_ready', 0, 0, x'7b7d');
            INSERT INTO cursor VALUES ('q', 7);
            PRAGMA user_version = 1;
            """, "make a store of schema 1")
        old.close()
        let store = try EventStore(directory: dir)
        #expect(!store.isNew && store.epoch == "")
        #expect(try store.lines() == [Line("me", ""): 2])
        #expect(try store.cursor(Line("q", "")) == 7)
        #expect(try store.pragma("user_version") == "\(EventStore.schemaVersion)")
        // Schema 3: the secondary indexes are in the index file, not in the event file.
        #expect(try store.pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM main.sqlite_master WHERE name LIKE 'event_by_%'") } == 0)
        #expect(store.index.waitUntilIndexed(through: 2))
        var planned = EventQuery()
        planned.type = "plan_ready"
        #expect(try store.events(planned).map(\.id) == ["me-1", "me-2"])
    }

    /// A store of schema 3 (origin and epoch in every row) moves to numbered lines: every
    /// event keeps its rowid, line and sequence, cursors stay, and the index file still points
    /// at the right rows.
    @Test func aStoreOfSchema3IsMigratedToNumberedLines() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/events.sqlite", contents: nil)
        let old = try Connection(path: dir + "/events.sqlite")
        // Two origins, one of them in two epochs, their rows interleaved.
        var rows: [String] = []
        for n in 1...30 {
            let (origin, epoch, seq) = [("p", "e1", n), ("b", "e9", n), ("p", "e2", n)][n % 3]
            let type = n % 2 == 0 ? "plan_ready" : "build_ready"
            rows.append("('\(origin)-\(epoch)-\(seq)', '\(origin)', '\(epoch)', \(seq), 's', '\(type)', \(n), \(n), x'7b7d')")
        }
        try old.execute("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE grdb_migrations(identifier TEXT NOT NULL PRIMARY KEY);
            INSERT INTO grdb_migrations VALUES ('v1'), ('v2 epochs'), ('v3 indexes off the commit path');
            CREATE TABLE event(
                rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '',
                seq INTEGER NOT NULL, stream TEXT NOT NULL, event_type TEXT NOT NULL, ts_ms INTEGER NOT NULL,
                received_ms INTEGER NOT NULL, correlation_id TEXT, target TEXT, envelope BLOB NOT NULL,
                UNIQUE(origin, epoch, seq));
            CREATE TABLE cursor(origin TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, PRIMARY KEY(origin, epoch));
            CREATE TABLE answered(request_id TEXT PRIMARY KEY, reply BLOB NOT NULL, answered_ms INTEGER NOT NULL);
            CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('epoch', 'mine');
            INSERT INTO event(id, origin, epoch, seq, stream, event_type, ts_ms, received_ms, envelope) VALUES \(rows.joined(separator: ", "));
            INSERT INTO cursor VALUES ('b', 'e9', 29), ('p', 'e1', 30);
            PRAGMA user_version = 3;
            """, "make a store of schema 3")
        old.close()
        let store = try EventStore(directory: dir)
        #expect(!store.isNew && store.epoch == "mine")
        #expect(try store.pragma("user_version") == "\(EventStore.schemaVersion)")
        #expect(try store.lines() == [Line("p", "e1"): 30, Line("b", "e9"): 28, Line("p", "e2"): 29])
        #expect(try store.cursors() == [Line("b", "e9"): 29, Line("p", "e1"): 30])
        var q = EventQuery()
        q.origin = "p"
        q.epoch = "e2"
        q.bySeq = true
        q.descending = true
        #expect(try store.events(q).map(\.seq) == Array(stride(from: 29, through: 2, by: -3)).map(UInt64.init))
        #expect(try store.events(q).allSatisfy { $0.origin == "p" && $0.epoch == "e2" && $0.id == "p-e2-\($0.seq)" })
        q = EventQuery()
        q.origin = "p"
        #expect(try store.count(q) == 20)
        #expect(store.index.waitUntilIndexed(through: 30))
        q = EventQuery()
        q.type = "plan_ready"
        let planned = try store.events(q)
        #expect(planned.map(\.rowID) == Array(stride(from: 2, through: 30, by: 2)).map(Int64.init))
        #expect(planned.allSatisfy { $0.id == "\($0.origin)-\($0.epoch)-\($0.seq)" && $0.eventType == "plan_ready" })
        // The lines go on: the next event of a line is numbered after it, a new line is added.
        func ofLine(_ origin: String, _ epoch: String, _ seq: UInt64) -> StoredEvent {
            var e = event(origin, seq, id: "\(origin)-\(epoch)-\(seq)-new")
            e.epoch = epoch
            return e
        }
        #expect(try store.append([ofLine("b", "e9", 29), ofLine("q", "", 1), ofLine("b", "e9", 28)]) == [true, true, false])
        #expect(try store.maxSeq(origin: "b", epoch: "e9") == 29)
        #expect(try store.lines() == [Line("p", "e1"): 30, Line("b", "e9"): 29, Line("p", "e2"): 29, Line("q", ""): 1])
    }

    /// A transaction that rolls back takes the lines it added with it, and the writing
    /// connection forgets the numbers it gave them: a line added next gets such a number
    /// again, and must not be mistaken for the one rolled back.
    @Test func aLineAddedInATransactionThatRolledBackIsForgotten() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try EventStore(directory: dir)
        #expect(try store.append([event("a", 1)]) == [true])
        func big(_ origin: String, _ seq: UInt64) -> StoredEvent {
            var e = event(origin, seq)
            e.envelope = [UInt8](repeating: 0x20, count: 4000) + e.envelope
            return e
        }
        // The file may grow by two pages: a batch of 200 events of a new line does not fit.
        let pages = try #require(try store.writingPragma("page_count").flatMap { Int($0) })
        try store.setPragma("max_page_count", "\(pages + 2)")
        #expect(throws: StoreError.self) { try store.append((1...200).map { big("b", $0) }) }
        try store.setPragma("max_page_count", "1073741823")
        #expect(try store.lines() == [Line("a", ""): 1])
        #expect(try store.append([event("c", 1)]) == [true])
        #expect(try store.append([event("b", 1), event("b", 2)]) == [true, true])
        #expect(try store.lines() == [Line("a", ""): 1, Line("b", ""): 2, Line("c", ""): 1])
        var q = EventQuery()
        q.origin = "b"
        #expect(try store.events(q).map(\.id) == ["b-1", "b-2"])
    }

    /// A file that is not an intact store is reported as damaged (so a node can move it
    /// aside); one from a newer version is not damaged, only refused.
    @Test func aDamagedStoreIsReportedAsDamaged() throws {
        let dir = temporary()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(repeating: 0x5A, count: 64 * 1024).write(to: URL(fileURLWithPath: dir + "/events.sqlite"))
        #expect {
            _ = try EventStore(directory: dir)
        } throws: { error in
            (error as? StoreError)?.damaged == true
        }
        let newer = temporary()
        defer { try? FileManager.default.removeItem(atPath: newer) }
        try EventStore(directory: newer).setPragma("user_version", "\(EventStore.schemaVersion + 1)")
        #expect {
            _ = try EventStore(directory: newer)
        } throws: { error in
            (error as? StoreError)?.damaged == false
        }
    }
}
