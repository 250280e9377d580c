/// One frame (part) of a message: bytes of any length.
public struct Frame: Sendable, Hashable, ExpressibleByStringLiteral, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init(_ string: String) { self.bytes = Array(string.utf8) }
    public init<S: Sequence>(_ bytes: S) where S.Element == UInt8 { self.bytes = Array(bytes) }
    public init(stringLiteral value: String) { self.init(value) }

    public var count: Int { bytes.count }
    /// The frame as UTF-8 text, or nil when it is not valid UTF-8.
    public var string: String? { String(validating: bytes, as: UTF8.self) }

    public var description: String {
        string.map { "\"\($0.prefix(60))\"" } ?? "<\(bytes.count) bytes>"
    }
}

/// A message: one or more frames, sent and delivered atomically.
///
/// Single-frame messages (the common case) are stored without an extra array.
public struct Message: Sendable, Hashable, RandomAccessCollection, ExpressibleByArrayLiteral, CustomStringConvertible {
    enum Storage: Sendable, Hashable {
        case one(Frame)
        case many([Frame])
    }
    var storage: Storage
    /// The ZAP User-Id of the connection the message came in on (for a CURVE server, what
    /// the authenticator said for the client's key). Set only on sockets that ask for it
    /// with ``SocketOption/receiveUserID(_:)``; nil otherwise and on sent messages.
    public var userID: String?

    public init(_ frame: Frame) { storage = .one(frame) }
    public init(_ bytes: [UInt8]) { storage = .one(Frame(bytes)) }
    public init(_ string: String) { storage = .one(Frame(string)) }
    public init(_ frames: [Frame]) {
        storage = frames.count == 1 ? .one(frames[0]) : .many(frames)
    }
    public init(arrayLiteral elements: Frame...) { self.init(elements) }

    /// The frames in order.
    public var frames: [Frame] {
        switch storage {
        case .one(let f): [f]
        case .many(let fs): fs
        }
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int {
        switch storage {
        case .one: 1
        case .many(let fs): fs.count
        }
    }
    public subscript(position: Int) -> Frame {
        switch storage {
        case .one(let f):
            precondition(position == 0, "frame index \(position) out of range")
            return f
        case .many(let fs): return fs[position]
        }
    }

    /// Total bytes over all frames.
    public var byteCount: Int {
        switch storage {
        case .one(let f): f.count
        case .many(let fs): fs.reduce(0) { $0 + $1.count }
        }
    }

    public var description: String { "[" + frames.map(\.description).joined(separator: ", ") + "]" }
}
