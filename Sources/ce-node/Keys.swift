import ArgumentParser
import CECore
import CENode
import Foundation
import ZeroMQ

/// `ce-node keys generate|show|rotate`: a node's CURVE key pair. The secret key stays in the node's
/// data folder; the public key goes into the topology (`public_key:` or `settings.keys_file`).
struct Keys: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make or show a node's CURVE key (the secret key stays in its data folder).",
        subcommands: [Generate.self, Show.self, Rotate.self])

    struct Rotate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rotate a node's key with no gap: make its next key (then reload everywhere), or --finish once it switched.",
            discussion: """
                1. On the node's host: `ce-node keys rotate --node X --add-to-keys-file` writes the next secret key \
                beside the current one and lists its public key as `X.next` in the keys file. 2. Copy the keys \
                file to every host and run `ce-node reload` on every node: peers admit both keys. Once every peer \
                runs the new file, the node switches to its next key by itself (its log and `ce-node status` say \
                so). 3. `ce-node keys rotate --node X --finish --add-to-keys-file` makes the next key the node's key \
                in the keys file and drops the old one; copy it and reload everywhere again.
                """)
        @OptionGroup var selection: KeySelection
        @Flag(help: "Replace a next key made before (a rotation not yet finished).")
        var force = false
        @Flag(help: "After the node switched: its next key becomes its key, and the old key leaves the keys file.")
        var finish = false
        @Flag(help: "Write the change into the topology's settings.keys_file (else print the lines to put there).")
        var addToKeysFile = false

        func run() throws {
            let (name, data) = try selection.resolve()
            let topology = try selection.load()
            guard topology.node(named: name) != nil else { throw ValidationError("no node \"\(name)\" in \(selection.topology)") }
            if finish {
                let inUse: CurveKeyPair
                do { inUse = try NodeKeyFile.load(dataDirectory: data, node: name, topologyFile: selection.topology) } catch {
                    throw ValidationError("\(error)")
                }
                guard inUse.publicKey == topology.node(named: name)?.nextPublicKey else {
                    throw ValidationError("\(name) has not switched to its next key yet (its key is \(inUse.publicKey)): wait until every peer runs the file that names the next key (ce-node status on \(name) says which it waits for)")
                }
                if addToKeysFile {
                    let file = try selection.keysFile()
                    do {
                        try KeysFile.set(node: name, publicKey: inUse.publicKey, in: file)
                        try KeysFile.remove(node: name + ".next", in: file)
                    } catch { throw ValidationError("cannot update the keys file: \(error)") }
                    FileHandle.standardError.write(Data("\(file): \(name) now has only its new key; copy it to every host and run `ce-node reload` on every node\n".utf8))
                } else {
                    FileHandle.standardError.write(Data("put this line in place of \(name)'s two lines (its key and \(name).next), then reload every node:\n".utf8))
                }
                print(KeysFile.line(node: name, publicKey: inUse.publicKey))
                return
            }
            let pair = try writeKey(selection, node: name, data: data, force: force, next: true, listAs: addToKeysFile ? name + ".next" : nil)
            if addToKeysFile {
                FileHandle.standardError.write(Data("copy the keys file to every host and run `ce-node reload` on every node; \(name) switches once every peer runs it\n".utf8))
            } else {
                FileHandle.standardError.write(Data("add this line to the keys file (or next_public_key: to \(name)'s entry), copy it to every host and run `ce-node reload` on every node:\n".utf8))
            }
            print(KeysFile.line(node: name + ".next", publicKey: pair.publicKey))
        }
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a new secret key into the node's data folder (mode 0600) and print its public key as a keys-file line.")
        @OptionGroup var selection: KeySelection
        @Flag(help: "Replace an existing secret key (the topology must then list the new public key).")
        var force = false
        @Flag(help: "Also write the public key into the topology's settings.keys_file (made if missing).")
        var addToKeysFile = false

        func run() throws {
            let (name, data) = try selection.resolve(allowingNew: true)
            let joining = (try? selection.load())?.node(named: name) == nil
            if joining && addToKeysFile {
                throw ValidationError("\(name) is not in \(selection.topology) yet, so its key cannot go into the keys file (a key of an unknown node makes the file invalid): run without --add-to-keys-file, add the lines it prints, then reload")
            }
            let pair = try writeKey(selection, node: name, data: data, force: force, next: false, listAs: addToKeysFile ? name : nil)
            print(KeysFile.line(node: name, publicKey: pair.publicKey))
            if joining {
                let keysFile = (try? selection.load())?.settings.keysFile
                FileHandle.standardError.write(Data("""
                    \(name) is not in \(selection.topology) yet. To add it:
                      1. under nodes:, add its entry (pick its pool, host and ports; data defaults to \(data)):
                           - { name: \(name), pool: POOL, host: HOST, ports: { pub: 7000, rep: 7001, replay: 7002 } }
                      2. \(keysFile.map { "add the line above to \($0)" } ?? "give the entry public_key: with the key above")
                      3. copy the file(s) to every host, run `ce-node reload` on every running node, and start \(name)

                    """.utf8))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the public key of the node's secret key, as a keys-file line.")
        @OptionGroup var selection: KeySelection

        func run() throws {
            let (name, data) = try selection.resolve()
            let pair: CurveKeyPair
            do { pair = try NodeKeyFile.load(dataDirectory: data, node: name, topologyFile: selection.topology) } catch {
                throw ValidationError("\(error)")
            }
            print(KeysFile.line(node: name, publicKey: pair.publicKey))
        }
    }
}

/// `--node NAME [--topology FILE] [--data DIR]`; the topology is read only for the data
/// folder and the keys file, and may lack keys (they are being made).
struct KeySelection: ParsableArguments {
    @Option(name: .long, help: "The topology file ($CE_TOPOLOGY when set).")
    var topology: String = ProcessInfo.processInfo.environment["CE_TOPOLOGY"] ?? "topology/demo.yaml"
    @Option(name: .long, help: "The node's name (default: $CE_NODE).")
    var node: String?
    @Option(name: .long, help: "The node's data folder (default: the topology's).")
    var data: String?

    /// The node and its data folder. `allowingNew`: a node not in the topology yet (a host
    /// joining) gets the folder its entry would default to, `.ce-data/<name>` beside the file.
    func resolve(allowingNew: Bool = false) throws -> (name: String, data: String) {
        guard let name = node ?? ProcessInfo.processInfo.environment["CE_NODE"] else {
            throw ValidationError("say which node: --node NAME")
        }
        if let data { return (name, data) }
        let topology = try load()
        if allowingNew, topology.node(named: name) == nil, Name.isValid(name) {
            let folder = URL(fileURLWithPath: self.topology).deletingLastPathComponent().standardizedFileURL.path
            return (name, folder + "/.ce-data/" + name)
        }
        guard let spec = topology.node(named: name) else {
            throw ValidationError("no node \"\(name)\" in \(self.topology) (nodes: \(topology.nodes.map(\.name).joined(separator: ", ")))")
        }
        return (name, spec.data)
    }

    func load() throws -> Topology {
        do { return try TopologyLoader.load(path: topology) } catch { throw ValidationError("\(error)") }
    }

    func keysFile() throws -> String {
        guard let file = try load().settings.keysFile else {
            throw ValidationError("\(topology) has no settings.keys_file: add one (a path relative to the topology), or put the printed key into the node's public_key:")
        }
        return file
    }
}

/// Writes a node's new secret key (`next`: the key it rotates to) and, with `listAs`, lists
/// its public key under that name in the topology's keys file. The keys file is edited
/// first and the secret key put in place after (one rename): when the keys file cannot be
/// edited, the old key stays, the one the keys file still lists.
func writeKey(_ selection: KeySelection, node name: String, data: String, force: Bool, next: Bool, listAs entry: String?) throws -> CurveKeyPair {
    let key: NodeKeyFile.Prepared
    do { key = try NodeKeyFile.prepare(dataDirectory: data, node: name, force: force, next: next) } catch {
        throw ValidationError("\(error)")
    }
    if let entry {
        do {
            let file = try selection.keysFile()
            try KeysFile.set(node: entry, publicKey: key.pair.publicKey, in: file)
            FileHandle.standardError.write(Data("listed its public key as \(entry) in \(file)\n".utf8))
        } catch {
            key.discard()
            throw ValidationError("cannot update the keys file: \(error); the \(next ? "next " : "")secret key of \(name) is unchanged")
        }
    }
    do { try key.commit() } catch {
        throw ValidationError("\(error)" + (entry != nil ? " (the keys file lists the new public key already: run this command again)" : ""))
    }
    let path = NodeKeyFile.path(dataDirectory: data, next: next)
    FileHandle.standardError.write(Data("wrote the \(next ? "next " : "")secret key of \(name) to \(path) (mode 0600)\n".utf8))
    return key.pair
}
