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
  let line = "";
  if (s.coordinator_reachable) {
    line = "Decided by " + s.coordinator + (s.term != null ? " (term " + s.term + ")" : "");
    if (s.standby) line += "; standby " + s.standby;
    const t = s.last_takeover;
    if (t) line += "; since " + t.at + ": " + t.reason;
  }
  $("coordinator-line").textContent = line;
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
