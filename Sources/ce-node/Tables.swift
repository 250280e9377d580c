import CECore
import Foundation

/// What `status`, `gates` and `conflicts` print for a person: a heading, aligned `key: value`
/// lines and boxed tables, as the `nats` CLI does; `history` and `tail` print a line an event.
/// `--json` prints the data instead.
enum Tables {
    /// Payloads longer than this are cut (with …) in ``event(_:)``.
    static let payloadWidth = 120

    /// One event on one line, as `history` and `tail` print it:
    ///
    ///     2026-11-25T10:00:00.123Z  planner-1#12  plan_ready  stream=planner  target=builder  {"feature":"login"}
    ///
    /// time, origin#sequence, type, then the optional fields that are set, then the payload as
    /// compact JSON (none when it is null).
    static func event(_ e: JSONValue) -> String {
        var parts = [
            e["timestamp"]?.stringValue ?? "?", (e["origin"]?.stringValue ?? "?") + "#" + number(e["seq"]),
            e["event_type"]?.stringValue ?? "?",
        ]
        for (label, key) in [("stream", "stream"), ("target", "target"), ("correlation", "correlation_id")] {
            if let value = e[key]?.stringValue { parts.append(label + "=" + value) }
        }
        if let payload = e["payload"], payload != .null { parts.append(clip(payload.serializedString, to: payloadWidth)) }
        return parts.joined(separator: "  ")
    }

    /// `text` if it has at most `width` characters, else its first `width - 1` and "…".
    static func clip(_ text: String, to width: Int) -> String {
        text.count <= width ? text : String(text.prefix(width - 1)) + "…"
    }

    /// A boxed table with a title row; cells are plain text.
    static func table(_ title: String, _ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        let inner = widths.reduce(0, +) + 3 * widths.count - 1
        let total = max(inner, title.count + 2)
        if total > inner { widths[widths.count - 1] += total - inner }
        func line(_ left: String, _ mid: String, _ right: String) -> String {
            left + widths.map { String(repeating: "─", count: $0 + 2) }.joined(separator: mid) + right + "\n"
        }
        func row(_ cells: [String]) -> String {
            "│" + cells.enumerated().map { " " + $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) + " " }.joined(separator: "│") + "│\n"
        }
        let pad = total - title.count
        var out = "╭" + String(repeating: "─", count: total) + "╮\n"
        out += "│" + String(repeating: " ", count: pad / 2) + title + String(repeating: " ", count: pad - pad / 2) + "│\n"
        out += line("├", "┬", "┤") + row(header) + line("├", "┼", "┤")
        for r in rows { out += row(r) }
        out += line("╰", "┴", "╯")
        return out
    }

    /// `key: value` lines, keys right-aligned, as `nats stream info` prints them.
    static func fields(_ pairs: [(String, String)]) -> String {
        let width = pairs.map(\.0.count).max() ?? 0
        return pairs.map { String(repeating: " ", count: width - $0.0.count + 2) + $0.0 + ": " + $0.1 + "\n" }.joined()
    }

    static func number(_ value: JSONValue?) -> String {
        guard let n = value?.doubleValue else { return "-" }
        return n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(format: "%.1f", n)
    }

    static func ago(milliseconds: Double?) -> String {
        guard let ms = milliseconds else { return "never" }
        if ms < 1000 { return "\(Int(ms)) ms ago" }
        if ms < 120_000 { return String(format: "%.1f s ago", ms / 1000) }
        return "\(Int(ms / 60_000)) min ago"
    }

    static func duration(seconds: Double?) -> String {
        guard let s = seconds else { return "-" }
        if s < 120 { return "\(Int(s)) s" }
        if s < 7200 { return "\(Int(s / 60)) min \(Int(s) % 60) s" }
        return "\(Int(s / 3600)) h \(Int(s / 60) % 60) min"
    }

    static func status(_ status: JSONValue) -> String {
        let name = status["node"]?.stringValue ?? "?"
        var out = "Node \(name) (pool \(status["pool"]?.stringValue ?? "?")), last sequence \(number(status["last_seq"]))\n\n"
        let subscriptions: String
        if let list = status["subscriptions"]?.arrayValue {
            subscriptions = list.compactMap(\.stringValue).joined(separator: ", ")
        } else {
            subscriptions = status["subscriptions"]?.stringValue ?? "?"
        }
        let peers = status["peers"]?.arrayValue ?? []
        let up = peers.filter { $0["up"]?.boolValue == true }.count
        var lines = [
            ("Peers up", "\(up) of \(peers.count)"), ("Subscriptions", subscriptions),
            ("Publishes", status["endpoints"]?["pub"]?.stringValue ?? "?"), ("Store", status["store"]?.stringValue ?? "?"),
            ("Epoch", status["epoch"]?.stringValue.map { $0.isEmpty ? "(none: a store made before epochs)" : $0 } ?? "?"),
        ]
        if let c = status["coordinator"], c != .null {
            var text = "\(c["active"]?.stringValue ?? "none") is active, term \(number(c["term"]))"
            if let standby = c["standby"]?.stringValue { text += " (standby \(standby) in the topology)" }
            if let since = c["since"]?.stringValue { text += "; since \(since): \(c["reason"]?.stringValue ?? "")" }
            lines.append(("Coordinator", text))
        }
        if let refill = status["refill"], refill != .null {
            let state = refill["done"]?.boolValue == true ? "done" : "under way"
            lines.append(("Refill", "\(state): \(number(refill["events"])) events of \(number(refill["lines"])) lines, \(number(refill["peers_answered"])) peers answered"))
        }
        out += fields(lines)
        out += "\n"
        let rows: [[String]] = peers.map { p in
            let last = p["last_seq"]?.intValue, cursor = p["cursor"]?.intValue
            let lag = (last != nil && cursor != nil) ? String(max(0, last! - cursor!)) : "-"
            var state = p["up"]?.boolValue == true ? "up" : "DOWN"
            if p["replaying"]?.boolValue == true { state += ", replaying" }
            return [
                p["name"]?.stringValue ?? "?", p["pool"]?.stringValue ?? "?", state,
                ago(milliseconds: p["last_heard_ms"]?.doubleValue), number(p["last_seq"]), number(p["cursor"]), lag,
                number(p["waiting"]),
            ]
        }
        out += table("Peers of \(name)", ["Peer", "Pool", "State", "Last heard", "Last seq", "Cursor", "Lag", "Held"], rows)
        // Every line held here (an origin's events in one epoch), and how far peers hold it.
        let held: [[String]] = (status["lines"]?.arrayValue ?? []).map { l in
            let epoch = l["epoch"]?.stringValue ?? ""
            let holders = (l["held_by"]?.objectValue ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) \(number($0.value))" }
            var state = l["current"]?.boolValue == true ? "current" : "older"
            if l["replaying"]?.boolValue == true { state += ", replaying" }
            return [l["origin"]?.stringValue ?? "?", epoch.isEmpty ? "-" : String(epoch.suffix(12)), number(l["through"]), state,
                    holders.isEmpty ? "-" : holders.joined(separator: ", ")]
        }
        out += "\n" + table("Lines held by \(name)", ["Origin", "Epoch (end)", "Through", "State", "Held by peers"], held)
        let c = status["counters"]
        out += "\nCounters:\n\n"
        out += fields([
            ("Emitted", number(c?["emitted"])), ("Received", number(c?["received"])),
            ("Duplicates", number(c?["duplicates"])), ("Rejected", number(c?["rejected"])),
            ("Replays", "\(number(c?["replays"])) (\(number(c?["replay_requests"])) requests, \(number(c?["replayed_in"])) events in, \(number(c?["replayed_out"])) served)"),
            ("Held events dropped", "\(number(c?["pending_dropped"])) (live stream paused \(number(c?["live_pauses"])) times)"),
            ("Asks", "\(number(c?["asks_sent"])) sent, \(number(c?["asks_failed"])) failed"),
            ("Questions answered", "\(number(c?["questions_answered"])) (\(number(c?["repeated_questions"])) repeated)"),
            ("Listener drops", number(c?["listener_drops"])),
        ])
        return out
    }

    static func gates(_ gates: JSONValue) -> String {
        let list = gates.arrayValue ?? []
        if list.isEmpty { return "No gates in this topology\n" }
        let rows: [[String]] = list.map { g in
            let aligned = (g["aligned"]?.arrayValue ?? []).compactMap(\.stringValue)
            let missing = (g["missing"]?.arrayValue ?? []).map { m in
                (m["pool"]?.stringValue ?? "?") + (m["up"]?.boolValue == false ? " (down)" : "")
            }
            // An idle round has not started: nobody is late for it, and no clock runs.
            let idle = g["state"]?.stringValue == "idle"
            var state = idle ? "idle" : missing.isEmpty ? "ready" : "waiting"
            if g["blocked_by_conflict"]?.boolValue == true { state = "held by a conflict" }
            return [
                g["gate"]?.stringValue ?? "?", number(g["round"]), aligned.isEmpty ? "-" : aligned.joined(separator: ", "),
                missing.isEmpty ? "-" : missing.joined(separator: ", "), idle ? "-" : duration(seconds: g["waiting_s"]?.doubleValue), state,
            ]
        }
        return table("Quality gates", ["Gate", "Round", "Aligned", "Missing", "Waiting", "State"], rows)
    }

    static func conflicts(_ conflicts: JSONValue) -> String {
        let list = conflicts.arrayValue ?? []
        if list.isEmpty { return "No open conflicts\n" }
        let rows: [[String]] = list.map { c in
            [
                c["conflict_id"]?.stringValue ?? "?", c["subject"]?.stringValue ?? "?",
                (c["parties"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: ", "),
                c["resolver"]?.stringValue ?? "?", number(c["level"]), duration(seconds: c["open_s"]?.doubleValue), number(c["reports"]),
            ]
        }
        return table("Open conflicts", ["ID", "Subject", "Parties", "Resolver", "Level", "Open", "Reports"], rows)
            + "\nResolve one as a person with: ce-node resolve ID --decision TEXT\n"
    }
}
