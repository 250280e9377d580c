/// xorshift64*, seeded: the random inputs of a test are the same on every run, so a failure
/// repeats.
struct Seeded {
    var state: UInt64

    init(_ seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}
