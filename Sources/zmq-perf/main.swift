// The ZeroMQ wrapper's benchmark, with the modes, arguments and output lines of
// shared/bench/zmq_baseline.c so the two can be run side by side:
//   zmq-perf thr-sub ENDPOINT SIZE COUNT [--blocking]   bind a SUB, count COUNT messages, print msg/s
//   zmq-perf thr-pub ENDPOINT SIZE COUNT [--blocking]   connect a PUB (no-drop), send COUNT messages
//   (with --batch N, both in batches: the publisher N at a time, the subscriber all that has arrived)
//   zmq-perf lat-rep ENDPOINT SIZE COUNT [--blocking]   bind a REP, echo COUNT requests
//   zmq-perf lat-req ENDPOINT SIZE COUNT [--blocking]   connect a REQ, print p50/p99 round trip
//   zmq-perf idle SECONDS                               ten async sockets, idle: print CPU time used
// Without --blocking the async API is used (tasks and the context's reactor thread share the sockets);
// with --reactor the measuring task runs on the reactor thread (Context.taskExecutor) instead of the
// cooperative pool.
// With --curve both sides use CURVE (the binding side is the server, behind a ZAP
// authenticator that allows the other's key, as in a cluster), with fixed published test keys.
import Foundation
import Synchronization
import ZeroMQ

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data((text + "\n").utf8))
    exit(2)
}

let usage = "usage: zmq-perf thr-sub|thr-pub|lat-rep|lat-req ENDPOINT SIZE COUNT [--blocking | --reactor] [--batch N] [--timeout MS] [--curve]\n       zmq-perf idle SECONDS"
var args = Array(CommandLine.arguments.dropFirst())
let blocking = args.contains("--blocking")
let onReactor = args.contains("--reactor")
let curve = args.contains("--curve")
args.removeAll { $0 == "--blocking" || $0 == "--reactor" || $0 == "--curve" }
/// Takes `flag N` out of the arguments: N, a whole number above 0, or nil when the flag is absent.
@MainActor func countFlag(_ flag: String, _ what: String) -> Int? {
    guard let at = args.firstIndex(of: flag) else { return nil }
    guard at + 1 < args.count, let n = Int(args[at + 1]), n > 0 else { fail("\(flag) needs \(what) above 0\n\(usage)") }
    args.removeSubrange(at...(at + 1))
    return n
}
// --timeout MS: the async requester waits with `receive(timeout:)`, as the node's asks do.
let replyTimeout: Duration? = countFlag("--timeout", "milliseconds").map { .milliseconds($0) }
// --batch N: the async publisher hands N messages at a time to `send(batch:)`, and the async
// subscriber takes everything that has arrived with `receiveBatch()`, as the node does.
let batchSize = countFlag("--batch", "a count") ?? 1
if blocking && onReactor { fail("--blocking and --reactor exclude each other\n\(usage)") }
if let unknown = args.first(where: { $0.hasPrefix("--") }) { fail("unknown flag \(unknown)\n\(usage)") }
guard let mode = args.first else { fail(usage) }

if mode == "idle" {
    guard args.count == 2, let seconds = Double(args[1]) else { fail(usage) }
    try await idle(seconds: seconds)
    exit(0)
}
guard args.count == 4, let size = Int(args[2]), size >= 0, let count = Int(args[3]), count > 0 else { fail(usage) }
let endpoint = args[1]

var settings = Context.Settings()
settings.linger = 60_000  // like the baseline: wait until everything is flushed
let context = try Context(settings)
let payload = Message([UInt8](repeating: 0, count: size))
// The key pairs of libzmq's own CURVE tests: for measuring only, never for a cluster.
let serverKeys = CurveKeyPair(publicKey: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", secretKey: "JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6")
let clientKeys = CurveKeyPair(publicKey: "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID", secretKey: "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs")
let authenticator = curve ? try context.startAuthenticator(allowing: [clientKeys.publicKey]) : nil

/// With --curve: the binding side serves CURVE, the connecting side dials the server's key.
func secure(_ socket: Socket, binds: Bool) throws {
    guard curve else { return }
    if binds {
        try socket.set([.curveServer(true), .curveSecretKey(serverKeys.secretKey)])
    } else {
        try socket.set([.curveServerKey(serverKeys.publicKey), .curvePublicKey(clientKeys.publicKey), .curveSecretKey(clientKeys.secretKey)])
    }
}

nonisolated(nonsending) func measure() async throws {
    switch mode {
    case "thr-sub": try await threadSub()
    case "thr-pub": try await threadPub()
    case "lat-rep": try await latencyRep()
    case "lat-req": try await latencyReq()
    default: fail("unknown mode \(mode)\n\(usage)")
    }
}

/// `untimed`: the messages that arrived before the clock started (the first one, or the first batch).
func report(got: Int, seconds: Double, untimed: Int = 1) {
    if got < count { FileHandle.standardError.write(Data("sub: lost \(count - got) of \(count)\n".utf8)) }
    let rate = Double(got - untimed) / seconds
    print(String(format: "sub: %d msgs of %d B in %.3f s: %.0f msg/s, %.1f MB/s", got, size, seconds, rate, rate * Double(size) / 1e6))
}

nonisolated(nonsending) func threadSub() async throws {
    let sub = try context.socket(.sub)
    try sub.set(.subscribe([]))
    try secure(sub, binds: true)
    try sub.bind(endpoint)
    if blocking {
        try sub.set(.receiveTimeout(milliseconds: 3000))
        while (try? sub.receiveBlocking()) == nil {}
        let t0 = now()
        var got = 1
        while got < count, (try? sub.receiveBlocking()) != nil { got += 1 }
        report(got: got, seconds: now() - t0)
        return
    }
    // Async: a watchdog closes the socket after 3 s without progress (messages lost).
    let progress = Atomic<Int>(0)
    let watchdog = Task {
        var last = -1
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3))
            let seen = progress.load(ordering: .relaxed)
            if seen == last && seen > 0 { sub.close(); return }
            last = seen
        }
    }
    var got = 0
    var t0 = 0.0
    // The messages that arrived before the clock started: the first one, or the first batch.
    var untimed = 1
    if batchSize > 1 {
        // As the node's intake reads: everything that has arrived, in one call.
        while got < count {
            guard let batch = try? await sub.receiveBatch() else { break }
            if got == 0 { (t0, untimed) = (now(), batch.count) }
            got += batch.count
            progress.store(got, ordering: .relaxed)
        }
    } else {
        for try await _ in sub.messages {
            if got == 0 { t0 = now() }
            got += 1
            if got & 1023 == 0 { progress.store(got, ordering: .relaxed) }
            if got == count { break }
        }
    }
    let seconds = now() - t0
    watchdog.cancel()
    report(got: got, seconds: seconds, untimed: untimed)
}

nonisolated(nonsending) func threadPub() async throws {
    let pub = try context.socket(.pub)
    try pub.set(.publisherNoDrop(true))
    try secure(pub, binds: false)
    try pub.connect(endpoint)
    try await Task.sleep(for: .milliseconds(300))  // let the subscription arrive (slow joiner), as the baseline does
    if blocking {
        for _ in 0..<count { try pub.sendBlocking(payload) }
    } else if batchSize > 1 {
        var sent = 0
        while sent < count {
            let n = min(batchSize, count - sent)
            try await pub.send(batch: [Message](repeating: payload, count: n))
            sent += n
        }
    } else {
        for _ in 0..<count { try await pub.send(payload) }
    }
    pub.close()
    await context.shutdown()
}

nonisolated(nonsending) func latencyRep() async throws {
    let rep = try context.socket(.rep)
    try secure(rep, binds: true)
    try rep.bind(endpoint)
    if blocking {
        for _ in 0..<count { try rep.sendBlocking(try rep.receiveBlocking()) }
    } else {
        var served = 0
        for try await request in rep.messages {
            try await rep.send(request)
            served += 1
            if served == count { break }
        }
    }
    rep.close()
    await context.shutdown()
}

nonisolated(nonsending) func latencyReq() async throws {
    let req = try context.socket(.req)
    try secure(req, binds: false)
    try req.connect(endpoint)
    var rtt = [Double](repeating: 0, count: count)
    for i in 0..<count {
        let t = now()
        if blocking {
            try req.sendBlocking(payload)
            _ = try req.receiveBlocking()
        } else {
            try await req.send(payload)
            if let replyTimeout { _ = try await req.receive(timeout: replyTimeout) } else { _ = try await req.receive() }
        }
        rtt[i] = now() - t
    }
    rtt.sort()
    print(String(format: "req/rep rtt %d B x %d: p50 %.1f us p99 %.1f us", size, count, rtt[count / 2] * 1e6, rtt[count * 99 / 100] * 1e6))
}

func idle(seconds: Double) async throws {
    let context = try Context()
    var sockets: [Socket] = []
    for i in 0..<5 {
        let rep = try context.socket(.rep)
        let port = try rep.bind("tcp://127.0.0.1:*")
        let req = try context.socket(.req)
        try req.connect(port)
        sockets += [rep, req]
        _ = i
    }
    // Every socket waits for a message that never comes.
    let waiters = sockets.filter { $0.type == .rep }.map { socket in Task { try? await socket.receive() } }
    let cpu0 = cpuSeconds()
    let t0 = now()
    try await Task.sleep(for: .seconds(seconds))
    let cpu = cpuSeconds() - cpu0
    print(String(format: "idle: 10 sockets, %.1f s wall, %.4f s CPU (%.3f%% of one core)", now() - t0, cpu, cpu / (now() - t0) * 100))
    for w in waiters { w.cancel() }
    await context.shutdown()
}

// The measuring functions run where their caller runs (nonisolated(nonsending): no hop back to
// an executor after each await), so they are called from a task of their own, not from the
// main actor of this top-level code. (Last in the file: no code may follow a call that never returns.)
try await Task.detached(executorPreference: onReactor ? context.taskExecutor : nil) { try await measure() }.value
fflush(nil)
_exit(0)
