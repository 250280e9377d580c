import Foundation
import Synchronization

/// Event ids: UUID version 7 (RFC 9562), lowercase: 48 bits of Unix milliseconds, a 12-bit
/// counter within the millisecond, then a per-process random salt plus a count. Ids made later sort later, so the store's unique index on ids grows at its end
/// instead of touching a random page per event (with random v4 ids, one 16 KiB page per
/// event written to the WAL on every commit).
public enum EventID {
    /// The last (milliseconds, counter) handed out: ids of one process increase strictly,
    /// also within a millisecond.
    private static let last = Mutex<(millis: UInt64, counter: UInt16)>((0, 0))
    private static let salt: UInt64 = { var random = SystemRandomNumberGenerator(); return random.next() }()
    private static let count = Atomic<UInt64>(0)

    /// A new id, larger than every id this process made before.
    public static func make(now: Date = Date()) -> String {
        var millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let counter: UInt16 = last.withLock { last in
            if millis <= last.millis {
                millis = last.millis
                if last.counter == 0x0FFF {
                    millis += 1
                    last.counter = 0
                } else {
                    last.counter += 1
                }
            } else {
                last.counter = UInt16.random(in: 0..<0x0800)
            }
            last.millis = millis
            return last.counter
        }
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<6 { bytes[i] = UInt8(truncatingIfNeeded: millis >> (40 - 8 * UInt64(i))) }
        bytes[6] = 0x70 | UInt8(counter >> 8)  // version 7, then the counter's high 4 bits
        bytes[7] = UInt8(truncatingIfNeeded: counter)
        // The last 62 bits: this process's random salt plus a count, so ids of one process
        // never repeat and those of two processes differ (no system call per id).
        let tail = salt &+ count.add(1, ordering: .relaxed).oldValue &* 0x9E37_79B9_7F4A_7C15
        for i in 8..<16 { bytes[i] = UInt8(truncatingIfNeeded: tail >> (8 * UInt64(i - 8))) }
        bytes[8] = 0x80 | (bytes[8] & 0x3F)  // variant 10
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(36)
        for (i, byte) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
