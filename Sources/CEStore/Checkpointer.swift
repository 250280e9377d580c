import Foundation
import Synchronization

/// Copies the WAL back into the database on its own thread and connection, so a commit never
/// waits for a checkpoint (SQLite's automatic checkpoint runs inside the commit that crosses
/// its threshold: the long tail of commit latency).
///
/// The writing connection's WAL hook reports the WAL's size after each commit; past
/// ``threshold`` pages this thread runs a PASSIVE checkpoint (it never blocks the writer or
/// readers). A WAL that still grows past ``truncateAfter`` pages (readers holding old
/// snapshots the whole time) gets a TRUNCATE checkpoint, which waits for them.
final class Checkpointer: Sendable {
    /// WAL pages (16 KiB each) after which a checkpoint runs: 16 MiB.
    static let threshold = 1000
    /// WAL pages after which the checkpoint waits for readers and truncates the WAL: 1 GiB.
    static let truncateAfter = 65_536

    struct State {
        var walPages = 0
        var requested = false
        var closed = false
        var checkpoints = 0
        var failure: String?
    }

    let path: String
    let state = Mutex(State())
    let wakeup = NSCondition()

    init(path: String) {
        self.path = path
        let thread = Thread { [self] in run() }
        thread.name = "ce-store-checkpoint"
        thread.start()
    }

    /// Called on the writing connection's thread, inside its commit: only records and signals.
    func walGrew(pages: Int) {
        let wake = state.withLock { s -> Bool in
            s.walPages = pages
            guard pages >= Self.threshold, !s.requested else { return false }
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

    private func signal() {
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    private func run() {
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
                if connection == nil { connection = try Connection(path: path) }
                let truncate = state.withLock { $0.walPages } >= Self.truncateAfter
                _ = try connection!.checkpoint(truncate: truncate)
                state.withLock { s in
                    s.checkpoints += 1
                    s.requested = false
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
