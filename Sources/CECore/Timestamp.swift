import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Timestamps on the wire: ISO 8601 in UTC with milliseconds (`2026-11-25T03:40:14.123Z`).
///
/// Both directions work on bytes (no `DateFormatter`): they run for every event.
public enum Timestamp {
    /// Formats a date as `YYYY-MM-DDTHH:MM:SS.mmmZ`, rounded to the nearest millisecond.
    public static func format(_ date: Date) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(24)
        write(date, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Formats a date for a file name: `20261125T034014.123Z` (no `:`, which some file systems refuse).
    public static func formatCompact(_ date: Date) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(20)
        write(date, compact: true, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the 24 bytes of ``format(_:)`` (or the 20 of ``formatCompact(_:)``) to `out`.
    public static func write(_ date: Date, compact: Bool = false, to out: inout [UInt8]) {
        let millis = Int64((date.timeIntervalSince1970 * 1000).rounded())
        var seconds = time_t(millis >= 0 ? millis / 1000 : (millis - 999) / 1000)
        let ms = Int32((millis % 1000 + 1000) % 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int32, _ width: Int) {
            var divisor: Int32 = 1
            for _ in 1..<width { divisor *= 10 }
            var v = max(0, value)
            for _ in 0..<width {
                out.append(UInt8(truncatingIfNeeded: (v / divisor) % 10) &+ 0x30)
                v %= divisor
                divisor /= 10
            }
        }
        digits(parts.tm_year + 1900, 4)
        if !compact { out.append(0x2D) }
        digits(parts.tm_mon + 1, 2)
        if !compact { out.append(0x2D) }
        digits(parts.tm_mday, 2)
        out.append(0x54)  // T
        digits(parts.tm_hour, 2)
        if !compact { out.append(0x3A) }
        digits(parts.tm_min, 2)
        if !compact { out.append(0x3A) }
        digits(parts.tm_sec, 2)
        out.append(0x2E)
        digits(ms, 3)
        out.append(0x5A)  // Z
    }

    /// Parses ISO 8601 date-times: `2026-11-25T03:40:14Z`, `...14.123456Z`, `...14+02:00`,
    /// `...14-05:00`. Returns nil for anything else (no date-only forms, no missing offset).
    public static func parse(_ text: String) -> Date? {
        var text = text
        return text.withUTF8 { parse(bytes: $0) }
    }

    /// ``parse(_:)`` over UTF-8 bytes.
    public static func parse(bytes b: UnsafeBufferPointer<UInt8>) -> Date? {
        func digits(_ at: Int, _ n: Int) -> Int? {
            guard at + n <= b.count else { return nil }
            var v = 0
            for i in at..<(at + n) {
                guard b[i] >= 0x30 && b[i] <= 0x39 else { return nil }
                v = v * 10 + Int(b[i] - 0x30)
            }
            return v
        }
        guard b.count >= 20, let year = digits(0, 4), b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D,
            let day = digits(8, 2), b[10] == 0x54 || b[10] == 0x74, let hour = digits(11, 2), b[13] == 0x3A,
            let minute = digits(14, 2), b[16] == 0x3A, let second = digits(17, 2),
            (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year), hour < 24, minute < 60, second < 61
        else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count, b[i] == 0x2E {
            i += 1
            let start = i
            var numerator: Int64 = 0
            var denominator: Int64 = 1
            while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 {
                if i - start < 9 {  // nanoseconds are plenty
                    numerator = numerator * 10 + Int64(b[i] - 0x30)
                    denominator *= 10
                }
                i += 1
            }
            guard i > start else { return nil }
            fraction = Double(numerator) / Double(denominator)
        }
        var offset = 0
        guard i < b.count else { return nil }
        if b[i] == 0x5A || b[i] == 0x7A {
            i += 1
        } else if b[i] == 0x2B || b[i] == 0x2D {
            guard let oh = digits(i + 1, 2), i + 3 < b.count, b[i + 3] == 0x3A, let om = digits(i + 4, 2), oh < 24, om < 60
            else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == 0x2D ? -1 : 1)
            i += 6
        } else {
            return nil
        }
        guard i == b.count else { return nil }
        let days = daysFromCivil(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}
