import CECore
import Foundation
internal import GRDBSQLite

/// One SQLite connection driven through the C API, for the store's writes, checkpoints and
/// point lookups.
///
/// GRDB stays the store's reader and migrator, but it does not write: its pool turns
/// `synchronous` to NORMAL on the connection that writes when it switches WAL on, after any
/// `prepareDatabase` hook, and it boxes every argument of every row. This connection sets its
/// own pragmas (and ``pragma(_:)`` reads them back where they act), binds rows straight to a
/// prepared statement, and is the only one that writes events, cursors, answers and meta.
///
/// Not thread-safe on its own: the owner serializes every call (``EventStore`` holds it
/// behind a lock; the checkpointer's is used by its thread alone).
final class Connection {
    let path: String
    private(set) var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// The event store's line numbers (``EventStore``'s `line` table) this connection has
    /// looked up or made. A transaction that rolls back empties it: a number made inside it
    /// is void, and the next line made would get it again.
    var lineIDs: [Line: Int64] = [:]

    /// `create`: make the file when it is missing (the event store's own file is made by its
    /// migrations, never here).
    init(path: String, create: Bool = false) throws {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0)
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "code \(rc)"
            sqlite3_close_v2(db)
            throw StoreError(operation: "open a connection", path: path, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, 10_000)
    }

    deinit { close() }

    func close() {
        for statement in statements.values { sqlite3_finalize(statement) }
        statements.removeAll()
        if let handle { sqlite3_close_v2(handle) }
        handle = nil
    }

    var errorMessage: String { handle.map { String(cString: sqlite3_errmsg($0)) } ?? "the connection is closed" }

    func failure(_ operation: String, _ rc: Int32) -> StoreError {
        var message = errorMessage
        if rc & 0xff == SQLITE_FULL { message += " (the disk holding \(path) is full: free space, and the node writes again)" }
        return StoreError(operation: operation, path: path, message: message)
    }

    /// Runs SQL that returns no rows (several statements allowed).
    func execute(_ sql: String, _ operation: String) throws {
        let rc = sqlite3_exec(handle, sql, nil, nil, nil)
        guard rc == SQLITE_OK else { throw failure(operation, rc) }
    }

    /// The first column of the first row of a pragma, read on this connection.
    func pragma(_ name: String) throws -> String? {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, "PRAGMA \(name)", -1, &statement, nil) == SQLITE_OK else { throw failure("pragma \(name)", SQLITE_ERROR) }
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW, let text = sqlite3_column_text(statement, 0) else { return nil }
        return String(cString: text)
    }

    /// The first column of the first row as an integer (nil when there is no row or it is NULL).
    func integer(_ sql: String) throws -> Int64? {
        try integers(sql).first ?? nil
    }

    /// Every column of the first row as integers (NULL as nil; empty when there is no row).
    func integers(_ sql: String) throws -> [Int64?] {
        try firstValue(sql) { statement in
            (0..<sqlite3_column_count(statement)).map { sqlite3_column_type(statement, $0) == SQLITE_NULL ? nil : sqlite3_column_int64(statement, $0) }
        } ?? []
    }

    /// The first column of the first row as text (nil when there is no row or it is NULL).
    func text(_ sql: String) throws -> String? {
        try firstValue(sql) { statement in sqlite3_column_text(statement, 0).map { String(cString: $0) } }
    }

    /// The first column of every row as text (NULLs skipped).
    func texts(_ sql: String, _ operation: String) throws -> [String] {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure(operation, rc) }
        defer { sqlite3_finalize(statement) }
        var values: [String] = []
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_DONE { return values }
            guard step == SQLITE_ROW else { throw failure(operation, step) }
            if let text = sqlite3_column_text(statement, 0) { values.append(String(cString: text)) }
        }
    }

    private func firstValue<T>(_ sql: String, _ read: (OpaquePointer) -> T?) throws -> T? {
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v2(handle, sql, -1, &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure("query", rc) }
        defer { sqlite3_finalize(statement) }
        let step = sqlite3_step(statement)
        if step == SQLITE_DONE { return nil }
        guard step == SQLITE_ROW else { throw failure("query", step) }
        return read(statement)
    }

    /// A prepared statement, kept for the connection's life.
    func statement(_ sql: String) throws -> OpaquePointer {
        if let cached = statements[sql] { return cached }
        var statement: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard rc == SQLITE_OK, let statement else { throw failure("prepare", rc) }
        statements[sql] = statement
        return statement
    }

    /// The blob in the first column of the first row a one-parameter query selects (nil when
    /// none), by its prepared statement, which is reset before returning (so no read
    /// transaction stays open).
    func blob(_ sql: String, _ parameter: String, _ operation: String) throws -> [UInt8]? {
        let statement = try statement(sql)
        bind(statement, 1, parameter)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        let rc = sqlite3_step(statement)
        if rc == SQLITE_DONE { return nil }
        guard rc == SQLITE_ROW else { throw failure(operation, rc) }
        let count = Int(sqlite3_column_bytes(statement, 0))
        guard count > 0, let bytes = sqlite3_column_blob(statement, 0) else { return [] }
        return [UInt8](UnsafeRawBufferPointer(start: bytes, count: count))
    }

    /// Steps a bound statement to its end and resets it; returns the rows it changed.
    @discardableResult
    func run(_ statement: OpaquePointer, _ operation: String) throws -> Int {
        let rc = sqlite3_step(statement)
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        guard rc == SQLITE_DONE else { throw failure(operation, rc) }
        return Int(sqlite3_changes(handle))
    }

    /// Steps a bound statement once and resets it; the first column of its row as an integer
    /// (nil when it selects no row).
    func integer(_ statement: OpaquePointer, _ operation: String) throws -> Int64? {
        let rc = sqlite3_step(statement)
        let value = rc == SQLITE_ROW ? sqlite3_column_int64(statement, 0) : nil
        sqlite3_reset(statement)
        sqlite3_clear_bindings(statement)
        guard rc == SQLITE_ROW || rc == SQLITE_DONE else { throw failure(operation, rc) }
        return value
    }

    /// The rowid of the last row this connection inserted.
    var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// Runs `body` in one `BEGIN IMMEDIATE ... COMMIT`; rolls back when it throws.
    func transaction<T>(_ operation: String, _ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE", operation)
        do {
            let result = try body()
            try execute("COMMIT", operation)
            return result
        } catch {
            if sqlite3_get_autocommit(handle) == 0 { _ = sqlite3_exec(handle, "ROLLBACK", nil, nil, nil) }
            lineIDs.removeAll()
            throw error
        }
    }

    /// Pages in the WAL and pages of it copied back, after a PASSIVE (or stronger) checkpoint.
    func checkpoint(truncate: Bool) throws -> (log: Int, copied: Int) {
        var log: Int32 = 0
        var copied: Int32 = 0
        let mode = truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE
        let rc = sqlite3_wal_checkpoint_v2(handle, nil, mode, &log, &copied)
        guard rc == SQLITE_OK || rc == SQLITE_BUSY else { throw failure("checkpoint", rc) }
        return (Int(log), Int(copied))
    }

    /// Calls `grew(pages)` after every commit with the WAL's size in pages. Installing a
    /// WAL hook turns SQLite's automatic checkpoint off on this connection.
    /// The target must outlive the connection (the store holds both).
    func onCommit(_ target: Checkpointer) {
        let context = Unmanaged.passUnretained(target).toOpaque()
        sqlite3_wal_hook(handle, { context, _, _, pages in
            Unmanaged<Checkpointer>.fromOpaque(context!).takeUnretainedValue().walGrew(pages: Int(pages))
            return SQLITE_OK
        }, context)
    }
}

// Binding helpers: SQLite copies text and blobs it is given with SQLITE_TRANSIENT; those
// bound with `withText` and `withBlob` it reads in place (no destructor: SQLITE_STATIC).
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

extension Connection {
    func bind(_ statement: OpaquePointer, _ index: Int32, _ value: String?) {
        guard let value else { sqlite3_bind_null(statement, index); return }
        if value.isEmpty { sqlite3_bind_text(statement, index, "", 0, transient); return }
        var text = value
        text.withUTF8 { bytes in
            _ = sqlite3_bind_text(statement, index, UnsafeRawPointer(bytes.baseAddress!).assumingMemoryBound(to: CChar.self), Int32(bytes.count), transient)
        }
    }

    func bind(_ statement: OpaquePointer, _ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(statement, index, value)
    }

    func bind(_ statement: OpaquePointer, _ index: Int32, blob: [UInt8]) {
        if blob.isEmpty { sqlite3_bind_zeroblob(statement, index, 0); return }
        blob.withUnsafeBytes { bytes in
            _ = sqlite3_bind_blob(statement, index, bytes.baseAddress!, Int32(bytes.count), transient)
        }
    }

    /// Binds `value` without a copy while `body` runs: `body` must step the statement and clear
    /// its bindings before it returns (``run(_:_:)`` does both).
    func withText<T>(_ statement: OpaquePointer, _ index: Int32, _ value: String, _ body: () throws -> T) rethrows -> T {
        var text = value
        return try text.withUTF8 { bytes in
            let start = bytes.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) } ?? UnsafeRawPointer(StaticString("").utf8Start).assumingMemoryBound(to: CChar.self)
            sqlite3_bind_text(statement, index, start, Int32(bytes.count), nil)
            return try body()
        }
    }

    /// ``withText(_:_:_:_:)`` for a blob.
    func withBlob<T>(_ statement: OpaquePointer, _ index: Int32, _ value: [UInt8], _ body: () throws -> T) rethrows -> T {
        if value.isEmpty {
            sqlite3_bind_zeroblob(statement, index, 0)
            return try body()
        }
        return try value.withUnsafeBytes { bytes in
            sqlite3_bind_blob(statement, index, bytes.baseAddress!, Int32(bytes.count), nil)
            return try body()
        }
    }
}
