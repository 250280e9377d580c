import CECore
import Foundation
import GRDB
internal import GRDBSQLite
import Synchronization

/// One event as stored: the indexed fields and the exact envelope bytes received or sent.
public struct StoredEvent: Sendable, Hashable {
    public var rowID: Int64 = 0
    public var id: String
    public var origin: String
    public var epoch: String
    public var seq: UInt64
    public var stream: String
    public var eventType: String
    public var timestampMillis: Int64
    public var receivedMillis: Int64
    public var correlationID: String?
    public var target: String?
    public var envelope: [UInt8]

    public init(event: Event, envelope: [UInt8], receivedAt: Date = Date()) {
        id = event.id
        origin = event.origin
        epoch = event.epoch
        seq = event.seq
        stream = event.stream
        eventType = event.type.rawValue
        timestampMillis = Self.millis(event.timestamp)
        receivedMillis = Self.millis(receivedAt)
        correlationID = event.correlationID
        target = event.target
        self.envelope = envelope
    }

    /// The columns ``init(row:)`` reads, by position (a lookup by name per column and row
    /// was a tenth of a replay page's cost).
    static let columns = """
        event.rowid, event.id, (SELECT origin FROM line WHERE line.id = event.line), (SELECT epoch FROM line WHERE line.id = event.line), \
        event.seq, event.stream, event.event_type, event.ts_ms, event.received_ms, event.correlation_id, event.target, event.envelope
        """

    init(row: Row) throws {
        rowID = row[0]
        id = row[1]
        origin = row[2]
        epoch = row[3]
        seq = UInt64(row[4] as Int64)
        stream = row[5]
        eventType = row[6]
        timestampMillis = row[7]
        receivedMillis = row[8]
        correlationID = row[9]
        target = row[10]
        envelope = try row.withUnsafeData(atIndex: 11) { data in data.map { [UInt8]($0) } ?? [] }
    }

    /// Milliseconds since 1970, rounded to the nearest; queries by time use the same rounding,
    /// so an event is found by its own timestamp.
    static func millis(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    /// The event, decoded from the stored envelope.
    public func decoded() throws -> Event { try EnvelopeCodec.decode(envelope) }
}

/// Which events to read; every filter is optional.
public struct EventQuery: Sendable, Hashable {
    public var type: String?
    public var stream: String?
    public var origin: String?
    /// Only events of this epoch (use with `origin`).
    public var epoch: String?
    public var id: String?
    /// Events stamped at or after this time (to the millisecond).
    public var since: Date?
    /// Events stamped at or before this time (to the millisecond).
    public var until: Date?
    /// Only events of `origin` with a larger sequence.
    public var afterSeq: UInt64?
    /// Only events with this sequence or a smaller one.
    public var throughSeq: UInt64?
    /// Only events of one of these types (nil: every type).
    public var types: [String]?
    /// Ordered by sequence instead of by the order stored (use with `origin`).
    public var bySeq = false
    public var afterRowID: Int64?
    public var limit = 1000
    public var descending = false
    public init() {}
}

/// A store operation that failed, with the database and SQLite's reason.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var path: String
    public var message: String
    /// The file is damaged (it fails the integrity check, or SQLite finds it malformed or not
    /// a database): nothing in it can be trusted.
    public var damaged = false
    public var description: String { "event store \(path): \(operation) failed: \(message)" }
}

/// The durable event log of one node: SQLite in WAL mode under `<directory>/events.sqlite`.
///
/// Durable by default: every committed batch is fsynced before it is acknowledged
/// (`synchronous=FULL` on the one connection that writes, read back after it is set), so an
/// event that `append` acknowledged survives kill -9 and power loss. Batches keep that cheap
/// (group commit: one fsync per batch). Checkpoints run on their own thread, off the commit
/// path. A store that fails SQLite's quick_check at open is refused, never trusted silently.
///
/// GRDB reads and migrates; every write goes through one ``Connection`` (the SQLite C API),
/// serialized by a lock.
public final class EventStore: Sendable {
    public enum Durability: String, Sendable {
        /// fsync on every commit: survives power loss.
        case full
        /// fsync at checkpoints only: survives a process crash, may lose the last commits on power loss.
        case normal
    }

    /// Where WAL checkpoints run.
    public enum Checkpoints: String, Sendable {
        /// On a thread and connection of their own, never inside a commit (the default).
        case background
        /// SQLite's automatic checkpoint, inside the commit that crosses 4000 WAL pages
        /// (what the store did before; kept for measuring the difference).
        case inline
    }

    public let path: String
    public let durability: Durability
    /// This store's epoch: made when the store was created, stamped on every event its node
    /// emits (empty for a store made before epochs existed, which keeps numbering as before).
    public let epoch: String
    /// True when this open created the store (there was no file, or an empty one).
    public let isNew: Bool
    let pool: DatabasePool
    let writing: Mutex<HeldConnection>
    /// A connection of its own for the point lookups of the hot paths (a retried question's
    /// answer, an emitted event's id): a prepared statement on the C API, where a read
    /// through GRDB's pool cost about 90 us (a reader from the pool, a statement prepared
    /// anew, a transaction begun and ended).
    let lookups: Mutex<HeldConnection>
    /// A hash of every request id in `answered` (loaded at open, added before each insert):
    /// a question whose id is not here is new, and is answered without a read of the store.
    /// A read cost 40-60 us, as each read after another connection's commit starts with a
    /// cold page cache; almost every question is new. 16 bytes or so per answer kept.
    let answeredKeys: Mutex<Set<Int>>
    let checkpointer: Checkpointer?
    let index: EventIndex

    /// A connection reached only through one of the store's `Mutex`es (`@unchecked Sendable`:
    /// one thread at a time uses it).
    struct HeldConnection: @unchecked Sendable {
        let connection: Connection
    }

    /// WAL bytes kept when the WAL starts over (a WAL grown past this by a burst, or by
    /// readers holding it, is cut back then).
    static let walSizeLimit = 64 << 20

    public convenience init(directory: String, durability: Durability = .full, checkpoints: Checkpoints = .background) throws {
        try self.init(directory: directory, durability: durability, checkpoints: checkpoints, walPagesBeforeCheckpoint: Checkpointer.defaultThreshold)
    }

    /// `walPagesBeforeCheckpoint`: for tests, a smaller WAL before a background checkpoint.
    init(directory: String, durability: Durability = .full, checkpoints: Checkpoints = .background, walPagesBeforeCheckpoint: Int) throws {
        self.durability = durability
        let path = directory + "/events.sqlite"
        self.path = path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw StoreError(operation: "create directory", path: path, message: "\(error)")
        }
        // The index file exists before any connection attaches it (readers cannot make it).
        try EventIndex.prepare(directory: directory)
        let indexPath = directory + "/" + EventIndex.fileName
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            // Only takes effect on a new file, before its first table; GRDB turns WAL on afterwards.
            try db.execute(sql: "PRAGMA page_size=16384")
            try db.execute(sql: "PRAGMA synchronous=\(durability == .full ? "FULL" : "NORMAL")")
            try db.execute(sql: "PRAGMA cache_size=-65536")
            try db.execute(sql: "ATTACH DATABASE ? AS ix", arguments: [indexPath])
        }
        do {
            pool = try DatabasePool(path: path, configuration: config)
            let check = try pool.read { db in try String.fetchAll(db, sql: "PRAGMA main.quick_check(5)") }
            guard check == ["ok"] else {
                throw StoreError(operation: "integrity check", path: path, message: check.joined(separator: "; "), damaged: true)
            }
            let version = try pool.read { db in try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0 }
            let tables = try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0 }
            let created = version == 0 && tables == 0
            isNew = created
            guard version <= Self.schemaVersion else {
                throw StoreError(operation: "open", path: path,
                                 message: "schema version \(version) is newer than this program's \(Self.schemaVersion); use a newer ce-node")
            }
            try Self.migrator.migrate(pool)
            if version != Self.schemaVersion {
                try pool.write { db in try db.execute(sql: "PRAGMA user_version = \(Self.schemaVersion)") }
            }
            // A new store starts a new epoch; one made before epochs keeps numbering in "".
            let made = created ? Epoch.make() : ""
            try pool.write { db in try db.execute(sql: "INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?)", arguments: [made]) }
            epoch = try pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'epoch'") } ?? made
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            throw StoreError(operation: "integrity check", path: path, message: "\(error)", damaged: true)
        } catch {
            throw StoreError(operation: "open", path: path, message: "\(error) (is this an event store? a damaged one is not used; move it aside to start afresh)")
        }
        // The writing connection: its pragmas are set here and read back, not assumed.
        let connection = try Connection(path: path)
        let synchronous = durability == .full ? "2" : "1"
        try connection.execute("PRAGMA synchronous=\(durability == .full ? "FULL" : "NORMAL"); PRAGMA cache_size=-65536; PRAGMA journal_size_limit=\(Self.walSizeLimit)", "set pragmas")
        let journal = try connection.pragma("journal_mode")
        let effective = try connection.pragma("synchronous")
        guard journal == "wal", effective == synchronous else {
            throw StoreError(operation: "open", path: path,
                             message: "the writing connection runs journal_mode=\(journal ?? "?") synchronous=\(effective ?? "?"), not wal and \(synchronous)")
        }
        switch checkpoints {
        case .background:
            let checkpointer = Checkpointer(path: path, threshold: walPagesBeforeCheckpoint)
            connection.onCommit(checkpointer)
            self.checkpointer = checkpointer
        case .inline:
            try connection.execute("PRAGMA wal_autocheckpoint=4000", "set pragmas")
            self.checkpointer = nil
        }
        writing = Mutex(HeldConnection(connection: connection))
        do {
            let reader = try Connection(path: path)
            try reader.execute("PRAGMA query_only=1", "set pragmas")
            lookups = Mutex(HeldConnection(connection: reader))
            answeredKeys = Mutex(Set(try reader.texts("SELECT request_id FROM answered", "load answered ids").map(Self.answerKey)))
            index = try EventIndex(storePath: path, directory: directory, epoch: epoch)
        } catch {
            checkpointer?.close()
            connection.close()
            throw error
        }
    }

    deinit {
        index.close()
        checkpointer?.close()
        writing.withLock { $0.connection.close() }
        lookups.withLock { $0.connection.close() }
    }

    /// Opens (or creates) the store under `directory`; see ``init(directory:durability:)``.
    public convenience init(directory: URL, durability: Durability = .full) throws {
        try self.init(directory: directory.path, durability: durability)
    }

    /// Runs `body` with the writing connection, one caller at a time.
    func write<T>(_ body: (Connection) throws -> T) rethrows -> T {
        try writing.withLock { try body($0.connection) }
    }

    /// The last rowid the index file has read: queries by type or stream read the rows after
    /// it from the event table (see ``EventIndex``).
    public var indexedUpTo: Int64 { index.upto }

    /// Why the index thread's last pass failed, if it did (it tries again after the next commit).
    public var indexFailure: String? { index.failure }

    /// After a transaction that stored events: the index reads them, and what the background
    /// checkpoint left is copied (``finishCheckpoint()``).
    func committed() {
        index.notify()
        finishCheckpoint()
    }

    /// Between two transactions: copies what the background checkpoint left in the WAL (see
    /// ``Checkpointer``), so that the next transaction starts the WAL over. Not fatal when it
    /// fails: the next checkpoint tries again.
    func finishCheckpoint() {
        guard checkpointer?.takeRemainder() == true else { return }
        write { connection in _ = try? connection.checkpoint(truncate: false) }
    }

    /// At a clean stop: copies everything in the WAL into the store file and empties the WAL,
    /// so the file alone holds every event (a copy of `events.sqlite` is a whole backup).
    /// SQLite does this itself only when the last connection to the file closes, which another
    /// connection still open at that moment (a reader, the checkpoint thread's) prevents.
    /// Returns whether the WAL is empty now.
    @discardableResult
    public func checkpointAtStop() -> Bool {
        write { connection in
            guard let (log, copied) = try? connection.checkpoint(truncate: true) else { return false }
            return log == 0 && copied == 0
        }
    }

    /// Checkpoints run off the commit path so far.
    public var backgroundCheckpoints: Int { checkpointer?.checkpoints ?? 0 }

    /// WAL pages those checkpoints copied into the store file.
    public var backgroundPagesCopied: Int { checkpointer?.pagesCopied ?? 0 }

    /// The schema version, kept in `PRAGMA user_version`; a store with a larger one is refused.
    public static let schemaVersion = 4

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
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
                """)
        }
        // Epochs: an origin's events are numbered per epoch (its store), so (origin, epoch,
        // seq) is unique and cursors are kept per epoch. Events stored before get epoch "".
        migrator.registerMigration("v2 epochs") { db in
            try db.execute(sql: """
                CREATE TABLE event2(
                    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '',
                    seq INTEGER NOT NULL, stream TEXT NOT NULL, event_type TEXT NOT NULL, ts_ms INTEGER NOT NULL,
                    received_ms INTEGER NOT NULL, correlation_id TEXT, target TEXT, envelope BLOB NOT NULL,
                    UNIQUE(origin, epoch, seq));
                INSERT INTO event2(rowid, id, origin, epoch, seq, stream, event_type, ts_ms, received_ms, correlation_id, target, envelope)
                    SELECT rowid, id, origin, '', seq, stream, event_type, ts_ms, received_ms, correlation_id, target, envelope FROM event;
                DROP TABLE event;
                ALTER TABLE event2 RENAME TO event;
                CREATE INDEX event_by_type ON event(event_type, rowid);
                CREATE INDEX event_by_stream ON event(stream, rowid);
                CREATE INDEX event_by_time ON event(ts_ms);
                CREATE TABLE cursor2(origin TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, PRIMARY KEY(origin, epoch));
                INSERT INTO cursor2(origin, epoch, seq) SELECT origin, '', seq FROM cursor;
                DROP TABLE cursor;
                ALTER TABLE cursor2 RENAME TO cursor;
                """)
        }
        // The indexes by type, stream and time cost the committing writer a quarter of its
        // time per event: type and stream are kept in the index file (``EventIndex``), off the
        // commit path; time had no use SQLite's planner made (an ordered query scans by rowid).
        migrator.registerMigration("v3 indexes off the commit path") { db in
            try db.execute(sql: """
                DROP INDEX IF EXISTS event_by_type;
                DROP INDEX IF EXISTS event_by_stream;
                DROP INDEX IF EXISTS event_by_time;
                """)
        }
        // Lines numbered in a table of their own: each row and each entry of the unique key
        // on (line, sequence) holds a small integer where it held the origin's name and its
        // 36-byte epoch, twice (with 480-byte envelopes the file is 13 % smaller).
        migrator.registerMigration("v4 lines") { db in
            try db.execute(sql: """
                CREATE TABLE line(id INTEGER PRIMARY KEY, origin TEXT NOT NULL, epoch TEXT NOT NULL, UNIQUE(origin, epoch));
                INSERT INTO line(origin, epoch) SELECT origin, epoch FROM event GROUP BY origin, epoch ORDER BY min(rowid);
                CREATE TABLE event2(
                    rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, line INTEGER NOT NULL, seq INTEGER NOT NULL,
                    stream TEXT NOT NULL, event_type TEXT NOT NULL, ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
                    correlation_id TEXT, target TEXT, envelope BLOB NOT NULL, UNIQUE(line, seq));
                INSERT INTO event2(rowid, id, line, seq, stream, event_type, ts_ms, received_ms, correlation_id, target, envelope)
                    SELECT event.rowid, event.id, line.id, event.seq, event.stream, event.event_type, event.ts_ms, event.received_ms,
                        event.correlation_id, event.target, event.envelope
                    FROM event JOIN line ON line.origin = event.origin AND line.epoch = event.epoch ORDER BY event.rowid;
                DROP TABLE event;
                ALTER TABLE event2 RENAME TO event;
                """)
        }
        return migrator
    }

    func fail(_ operation: String, _ error: any Error) -> StoreError {
        StoreError(operation: operation, path: path, message: "\(error)")
    }

    /// Appends events in one transaction; returns for each whether it was new (a duplicate
    /// id or origin/sequence is skipped, not stored twice). Cursors only move forward.
    @discardableResult
    public func append(_ events: [StoredEvent], advancing cursors: [Line: UInt64] = [:]) throws -> [Bool] {
        let fresh = try write { connection in
            try connection.transaction("append") { try Self.insert(events, cursors: cursors, connection) }
        }
        committed()
        return fresh
    }

    static let insertSQL = """
        INSERT OR IGNORE INTO event(id, line, seq, stream, event_type, ts_ms, received_ms, correlation_id, target, envelope)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        """
    static let cursorSQL = "INSERT INTO cursor(origin, epoch, seq) VALUES (?, ?, ?) ON CONFLICT(origin, epoch) DO UPDATE SET seq = max(seq, excluded.seq)"

    /// Inserts inside the caller's transaction, binding each row straight to the prepared
    /// statement (its text and envelope read in place, not copied).
    static func insert(_ events: [StoredEvent], cursors: [Line: UInt64], _ connection: Connection) throws -> [Bool] {
        let statement = try connection.statement(insertSQL)
        var fresh: [Bool] = []
        fresh.reserveCapacity(events.count)
        /// The line of the event before (a batch mostly holds one line's events).
        var last: (origin: String, epoch: String, id: Int64)?
        for e in events {
            let line: Int64
            if let last, last.origin == e.origin, last.epoch == e.epoch {
                line = last.id
            } else {
                line = try lineID(Line(e.origin, e.epoch), connection)
                last = (e.origin, e.epoch, line)
            }
            connection.bind(statement, 2, line)
            connection.bind(statement, 3, Int64(e.seq))
            connection.bind(statement, 6, e.timestampMillis)
            connection.bind(statement, 7, e.receivedMillis)
            connection.bind(statement, 8, e.correlationID)
            connection.bind(statement, 9, e.target)
            let changed = try connection.withText(statement, 1, e.id) {
                try connection.withText(statement, 4, e.stream) {
                    try connection.withText(statement, 5, e.eventType) {
                        try connection.withBlob(statement, 10, e.envelope) { try connection.run(statement, "append") }
                    }
                }
            }
            fresh.append(changed > 0)
        }
        if !cursors.isEmpty {
            let cursor = try connection.statement(cursorSQL)
            for (line, seq) in cursors {
                connection.bind(cursor, 1, line.origin)
                connection.bind(cursor, 2, line.epoch)
                connection.bind(cursor, 3, Int64(seq))
                try connection.run(cursor, "advance cursor")
            }
        }
        return fresh
    }

    /// The number of a line in the `line` table, made inside the caller's transaction when the
    /// store holds none yet (``Connection/lineIDs`` forgets it if that transaction rolls back).
    static func lineID(_ line: Line, _ connection: Connection) throws -> Int64 {
        if let known = connection.lineIDs[line] { return known }
        let find = try connection.statement("SELECT id FROM line WHERE origin = ? AND epoch = ?")
        connection.bind(find, 1, line.origin)
        connection.bind(find, 2, line.epoch)
        let id: Int64
        if let found = try connection.integer(find, "find line") {
            id = found
        } else {
            let make = try connection.statement("INSERT INTO line(origin, epoch) VALUES (?, ?)")
            connection.bind(make, 1, line.origin)
            connection.bind(make, 2, line.epoch)
            try connection.run(make, "add line")
            id = connection.lastInsertedRowID
        }
        connection.lineIDs[line] = id
        return id
    }

    public func events(_ query: EventQuery) throws -> [StoredEvent] {
        do {
            return try read(query, select: StoredEvent.columns) { db, sql, arguments in
                // Read straight from the statement (no copy of each row before it is decoded).
                var events: [StoredEvent] = []
                let rows = try Row.fetchCursor(db, sql: sql, arguments: arguments)
                while let row = try rows.next() { events.append(try StoredEvent(row: row)) }
                return events
            }
        } catch { throw fail("query", error) }
    }

    /// The sequence numbers and envelope bytes of the events a query selects, in its order:
    /// what a replay page sends. Read with the C API from two columns (a page of 4000 built
    /// through ``events(_:)`` spent 45 ms making every column of every row a Swift value).
    public func envelopes(_ query: EventQuery) throws -> [(seq: UInt64, envelope: [UInt8])] {
        do {
            return try read(query, select: "seq, envelope") { db, sql, arguments in
                let statement = try db.makeStatement(sql: sql)
                try statement.setArguments(arguments)
                let handle = statement.sqliteStatement
                var rows: [(seq: UInt64, envelope: [UInt8])] = []
                while true {
                    let code = sqlite3_step(handle)
                    if code == SQLITE_DONE { break }
                    guard code == SQLITE_ROW else {
                        throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)), sql: sql)
                    }
                    let count = Int(sqlite3_column_bytes(handle, 1))
                    let envelope = count > 0 ? [UInt8](UnsafeRawBufferPointer(start: sqlite3_column_blob(handle, 1), count: count)) : []
                    rows.append((UInt64(sqlite3_column_int64(handle, 0)), envelope))
                }
                return rows
            }
        } catch { throw fail("query", error) }
    }

    public func count(_ query: EventQuery = EventQuery()) throws -> Int {
        do {
            return try pool.read { db in
                try Self.sql(query, select: "count(*)", ordered: false, indexedUpTo: try Self.indexedUpTo(db)).reduce(0) { total, part in
                    total + (try Int.fetchOne(db, sql: part.sql, arguments: part.arguments) ?? 0)
                }
            }
        } catch { throw fail("count", error) }
    }

    /// How far the index file has read the event table, as this read transaction sees it.
    private static func indexedUpTo(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT upto FROM ix.indexed") ?? 0
    }

    /// Runs a query's statements (``sql(_:select:ordered:indexedUpTo:)``) in one read
    /// transaction, and joins their rows up to the query's limit.
    private func read<Row>(_ query: EventQuery, select: String, _ rows: (Database, String, StatementArguments) throws -> [Row]) throws -> [Row] {
        try pool.read { db in
            var all: [Row] = []
            for part in Self.sql(query, select: select, indexedUpTo: try Self.indexedUpTo(db)) {
                all += try rows(db, part.sql, part.arguments)
                if all.count >= query.limit { break }
            }
            return all.count > query.limit ? Array(all.prefix(max(0, query.limit))) : all
        }
    }

    /// The statements that answer a query, to run in this order in one read transaction.
    ///
    /// A query by type, types or stream (and not by origin or id, whose unique keys in the
    /// event table are the better way in) reads the rows the index has read (rowids up to
    /// `indexedUpTo`) through the index file, and the rows after them from the event table:
    /// two statements, whose rows in the query's order are the first's then the second's (the
    /// other way round when descending). Whatever the read transaction sees of the index file
    /// and of the event table, the two together select each matching row once: events are
    /// only ever appended, with growing rowids, and the index lists only rows up to its
    /// `upto`, committed with them.
    static func sql(_ q: EventQuery, select: String, ordered: Bool = true, indexedUpTo upto: Int64) -> [(sql: String, arguments: StatementArguments)] {
        var clauses: [String] = []
        var arguments: [(any DatabaseValueConvertible)?] = []
        if let v = q.type { clauses.append("event.event_type = ?"); arguments.append(v) }
        if let v = q.stream { clauses.append("event.stream = ?"); arguments.append(v) }
        // One line (origin and epoch) by equality, so the unique key on (line, seq) reads its
        // events in sequence order; an origin alone may have several.
        switch (q.origin, q.epoch) {
        case let (origin?, epoch?):
            clauses.append("event.line = (SELECT id FROM line WHERE origin = ? AND epoch = ?)")
            arguments.append(origin)
            arguments.append(epoch)
        case let (origin?, nil):
            clauses.append("event.line IN (SELECT id FROM line WHERE origin = ?)")
            arguments.append(origin)
        case let (nil, epoch?):
            clauses.append("event.line IN (SELECT id FROM line WHERE epoch = ?)")
            arguments.append(epoch)
        case (nil, nil): break
        }
        if let v = q.id { clauses.append("event.id = ?"); arguments.append(v) }
        if let v = q.since { clauses.append("event.ts_ms >= ?"); arguments.append(StoredEvent.millis(v)) }
        if let v = q.until { clauses.append("event.ts_ms <= ?"); arguments.append(StoredEvent.millis(v)) }
        if let v = q.afterSeq { clauses.append("event.seq > ?"); arguments.append(Int64(v)) }
        if let v = q.throughSeq { clauses.append("event.seq <= ?"); arguments.append(Int64(min(v, UInt64(Int64.max)))) }
        if let v = q.types {
            clauses.append("event.event_type IN (" + v.map { _ in "?" }.joined(separator: ", ") + ")")
            arguments.append(contentsOf: v.map { $0 as (any DatabaseValueConvertible)? })
        }
        if let v = q.afterRowID { clauses.append("event.rowid > ?"); arguments.append(v) }
        func order(_ key: String) -> String {
            guard ordered else { return "" }
            return (q.descending ? " ORDER BY \(key) DESC" : " ORDER BY \(key)") + " LIMIT \(max(0, q.limit))"
        }
        func whole(_ extra: [String] = []) -> String {
            let all = extra + clauses
            return all.isEmpty ? "" : " WHERE " + all.joined(separator: " AND ")
        }
        // The index that leads, if any: the one SQLite's planner picked when they were in the event table.
        var lead: (table: String, clause: String, arguments: [String])?
        if q.origin == nil && q.id == nil && !q.bySeq {
            if let v = q.stream {
                lead = ("by_stream", "x.name = ?", [v])
            } else if let v = q.type {
                lead = ("by_type", "x.name = ?", [v])
            } else if let v = q.types {
                lead = ("by_type", "x.name IN (" + v.map { _ in "?" }.joined(separator: ", ") + ")", v)
            }
        }
        guard let lead, upto > 0 else {
            return [("SELECT \(select) FROM event" + whole() + order(q.bySeq ? "event.seq" : "event.rowid"), StatementArguments(arguments))]
        }
        // CROSS JOIN keeps the index as the outer loop: rows come in rowid order and the
        // LIMIT stops the walk.
        var indexed = "SELECT \(select) FROM ix.\(lead.table) AS x CROSS JOIN event ON event.rowid = x.row WHERE \(lead.clause) AND x.row <= ?"
        var indexedArguments: [(any DatabaseValueConvertible)?] = lead.arguments.map { $0 as (any DatabaseValueConvertible)? } + [upto]
        if let v = q.afterRowID {
            indexed += " AND x.row > ?"
            indexedArguments.append(v)
        }
        indexed += (clauses.isEmpty ? "" : " AND " + clauses.joined(separator: " AND ")) + order("x.row")
        let parts: [(sql: String, arguments: StatementArguments)] = [
            (indexed, StatementArguments(indexedArguments + arguments)),
            ("SELECT \(select) FROM event" + whole(["event.rowid > ?"]) + order("event.rowid"), StatementArguments([upto as (any DatabaseValueConvertible)?] + arguments)),
        ]
        return q.descending ? parts.reversed() : parts
    }

    /// The envelope of the event with this id, if stored.
    public func envelope(id: String) throws -> [UInt8]? {
        try lookups.withLock { try $0.connection.blob("SELECT envelope FROM event WHERE id = ?", id, "event by id") }
    }

    /// The rowid of the newest stored event (0 when none); readers resume after it.
    public func lastRowID() throws -> Int64 {
        do { return try pool.read { db in try Int64.fetchOne(db, sql: "SELECT max(rowid) FROM event") ?? 0 } } catch {
            throw fail("lastRowID", error)
        }
    }

    /// The value of a pragma on a reading connection (for diagnostics and tests).
    func pragma(_ name: String) throws -> String? {
        try pool.read { db in try String.fetchOne(db, sql: "PRAGMA \(name)") }
    }

    /// The value of a pragma on the writing connection, read inside a write transaction:
    /// what the commits of the store really run with.
    public func writingPragma(_ name: String) throws -> String? {
        try write { connection in try connection.transaction("read pragma") { try connection.pragma(name) } }
    }

    /// Sets a pragma on the writing connection (tests use it to fake other versions).
    func setPragma(_ name: String, _ value: String) throws {
        try write { connection in try connection.execute("PRAGMA \(name) = \(value)", "set pragma") }
    }

    /// The largest sequence stored for an origin in an epoch (0 when none): an origin continues from it.
    public func maxSeq(origin: String, epoch: String = "") throws -> UInt64 {
        do {
            return try pool.read { db in
                UInt64(try Int64.fetchOne(db, sql: "SELECT max(seq) FROM event WHERE line = (SELECT id FROM line WHERE origin = ? AND epoch = ?)", arguments: [origin, epoch]) ?? 0)
            }
        } catch { throw fail("maxSeq", error) }
    }

    /// The largest sequence stored per line (origin and epoch).
    public func lines() throws -> [Line: UInt64] {
        do {
            return try pool.read { db in
                var result: [Line: UInt64] = [:]
                // A line is made with the first event stored of it; one whose only event was
                // a duplicate (not stored) holds none.
                let sql = "SELECT origin, epoch, (SELECT max(seq) FROM event WHERE event.line = line.id) AS seq FROM line"
                for row in try Row.fetchAll(db, sql: sql) {
                    guard let seq = row["seq"] as Int64? else { continue }
                    result[Line(row["origin"], row["epoch"])] = UInt64(seq)
                }
                return result
            }
        } catch { throw fail("lines", error) }
    }

    public func cursor(_ line: Line) throws -> UInt64 {
        do {
            return try pool.read { db in
                UInt64(try Int64.fetchOne(db, sql: "SELECT seq FROM cursor WHERE origin = ? AND epoch = ?", arguments: [line.origin, line.epoch]) ?? 0)
            }
        } catch { throw fail("cursor", error) }
    }

    /// Every cursor, per line.
    public func cursors() throws -> [Line: UInt64] {
        do {
            return try pool.read { db in
                var result: [Line: UInt64] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT origin, epoch, seq FROM cursor") {
                    result[Line(row["origin"], row["epoch"])] = UInt64(row["seq"] as Int64)
                }
                return result
            }
        } catch { throw fail("cursors", error) }
    }

    /// The largest sequence stored per event type, for one origin in one epoch.
    public func lastSeqByType(origin: String, epoch: String = "") throws -> [String: UInt64] {
        do {
            return try pool.read { db in
                var result: [String: UInt64] = [:]
                let sql = "SELECT event_type, max(seq) AS seq FROM event WHERE line = (SELECT id FROM line WHERE origin = ? AND epoch = ?) GROUP BY event_type"
                for row in try Row.fetchAll(db, sql: sql, arguments: [origin, epoch]) {
                    result[row["event_type"]] = UInt64(row["seq"] as Int64)
                }
                return result
            }
        } catch { throw fail("lastSeqByType", error) }
    }

    public func setCursors(_ cursors: [Line: UInt64]) throws {
        _ = try append([], advancing: cursors)
    }

    /// The stored reply to a request already answered, for answering a retry once.
    public func answer(for requestID: String) throws -> [UInt8]? {
        guard answeredKeys.withLock({ $0.contains(Self.answerKey(requestID)) }) else { return nil }
        return try lookups.withLock { try $0.connection.blob("SELECT reply FROM answered WHERE request_id = ?", requestID, "answer") }
    }

    public func recordAnswer(requestID: String, reply: [UInt8]) throws {
        try write { connection in try insertAnswer(requestID: requestID, reply: reply, connection) }
    }

    static func answerKey(_ requestID: String) -> Int { requestID.hashValue }

    /// Inserts an answer (a request answered before keeps its first). Its id's key is added
    /// first, so a retry that comes once the answer is committed always finds it.
    func insertAnswer(requestID: String, reply: [UInt8], _ connection: Connection) throws {
        _ = answeredKeys.withLock { $0.insert(Self.answerKey(requestID)) }
        let statement = try connection.statement("INSERT OR IGNORE INTO answered(request_id, reply, answered_ms) VALUES (?, ?, ?)")
        connection.bind(statement, 1, requestID)
        connection.bind(statement, 2, blob: reply)
        connection.bind(statement, 3, Int64(Date().timeIntervalSince1970 * 1000))
        try connection.run(statement, "recordAnswer")
    }

    public func meta(_ key: String) throws -> String? {
        do { return try pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = ?", arguments: [key]) } } catch {
            throw fail("meta", error)
        }
    }

    public func setMeta(_ key: String, _ value: String) throws {
        try write { connection in
            let statement = try connection.statement("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)")
            connection.bind(statement, 1, key)
            connection.bind(statement, 2, value)
            try connection.run(statement, "setMeta")
        }
    }

    /// A group-commit writer for this store.
    public func writer() -> EventWriter { EventWriter(store: self) }
}

extension EventStore {
    /// The control protocol's `history`: the events the query selects, as stored, and whether
    /// more matched than its limit. The node answers with it, and `ce-node history` reads a
    /// stopped node's store with it, so both give the same answer.
    public func history(_ q: ControlRequest.HistoryQuery) throws -> (events: [JSONValue], truncated: Bool) {
        var query = EventQuery()
        query.types = q.types?.map(\.rawValue)
        query.stream = q.stream
        query.origin = q.origin
        query.afterSeq = q.afterSeq
        query.since = q.since
        query.until = q.until
        query.descending = q.newestFirst
        query.limit = q.limit + 1
        let rows = try events(query)
        return (rows.prefix(q.limit).compactMap { try? JSONValue(parsing: $0.envelope) }, rows.count > q.limit)
    }
}
