import CECore
import CEStore
import CoreMetrics
import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The event folder: how agents that can only read and write files take part.
///
///     <workspace>/.ce-events/                   drop {stream}_{event_type}_{timestamp}.json here (write, then rename in)
///     <workspace>/.ce-events/sent/              files published, moved aside (each is sent once, also across restarts)
///     <workspace>/.ce-events/rejected/          files that never parsed or were refused, each with a .error file saying why
///                                               (among them replies to questions that expired or that nobody asked)
///     <workspace>/.ce-events/inbox/             events that reached this node, one file each
///     <workspace>/.ce-events/requests/          questions addressed to this pool: {request_id}.json, with expires_at
///     <workspace>/.ce-events/requests/expired/  questions whose asker stopped waiting before an answer came
///     <workspace>/.ce-events/replies/           write {request_id}.json here to answer ({"answer": ...})
///
/// A question waits in requests/ until its `expires_at`, the moment its asker stops waiting
/// (the deadline the request carried, see ``Question/deadline``); then it moves to
/// requests/expired/, and a reply written for it afterwards goes to rejected/ undelivered.
final class EventFolder: Sendable {
    let root: String
    let sent: String
    let rejected: String
    let inbox: String
    let requests: String
    let expired: String
    let replies: String
    /// A file that does not parse is tried this many times, a second apart, then quarantined.
    static let attempts = 3

    /// The questions put in requests/ and not yet answered, expired or withdrawn.
    private struct Questions {
        /// The ids whose `ask` runs: from before its request file is written until that file
        /// is removed or moved to expired/. A reply to one of them is the ask's to take.
        var asked: Set<String> = []
        /// The asks that wait for their reply file.
        var waiting: [String: CheckedContinuation<JSONValue, any Error>] = [:]
    }
    private let questions = Mutex(Questions())
    /// Request files that were already past their `expires_at` when the folder was opened
    /// (their asker stopped waiting while the node was down), moved to expired/ then.
    private let expiredWhileDown: [String]
    /// How the folder's files fare: one lock for the log and the files in trouble.
    private let filing = Mutex(Filing())
    private struct Filing {
        /// The node's logger and its count of rejected files, once `run(node:)` starts.
        var reporting: Reporting?
        /// Files that did not parse: the times they were tried.
        var parseFailures: [String: Int] = [:]
        /// Files the store refused, waiting for room: logged once each, when they start to wait.
        var waiting: Set<String> = []
    }
    private struct Reporting {
        var logger: Logger
        var rejected: Counter
    }
    private var reporting: Reporting? { filing.withLock { $0.reporting } }

    init(workspace: String) throws {
        root = workspace + "/.ce-events"
        sent = root + "/sent"
        rejected = root + "/rejected"
        inbox = root + "/inbox"
        requests = root + "/requests"
        expired = requests + "/expired"
        replies = root + "/replies"
        // requests/expired/ is made when a question first expires: until then requests/ holds
        // only questions.
        for directory in [root, sent, rejected, inbox, requests, replies] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        // Before the node answers anything: an agent never sees a question whose asker is gone.
        expiredWhileDown = Self.expireLeftovers(requests: requests, expired: expired, root: root)
    }

    /// Publishes dropped files and collects replies until cancelled.
    func run(node: Node) async throws {
        filing.withLock { $0.reporting = Reporting(logger: node.logger, rejected: node.metrics.folderFilesRejected) }
        if !expiredWhileDown.isEmpty {
            node.logger.notice("\(expiredWhileDown.count) questions expired while the node was down (moved to requests/expired/): \(expiredWhileDown.joined(separator: ", "))")
        }
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
                let attempt = filing.withLock { f -> Int in
                    f.parseFailures[name, default: 0] += 1
                    return f.parseFailures[name]!
                }
                if attempt < Self.attempts {
                    retry.append(name)
                    continue
                }
                filing.withLock { _ = $0.parseFailures.removeValue(forKey: name) }
                quarantine(name, reason: "\(error)")
                node.metrics.folderFilesRejected.increment()
                node.logger.warning("event file \(name) rejected: \(error)")
                continue
            }
            filing.withLock { _ = $0.parseFailures.removeValue(forKey: name) }
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
                filing.withLock { _ = $0.waiting.remove(file.name) }
            case .failure(let error as StoreError):
                // The store refused (a full disk, an I/O error): the file is fine and stays where
                // the agent put it, tried again every second until the store takes it.
                let first = filing.withLock { $0.waiting.insert(file.name).inserted }
                if first { node.logger.error("event file \(file.name) waits: \(error)") }
                retry.append(file.name)
            case .failure(let error):
                if Task.isCancelled { continue }  // refused because the node is stopping: kept for its next start
                filing.withLock { _ = $0.waiting.remove(file.name) }
                quarantine(file.name, reason: "\(error)")
                node.metrics.folderFilesRejected.increment()
                node.logger.warning("event file \(file.name) could not be emitted: \(error)")
            }
        }
        return retry
    }

    private func quarantine(_ name: String, reason: String) {
        quarantine(root + "/" + name, name: name, reason: reason)
    }

    /// Moves the file at `path` to rejected/ (as `name`, or `name` numbered when taken) with a
    /// .error file beside it saying why; false when the file was not there to move.
    @discardableResult
    private func quarantine(_ path: String, name: String, reason: String) -> Bool {
        guard let moved = move(path, into: rejected, name: name) else { return false }
        guard let target = try? inside(rejected, moved + ".error") else { return true }
        try? Data((reason + "\n").utf8).write(to: URL(fileURLWithPath: target))
        return true
    }

    /// Moves `path` into `directory` as `name` (numbered when taken); the name it got, or
    /// nil when it could not be moved (it is gone).
    @discardableResult
    private func move(_ path: String, into directory: String, name: String) -> String? {
        var taken = name
        guard var target = try? inside(directory, name) else { return nil }
        var n = 1
        while FileManager.default.fileExists(atPath: target) {
            n += 1
            taken = String(name.dropLast(5)) + ".\(n).json"
            guard let next = try? inside(directory, taken) else { return nil }
            target = next
        }
        guard (try? FileManager.default.moveItem(atPath: path, toPath: target)) != nil else { return nil }
        return taken
    }

    /// `directory/name`, once checked to stay inside `directory`: `name` is one path component
    /// (no '/', not "." or "..", no NUL), and the folder resolved through symbolic links is
    /// the folder the node made. Every file the event folder writes goes through this.
    func inside(_ directory: String, _ name: String) throws -> String {
        try Self.inside(directory, name, root: root)
    }

    private static func inside(_ directory: String, _ name: String, root: String) throws -> String {
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

    /// Puts a question in requests/ and waits for the agent's file in replies/, until the
    /// question's deadline: then its request file moves to requests/expired/ and the ask
    /// throws ``QuestionExpired``.
    func ask(_ question: Question) async throws -> JSONValue {
        try RequestID.validate(question.requestID)
        let id = question.requestID
        let name = id + ".json"
        // The deadline as a time of day, for the agent and for the next start's sweep.
        let expiresAt = Timestamp.format(Date().addingTimeInterval((question.deadline - .now) / .seconds(1)))
        let body: JSONValue = [
            "request_id": .string(id), "from_node": .string(question.fromNode),
            "from_pool": .string(question.fromPool), "question": question.question,
            "reply_to": .string(try inside(replies, name)), "expires_at": .string(expiresAt),
        ]
        let temporary = try inside(requests, "." + name + ".tmp")
        let target = try inside(requests, name)
        questions.withLock { _ = $0.asked.insert(id) }
        do {
            try Data(body.serialized()).write(to: URL(fileURLWithPath: temporary))
            // A file of the same request may be left from before a crash: this one replaces it.
            try Self.replace(target, with: temporary)
            let answer = try await reply(to: id, name: name, until: question.deadline)
            settle(id, name: name, request: target, expired: false)
            return answer
        } catch let error as QuestionExpired {
            settle(id, name: name, request: target, expired: true)
            reporting?.logger.notice(
                "question \(id) from \(question.fromNode) expired unanswered at \(expiresAt) (its asker stopped waiting): moved to requests/expired/")
            throw error
        } catch {
            settle(id, name: name, request: target, expired: false)
            throw error
        }
    }

    /// Ends an ask: its request file is removed (answered, withdrawn) or moved to expired/;
    /// a reply that came while the ask was ending, left for the ask, is refused then.
    private func settle(_ id: String, name: String, request: String, expired isExpired: Bool) {
        if isExpired, (try? FileManager.default.createDirectory(atPath: expired, withIntermediateDirectories: true)) != nil,
           let target = try? inside(expired, name) {
            // rename(2) replaces an earlier expired question of the same id.
            if rename(request, target) != 0 {
                let reason = String(cString: strerror(errno))
                reporting?.logger.error("cannot move \(request) to \(target): \(reason)")
            }
        } else {
            try? FileManager.default.removeItem(atPath: request)
        }
        questions.withLock { _ = $0.asked.remove(id) }
        refuseUnclaimed(name)
    }

    /// The agent's answer to question `id`, or ``QuestionExpired`` once `deadline` passes.
    private func reply(to id: String, name: String, until deadline: ContinuousClock.Instant) async throws -> JSONValue {
        try await withThrowingTaskGroup(of: JSONValue?.self) { group in
            group.addTask { try await self.waitForReply(id, name: name, until: deadline) }
            group.addTask {
                try await Task.sleep(until: deadline, clock: .continuous)
                // A reply collected meanwhile has taken the continuation: the waiter returns it.
                self.questions.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: QuestionExpired(requestID: id))
                return nil
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let answer = result { return answer }
            }
            throw CancellationError()  // not reached: the waiter returns or throws
        }
    }

    private func waitForReply(_ id: String, name: String, until deadline: ContinuousClock.Instant) async throws -> JSONValue {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                // Checked under the lock the expiry takes: registered before it, the expiry
                // ends this wait; after it, the deadline has passed and the wait ends here.
                let registered = questions.withLock { q -> Bool in
                    guard ContinuousClock.now < deadline else { return false }
                    q.waiting[id] = continuation
                    return true
                }
                guard registered else {
                    continuation.resume(throwing: QuestionExpired(requestID: id))
                    return
                }
                // Cancelled before the continuation was registered: onCancel found nothing to end.
                if Task.isCancelled {
                    questions.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: CancellationError())
                    return
                }
                // The reply may already be there.
                if FileManager.default.fileExists(atPath: replies + "/" + name) { collectReply(name) }
            }
        } onCancel: {
            questions.withLock { $0.waiting.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Gives a reply file to the ask waiting for it (the file is removed first, so an ask
    /// that ends finds no reply left to refuse); a reply nobody waits for is refused.
    private func collectReply(_ name: String) {
        let requestID = String(name.dropLast(5))
        guard let continuation = questions.withLock({ $0.waiting.removeValue(forKey: requestID) }) else {
            refuseUnclaimed(name)
            return
        }
        guard let path = try? inside(replies, name) else {
            continuation.resume(throwing: NodeError("reply file name \(name) is not a plain file name"))
            return
        }
        let data = FileManager.default.contents(atPath: path)
        try? FileManager.default.removeItem(atPath: path)
        guard let data else {
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

    /// A reply file nobody waits for. Left where it is while its question may still be
    /// answered: an ask of it runs (and takes it, or refuses it when it ends), or its request
    /// file, left from before a restart, waits for the asker's retry. Otherwise it is moved to
    /// rejected/ with a .error file saying that its question expired (and when), or that no
    /// such question waits here; either way the answer reached nobody.
    private func refuseUnclaimed(_ name: String) {
        let id = String(name.dropLast(5))
        if questions.withLock({ $0.asked.contains(id) }) { return }
        guard let path = try? inside(replies, name), FileManager.default.fileExists(atPath: path) else { return }
        if let pending = try? inside(requests, name), FileManager.default.fileExists(atPath: pending) { return }
        let reason: String
        if let file = try? inside(expired, name), let data = FileManager.default.contents(atPath: file) {
            let at = (try? JSONValue(parsing: [UInt8](data)))?["expires_at"]?.stringValue ?? "a time its request file does not say"
            reason = "question \(id) expired at \(at) (its asker stopped waiting; the question is in requests/expired/): this reply was not delivered"
        } else {
            reason = "no question \(id) waits for an answer here (never asked, or already answered or withdrawn): this reply was not delivered"
        }
        guard quarantine(path, name: name, reason: reason) else { return }  // taken meanwhile
        let reporting = self.reporting
        reporting?.rejected.increment()
        reporting?.logger.warning("reply file \(name) refused: \(reason)")
    }

    /// Moves the request files in `requests` whose `expires_at` has passed into `expired`;
    /// returns their names. Files that do not say when they expire are left where they are.
    private static func expireLeftovers(requests: String, expired: String, root: String) -> [String] {
        let now = Date()
        var moved: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: requests))?.sorted() ?? [] {
            guard name.hasSuffix(".json"), !name.hasPrefix("."),
                  let data = FileManager.default.contents(atPath: requests + "/" + name),
                  let text = (try? JSONValue(parsing: [UInt8](data)))?["expires_at"]?.stringValue,
                  let at = Timestamp.parse(text), at <= now
            else { continue }
            guard (try? FileManager.default.createDirectory(atPath: expired, withIntermediateDirectories: true)) != nil,
                  let target = try? inside(expired, name, root: root)
            else { continue }
            if rename(requests + "/" + name, target) == 0 { moved.append(name) }
        }
        return moved
    }
}

/// A question whose asker stopped waiting before an answer came (its request file is in
/// requests/expired/).
struct QuestionExpired: Error, CustomStringConvertible {
    let requestID: String
    var description: String { "question \(requestID) expired: its asker stopped waiting before an answer came" }
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
