import Foundation
import Synchronization
import Testing
import ZeroMQ

@Suite("CURVE, ZAP and monitor events")
struct SecurityAndMonitorTests {
    @Test func z85RoundTripsAndKeysAreFortyCharacters() throws {
        let bytes: [UInt8] = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]
        #expect(Z85.encode(bytes) == "HelloWorld")
        #expect(Z85.decode("HelloWorld") == bytes)
        #expect(Z85.encode([1, 2, 3]) == nil)
        #expect(Z85.decode("abc") == nil)
        let pair = try CurveKeyPair.generate()
        #expect(pair.publicKey.utf8.count == 40 && pair.secretKey.utf8.count == 40)
        #expect(try CurveKeyPair.publicKey(forSecret: pair.secretKey) == pair.publicKey)
        #expect(Z85.decode(pair.publicKey)?.count == 32)
    }

    @Test func curveServerRefusesToBindWithoutAnAuthenticator() throws {
        let context = try Context()
        let server = try context.socket(.rep)
        let keys = try CurveKeyPair.generate()
        try server.set([.curveServer(true), .curveSecretKey(keys.secretKey)])
        #expect { try server.bind("tcp://127.0.0.1:*") } throws: {
            ($0 as? ZMQError)?.message.contains("authenticator") == true
        }
        context.shutdownBlocking()
    }

    @Test func allowedKeyIsAdmittedUnknownKeyIsRefusedAndDeliversNothing() async throws {
        let context = try Context()
        let serverKeys = try CurveKeyPair.generate()
        let allowed = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let auth = try context.startAuthenticator(allowing: [allowed.publicKey])

        let server = try context.socket(.pull)
        try server.set([.curveServer(true), .curveSecretKey(serverKeys.secretKey)])
        let endpoint = try server.bind("tcp://127.0.0.1:*")

        func client(_ keys: CurveKeyPair) throws -> Socket {
            let socket = try context.socket(.push)
            try socket.set([
                .curveServerKey(serverKeys.publicKey), .curvePublicKey(keys.publicKey),
                .curveSecretKey(keys.secretKey), .immediate(true),
            ])
            try socket.connect(endpoint)
            return socket
        }
        let intruder = try client(stranger)
        let monitor = try intruder.monitor([.handshakeFailedAuth, .handshakeSucceeded])
        // With `immediate` and no admitted connection, libzmq never takes the message: the
        // send waits until the socket closes (at the context's shutdown), so it is not awaited.
        let refused = Task { try await intruder.send(Message("from a stranger")) }
        let event = try await firstEvent(of: monitor, "intruder handshake outcome")
        #expect(event.kind == .handshakeFailedAuth)
        #expect(auth.counts.denied >= 1)

        let friend = try client(allowed)
        try await friend.send(Message("from a friend"))
        let received = try await server.receive(timeout: .seconds(5))
        #expect(text(received) == "from a friend")
        // Nothing from the stranger ever arrives.
        await #expect { _ = try await server.receive(timeout: .milliseconds(300)) } throws: {
            ($0 as? ZMQError)?.code == .again
        }
        #expect(auth.counts.accepted >= 1)
        await context.shutdown()
        try await within(10, "the stranger's send ends at the shutdown") { try await refused.value }
    }

    @Test func aReplacedAllowListAdmitsTheNewKeyAndRefusesTheOld() async throws {
        let context = try Context()
        let serverKeys = try CurveKeyPair.generate()
        let old = try CurveKeyPair.generate()
        let new = try CurveKeyPair.generate()
        let auth = try context.startAuthenticator(allowing: [old.publicKey])
        auth.replace(allowing: [new.publicKey])
        let server = try context.socket(.pull)
        try server.set([.curveServer(true), .curveSecretKey(serverKeys.secretKey)])
        let endpoint = try server.bind("tcp://127.0.0.1:*")
        func client(_ keys: CurveKeyPair) throws -> Socket {
            let socket = try context.socket(.push)
            try socket.set([
                .curveServerKey(serverKeys.publicKey), .curvePublicKey(keys.publicKey),
                .curveSecretKey(keys.secretKey), .immediate(true), .linger(milliseconds: 0),
            ])
            try socket.connect(endpoint)
            return socket
        }
        let revoked = try client(old)
        let monitor = try revoked.monitor([.handshakeFailedAuth, .handshakeSucceeded])
        let refused = Task { try await revoked.send(Message("with the old key")) }
        #expect(try await firstEvent(of: monitor, "the old key's handshake outcome").kind == .handshakeFailedAuth)
        try await client(new).send(Message("with the new key"))
        #expect(text(try await server.receive(timeout: .seconds(5))) == "with the new key")
        await #expect { _ = try await server.receive(timeout: .milliseconds(300)) } throws: { ($0 as? ZMQError)?.code == .again }
        await context.shutdown()
        try await within(10, "the refused send ends at the shutdown") { try await refused.value }
    }

    @Test func messagesCarryTheClientKeyAsUserIDOnlyWhenAskedAndDenialsAreReported() async throws {
        let context = try Context()
        let serverKeys = try CurveKeyPair.generate()
        let alice = try CurveKeyPair.generate()
        let bob = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let denials = Mutex<[Authenticator.Denial]>([])
        let auth = try context.startAuthenticator(allowing: [alice.publicKey, bob.publicKey]) { denial in
            denials.withLock { $0.append(denial) }
        }
        let router = try context.socket(.router)
        try router.set([.curveServer(true), .curveSecretKey(serverKeys.secretKey), .receiveUserID(true)])
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let plain = try context.socket(.pull)
        try plain.set([.curveServer(true), .curveSecretKey(serverKeys.secretKey)])
        let plainEndpoint = try plain.bind("tcp://127.0.0.1:*")

        func client(_ type: SocketType, _ keys: CurveKeyPair, _ endpoint: String) throws -> Socket {
            let socket = try context.socket(type)
            try socket.set([.curveServerKey(serverKeys.publicKey), .curvePublicKey(keys.publicKey), .curveSecretKey(keys.secretKey), .linger(milliseconds: 0)])
            try socket.connect(endpoint)
            return socket
        }
        let a = try client(.dealer, alice, endpoint)
        let b = try client(.dealer, bob, endpoint)
        try await a.send(Message([Frame("from alice")]))
        try await b.send(Message([Frame("from bob")]))
        var seen: [String: String] = [:]
        for _ in 0..<2 {
            let message = try await router.receive(timeout: .seconds(5))
            seen[text(Message(message[1]))] = message.userID
        }
        #expect(seen == ["from alice": alice.publicKey, "from bob": bob.publicKey])
        // A socket that did not ask for it gets no User-Id.
        let p = try client(.push, alice, plainEndpoint)
        try await p.send(Message("plain"))
        #expect(try await plain.receive(timeout: .seconds(5)).userID == nil)
        // A refused key is reported with the address it came from.
        let intruder = try client(.dealer, stranger, endpoint)
        try await intruder.send(Message("from a stranger"))
        try await within(5, "the denial is reported") {
            while denials.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        }
        let denial = try #require(denials.withLock { $0.first })
        #expect(denial.key == stranger.publicKey && denial.address == "127.0.0.1" && denial.reason == "client key not allowed")
        #expect(auth.counts.denied >= 1)
        await context.shutdown()
    }

    @Test func monitorSeesConnectAndDisconnect() async throws {
        let serverContext = try Context()
        let context = try Context()
        let server = try serverContext.socket(.rep)
        let endpoint = try server.bind("tcp://127.0.0.1:*")
        let client = try context.socket(.req)
        try client.set(.reconnectInterval(milliseconds: 50))
        let events = try client.monitor([.connected, .disconnected])
        try client.connect(endpoint)
        let connected = try await firstEvent(of: events, "connected event")
        #expect(connected.kind == .connected)
        #expect(connected.endpoint == endpoint)
        // The peer goes away: the client sees the connection drop.
        server.close()
        let dropped = try await firstEvent(of: events, "disconnected event", where: { $0.kind == .disconnected })
        #expect(dropped.endpoint == endpoint)
        await context.shutdown()
        await serverContext.shutdown()
    }
}

struct MonitorEnded: Error {}

/// The first event (matching `condition`) a monitor reports within 5 s.
func firstEvent(
    of events: MonitorEvents, _ what: String,
    where condition: @escaping @Sendable (MonitorEvent) -> Bool = { _ in true }
) async throws -> MonitorEvent {
    try await within(5, what) {
        for try await event in events where condition(event) { return event }
        throw MonitorEnded()
    }
}
