import ArgumentParser
import CECore
import Foundation

/// Encodes and decodes `--events` envelopes with a 256-byte payload (the bus benchmark's
/// events), five rounds each; prints the best round per event, so the CPU the bus and
/// replay spend on the envelope can be told from the rest.
struct CodecBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "The envelope alone: encode, decode (with the topic check) and decode with the payload read, per event.")

    @Option(help: "Envelopes encoded and decoded in each of five rounds.")
    var events = 100_000

    @Option(help: "More keys in the payload, as an agent's plan or review might carry.")
    var fields = 0

    func validate() throws {
        try requirePositive(["--events": events])
        guard fields >= 0 else { throw ValidationError("--fields needs a number of 0 or more, not \(fields)") }
    }

    @MainActor func run() async throws {
        let count = events
        let extra = (0..<fields).map { ("field_\($0)", JSONValue.string("value \($0) of a plan")) }
        let events = (1...count).map { seq in
            Event(id: EventID.make(), origin: "planner-1", seq: UInt64(seq), stream: "planning", type: .planReady,
                  timestamp: Date(), payload: .object(Dictionary(uniqueKeysWithValues: [("text", payload), ("n", .number(Double(seq)))] + extra)))
        }
        var encoded: [[UInt8]] = []
        var best = (encode: Double.infinity, decode: Double.infinity, read: Double.infinity)
        for _ in 0..<5 {
            var start = ContinuousClock.now
            encoded = events.map { EnvelopeCodec.encode($0) }
            best.encode = min(best.encode, seconds(since: start))
            let topic = Topic.bytes(type: .planReady, stream: "planning")
            // Decoded as a node that stores and forwards does (the payload is checked, not read),
            // then as a handler that reads the payload does.
            for reading in [false, true] {
                start = ContinuousClock.now
                var seqs: UInt64 = 0
                for bytes in encoded {
                    guard let event = try? EnvelopeCodec.decode(topic: topic, body: bytes) else { throw BenchmarkFailure("an envelope did not decode") }
                    seqs &+= reading ? UInt64(event.payload["n"]?.intValue ?? 0) : event.seq
                }
                if reading { best.read = min(best.read, seconds(since: start)) } else { best.decode = min(best.decode, seconds(since: start)) }
                guard seqs == UInt64(count) * UInt64(count + 1) / 2 else { throw BenchmarkFailure("decoded sequences do not add up") }
            }
        }
        let size = encoded.reduce(0) { $0 + $1.count } / count
        print(String(format: "codec: %d envelopes of %d B: encode %.2f us, decode %.2f us, decode and read the payload %.2f us per event (best of 5)",
                     count, size, best.encode / Double(count) * 1e6, best.decode / Double(count) * 1e6, best.read / Double(count) * 1e6))
    }
}
