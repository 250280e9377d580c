import CECore

/// The topology loader: any text is a topology or a list of problems, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let topology = try TopologyLoader.parse(yaml: text, file: "fuzz.yaml")
        for node in topology.nodes { _ = (node.pubEndpoint, node.bindRepEndpoint, node.replayEndpoint) }
    } catch {
        if error.problems.isEmpty { fatalError("a topology error without problems") }
    }
    return 0
}
