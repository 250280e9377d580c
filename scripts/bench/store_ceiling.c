/* The event store's own schema written from plain C: the ceiling for `ce-bench store` at the
 * same schema, row size and durability (../shared/bench/sqlite_ceiling.c has a smaller schema:
 * two unique keys, 256-byte rows).
 *
 *   cc -O2 -o /tmp/store_ceiling scripts/bench/store_ceiling.c -lsqlite3
 *   /tmp/store_ceiling DB_PATH ROWS BATCH [ENVELOPE_BYTES] [v3|indexed]
 *
 * Pragmas as the store sets them (page_size 16384, cache 64 MiB, WAL, synchronous=FULL,
 * wal_autocheckpoint 4000); one INSERT OR IGNORE per event, bound to a prepared statement,
 * and the cursor's upsert once per transaction. Schema 4: each row names its line (origin
 * and epoch) by number, and the unique keys are the id and (line, seq); the indexes by type
 * and stream are in a file of their own, filled off the commit path. `v3` writes schema 3,
 * where every row and every entry of the unique key held the origin's name and its 36-byte
 * epoch; `indexed` adds to it the three indexes schema 2 kept in the event file (by type, by
 * stream, by time), to show what they cost the commit. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void exec(sqlite3 *db, const char *sql) {
    char *error = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, error);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DB_PATH ROWS BATCH [ENVELOPE_BYTES] [indexed]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    int rows = atoi(argv[2]), batch = atoi(argv[3]);
    int size = argc > 4 ? atoi(argv[4]) : 480;
    int indexed = argc > 5 && strcmp(argv[5], "indexed") == 0;
    int v3 = indexed || (argc > 5 && strcmp(argv[5], "v3") == 0);
    if (rows <= 0 || batch <= 0 || size <= 0 || size > 65536) { fprintf(stderr, "bad arguments\n"); return 2; }
    char wal[1024], shm[1024];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    remove(path); remove(wal); remove(shm);

    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) { fprintf(stderr, "cannot open %s\n", path); return 1; }
    exec(db, "PRAGMA page_size=16384; PRAGMA cache_size=-65536; PRAGMA journal_mode=WAL;"
             " PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=4000");
    if (v3)
        exec(db, "CREATE TABLE event(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, origin TEXT NOT NULL,"
                 " epoch TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, stream TEXT NOT NULL, event_type TEXT NOT NULL,"
                 " ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, correlation_id TEXT, target TEXT,"
                 " envelope BLOB NOT NULL, UNIQUE(origin, epoch, seq))");
    else
        exec(db, "CREATE TABLE line(id INTEGER PRIMARY KEY, origin TEXT NOT NULL, epoch TEXT NOT NULL, UNIQUE(origin, epoch));"
                 " CREATE TABLE event(rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, line INTEGER NOT NULL,"
                 " seq INTEGER NOT NULL, stream TEXT NOT NULL, event_type TEXT NOT NULL,"
                 " ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL, correlation_id TEXT, target TEXT,"
                 " envelope BLOB NOT NULL, UNIQUE(line, seq))");
    exec(db, "CREATE TABLE cursor(origin TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL,"
             " PRIMARY KEY(origin, epoch))");
    if (indexed)
        exec(db, "CREATE INDEX event_by_type ON event(event_type, rowid);"
                 " CREATE INDEX event_by_stream ON event(stream, rowid);"
                 " CREATE INDEX event_by_time ON event(ts_ms)");
    sqlite3_stmt *ins, *cur, *line;
    if (v3)
        sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO event(id, origin, epoch, seq, stream, event_type, ts_ms,"
                               " received_ms, correlation_id, target, envelope) VALUES (?,?,?,?,?,?,?,?,?,?,?)", -1, &ins, NULL);
    else
        sqlite3_prepare_v2(db, "INSERT OR IGNORE INTO event(id, line, seq, stream, event_type, ts_ms,"
                               " received_ms, correlation_id, target, envelope) VALUES (?,?,?,?,?,?,?,?,?,?)", -1, &ins, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO cursor(origin, epoch, seq) VALUES (?, ?, ?) ON CONFLICT(origin, epoch)"
                       " DO UPDATE SET seq = max(seq, excluded.seq)", -1, &cur, NULL);
    sqlite3_prepare_v2(db, "INSERT INTO line(origin, epoch) VALUES (?, ?)", -1, &line, NULL);

    char *envelope = malloc(size), id[40];
    memset(envelope, 'x', size);
    const char *epoch = "019ab2c4-0000-7000-8000-000000000000";
    long long t = 1790000000000LL;
    double t0 = now();
    for (int i = 0; i < rows; i++) {
        if (i % batch == 0) exec(db, "BEGIN");
        snprintf(id, sizeof id, "019ab2c4-%04d-7000-8000-%012d", (i / 1000) % 10000, i);
        /* The line's number, made with its first event (as the store's writer does, once per line). */
        if (!v3 && i == 0) {
            sqlite3_bind_text(line, 1, "planner-1", -1, SQLITE_STATIC);
            sqlite3_bind_text(line, 2, epoch, -1, SQLITE_STATIC);
            if (sqlite3_step(line) != SQLITE_DONE) { fprintf(stderr, "line failed: %s\n", sqlite3_errmsg(db)); return 1; }
        }
        int k = 1;
        sqlite3_bind_text(ins, k++, id, -1, SQLITE_STATIC);
        if (v3) {
            sqlite3_bind_text(ins, k++, "planner-1", -1, SQLITE_STATIC);
            sqlite3_bind_text(ins, k++, epoch, -1, SQLITE_STATIC);
        } else {
            sqlite3_bind_int64(ins, k++, 1);
        }
        sqlite3_bind_int64(ins, k++, i + 1);
        sqlite3_bind_text(ins, k++, "planning", -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, k++, "plan_ready", -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, k++, t + i / 10);
        sqlite3_bind_int64(ins, k++, t + i / 10);
        sqlite3_bind_null(ins, k++);
        sqlite3_bind_null(ins, k++);
        sqlite3_bind_blob(ins, k++, envelope, size, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) { fprintf(stderr, "insert failed: %s\n", sqlite3_errmsg(db)); return 1; }
        sqlite3_reset(ins);
        if (i % batch == batch - 1 || i == rows - 1) {
            sqlite3_bind_text(cur, 1, "planner-1", -1, SQLITE_STATIC);
            sqlite3_bind_text(cur, 2, epoch, -1, SQLITE_STATIC);
            sqlite3_bind_int64(cur, 3, i + 1);
            if (sqlite3_step(cur) != SQLITE_DONE) { fprintf(stderr, "cursor failed: %s\n", sqlite3_errmsg(db)); return 1; }
            sqlite3_reset(cur);
            exec(db, "COMMIT");
        }
    }
    double secs = now() - t0;
    printf("%d rows, batch %d, store schema%s, envelope %d B, synchronous=FULL: %.0f rows/s\n", rows, batch,
           indexed ? " 3 with schema 2's three secondary indexes" : v3 ? " 3" : "", size, rows / secs);
    sqlite3_finalize(ins);
    sqlite3_finalize(cur);
    sqlite3_finalize(line);
    sqlite3_close(db);
    free(envelope);
    remove(path); remove(wal); remove(shm);
    return 0;
}
