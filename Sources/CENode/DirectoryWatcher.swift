import CECore
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Reports file names that appear in directories (closed after writing, or renamed in), with
/// inotify: a thread sleeps in poll(2) until the kernel says something happened. No polling.
final class DirectoryWatcher: Sendable {
    let changes = BatchQueue<(directory: String, name: String)>()
    private let inotify: Int32
    private let stopPipe: (read: Int32, write: Int32)
    private let watches: Mutex<[Int32: String]>

    init(directories: [String]) throws {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw NodeError("inotify_init1 failed: \(String(cString: strerror(errno)))") }
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw NodeError("pipe failed: \(String(cString: strerror(errno)))") }
        var table: [Int32: String] = [:]
        for directory in directories {
            let wd = inotify_add_watch(fd, directory, UInt32(IN_CLOSE_WRITE | IN_MOVED_TO))
            guard wd >= 0 else { throw NodeError("cannot watch \(directory): \(String(cString: strerror(errno)))") }
            table[wd] = directory
        }
        self.inotify = fd
        self.stopPipe = (fds[0], fds[1])
        self.watches = Mutex(table)
        let thread = Thread { [self] in self.run() }
        thread.name = "ce-folder-watch"
        thread.start()
    }

    func stop() {
        var one: UInt8 = 1
        _ = write(stopPipe.write, &one, 1)
    }

    private func run() {
        // Named from the thread itself (see ``ThreadName``).
        ThreadName.set("ce-folder-watch")
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var fds = [pollfd(fd: inotify, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe.read, events: Int16(POLLIN), revents: 0)]
        loop: while true {
            let rc = poll(&fds, 2, -1)
            if rc < 0 { if errno == EINTR { continue } else { break } }
            if fds[1].revents != 0 { break loop }
            let count = buffer.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
            guard count > 0 else { continue }
            var offset = 0
            buffer.withUnsafeBytes { raw in
                while offset + MemoryLayout<inotify_event>.size <= count {
                    let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                    let nameStart = offset + MemoryLayout<inotify_event>.size
                    let nameBytes = raw[nameStart..<min(nameStart + Int(event.len), count)].prefix { $0 != 0 }
                    offset = nameStart + Int(event.len)
                    guard let directory = watches.withLock({ $0[event.wd] }), !nameBytes.isEmpty else { continue }
                    changes.put((directory, String(decoding: nameBytes, as: UTF8.self)))
                }
            }
        }
        close(inotify)
        close(stopPipe.read)
        close(stopPipe.write)
        changes.finish()
    }
}
