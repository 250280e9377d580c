// swift-tools-version:6.2
import PackageDescription

// Layers, bottom to top:
//   CZeroMQ   system library (libzmq 4.3.4 from Debian's libzmq3-dev); only ZeroMQ imports it
//   ZeroMQ    Swift wrapper: context, sockets, reactor, options, CURVE, ZAP, monitor
//   CECore    pure values: events, catalog, envelope codec, topics, topology files
//   CECoordinator  pure state machines: quality gates, conflicts, pool liveness (no I/O)
//   CEStore   the durable event store (SQLite: GRDB reads, one C-API connection writes)
//   CENode    the node: publishing, subscribing, asking, the event folder, the control endpoint
//   CEMCP     the MCP server (tools over a running node's control endpoint), on the MCP Swift SDK
//   CEObserve the node's HTTP side: Prometheus metrics, JSON status, the live dashboard (Hummingbird)
//   ce-node   thin executable over CENode, CEMCP and CEObserve
//   zmq-perf  the wrapper's benchmark (same modes as shared/bench/zmq_baseline.c)
//   CECluster a cluster of ce-node processes on this machine (loopback or network namespaces): the tests' and the benchmarks' harness
//   ce-bench  benchmarks of the store and the bus, printing figures
let package = Package(
    name: "coordination-bus",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "ZeroMQ", targets: ["ZeroMQ"]),
        .library(name: "CECore", targets: ["CECore"]),
        .library(name: "CENode", targets: ["CENode"]),
        .executable(name: "ce-node", targets: ["ce-node"]),
        .executable(name: "zmq-perf", targets: ["zmq-perf"]),
        .executable(name: "ce-bench", targets: ["ce-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", exact: "0.12.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CZeroMQ",
            pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]
        ),
        .target(
            name: "ZeroMQ",
            dependencies: [
                "CZeroMQ",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "CECore",
            dependencies: [.product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "CECoordinator",
            dependencies: ["CECore"]
        ),
        .target(
            name: "CEStore",
            dependencies: [
                "CECore", .product(name: "GRDB", package: "GRDB.swift"),
                // The writing connection uses the SQLite C API through the same library GRDB links.
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
            ]
        ),
        .target(
            name: "CENode",
            dependencies: [
                "ZeroMQ", "CECore", "CEStore", "CECoordinator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "CEObserve",
            dependencies: [
                "CENode", "CECore", "CECoordinator",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            resources: [
                .embedInCode("Dashboard/index.html"), .embedInCode("Dashboard/dashboard.js"),
                .embedInCode("Dashboard/dashboard.css"),
            ]
        ),
        .target(
            name: "CEMCP",
            dependencies: [
                "CENode", "CECore", "ZeroMQ",
                .product(name: "MCP", package: "swift-sdk"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "ce-node",
            dependencies: [
                "CENode", "CEMCP", "CEObserve",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "zmq-perf",
            dependencies: ["ZeroMQ"]
        ),
        .target(
            name: "CECluster",
            dependencies: ["CENode", "CECore", "ZeroMQ"]
        ),
        .executableTarget(
            name: "ce-bench",
            dependencies: ["CECluster", "CENode", "CECore", "CEStore", "CECoordinator", "CEObserve", "ZeroMQ", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ"]),
        .testTarget(name: "CECoreTests", dependencies: ["CECore"]),
        .testTarget(name: "CEStoreTests", dependencies: ["CEStore"]),
        .testTarget(name: "CECoordinatorTests", dependencies: ["CECoordinator"]),
        .testTarget(name: "CENodeTests", dependencies: ["CECluster", "CENode", "CEStore", "ZeroMQ", "CECore"]),
        .testTarget(name: "CEMCPTests", dependencies: ["CEMCP", "CENode", "CECore"]),
        .testTarget(name: "CEObserveTests", dependencies: ["CEObserve", "CENode", "CECore"]),
    ],
    swiftLanguageModes: [.v6]
)
