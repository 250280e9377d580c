// Placeholder main job until the node lands: a PUB/SUB and REQ/REP round trip on loopback.
import ZeroMQ

let context = try Context()
let pub = try context.socket(.pub)
let sub = try context.socket(.sub)
try sub.set(.subscribe(Array("plan_ready/".utf8)))
let endpoint = try pub.bind("tcp://127.0.0.1:*")
try sub.connect(endpoint)
while true {
    try await pub.send(Frame("plan_ready/planner"), Frame("{\"step\":1}"))
    if let m = try? await sub.receive(timeout: .milliseconds(100)) {
        print("SUB received \(m) from \(endpoint)")
        break
    }
}
let rep = try context.socket(.rep)
let req = try context.socket(.req)
try req.connect(try rep.bind("tcp://127.0.0.1:*"))
try await req.send(Message("which schema version?"))
let question = try await rep.receive()
try await rep.send(Message("schema_v1"))
print("REQ asked \(question), got \(try await req.receive())")
await context.shutdown()
