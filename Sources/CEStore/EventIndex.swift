import CECore
import Foundation
internal import GRDBSQLite
import Synchronization

/// The store's secondary indexes, events by type and by stream, kept off the commit path: in
/// a file of their own (`index.sqlite` beside `events.sqlite`) that a thread of their own fills
/// from the event table after the commits (at most a pass every ``interval``).
///
/// In the event file these indexes cost the committing writer about a quarter of its time per
/// event (plain C at the store's schema: 77-91 k events/s with them, 105-124 k without). In
/// the same file they could not be filled beside the writer (SQLite lets one connection write
/// a file at a time); in a file of their own they are, on the other core.
///
/// The index is derived: it holds `(name, row)` pairs and how far it has read the event table
/// (`upto`, a rowid, and the id of the event there), committed together. Queries read the
/// indexed part through it and the rows after `upto` from the event table
/// (``EventStore/sql(_:select:ordered:indexedUpTo:)``), so a query's answer does not depend on
/// how far the index is. A missing, damaged or foreign index file (another store's epoch, or
/// another event at its last row) is made again from the event table; one that is ahead of
/// the event table (its last commits lost with `--durability normal` on power loss) is cut
/// back to it. It is written with `synchronous=NORMAL`: what a power loss takes from it is
/// read again.
final class EventIndex: Sendable {
    /// Event rows indexed per transaction.
    static let batch = 5000
    /// The least time between two passes of the thread. A pass per commit cost the machine a
    /// thread wake-up and a transaction for every small commit (at 1000 single emits a second,
    /// a thousand of each); paced, small commits share a pass. Queries do not wait for it.
    static let interval = Duration.milliseconds(10)
    static let fileName = "index.sqlite"

    struct State {
        var pending = true
        /// The thread waits with no deadline: a commit must wake it.
        var idle = false
        var closed = false
        var stopped = false
        /// Tests hold the index back to query a store it has not caught up with.
        var paused = false
        var upto: Int64 = 0
        var failure: String?
    }

    let path: String
    let epoch: String
    let state = Mutex(State())
    let wakeup = NSCondition()

    /// Makes the index file's tables when they are missing; a file that is not an index (or
    /// is damaged) is replaced by an empty one. Runs before any connection attaches the file.
    static func prepare(directory: String) throws {
        let path = directory + "/" + fileName
        do {
            try makeTables(path)
        } catch {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
            try makeTables(path)
        }
    }

    private static func makeTables(_ path: String) throws {
        let connection = try Connection(path: path, create: true)
        defer { connection.close() }
        try connection.execute("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS by_type(name TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY(name, row)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS by_stream(name TEXT NOT NULL, row INTEGER NOT NULL, PRIMARY KEY(name, row)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS indexed(epoch TEXT NOT NULL, upto INTEGER NOT NULL, upto_id TEXT);
            """, "make the index")
        guard try connection.pragma("quick_check") == "ok" else {
            throw StoreError(operation: "open the index", path: path, message: "damaged")
        }
    }

    /// Opens the index of the store at `storePath` (its tables made by ``prepare(directory:)``),
    /// squares it with the event table, and starts its thread.
    init(storePath: String, directory: String, epoch: String) throws {
        path = directory + "/" + Self.fileName
        self.epoch = epoch
        let connection = try Connection(path: storePath)
        do {
            try connection.execute("""
                ATTACH DATABASE '\(path.replacingOccurrences(of: "'", with: "''"))' AS ix;
                PRAGMA ix.synchronous=NORMAL;
                """, "attach the index")
            let upto = try Self.square(connection, epoch: epoch)
            state.withLock { $0.upto = upto }
        } catch {
            connection.close()
            throw error
        }
        let handed = Handed(connection: connection)
        let thread = Thread { [self] in run(handed.connection) }
        thread.name = "ce-store-index"
        thread.start()
    }

    /// The connection, handed to the thread that alone uses it from then on.
    private struct Handed: @unchecked Sendable {
        let connection: Connection
    }

    /// Makes the index belong to this store and end within its event table; returns `upto`.
    ///
    /// The index records the epoch of the store it was made for and the id of the last event
    /// it read: an index of another epoch, or whose last event has another id in this event
    /// table (another store of the same epoch, such as two made before epochs existed), is
    /// emptied and made again.
    private static func square(_ connection: Connection, epoch: String) throws -> Int64 {
        try connection.execute("BEGIN", "open the index")
        do {
            let last = try connection.integer("SELECT coalesce(max(rowid), 0) FROM main.event") ?? 0
            let owner = try connection.text("SELECT epoch FROM ix.indexed")
            var upto = try connection.integer("SELECT upto FROM ix.indexed") ?? 0
            let lastRead = try connection.text("SELECT upto_id FROM ix.indexed")
            // Whether the event at the index's last row is the one it read there.
            let within = upto > 0 && upto <= last
            let sameLast = try !within || connection.text("SELECT id FROM main.event WHERE rowid = \(upto)") == lastRead
            if owner != epoch || !sameLast {
                // New, or made for another store: start over.
                try connection.execute("DELETE FROM ix.by_type; DELETE FROM ix.by_stream; DELETE FROM ix.indexed", "open the index")
                try connection.execute("INSERT INTO ix.indexed(epoch, upto) VALUES ('\(epoch.replacingOccurrences(of: "'", with: "''"))', 0)", "open the index")
                upto = 0
            } else if upto > last {
                // The event table lost commits the index had read: forget what it read of them.
                try connection.execute("""
                    DELETE FROM ix.by_type WHERE row > \(last); DELETE FROM ix.by_stream WHERE row > \(last);
                    UPDATE ix.indexed SET upto = \(last), upto_id = (SELECT id FROM main.event WHERE rowid = \(last));
                    """, "open the index")
                upto = last
            }
            try connection.execute("COMMIT", "open the index")
            return upto
        } catch {
            try? connection.execute("ROLLBACK", "open the index")
            throw error
        }
    }

    /// After a commit of events: the thread reads them.
    func notify() {
        let wake = state.withLock { s -> Bool in
            s.pending = true
            return s.idle
        }
        if wake { signal() }
    }

    /// How far the index has read the event table (a rowid).
    var upto: Int64 { state.withLock { $0.upto } }

    /// The last error of the thread, if its last pass failed (it tries again at the next commit).
    var failure: String? { state.withLock { $0.failure } }

    /// Stops the thread and returns once it has closed its connection (within the batch it
    /// may be indexing), so that closing the store closes every connection to its file.
    func close() {
        state.withLock { $0.closed = true }
        wakeup.lock()
        wakeup.broadcast()
        while !state.withLock({ $0.stopped }) { _ = wakeup.wait(until: Date().addingTimeInterval(0.1)) }
        wakeup.unlock()
    }

    func pause() { state.withLock { $0.paused = true } }

    func resume() {
        state.withLock { $0.paused = false }
        signal()
    }

    /// Waits (bounded) until the index has read the event table up to `row`.
    func waitUntilIndexed(through row: Int64, seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while upto < row && Date() < deadline { usleep(1000) }
        return upto >= row
    }

    private func signal() {
        wakeup.lock()
        wakeup.broadcast()
        wakeup.unlock()
    }

    private func run(_ connection: Connection) {
        // Named from the thread itself (see ``ThreadName``).
        ThreadName.set("ce-store-index")
        var nextPass = ContinuousClock.now
        while true {
            wakeup.lock()
            var closed = false
            while true {
                let now = ContinuousClock.now
                let (go, early) = state.withLock { s -> (Bool, Bool) in
                    closed = s.closed
                    let due = s.pending && !s.paused
                    s.idle = !s.closed && !due
                    return (s.closed || (due && now >= nextPass), due && now < nextPass)
                }
                if go { break }
                if early {
                    wakeup.wait(until: nextPass)
                } else {
                    wakeup.wait()
                }
            }
            wakeup.unlock()
            if closed { break }
            nextPass = ContinuousClock.now + Self.interval
            state.withLock { $0.pending = false }
            do {
                while try indexNext(connection) == Self.batch, !state.withLock({ $0.closed || $0.paused }) {}
                state.withLock { $0.failure = nil }
            } catch {
                // Not fatal: queries read what the index lacks from the event table; the next
                // commit tries again.
                state.withLock { $0.failure = "\(error)" }
            }
        }
        connection.close()
        state.withLock { $0.stopped = true }
        signal()
    }

    /// Indexes the next event rows (up to ``batch``) in one transaction; returns how many.
    /// A deferred transaction: it reads the event file without locking it and writes only the
    /// index file, so the store's writer never waits for it.
    private func indexNext(_ connection: Connection) throws -> Int {
        try connection.execute("BEGIN", "index")
        do {
            let from = try connection.integer("SELECT upto FROM ix.indexed") ?? 0
            let next = try connection.integers("SELECT max(rowid), count(*) FROM (SELECT rowid FROM main.event WHERE rowid > \(from) ORDER BY rowid LIMIT \(Self.batch))")
            guard let to = next.first ?? nil, let rows = next.last ?? nil else {
                try connection.execute("COMMIT", "index")
                return 0
            }
            try connection.execute("""
                INSERT OR IGNORE INTO ix.by_type(name, row) SELECT event_type, rowid FROM main.event WHERE rowid > \(from) AND rowid <= \(to);
                INSERT OR IGNORE INTO ix.by_stream(name, row) SELECT stream, rowid FROM main.event WHERE rowid > \(from) AND rowid <= \(to);
                UPDATE ix.indexed SET upto = \(to), upto_id = (SELECT id FROM main.event WHERE rowid = \(to));
                COMMIT;
                """, "index")
            state.withLock { $0.upto = to }
            return Int(rows)
        } catch {
            if sqlite3_get_autocommit(connection.handle) == 0 { try? connection.execute("ROLLBACK", "index") }
            throw error
        }
    }
}

extension NSCondition {
    /// Waits, with the condition locked, until signalled or until `instant` (at once when it
    /// has passed).
    func wait(until instant: ContinuousClock.Instant) {
        let left = instant - ContinuousClock.now
        let seconds = Double(left.components.seconds) + Double(left.components.attoseconds) / 1e18
        _ = wait(until: Date(timeIntervalSinceNow: max(0, seconds)))
    }
}
