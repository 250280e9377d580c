import CECore
import CEStore
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The event folder: how agents that can only read and write files take part.
///
///     <workspace>/.ce-events/            drop {stream}_{event_type}_{timestamp}.json here (write, then rename in)
///     <workspace>/.ce-events/sent/       files published, moved aside (each is sent once, also across restarts)
///     <workspace>/.ce-events/rejected/   files that never parsed or were refused, each with a .error file saying why
///     <workspace>/.ce-events/inbox/      events that reached this node, one file each
///     <workspace>/.ce-events/requests/   questions addressed to this pool: {request_id}.json
///     <workspace>/.ce-events/replies/    write {request_id}.json here to answer ({"answer": ...})
final class EventFolder: Sendable {
    let root: String
    let sent: String
    let rejected: String
    let inbox: String
    let requests: String
    let replies: String
    /// A file that does not parse is tried this many times, a second apart, then quarantined.
    static let attempts = 3

    private let waitingReplies = Mutex<[String: CheckedContinuation<JSONValue, any Error>]>([:])
    /// Files that did not parse: the times they were tried.
    private let parseFailures = Mutex<[String: Int]>([:])
    /// Files the store refused, waiting for room: logged once each, when they start to wait.
    private let waiting = Mutex<Set<String>>([])

    init(workspace: String) throws {
        root = workspace + "/.ce-events"
        sent = root + "/sent"
        rejected = root + "/rejected"
        inbox = root + "/inbox"
        requests = root + "/requests"
        replies = root + "/replies"
        for directory in [root, sent, rejected, inbox, requests, replies] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
    }

    /// Publishes dropped files and collects replies until cancelled.
    func run(node: Node) async throws {
        let watcher = try DirectoryWatcher(directories: [root, replies])
        defer { watcher.stop() }
        // Files that arrived while the node was down.
        for directory in [root, replies] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: directory))?.sorted() ?? [] {
                watcher.changes.put((directory, name))
            }
        }
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Ends the watcher (and so this loop) when the node stops.
                try await withTaskCancellationHandler {
                    while true { try await Task.sleep(for: .seconds(3600)) }
                } onCancel: { watcher.stop() }
            }
            while let batch = await watcher.changes.take() {
                var dropped: [String] = []
                for (directory, name) in batch {
                    guard name.hasSuffix(".json"), !name.hasPrefix(".") else { continue }
                    if directory == replies { collectReply(name) } else { dropped.append(name) }
                }
                // The files found together are emitted together, in the order found (by name
                // at start-up), a chunk at a time: one transaction per chunk, not per file.
                for start in stride(from: 0, to: dropped.count, by: Self.chunk) {
                    for name in await publish(dropped[start..<min(dropped.count, start + Self.chunk)], node: node) {
                        group.addTask {
                            try await Task.sleep(for: .seconds(1))
                            watcher.changes.put((self.root, name))
                        }
                    }
                }
            }
            group.cancelAll()
        }
    }

    /// Files emitted together at most: a folder filled while the node was down goes out in
    /// transactions of this many events, so no single one holds the store's writer for long.
    static let chunk = 1000

    /// Publishes the files `names` (in this order) as one batch of emits; returns the names
    /// to try again in a second (a file that does not parse yet, a store that refused).
    private func publish(_ names: ArraySlice<String>, node: Node) async -> [String] {
        var retry: [String] = []
        var ready: [(name: String, path: String, emission: Node.Emission)] = []
        var seen = Set<String>()
        for name in names where seen.insert(name).inserted {
            let path = root + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else { continue }  // already moved
            let bytes = [UInt8](data)
            let file: AgentEventFile
            do {
                file = try AgentEventFile.parse(bytes)
            } catch {
                let attempt = parseFailures.withLock { f -> Int in
                    f[name, default: 0] += 1
                    return f[name]!
                }
                if attempt < Self.attempts {
                    retry.append(name)
                    continue
                }
                parseFailures.withLock { _ = $0.removeValue(forKey: name) }
                quarantine(name, reason: "\(error)")
                node.metrics.folderFilesRejected.increment()
                node.logger.warning("event file \(name) rejected: \(error)")
                continue
            }
            parseFailures.withLock { _ = $0.removeValue(forKey: name) }
            // The id comes from the file, so a file published just before a crash and found
            // again after the restart is recognised and not sent twice.
            let id = "\(node.spec.name)-file-\(fnv1a(Array(name.utf8)))\(fnv1a(bytes))"
            ready.append((name, path, Node.Emission(
                file.type, payload: file.payload, stream: file.stream, correlationID: file.correlationID, target: file.target, id: id)))
        }
        guard !ready.isEmpty else { return retry }
        let outcomes = await node.emitEach(ready.map(\.emission))
        for (file, outcome) in zip(ready, outcomes) {
            switch outcome {
            case .success:
                move(file.path, into: sent, name: file.name)
                node.metrics.folderFilesPicked.increment()
                waiting.withLock { _ = $0.remove(file.name) }
            case .failure(let error as StoreError):
                // The store refused (a full disk, an I/O error): the file is fine and stays where
                // the agent put it, tried again every second until the store takes it.
                let first = waiting.withLock { $0.insert(file.name).inserted }
                if first { node.logger.error("event file \(file.name) waits: \(error)") }
                retry.append(file.name)
            case .failure(let error):
                if Task.isCancelled { continue }  // refused because the node is stopping: kept for its next start
                waiting.withLock { _ = $0.remove(file.name) }
                quarantine(file.name, reason: "\(error)")
                node.metrics.folderFilesRejected.increment()
                node.logger.warning("event file \(file.name) could not be emitted: \(error)")
            }
        }
        return retry
    }

    private func quarantine(_ name: String, reason: String) {
        move(root + "/" + name, into: rejected, name: name)
        guard let target = try? inside(rejected, name + ".error") else { return }
        try? Data((reason + "\n").utf8).write(to: URL(fileURLWithPath: target))
    }

    private func move(_ path: String, into directory: String, name: String) {
        guard var target = try? inside(directory, name) else { return }
        var n = 1
        while FileManager.default.fileExists(atPath: target) {
            n += 1
            guard let next = try? inside(directory, String(name.dropLast(5)) + ".\(n).json") else { return }
            target = next
        }
        try? FileManager.default.moveItem(atPath: path, toPath: target)
    }

    /// `directory/name`, once checked to stay inside `directory`: `name` is one path component
    /// (no '/', not "." or "..", no NUL), and the folder resolved through symbolic links is
    /// the folder the node made. Every file the event folder writes goes through this.
    func inside(_ directory: String, _ name: String) throws -> String {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.utf8.contains(0) else {
            throw NodeError("refusing to write \"\(name.prefix(120))\" under \(directory): not a plain file name")
        }
        let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().standardizedFileURL.path
        let home = URL(fileURLWithPath: root).resolvingSymlinksInPath().standardizedFileURL.path
        guard resolved == home || resolved.hasPrefix(home + "/") else {
            throw NodeError("refusing to write under \(directory): it resolves to \(resolved), outside \(home)")
        }
        return resolved + "/" + name
    }

    /// Renames `temporary` to `path` in one step, replacing a file already there
    /// (rename(2); FileManager's move refuses an existing target).
    static func replace(_ path: String, with temporary: String) throws {
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw NodeError("cannot rename \(temporary) to \(path): \(reason)")
        }
    }

    /// Writes an event that reached this node into the inbox (write to a hidden file, then rename).
    func deliver(_ event: Event) {
        let name = AgentEventFile.fileName(for: event)
        guard let temporary = try? inside(inbox, "." + name + ".tmp"), let target = try? inside(inbox, name) else { return }
        do {
            try Data(AgentEventFile(event: event).json()).write(to: URL(fileURLWithPath: temporary))
            try Self.replace(target, with: temporary)
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
        }
    }

    /// Puts a question in requests/ and waits for the agent's file in replies/.
    func ask(_ question: Question) async throws -> JSONValue {
        try RequestID.validate(question.requestID)
        let name = question.requestID + ".json"
        let body: JSONValue = [
            "request_id": .string(question.requestID), "from_node": .string(question.fromNode),
            "from_pool": .string(question.fromPool), "question": question.question,
            "reply_to": .string(try inside(replies, name)),
        ]
        let temporary = try inside(requests, "." + name + ".tmp")
        let target = try inside(requests, name)
        try Data(body.serialized()).write(to: URL(fileURLWithPath: temporary))
        // A file of the same request may be left from before a crash: this one replaces it.
        try Self.replace(target, with: temporary)
        defer { try? FileManager.default.removeItem(atPath: target) }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                waitingReplies.withLock { $0[question.requestID] = continuation }
                // Cancelled before the continuation was registered: onCancel found nothing to end.
                if Task.isCancelled {
                    waitingReplies.withLock { $0.removeValue(forKey: question.requestID) }?.resume(throwing: CancellationError())
                    return
                }
                // The reply may already be there.
                if FileManager.default.fileExists(atPath: replies + "/" + name) { collectReply(name) }
            }
        } onCancel: {
            waitingReplies.withLock { $0.removeValue(forKey: question.requestID) }?.resume(throwing: CancellationError())
        }
    }

    private func collectReply(_ name: String) {
        let requestID = String(name.dropLast(5))
        guard let continuation = waitingReplies.withLock({ $0.removeValue(forKey: requestID) }) else { return }
        guard let path = try? inside(replies, name) else {
            continuation.resume(throwing: NodeError("reply file name \(name) is not a plain file name"))
            return
        }
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let data = FileManager.default.contents(atPath: path) else {
            continuation.resume(throwing: NodeError("reply file \(path) cannot be read"))
            return
        }
        do {
            let value = try JSONValue(parsing: [UInt8](data))
            continuation.resume(returning: value["answer"] ?? value)
        } catch {
            continuation.resume(throwing: NodeError("reply file \(name) is not valid JSON: \(error)"))
        }
    }
}

/// 64-bit FNV-1a, as 16 hex digits: a stable name for a file's bytes.
func fnv1a(_ bytes: [UInt8]) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
