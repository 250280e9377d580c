import CECore
import CENode
import CoreMetrics
import Foundation
import Prometheus

/// The process-wide metrics set-up of `ce-node run`: a Prometheus registry behind
/// swift-metrics, with histogram buckets that fit the bus (sub-millisecond emits and commits).
public enum Observability {
    /// Durations from 50 µs to 10 s.
    public static let durationBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(10),
    ]
    /// Events per store transaction (the writer takes at most 2000).
    public static let batchBuckets: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]
    /// Seconds a gate waited before it passed.
    public static let gateWaitBuckets: [Double] = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]

    /// A factory writing into `registry`, with the bus's buckets.
    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        factory.valueHistogramBuckets["ce_store_commit_batch_events"] = batchBuckets
        return factory
    }

    /// Bootstraps swift-metrics for the process (once: swift-metrics allows one bootstrap per
    /// process) and returns the registry `/metrics` renders.
    public static func bootstrap() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(factory(registry: registry))
        return registry
    }
}

/// Gauges that are read, not counted: set from the node's status (and the coordinator's) each
/// time `/metrics` is scraped, so they cost nothing on the event path.
struct ScrapeGauges: Sendable {
    let registry: PrometheusCollectorRegistry

    func update(node: Node, coordinator: CoordinatorService?, hub: Hub, clusterHub: Hub?) {
        let status = node.status()
        registry.gauge("ce_node_last_seq", help: "This node's last event sequence").set(status["last_seq"]?.intValue ?? 0)
        for peer in status["peers"]?.arrayValue ?? [] {
            guard let name = peer["name"]?.stringValue else { continue }
            let labels = [("peer", name), ("pool", peer["pool"]?.stringValue ?? "")]
            registry.gauge("ce_peer_up", labels, help: "1 while the peer's heartbeats arrive").set(peer["up"]?.boolValue == true ? 1 : 0)
            if let ms = peer["last_heard_ms"]?.doubleValue {
                registry.gauge("ce_peer_last_heard_seconds", labels, help: "Seconds since the peer's last heartbeat").set(ms / 1000)
            }
            if let last = peer["last_seq"]?.intValue, let cursor = peer["cursor"]?.intValue {
                registry.gauge("ce_peer_lag_events", labels, help: "The peer's last sequence minus this node's cursor on it")
                    .set(max(0, last - cursor))
            }
            if let waiting = peer["waiting"]?.intValue {
                registry.gauge("ce_peer_held_events", labels, help: "Live events of the peer held behind a gap").set(waiting)
            }
        }
        registry.gauge("ce_http_stream_clients", [("stream", "events")], help: "Clients connected to an event stream")
            .set(hub.clientCount)
        registry.gauge("ce_http_stream_dropped", [("stream", "events")], help: "Stream updates dropped for slow clients since start")
            .set(hub.droppedCount)
        if let clusterHub {
            registry.gauge("ce_http_stream_clients", [("stream", "dashboard")], help: "Clients connected to an event stream")
                .set(clusterHub.clientCount)
            registry.gauge("ce_http_stream_dropped", [("stream", "dashboard")], help: "Stream updates dropped for slow clients since start")
                .set(clusterHub.droppedCount)
        }
        guard let coordinator else { return }
        let coordination = coordinator.status()
        for gate in coordination["gates"]?.arrayValue ?? [] {
            guard let name = gate["gate"]?.stringValue else { continue }
            let labels = [("gate", name)]
            registry.gauge("ce_gate_waiting_seconds", labels, help: "Seconds the gate's current round has been open")
                .set(gate["waiting_s"]?.doubleValue ?? 0)
            registry.gauge("ce_gate_missing_pools", labels, help: "Pools the gate's current round still waits for")
                .set(gate["missing"]?.arrayValue?.count ?? 0)
            registry.gauge("ce_gate_round", labels, help: "The gate's current round").set(gate["round"]?.intValue ?? 0)
        }
        let conflicts = coordination["conflicts"]?.arrayValue ?? []
        registry.gauge("ce_conflicts_open", help: "Open conflicts").set(conflicts.count)
        registry.gauge("ce_conflict_oldest_age_seconds", help: "Age of the oldest open conflict (0: none open)")
            .set(conflicts.compactMap { $0["open_s"]?.doubleValue }.max() ?? 0)
        registry.gauge("ce_conflict_max_escalation_level", help: "Highest escalation level among open conflicts (0: first resolver)")
            .set(conflicts.compactMap { $0["level"]?.intValue }.max() ?? 0)
    }

    /// A gate passed: how long its round waited.
    func gatePassed(_ event: Event) {
        guard let gate = event.payload["gate"]?.stringValue, let waited = event.payload["waited_s"]?.doubleValue else { return }
        registry.makeValueHistogram(
            descriptor: .init(metricName: "ce_gate_wait_seconds", unitName: "", helpText: "Seconds a gate round waited before it passed"),
            labels: [("gate", gate)], buckets: Observability.gateWaitBuckets).record(waited)
    }
}

extension Prometheus.Gauge {
    func set(_ value: Int) { set(Double(value)) }
}

extension PrometheusCollectorRegistry {
    /// The gauge named `name` (whole: the bus's names carry their unit already), with `labels`.
    func gauge(_ name: String, _ labels: [(String, String)] = [], help: String) -> Prometheus.Gauge {
        makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }
}
