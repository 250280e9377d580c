/// Checks the text of a CURVE public key as topology files carry it: 40 characters of Z85
/// (ZeroMQ RFC 32), which decode to the 32 bytes of a Curve25519 key.
///
/// Pure Swift (no libzmq), so topology files are checked wherever they are read. The
/// problem text never repeats the key: a secret pasted by mistake is not echoed to logs.
public enum CurveKeyText {
    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
    static let values: [UInt8: UInt32] = Dictionary(uniqueKeysWithValues: alphabet.enumerated().map { ($1, UInt32($0)) })

    /// Why `text` is not a CURVE key in Z85, or nil when it is one.
    public static func problem(_ text: String) -> String? {
        let chars = Array(text.utf8)
        guard chars.count == 40 else {
            return "a CURVE public key is 40 Z85 characters, this one has \(chars.count)"
        }
        if decode(chars) == nil {
            if let bad = chars.firstIndex(where: { values[$0] == nil }) {
                return "character \(bad + 1) of the key is not in the Z85 alphabet"
            }
            return "the key is not valid Z85 (a 5-character group exceeds 32 bits)"
        }
        return nil
    }

    /// The 32 bytes of a 40-character Z85 key, or nil.
    public static func decode(_ text: String) -> [UInt8]? { decode(Array(text.utf8)) }

    static func decode(_ chars: [UInt8]) -> [UInt8]? {
        guard chars.count % 5 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count * 4 / 5)
        var index = 0
        while index < chars.count {
            var value: UInt64 = 0
            for c in chars[index..<index + 5] {
                guard let v = values[c] else { return nil }
                value = value * 85 + UInt64(v)
            }
            guard value <= UInt64(UInt32.max) else { return nil }
            out += [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
            index += 5
        }
        return out
    }
}
