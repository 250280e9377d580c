import ArgumentParser

/// Benchmarks of the store and the bus, printing figures (never asserted in tests; today's
/// figures and how they were taken are in docs/BENCHMARKS.md).
@main
struct CEBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ce-bench",
        abstract: "Benchmarks of the event store and the bus, printing figures.",
        discussion: """
            The bus, gates, emit, replay and refill benchmarks build a cluster on loopback in a \
            temporary folder, with CURVE as every cluster has it (--no-curve: security none). Nodes \
            that run in processes of their own are the `ce-node` built beside this benchmark.
            """,
        subcommands: [
            StoreBenchmark.self, EmitBenchmark.self, BusBenchmark.self, GatesBenchmark.self, ReplayBenchmark.self,
            RefillBenchmark.self, CodecBenchmark.self, LinkBenchmark.self, FailoverBenchmark.self,
        ])
}
