import CECore

/// An event message as a SUB receives it: the first byte splits the input into topic and body.
/// Whatever decodes must encode again and decode to the same event.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let first = bytes.first else { return 0 }
    let split = min(Int(first), bytes.count - 1)
    let topic = Array(bytes[1..<(1 + split)])
    let body = Array(bytes[(1 + split)...])
    if let event = try? EnvelopeCodec.decode(topic: topic, body: body) {
        // The payload is kept as bytes and parsed when read: the same value the whole
        // envelope parses to.
        guard let whole = try? JSONValue(parsing: body), whole["payload"] == event.payload else {
            fatalError("a payload read from its bytes differs from the envelope's")
        }
        let again = EnvelopeCodec.encode(event)
        guard let back = try? EnvelopeCodec.decode(again), back.id == event.id, back.seq == event.seq, back.origin == event.origin else {
            fatalError("a decoded envelope did not survive encode and decode")
        }
    }
    _ = try? EnvelopeCodec.decode(bytes)
    return 0
}
