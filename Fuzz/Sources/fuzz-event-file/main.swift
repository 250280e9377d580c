import CECore

/// Event files that agents drop into `.ce-events/`: parsed or refused with a reason.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    _ = try? AgentEventFile.parse(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
