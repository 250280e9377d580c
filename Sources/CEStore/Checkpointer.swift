import CECore
import Foundation
import Synchronization

/// Copies the WAL back into the database on its own thread and connection, so a commit never
/// waits for a checkpoint (SQLite's automatic checkpoint runs inside the commit that crosses
/// its threshold: the long tail of commit latency).
///
/// The writing connection's WAL hook reports the WAL's size after each commit; past
/// `threshold` pages this thread runs a PASSIVE checkpoint (it never blocks the writer or
/// readers). A WAL that still grows past ``truncateAfter`` pages (readers holding old
/// snapshots the whole time) gets a TRUNCATE checkpoint, which waits for them.
///
/// A PASSIVE checkpoint beside a writer that keeps committing never copies the last frames
/// (they are newer than its start), and SQLite starts the WAL over from its beginning only
/// once every frame is copied: the WAL grew by every commit, to gigabytes, each commit
/// appending to a longer file. So this thread runs further passes while more than
/// ``writerRemainder`` pages are left (each copies what came during the one before, up to
/// ``maxPasses``), then says so (``takeRemainder()``), and the writer copies the rest between
/// two transactions, on its own connection (no frame can arrive meanwhile): its next
/// transaction writes the WAL from the start again, over the same file.
final class Checkpointer: Sendable {
    /// WAL pages (16 KiB each) after which a checkpoint runs: 16 MiB.
    static let defaultThreshold = 1000
    let threshold: Int
    /// WAL pages after which the checkpoint waits for readers and truncates the WAL: 1 GiB.
    static let truncateAfter = 65_536
    /// At most this many pages are left for the writer to copy (when the passes can keep up).
    static let writerRemainder = 64
    /// Passes of one checkpoint, each copying what was committed during the one before.
    static let maxPasses = 8

    struct State {
        var walPages = 0
        var requested = false
        var closed = false
        var checkpoints = 0
        /// WAL pages this thread copied into the database file.
        var pagesCopied = 0
        /// A checkpoint ran: the writer copies what was committed meanwhile.
        var remainder = false
        var failure: String?
    }

    let path: String
    let state = Mutex(State())
    let wakeup = NSCondition()

    init(path: String, threshold: Int = Checkpointer.defaultThreshold) {
        self.path = path
        self.threshold = threshold
        let thread = Thread { [self] in run() }
        thread.name = "ce-checkpoint"
        thread.start()
    }

    /// Called on the writing connection's thread, inside its commit: only records and signals.
    func walGrew(pages: Int) {
        let wake = state.withLock { s -> Bool in
            s.walPages = pages
            guard pages >= threshold, !s.requested else { return false }
            s.requested = true
            return true
        }
        if wake { signal() }
    }

    func close() {
        state.withLock { $0.closed = true }
        signal()
    }

    /// Checkpoints run so far.
    var checkpoints: Int { state.withLock { $0.checkpoints } }

    /// WAL pages copied by this thread so far.
    var pagesCopied: Int { state.withLock { $0.pagesCopied } }

    /// True once after each checkpoint (the writer's cue to copy the rest).
    func takeRemainder() -> Bool {
        state.withLock { s in
            defer { s.remainder = false }
            return s.remainder
        }
    }

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    private func run() {
        // Named from the thread itself (see ``ThreadName``).
        ThreadName.set("ce-checkpoint")
        var connection: Connection?
        while true {
            wakeup.lock()
            var (requested, closed) = (false, false)
            while true {
                (requested, closed) = state.withLock { ($0.requested, $0.closed) }
                if requested || closed { break }
                wakeup.wait()
            }
            wakeup.unlock()
            if closed { break }
            do {
                if connection == nil {
                    let opened = try Connection(path: path)
                    // A connection knows the file is in WAL mode only once it has read it: a
                    // checkpoint before that does nothing (SQLite reports -1 pages).
                    guard try opened.pragma("journal_mode") == "wal" else {
                        throw StoreError(operation: "checkpoint", path: path, message: "the store is not in WAL mode")
                    }
                    connection = opened
                }
                let truncate = state.withLock { $0.walPages } >= Self.truncateAfter
                var (log, copied) = try connection!.checkpoint(truncate: truncate)
                var total = max(0, copied)
                // What was committed while a pass ran is copied by the next one here, not by
                // the writer between two transactions: the writer's part is kept to a few
                // pages (a remainder of a thousand took it up to 38 ms, delaying the next commit).
                var passes = 1
                while log - copied > Self.writerRemainder && passes < Self.maxPasses {
                    (log, copied) = try connection!.checkpoint(truncate: false)
                    total += max(0, copied)
                    passes += 1
                }
                // Even a checkpoint that copied every frame it saw misses those committed
                // while it ran (it cannot tell): the writer always finishes after it.
                state.withLock { s in
                    s.checkpoints += 1
                    s.pagesCopied += total
                    s.requested = false
                    s.remainder = true
                }
            } catch {
                // Not fatal: the WAL keeps every commit; the next commit asks again.
                state.withLock { s in
                    s.failure = "\(error)"
                    s.requested = false
                }
            }
        }
        connection?.close()
    }
}
