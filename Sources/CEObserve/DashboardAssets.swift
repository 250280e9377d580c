// The dashboard's page, script and style, embedded in the binary so that `ce-node` is one
// file (a container image or a host needs nothing beside it). Plain HTML, JavaScript and CSS:
// no build step, nothing fetched from elsewhere; edit them here.

enum DashboardAssets {
    /// The page; `<!--initial-->` is replaced by the picture of the moment.
    static let indexHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coordination bus · dashboard</title>
<link rel="stylesheet" href="/dashboard.css">
</head>
<body>
<header>
  <h1>coordination bus <span id="cluster"></span></h1>
  <div id="connection" class="conn" data-state="connecting">connecting…</div>
</header>
<main>
  <section id="nodes-section">
    <h2>Pools and nodes</h2>
    <div id="pools"></div>
  </section>
  <section id="timeline-section">
    <h2>Timeline <small id="timeline-note">last 5 minutes · ◆ gate passed · ▲ conflict · ✓ resolved</small></h2>
    <svg id="lanes" role="img" aria-label="events by pool over time"></svg>
    <ol id="timeline"></ol>
  </section>
  <div class="two">
    <section id="gates-section">
      <h2>Quality gates</h2>
      <table id="gates"><thead><tr><th>Gate</th><th>Round</th><th>Aligned</th><th>Missing</th><th>Waiting</th><th>State</th></tr></thead><tbody></tbody></table>
    </section>
    <section id="conflicts-section">
      <h2>Open conflicts</h2>
      <table id="conflicts"><thead><tr><th>Subject</th><th>Parties</th><th>Resolver</th><th>Level</th><th>Open</th><th id="decide-head">Decide as human</th></tr></thead><tbody></tbody></table>
      <p id="resolve-note" class="note" hidden></p>
      <form id="token-form" class="note" hidden><label>HTTP token <input id="token-input" type="password" autocomplete="off" aria-label="HTTP token"></label> <button>Use</button> kept in this tab only</form>
      <p id="token-set" class="note" hidden>HTTP token set for this tab <button type="button" id="token-forget">Forget</button></p>
      <p id="resolve-result" role="status"></p>
    </section>
  </div>
</main>
<footer id="footer"></footer>
<!--initial-->
<script src="/dashboard.js"></script>
</body>
</html>
"""#

    /// The page's script: renders snapshots, appends events, resolves conflicts.
    static let javaScript = #"""
// The live dashboard: one server-sent-event stream (/cluster/stream) carries `snapshot`
// (nodes, gates, conflicts; twice a second) and `ev` (each event once). No build step.
"use strict";
const palette = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#ff7b72", "#39c5cf", "#f778ba", "#a5d6ff", "#7ee787", "#ffa657"];
const colours = {};
function colour(pool) {
  if (pool === "coordinator") return "#c9d1d9";
  // In the topology's pool order (render() names them first), so each pool keeps its colour.
  if (!(pool in colours)) colours[pool] = palette[Object.keys(colours).length % palette.length];
  return colours[pool];
}
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "style") e.style.cssText = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}
function dur(s) {
  if (s == null) return "-";
  if (s < 120) return Math.round(s) + " s";
  if (s < 7200) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor(s / 60) % 60 + " min";
}
const num = (v) => (v == null ? "-" : String(v));

let snapshot = null;
let events = [];
const seen = new Set();
const markers = { gate_passed: "gate", gate_timed_out: "gate", conflict_detected: "conflict", resolution_needed: "conflict", conflict_resolved: "resolved", conflict_closed: "resolved" };

function renderNodes(s) {
  const byName = Object.fromEntries(s.nodes.map((n) => [n.name, n]));
  const pools = $("pools");
  pools.replaceChildren();
  for (const p of s.pools) {
    const members = el("div", { class: "members" });
    for (const name of p.nodes) {
      const n = byName[name];
      const dl = el("dl");
      const row = (k, v) => dl.append(el("dt", { text: k }), el("dd", { text: v }));
      if (n.reachable) {
        row("last seq", num(n.last_seq));
        row("lag", num(n.lag));
        row("emit / s", num(n.emit_rate));
        row("receive / s", num(n.receive_rate));
        row("peers up", num(n.peers_up) + " of " + num(n.peers));
        if (n.held) row("held", num(n.held));
        if (n.rejected) row("rejected", num(n.rejected));
      } else {
        row(n.observed ? "http" : "metrics port", n.observed ? "unreachable" : "none");
      }
      members.append(el("div", { class: "node", "data-node": n.name, "data-up": String(n.up), title: n.error || n.host },
        el("span", { class: "badge", text: n.up ? "up" : "down" }), el("div", { class: "name", text: n.name }), dl));
    }
    pools.append(el("div", { class: "pool", "data-pool": p.pool, style: "--c:" + colour(p.pool) }, el("h3", { text: p.pool }), members));
  }
}

function renderGates(s) {
  const body = $("gates").tBodies[0];
  body.replaceChildren();
  if (!s.coordinator_reachable) {
    body.append(el("tr", {}, el("td", { colspan: 6, class: "empty", text: s.coordinator ? "coordinator " + s.coordinator + " not reachable" : "no coordinator in this topology" })));
    return;
  }
  if (!s.gates.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "empty", text: "no gates" })));
  for (const g of s.gates) {
    const missing = el("td");
    g.missing.forEach((m, i) => {
      if (i) missing.append(", ");
      missing.append(el("span", { class: m.up ? "" : "missing-down", text: m.pool + (m.up ? "" : " (down)") }));
    });
    if (!g.missing.length) missing.textContent = "-";
    // An idle round has not started (no report yet): nothing is late and no clock runs.
    const idle = g.state === "idle";
    const state = g.blocked_by_conflict ? ["held", "held by a conflict"] : idle ? ["idle", "idle"]
      : g.missing.length ? ["waiting", "waiting " + dur(g.waiting_s)] : ["ready", "ready"];
    body.append(el("tr", { "data-gate": g.gate },
      el("td", { text: g.gate }), el("td", { text: num(g.round) }), el("td", { text: g.aligned.join(", ") || "-" }), missing,
      el("td", { text: idle ? "-" : dur(g.waiting_s) }), el("td", { class: "state-" + state[0], text: state[1] })));
  }
}

// Resolving needs the token of the topology's settings.http_token_file (snapshot.resolve is
// "token"); without one the server refuses it and the page shows conflicts read-only. The
// token is typed in once and kept in this tab's sessionStorage; the server never sends it.
const tokenKey = "ce-http-token";
const token = () => sessionStorage.getItem(tokenKey) || "";
const canResolve = (s) => s && s.resolve === "token";

function renderAccess(s) {
  const writable = canResolve(s), known = token() !== "";
  $("decide-head").hidden = !writable;
  $("resolve-note").hidden = writable;
  $("resolve-note").textContent = writable ? "" : "Read-only: resolving from this page needs settings.http_token_file in the topology (docs/PROTOCOL.md); meanwhile ce-node resolve on the coordinator's host does it.";
  $("token-form").hidden = !writable || known;
  $("token-set").hidden = !writable || !known;
}
$("token-form").onsubmit = (e) => {
  e.preventDefault();
  const typed = $("token-input").value.trim();
  if (typed) sessionStorage.setItem(tokenKey, typed);
  $("token-input").value = "";
  renderAccess(snapshot);
};
$("token-forget").onclick = () => { sessionStorage.removeItem(tokenKey); renderAccess(snapshot); };

function renderConflicts(s) {
  renderAccess(s);
  const body = $("conflicts").tBodies[0];
  const typing = document.activeElement && document.activeElement.closest && document.activeElement.closest("#conflicts");
  if (typing) return; // do not replace the field a person is typing in
  body.replaceChildren();
  const writable = canResolve(s), columns = writable ? 6 : 5;
  if (!s.conflicts.length) body.append(el("tr", {}, el("td", { colspan: columns, class: "empty", text: s.coordinator_reachable ? "no open conflicts" : "-" })));
  for (const c of s.conflicts) {
    let decide = null;
    if (writable) {
      const input = el("input", { placeholder: "decision", "aria-label": "decision for " + c.subject });
      const button = el("button", { text: "Resolve" });
      button.onclick = () => resolve(c.conflict_id, input.value, button);
      decide = el("td", {}, input, " ", button);
    }
    body.append(el("tr", { "data-conflict": c.conflict_id, title: c.conflict_id },
      el("td", { text: c.subject }), el("td", { text: c.parties.join(", ") }), el("td", { class: "resolver", text: c.resolver }),
      el("td", { text: num(c.level) }), el("td", { text: dur(c.open_s) }), decide));
  }
}

async function resolve(id, decision, button) {
  if (!decision.trim()) { $("resolve-result").textContent = "write a decision first"; return; }
  if (!token()) { $("resolve-result").textContent = "enter the HTTP token first"; $("token-input").focus(); return; }
  button.disabled = true;
  try {
    const r = await fetch("/resolve", { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer " + token() }, body: JSON.stringify({ conflict_id: id, decision }) });
    const body = await r.json();
    if (r.status === 401) { sessionStorage.removeItem(tokenKey); renderAccess(snapshot); }
    $("resolve-result").textContent = r.ok ? "resolved " + id + " (event " + body.event.id + ")"
      : r.status === 401 ? "the token was refused: enter it again" : "could not resolve: " + body.error;
  } catch (e) {
    $("resolve-result").textContent = "could not resolve: " + e;
  }
  button.disabled = false;
  document.activeElement.blur();
}

function addEvent(e) {
  if (seen.has(e.id)) return;
  seen.add(e.id);
  events.push(e);
  events.sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
  if (events.length > 400) for (const old of events.splice(0, events.length - 400)) seen.delete(old.id);
  const list = $("timeline");
  const mark = markers[e.type];
  const detail = e.payload && typeof e.payload === "object" ? (e.payload.gate || e.payload.subject || e.payload.decision || "") : "";
  const li = el("li", { class: "ev " + (mark || ""), "data-type": e.type, "data-id": e.id, style: "--c:" + colour(e.pool) },
    el("span", { class: "chip" }), el("span", { class: "t", text: e.timestamp.slice(11, 23) }),
    el("span", { text: e.origin + " #" + e.seq }), el("span", { class: "type", text: e.type }), el("span", { text: typeof detail === "string" ? detail : JSON.stringify(detail) }));
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
  drawLanes();
}

function drawLanes() {
  const svg = $("lanes");
  const w = svg.clientWidth || 1000, h = svg.clientHeight || 150;
  const pools = snapshot ? snapshot.pools.map((p) => p.pool) : [...new Set(events.map((e) => e.pool))];
  const lane = (h - 20) / Math.max(1, pools.length);
  const now = Date.now(), span = 5 * 60 * 1000, left = 90;
  const x = (t) => left + (w - left - 10) * (1 - (now - t) / span);
  let out = "";
  pools.forEach((p, i) => {
    const y = 10 + lane * i + lane / 2;
    out += `<line x1="${left}" x2="${w - 10}" y1="${y}" y2="${y}" stroke="#2a3440"/><text x="6" y="${y + 4}">${p.replace(/[<&]/g, "")}</text>`;
  });
  for (const e of events) {
    const t = Date.parse(e.timestamp);
    if (now - t > span) continue;
    const i = pools.indexOf(e.pool);
    const y = 10 + lane * (i < 0 ? 0 : i) + lane / 2, cx = x(t), c = colour(e.pool);
    const mark = markers[e.type];
    if (mark === "gate") out += `<path d="M${cx} ${y - 7} L${cx + 7} ${y} L${cx} ${y + 7} L${cx - 7} ${y} Z" fill="#3fb950" stroke="#0f1419"><title>${e.type} ${e.payload && e.payload.gate}</title></path>`;
    else if (mark === "conflict") out += `<path d="M${cx} ${y - 7} L${cx + 7} ${y + 6} L${cx - 7} ${y + 6} Z" fill="#f85149" stroke="#0f1419"><title>${e.type}</title></path>`;
    else if (mark === "resolved") out += `<text x="${cx - 5}" y="${y + 5}" style="fill:#58a6ff;font-size:14px">✓</text>`;
    else out += `<circle cx="${cx}" cy="${y}" r="4" fill="${c}"><title>${e.origin} ${e.type}</title></circle>`;
  }
  svg.innerHTML = out;
}

function render(s) {
  snapshot = s;
  for (const p of s.pools) colour(p.pool);
  $("cluster").textContent = s.cluster;
  renderNodes(s);
  renderGates(s);
  renderConflicts(s);
  for (const e of s.timeline || []) addEvent(e);
  drawLanes();
  $("footer").textContent = "updated " + s.generated + " · " + s.clients + " dashboard clients · " + s.dropped + " updates dropped for slow clients";
}

function connect() {
  const source = new EventSource("/cluster/stream");
  source.addEventListener("snapshot", (m) => render(JSON.parse(m.data)));
  source.addEventListener("ev", (m) => addEvent(JSON.parse(m.data)));
  source.onopen = () => { $("connection").dataset.state = "live"; $("connection").textContent = "live"; };
  source.onerror = () => { $("connection").dataset.state = "lost"; $("connection").textContent = "reconnecting…"; };
}
if (window.ceInitial) render(window.ceInitial);
connect();
setInterval(drawLanes, 2000);
"""#

    /// The page's style.
    static let css = #"""
:root { --bg: #0f1419; --panel: #171e26; --line: #2a3440; --text: #d8dee6; --dim: #8593a3; --up: #3fb950; --down: #f85149; --warn: #d29922; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
header { display: flex; justify-content: space-between; align-items: center; padding: 10px 18px; border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0; font-weight: 600; }
h1 span { color: var(--dim); font-weight: 400; }
h2 { font-size: 15px; margin: 0 0 8px; font-weight: 600; }
h2 small { color: var(--dim); font-weight: 400; margin-left: 8px; }
main { padding: 12px 18px; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px; margin-bottom: 12px; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
.two section { margin-bottom: 0; }
.conn { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: var(--line); }
.conn[data-state=live] { background: #12361c; color: var(--up); }
.conn[data-state=lost] { background: #3d1417; color: var(--down); }
#pools { display: flex; flex-wrap: wrap; gap: 10px; }
.pool { border-left: 4px solid var(--c); padding-left: 8px; }
.pool h3 { margin: 0 0 6px; font-size: 13px; color: var(--c); }
.pool .members { display: flex; gap: 8px; flex-wrap: wrap; }
.node { background: var(--bg); border: 1px solid var(--line); border-radius: 5px; padding: 6px 9px; min-width: 190px; font-size: 12px; }
.node .name { font-weight: 600; font-size: 13px; }
.node .badge { float: right; font-size: 11px; padding: 0 6px; border-radius: 8px; }
.node[data-up=true] .badge { background: #12361c; color: var(--up); }
.node[data-up=false] .badge { background: #3d1417; color: var(--down); }
.node dl { display: grid; grid-template-columns: auto auto; gap: 0 10px; margin: 4px 0 0; }
.node dt { color: var(--dim); }
.node dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
#lanes { width: 100%; height: 150px; display: block; background: var(--bg); border-radius: 4px; }
#lanes text { fill: var(--dim); font-size: 11px; }
#timeline { list-style: none; margin: 8px 0 0; padding: 0; max-height: 230px; overflow-y: auto; font-size: 12px; font-family: ui-monospace, monospace; }
#timeline li { padding: 1px 0; border-bottom: 1px solid #1d252e; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
#timeline .chip { display: inline-block; width: 9px; height: 9px; border-radius: 2px; background: var(--c); margin-right: 6px; }
#timeline .t { color: var(--dim); margin-right: 8px; }
#timeline .type { font-weight: 600; margin: 0 6px; }
#timeline li.gate { background: #1b2a1d; }
#timeline li.conflict { background: #2f1d1f; }
#timeline li.resolved { background: #1d2635; }
table { width: 100%; border-collapse: collapse; font-size: 12px; }
th { text-align: left; color: var(--dim); font-weight: 500; border-bottom: 1px solid var(--line); padding: 3px 4px; }
td { padding: 4px; border-bottom: 1px solid #1d252e; vertical-align: top; }
.missing-down { color: var(--down); }
.state-ready { color: var(--up); }
.state-idle { color: var(--dim); }
.state-waiting { color: var(--warn); }
.state-held { color: var(--down); }
td input { width: 140px; background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 3px; padding: 2px 4px; }
td button { background: #1f6feb; color: white; border: 0; border-radius: 3px; padding: 3px 8px; cursor: pointer; }
.empty { color: var(--dim); font-style: italic; }
.note { color: var(--dim); font-size: 12px; margin: 8px 0 0; }
.note input { width: 180px; background: var(--bg); color: var(--text); border: 1px solid var(--line); border-radius: 3px; padding: 2px 4px; }
.note button { background: var(--line); color: var(--text); border: 0; border-radius: 3px; padding: 2px 8px; cursor: pointer; }
footer { color: var(--dim); font-size: 11px; padding: 0 18px 12px; }
"""#
}
