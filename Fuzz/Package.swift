// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for the parsers that read what arrives from the network or from disk.
// Built and run by scripts/fuzz (swift build --sanitize fuzzer --sanitize address): each is
// an executable whose main is libFuzzer's, calling `LLVMFuzzerTestOneInput` per input.
let fuzzTarget: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]
let package = Package(
    name: "ce-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "coordination-bus", path: "..")],
    targets: ["fuzz-envelope", "fuzz-json", "fuzz-topology", "fuzz-event-file"].map { name in
        .executableTarget(name: name, dependencies: [.product(name: "CECore", package: "coordination-bus")], swiftSettings: fuzzTarget)
    },
    swiftLanguageModes: [.v6]
)
