// The Quayside risk dashboard: panels from /api/summary, live rows over /api/events (SSE),
// charts with plotly (served by the dashboard itself), controls with a confirm step.
"use strict";

const LIMITS = ["MAX_ORDER_QTY", "MAX_ORDER_NOTIONAL", "PRICE_COLLAR_PCT", "PRICE_COLLAR_TICKS", "MAX_LONG_POSITION",
  "MAX_SHORT_POSITION", "MAX_MESSAGES_PER_WINDOW", "MESSAGE_WINDOW_NS", "STALE_QUOTE_NS", "FILL_LATCH_COUNT",
  "FILL_LATCH_WINDOW_NS", "DUPLICATE_WINDOW_NS"];
const MAX_ROWS = 500;
const $ = (id) => document.getElementById(id);

// What tests and the benchmark read: when each fill reached the page (ms since the epoch).
window.quayside = { fillsShown: [], summaries: 0, rows: 0 };

const state = { newest: 0, rows: [], instruments: [], lastCharts: -Infinity, lastEquity: -Infinity, drawn: {} };  // charts at once on load
const CHART_EVERY_MS = 5000;  // plotly redraws block the page for tens of ms: fills come first

// Rebuild a panel only when its data changed (a fill must never wait behind a redraw).
function changed(key, value) {
  const text = JSON.stringify(value);
  if (state.drawn[key] === text) return false;
  state.drawn[key] = text;
  return true;
}

function fmt(x, digits = 2) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  x += 0;  // no "-0"
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e9)) return x.toExponential(3);
  return x.toLocaleString(undefined, { maximumFractionDigits: a < 10 ? 6 : digits });
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fillBody(tbody, rows, build) {
  const frag = document.createDocumentFragment();
  for (const r of rows) frag.appendChild(build(r));
  tbody.replaceChildren(frag);
}

// ------------------------------------------------------------------ blotter

function blotterRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.seq = r.seq;
  tr.dataset.kind = r.kind;
  if (r.fill_id !== null) tr.dataset.fillId = r.fill_id;
  cell(tr, r.seq, "num");
  cell(tr, r.at ? r.at.slice(11, 23) : "");
  cell(tr, r.kind);
  cell(tr, r.strategy_id);
  cell(tr, r.instrument);
  cell(tr, r.order_id ?? "");
  cell(tr, r.side ?? "");
  cell(tr, fmt(r.quantity), "num");
  cell(tr, fmt(r.price), "num");
  cell(tr, r.status ?? "");
  cell(tr, r.reason ?? "");
  cell(tr, r.detail);
  return tr;
}

function addRows(rows) {
  const tbody = $("blotter").tBodies[0];
  for (const r of rows) {
    if (state.rows.some((x) => x.seq === r.seq)) continue;
    const tr = blotterRow(r);
    if (!state.rows.length || r.seq > state.rows[0].seq) {
      state.rows.unshift(r);
      tbody.insertBefore(tr, tbody.firstChild);
    } else {  // older than the newest shown (a reload racing the stream): put it in its place
      const at = state.rows.findIndex((x) => x.seq < r.seq);
      const pos = at < 0 ? state.rows.length : at;
      state.rows.splice(pos, 0, r);
      tbody.insertBefore(tr, tbody.children[pos] || null);
    }
    if (r.kind === "fill") window.quayside.fillsShown.push([r.fill_id, performance.timeOrigin + performance.now()]);
    window.quayside.rows += 1;
    state.newest = Math.max(state.newest, r.seq);
  }
  while (state.rows.length > MAX_ROWS) {
    state.rows.pop();
    tbody.removeChild(tbody.lastChild);
  }
}

async function loadBlotter() {
  const res = await fetch(`/api/blotter?since=${state.newest}&limit=${MAX_ROWS}`);
  if (res.ok) addRows((await res.json()).rows);
}

// ------------------------------------------------------------------ panels

function renderSummary(s) {
  window.quayside.summaries += 1;
  const t = s.trading;
  const badge = $("trading-state");
  badge.dataset.state = t.state || "";
  badge.textContent = `state: ${t.state || "unknown"}` +
    Object.entries(t.instrument_states).map(([k, v]) => ` · ${k} ${v}`).join("");
  $("latch").hidden = !t.fill_latch_engaged;
  $("feed-time").textContent = s.feed_time ? `feed ${s.feed_time.slice(0, 19)}Z` : "no feed yet";
  $("ccy").textContent = s.account_currency;
  const e = s.equity, tot = s.totals;
  const cards = [["total", tot.total], ["realized", tot.realized], ["unrealized", tot.unrealized],
    ["today", tot.daily], ["fees", tot.fees], ["drawdown", e.drawdown], ["equity", e.equity],
    ["high-water mark", e.high_water_mark], ["working orders", t.working_orders]];
  $("pnl").replaceChildren(...cards.map(([k, v]) => {
    const d = document.createElement("div");
    d.innerHTML = "<dt></dt><dd></dd>";
    d.firstChild.textContent = k;
    d.lastChild.textContent = fmt(v);
    if (typeof v === "number" && k !== "working orders") d.lastChild.className = v < 0 ? "neg" : v > 0 ? "pos" : "";
    return d;
  }));
  if (changed("positions", s.positions)) fillBody($("positions").tBodies[0], s.positions, (p) => {
    const tr = document.createElement("tr");
    tr.dataset.instrument = p.instrument;
    cell(tr, p.strategy_id);
    cell(tr, p.instrument);
    cell(tr, fmt(p.quantity), "num");
    cell(tr, fmt(p.avg_price), "num");
    cell(tr, fmt(p.mark), "num");
    cell(tr, fmt(p.unrealized), "num");
    cell(tr, fmt(p.realized), "num");
    cell(tr, fmt(p.total), "num");
    cell(tr, fmt(p.fees), "num");
    return tr;
  });
  const limits = s.limits.filter((l) => l.used !== null || l.instrument === "all");
  if (changed("limits", limits)) fillBody($("limits").tBodies[0], limits, (l) => {
    const tr = document.createElement("tr");
    cell(tr, l.limit);
    cell(tr, l.instrument);
    cell(tr, l.value === null ? "none" : fmt(l.value), "num");
    cell(tr, fmt(l.used), "num");
    const td = cell(tr, l.utilisation === null ? "–" : `${(100 * l.utilisation).toFixed(1)}% `);
    if (l.utilisation !== null) {
      const bar = document.createElement("span");
      const u = Math.min(l.utilisation, 1);
      bar.className = "bar" + (u >= 1 ? " full" : u >= 0.8 ? " high" : "");
      bar.style.width = `${Math.round(60 * u)}px`;
      td.appendChild(bar);
    }
    cell(tr, l.peak_today === null ? "" : `${(100 * l.peak_today).toFixed(1)}%`, "num");
    return tr;
  });
  renderHealth(s.health);
  const status = $("controls-status");
  status.textContent = s.controls.enabled ? `Controls enabled: ${s.controls.detail}` : s.controls.detail;
  const instruments = [...new Set([...s.positions.map((p) => p.instrument), ...s.limits.map((l) => l.instrument)])]
    .filter((x) => x !== "all").sort();
  if (instruments.join() !== state.instruments.join()) {
    state.instruments = instruments;
    const sel = $("scope-instrument"), keep = sel.value;
    sel.replaceChildren(new Option("all", ""), ...instruments.map((i) => new Option(i, i)));
    sel.value = keep;
  }
  if (s.blotter_newest > state.newest && !state.loading) {
    state.loading = true;
    loadBlotter().finally(() => { state.loading = false; });
  }
  const now = performance.now();
  if (now - state.lastCharts > CHART_EVERY_MS) {
    state.lastCharts = now;
    if (changed("latency", s.latency)) whenIdle(() => renderLatency(s.latency));
    if (now - state.lastEquity > 2 * CHART_EVERY_MS) {
      state.lastEquity = now;
      fetch(`/api/equity?max_points=${EQUITY_POINTS}`).then((r) => r.json())
        .then((curve) => whenIdle(() => renderEquity(curve))).catch(() => {});
    }
  }
}

function renderHealth(h) {
  const rows = [
    ["feed", `${h.feed.source}, last record ${age(h.feed.age_s)}, ${h.feed.records} records, ${h.feed.lost} lost`, h.feed.stale],
    ["engine", `${h.engine.heartbeats} heartbeats, last ${age(h.engine.heartbeat_age_s)}, ${h.engine.starts} start(s)`, h.engine.stale],
    ["broker", `${h.broker.connected === null ? "unknown" : h.broker.connected ? "connected" : "DISCONNECTED"}, ` +
      `${h.broker.disconnects} disconnects, ${h.broker.reconciliation_breaks_open} open reconciliation breaks`,
      h.broker.connected === false || h.broker.reconciliation_breaks_open > 0],
    ...h.quotes.map((q) => [`quotes ${q.instrument}`, `last ${age(q.age_s)}` +
      (q.stale_after_s === null ? "" : ` (stale after ${q.stale_after_s} s)`), q.stale]),
  ];
  fillBody($("health").tBodies[0], rows, ([k, v, stale]) => {
    const tr = document.createElement("tr");
    tr.className = stale ? "stale" : "";
    tr.dataset.item = k;
    cell(tr, k);
    cell(tr, v + (stale ? " — STALE" : ""));
    return tr;
  });
}

function age(s) { return s === null ? "never" : s < 1 ? `${(1000 * s).toFixed(0)} ms ago` : `${s.toFixed(1)} s ago`; }

const PLOT = { paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: "#dde3ea", size: 11 },
  margin: { l: 50, r: 10, t: 10, b: 40 }, showlegend: true, legend: { orientation: "h" } };

// Chart redraws run on the main thread, like the stream's handlers: draw them when the page is
// idle, and few points, so that a fill is never queued behind a redraw.
const EQUITY_POINTS = 600;
function whenIdle(fn) {
  if (window.requestIdleCallback) window.requestIdleCallback(fn, { timeout: 2000 });
  else setTimeout(fn, 0);
}

function renderEquity(curve) {
  const x = curve.points.map((p) => new Date(p.ts_event / 1e6));
  Plotly.react("equity-chart", [
    { x, y: curve.points.map((p) => p.equity), name: "equity", type: "scatter", mode: "lines" },
    { x, y: curve.points.map((p) => -p.drawdown), name: "drawdown", type: "scatter", mode: "lines",
      fill: "tozeroy", yaxis: "y2", line: { color: "#f85149" } },
  ], { ...PLOT, yaxis: { domain: [0.35, 1], title: curve.account_currency }, yaxis2: { domain: [0, 0.28] } },
  { displayModeBar: false, responsive: true });
}

function renderLatency(lat) {
  const labels = lat.bounds_s.map((b) => `≤${b * 1e6 >= 1000 ? (b * 1e3) + " ms" : (b * 1e6) + " µs"}`).concat(["more"]);
  const traces = Object.entries(lat.tick_to_order).map(([stage, h]) =>
    ({ x: labels, y: h.counts, name: `${stage} (${h.count})`, type: "bar" }));
  Plotly.react("latency-chart", traces, { ...PLOT, barmode: "group", xaxis: { type: "category" } },
    { displayModeBar: false, responsive: true });
}

// ------------------------------------------------------------------ the stream

function connect() {
  const es = new EventSource("/api/events");
  const conn = $("connection");
  es.onopen = () => { conn.dataset.ok = "true"; conn.textContent = "live"; };
  es.onerror = () => { conn.dataset.ok = "false"; conn.textContent = "reconnecting…"; };
  es.addEventListener("summary", (ev) => renderSummary(JSON.parse(ev.data)));
  es.addEventListener("row", (ev) => addRows([JSON.parse(ev.data)]));
  es.addEventListener("resync", () => loadBlotter());
}

// ------------------------------------------------------------------ controls

function describe(action, body) {
  const scope = `${body.instrument || "all instruments"}, ${body.strategy_id ? "strategy " + body.strategy_id : "all strategies"}`;
  const what = {
    "halt": "KILL SWITCH: halt trading and cancel every working order",
    "reduce-only": "allow only position-reducing orders",
    "cancel-all": "cancel every working order (trading state unchanged)",
    "resume": "resume trading (also clears a fill-count latch)",
    "set-limit": `set ${body.limit} to ${body.value}`,
  }[action];
  return `${what} — scope: ${scope}. Send to the engine?`;
}

function ask(text) {
  const dlg = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "yes"), { once: true });
    dlg.returnValue = "";
    dlg.showModal();
  });
}

async function control(action) {
  const body = { instrument: $("scope-instrument").value || null,
    strategy_id: Number($("scope-strategy").value || 0), note: $("scope-note").value };
  if (action === "set-limit") {
    body.limit = $("limit-name").value;
    body.value = Number($("limit-value").value);
  }
  if (!(await ask(describe(action, body)))) return;
  const out = $("control-result");
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const res = await fetch(`/api/control/${action}`, { method: "POST", headers, body: JSON.stringify(body) });
    const data = await res.json();
    out.dataset.ok = String(res.ok);
    out.textContent = res.ok ? `${action} sent by ${data.operator} (command ${data.command_id}): ${data.detail}`
      : `${action} refused (${res.status}): ${typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)}`;
  } catch (err) {
    out.dataset.ok = "false";
    out.textContent = `${action} failed: ${err}`;
  }
}

function init() {
  $("limit-name").replaceChildren(...LIMITS.map((l) => new Option(l, l)));
  for (const b of document.querySelectorAll("button[data-action]")) b.addEventListener("click", () => control(b.dataset.action));
  connect();
}

document.addEventListener("DOMContentLoaded", init);
