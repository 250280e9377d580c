import CENode
import NIOCore
import NIOHTTP1
import NIOPosix

/// A small HTTP/1.1 client on SwiftNIO (its parser, not ours), for what the dashboard needs
/// from the nodes: `GET /status.json`, `GET /events` (a stream), `POST /resolve`.
enum HTTPClient {
    struct Target: Sendable {
        var host: String
        var port: Int
        var path: String
    }

    /// `http://host:port/path` (IPv6 hosts in brackets).
    static func parse(_ url: String) throws(NodeError) -> Target {
        guard url.hasPrefix("http://") else { throw NodeError("\(url) is not an http:// URL") }
        var rest = Substring(url.dropFirst(7))
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        rest = rest[slash...]
        let host: Substring, portText: Substring
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = authority[authority.index(after: authority.startIndex)..<close]
            portText = authority[close...].dropFirst(2)
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
            portText = "80"
        }
        guard let port = Int(portText), (1...65535).contains(port), !host.isEmpty else { throw NodeError("\(url): bad host or port") }
        return Target(host: String(host), port: port, path: rest.isEmpty ? "/" : String(rest))
    }

    /// Sends one request (with `headers` besides its own); hands each body chunk to `onBody`
    /// as it arrives; returns the status.
    static func request(
        _ method: HTTPMethod, _ url: String, body: [UInt8]? = nil, headers extra: [(String, String)] = [],
        onBody: @Sendable (ByteBuffer) async throws -> Void
    ) async throws -> HTTPResponseStatus {
        let target = try parse(url)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(2))
            .connect(host: target.host, port: target.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders([("Host", "\(target.host):\(target.port)"), ("Connection", "close")] + extra)
            if let body {
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: "\(body.count)")
            }
            try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: method, uri: target.path, headers: headers)))
            if let body { try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
            try await outbound.write(.end(nil))
            var status = HTTPResponseStatus.internalServerError
            for try await part in inbound {
                switch part {
                case .head(let head): status = head.status
                case .body(let buffer): try await onBody(buffer)
                case .end: return status
                }
            }
            return status
        }
    }

    /// A whole response body (at most `limit` bytes), within `timeout`.
    static func fetch(
        _ method: HTTPMethod = .GET, _ url: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
        timeout: Duration = .seconds(3), limit: Int = 8 << 20
    ) async throws -> (status: HTTPResponseStatus, body: [UInt8]) {
        final class Collected: Sendable {
            let bytes = Mutex<[UInt8]>([])
        }
        let collected = Collected()
        let status = try await withThrowingTaskGroup(of: HTTPResponseStatus?.self) { group in
            group.addTask {
                try await request(method, url, body: body, headers: headers) { buffer in
                    let over = collected.bytes.withLock { b -> Bool in
                        b += buffer.readableBytesView
                        return b.count > limit
                    }
                    if over { throw NodeError("\(url): response longer than \(limit) bytes") }
                }
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let status = first else {
                throw NodeError("\(url) did not answer within \(timeout)")
            }
            return status
        }
        return (status, collected.bytes.withLock { $0 })
    }
}

import Synchronization
