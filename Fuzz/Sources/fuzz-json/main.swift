import CECore

/// The JSON parser: any input either fails with an error or parses to a value whose
/// serialization parses back to the same value; the checker that builds nothing accepts the
/// same inputs and fails with the same error.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let parsed = Result { () throws(JSONError) in try JSONValue(parsing: bytes) }
    let checked = Result { () throws(JSONError) in try JSONValue.validate(bytes) }
    switch (parsed, checked) {
    case (.success, .success): break
    case (.failure(let a), .failure(let b)) where a == b: break
    default: fatalError("the parser and the checker disagree: \(parsed) against \(checked)")
    }
    guard case .success(let value) = parsed else { return 0 }
    let text = value.serialized()
    guard let again = try? JSONValue(parsing: text), again.serialized() == text else {
        fatalError("serialized JSON did not parse back to itself")
    }
    return 0
}
