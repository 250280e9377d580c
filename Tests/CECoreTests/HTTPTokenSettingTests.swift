import CECore
import Testing

@Suite("settings.http_token_file")
struct HTTPTokenSettingTests {
    static let nodes = """
        nodes:
          - { name: p-1, pool: p, host: 127.0.0.1, ports: { pub: 7000, rep: 7001 } }
        """

    @Test func theTokenFileIsFoundBesideTheTopology() throws {
        let relative = try TopologyLoader.parse(yaml: "version: 1\nsettings: { http_token_file: secrets/http.token }\n" + Self.nodes, file: "/etc/ce/topology.yaml")
        #expect(relative.settings.httpTokenFile == "/etc/ce/secrets/http.token")
        let absolute = try TopologyLoader.parse(yaml: "version: 1\nsettings: { http_token_file: /run/ce/token }\n" + Self.nodes, file: "/etc/ce/topology.yaml")
        #expect(absolute.settings.httpTokenFile == "/run/ce/token")
        let none = try TopologyLoader.parse(yaml: "version: 1\n" + Self.nodes, file: "/etc/ce/topology.yaml")
        #expect(none.settings.httpTokenFile == nil)
        let empty = #expect(throws: TopologyError.self) {
            try TopologyLoader.parse(yaml: "version: 1\nsettings: { http_token_file: \"\" }\n" + Self.nodes, file: "/etc/ce/topology.yaml")
        }
        #expect("\(empty!)".contains("settings.http_token_file"), "\(empty!)")
    }
}
