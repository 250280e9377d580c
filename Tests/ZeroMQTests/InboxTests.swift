import Testing

@testable import ZeroMQ

/// The received-message queue against a plain array doing the same operations: order and
/// count hold through every mix of batches in, single takes, put-backs and take-alls.
@Suite("Inbox") struct InboxTests {
    @Test func keepsArrivalOrderThroughEveryMixOfOperations() {
        var generator = SplitMix(seed: 7)
        var next = 0
        func batch(_ n: Int) -> [Message] {
            defer { next += n }
            return (next..<next + n).map { Message("\($0)") }
        }
        for _ in 0..<200 {
            var inbox = Inbox()
            var model: [Message] = []
            var taken: [Message] = []
            var modelTaken: [Message] = []
            for _ in 0..<50 {
                switch generator.next() % 6 {
                case 0:
                    let b = batch(Int(generator.next() % 5))
                    inbox.append(contentsOf: b)
                    model += b
                case 1:
                    let b = batch(Int(generator.next() % 5) + 1)
                    let from = Int(generator.next() % UInt64(b.count))
                    inbox.append(contentsOf: b[from...])
                    model += b[from...]
                case 2, 3:
                    let got = inbox.popFirst()
                    #expect(got == model.first)
                    if let got { taken.append(got) }
                    if !model.isEmpty { modelTaken.append(model.removeFirst()) }
                case 4:
                    // A receiver hands back the last messages it took but did not use.
                    let back = min(taken.count, Int(generator.next() % 3))
                    inbox.prepend(contentsOf: taken.suffix(back)[...])
                    model.insert(contentsOf: taken.suffix(back), at: 0)
                    taken.removeLast(back)
                    modelTaken.removeLast(back)
                default:
                    let all = inbox.takeAll()
                    #expect(all == model)
                    taken += all
                    modelTaken += model
                    model = []
                }
                #expect(inbox.count == model.count)
                #expect(inbox.isEmpty == model.isEmpty)
            }
            #expect(taken == modelTaken)
            #expect(inbox.takeAll() == model)
            #expect(inbox.isEmpty)
        }
    }

    @Test func aTakenMessageIsNoLongerHeldByTheInbox() {
        var inbox = Inbox()
        inbox.append(contentsOf: [Message([UInt8](repeating: 1, count: 100)), Message([UInt8](repeating: 2, count: 100))])
        // Outside `#expect`, which keeps the values it reports.
        let unique = onlyHolderOfItsBytes(inbox.popFirst()!)
        #expect(unique)
        #expect(inbox.count == 1)
    }

    @Test func takingOneAtATimeFromAnInboxThatNeverEmptiesKeepsItSmall() {
        var inbox = Inbox()
        inbox.append(contentsOf: (0..<10).map { Message("\($0)") })
        var largest = 0
        for n in 10..<10_010 {
            inbox.append(contentsOf: [Message("\(n)")])
            #expect(inbox.popFirst() == Message("\(n - 10)"))
            largest = max(largest, inbox.slots)
        }
        #expect(inbox.count == 10)
        #expect(largest <= 40, "the inbox grew to \(largest) slots for 10 messages")
    }

    /// Whether the message's bytes are referenced by nothing else: writing to them in place
    /// then needs no copy (the buffer's address stays the same).
    private func onlyHolderOfItsBytes(_ message: consuming Message) -> Bool {
        guard case .one(var frame) = message.storage else { return false }
        message = Message(Frame([]))
        let before = frame.bytes.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) }
        let inPlace = frame.bytes.withUnsafeMutableBufferPointer { UnsafeRawPointer($0.baseAddress) }
        return before == inPlace
    }
}

/// A small seeded generator, so a failure repeats.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
