import CECore

/// The JSON parser: any input either fails with an error or parses to a value whose
/// serialization parses back to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSONValue(parsing: bytes) else { return 0 }
    let text = value.serialized()
    guard let again = try? JSONValue(parsing: text), again.serialized() == text else {
        fatalError("serialized JSON did not parse back to itself")
    }
    return 0
}
