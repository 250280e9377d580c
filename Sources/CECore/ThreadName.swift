import Foundation

/// Names the calling thread where the kernel keeps it, so `top -H`, `perf` and debuggers show
/// it. Foundation's `Thread.name` does not reach the kernel on Linux, and Swift does not see
/// `pthread_setname_np` (a GNU extension) or the variadic `prctl`; writing the thread's own
/// `comm` file is what both do. Names are cut to 15 bytes, the kernel's limit. Not fatal
/// when it fails: the thread keeps its process's name. (The ZeroMQ layer, which depends on
/// nothing of the bus's, names its reactor thread itself, through `prctl` in its C shim.)
public enum ThreadName {
    public static func set(_ name: String) {
        #if os(Linux)
        let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        let bytes = Array(name.utf8.prefix(15))
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #endif
    }
}
