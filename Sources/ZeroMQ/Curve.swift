internal import CZeroMQ

/// Z85 text encoding of binary data (ZeroMQ RFC 32): 4 bytes become 5 characters.
public enum Z85 {
    /// Encodes data whose length is a multiple of 4; nil otherwise.
    public static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count % 4 == 0 else { return nil }
        // zmq_z85_encode writes size * 5 / 4 characters plus a terminating NUL.
        var text = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        let ok = bytes.withUnsafeBufferPointer { src in
            text.withUnsafeMutableBufferPointer { dst in
                zmq_z85_encode(dst.baseAddress, src.baseAddress, src.count) != nil
            }
        }
        guard ok else { return nil }
        return String(decoding: text.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Decodes Z85 text whose length is a multiple of 5; nil when it is not valid Z85.
    public static func decode(_ text: String) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 5 == 0 else { return nil }
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)
        guard chars.allSatisfy({ alphabet.contains($0) }) else { return nil }
        var out = [UInt8](repeating: 0, count: chars.count * 4 / 5)
        let cstring = chars.map { CChar(bitPattern: $0) } + [0]
        let ok = out.withUnsafeMutableBufferPointer { dst in
            cstring.withUnsafeBufferPointer { zmq_z85_decode(dst.baseAddress, $0.baseAddress) != nil }
        }
        return ok ? out : nil
    }
}

/// A CURVE long-term key pair, both keys as 40 Z85 characters.
public struct CurveKeyPair: Sendable, Hashable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// Generates a new key pair (libzmq must be built with CURVE: Debian's is).
    public static func generate() throws(ZMQError) -> CurveKeyPair {
        // Z85 keys are 40 characters; libzmq writes a terminating NUL, so 41 bytes each.
        var pub = [CChar](repeating: 0, count: 41)
        var sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError.last("zmq_curve_keypair") }
        return CurveKeyPair(publicKey: string(pub), secretKey: string(sec))
    }

    /// The public key that belongs to a secret key.
    public static func publicKey(forSecret secret: String) throws(ZMQError) -> String {
        var pub = [CChar](repeating: 0, count: 41)
        let sec = Array(secret.utf8.map { CChar(bitPattern: $0) }) + [0]
        guard secret.utf8.count == 40, zmq_curve_public(&pub, sec) == 0 else {
            throw ZMQError(code: .invalidArgument, operation: "zmq_curve_public", message: "not a 40-character Z85 secret key")
        }
        return string(pub)
    }

    private static func string(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
