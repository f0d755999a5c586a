// sluice operations dashboard: loads the last 15 minutes of the fleet's activity from
// the server (GET /api/v1/admin/history), then polls the admin API once a second and
// draws the figures as small SVG line charts over time. No dependencies, no build step.
"use strict";

const KEY = "sluice.operatorKey";
const SPAN = 15 * 60 * 1000; // what the charts show: the last 15 minutes, in ms
const $ = (id) => document.getElementById(id);
const history = [];
let timer = null;
let limitsLoaded = false;
let historyLoaded = false;

function key() { return sessionStorage.getItem(KEY) || ""; }

function show(msg, ok) {
  const m = $("message");
  m.textContent = msg;
  m.className = ok ? "ok" : "";
  m.hidden = !msg;
}

async function api(method, path, body) {
  const opts = { method, headers: { Authorization: "Bearer " + key() } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch("/api/v1/admin/" + path, opts);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (res.status === 401 || res.status === 403) {
    logout((data && data.error) || "the operator key was refused");
    throw new Error("unauthorized");
  }
  if (!res.ok) {
    const why = data ? [data.error, data.hint].filter(Boolean).join(" — ") : res.statusText;
    throw new Error(why || ("HTTP " + res.status));
  }
  return data;
}

function login(k) {
  sessionStorage.setItem(KEY, k);
  $("login").hidden = true;
  $("main").hidden = false;
  $("forget").hidden = false;
  show("");
  limitsLoaded = false;
  historyLoaded = false;
  tick();
}

function logout(why) {
  sessionStorage.removeItem(KEY);
  clearTimeout(timer);
  $("main").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  setState("error", "signed out");
  show(why || "");
  $("key").focus();
}

function setState(cls, text) {
  const s = $("state");
  s.className = "pill " + cls;
  s.textContent = text;
}

async function tick() {
  clearTimeout(timer);
  if (!key()) return;
  try {
    const [stats, fleet] = await Promise.all([api("GET", "stats"), api("GET", "workers")]);
    if (!limitsLoaded) await loadLimits();
    if (!historyLoaded) await loadHistory();
    record(stats);
    render(stats, fleet.nodes || []);
    setState(stats.paused ? "paused" : "running", stats.paused ? "admission paused" : "admitting");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    if (e.message === "unauthorized") return;
    setState("error", "unreachable");
    $("updated").textContent = e.message;
  }
  timer = setTimeout(tick, 1000);
}

async function loadLimits() {
  const l = await api("GET", "limits");
  $("global-limit").value = l.global;
  $("tenant-default").value = l.tenant_default;
  limitsLoaded = true;
}

// loadHistory fills the charts with the server's 15 minutes of activity, so they never
// start empty. A second no ingress recorded levels for has no backlog or slots: those
// charts skip it.
async function loadHistory() {
  const h = await api("GET", "history");
  history.length = 0;
  for (const p of (h && h.points) || []) {
    const l = p.levels;
    history.push({
      at: Date.parse(p.at), admissions: p.admissions_per_second || 0, bytes: p.bytes_per_second || 0,
      p50: p.wait_p50_seconds || 0, p90: p.wait_p90_seconds || 0,
      ...(l ? { backlog: l.backlog, admissible: l.admissible_backlog, inUse: l.slots_in_use, limit: l.global_limit } : {}),
    });
  }
  historyLoaded = true;
}

function record(s) {
  const a = s.activity || {};
  const at = Date.parse(s.at) || Date.now();
  while (history.length && history[history.length - 1].at >= at) history.pop();
  history.push({
    at, backlog: s.backlog, admissible: s.admissible_backlog,
    inUse: s.slots_in_use, limit: s.global_limit,
    admissions: a.admissions_per_second || 0, bytes: a.bytes_per_second || 0,
    p50: a.wait_p50_seconds || 0, p90: a.wait_p90_seconds || 0,
  });
  while (history.length && history[0].at < at - SPAN) history.shift();
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}
function fmtNum(n) { return n >= 100 ? Math.round(n).toString() : (Math.round(n * 10) / 10).toString(); }
function fmtSecs(s) { return s >= 60 ? (s / 60).toFixed(1) + " min" : (Math.round(s * 100) / 100) + " s"; }

function render(s, nodes) {
  const a = s.activity || {};
  $("t-backlog").textContent = s.backlog;
  $("t-admissible").textContent = s.admissible_backlog + " admissible now";
  $("t-slots").textContent = s.slots_in_use + " / " + s.global_limit;
  $("t-paused").textContent = s.paused ? "paused" : "";
  $("t-admissions").textContent = fmtNum(a.admissions_per_second || 0);
  $("t-completions").textContent = fmtNum(s.completions_per_second || 0) + " downloads done/s";
  $("t-throughput").textContent = fmtBytes(a.bytes_per_second || 0) + "/s";
  $("t-streams").textContent = (s.edge_streams || 0) + " streams";
  $("t-wait").textContent = fmtSecs(a.wait_p50_seconds || 0) + " / " + fmtSecs(a.wait_p90_seconds || 0);
  $("t-wait99").textContent = "p99 " + fmtSecs(a.wait_p99_seconds || 0) + " over " + (a.admissions || 0) + " admissions";

  chart("c-backlog", [h => h.backlog, h => h.admissible]);
  chart("c-admissions", [h => h.admissions]);
  chart("c-slots", [h => h.inUse, null, h => h.limit]);
  chart("c-throughput", [h => h.bytes], fmtBytes);
  chart("c-wait", [h => h.p50, h => h.p90], fmtSecs);

  const tb = $("tenants");
  tb.replaceChildren(...Object.keys(s.tenants || {}).sort().map(name => {
    const t = s.tenants[name];
    return row([name, t.queued, t.in_use, t.limit || "none", t.weight]);
  }));
  const nb = $("nodes");
  const now = Date.now();
  nb.replaceChildren(...nodes.map(n => row([n.role, n.id, n.version, n.address, n.in_flight,
    Math.max(0, (now - Date.parse(n.last_beat)) / 1000).toFixed(1) + " s ago", ...cacheCells(n.cache)])));
}

// cacheCells are an edge cache's figures (GET /workers, from its heartbeat); blank
// for nodes without one.
function cacheCells(c) {
  if (!c) return ["", "", "", ""];
  return [c.hits + " / " + c.misses, c.hits + c.misses ? (c.hit_ratio * 100).toFixed(1) + " %" : "none yet",
    fmtBytes(c.bytes_from_cache), fmtBytes(c.bytes_from_origin)];
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = String(c);
    tr.appendChild(td);
  }
  return tr;
}

const SVG = "http://www.w3.org/2000/svg";
const W = 400, H = 140, PAD = 6;

function svgLine(cls, x1, y1, x2, y2) {
  const line = document.createElementNS(SVG, "line");
  line.setAttribute("class", cls);
  line.setAttribute("x1", x1); line.setAttribute("x2", x2);
  line.setAttribute("y1", y1); line.setAttribute("y2", y2);
  return line;
}

function clock(ms) { return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// axes adds, once, the labels around a chart: the scale on the left (0 and the top)
// and the times under it, every 5 minutes of the 15 shown.
function axes(svg) {
  const fig = svg.parentNode;
  let y = fig.querySelector(".yaxis"), x = fig.querySelector(".xaxis");
  if (!y) {
    y = document.createElement("div");
    y.className = "yaxis muted";
    y.append(document.createElement("span"), document.createElement("span"));
    fig.insertBefore(y, svg);
    x = document.createElement("div");
    x.className = "xaxis muted";
    for (let i = 0; i < 4; i++) x.appendChild(document.createElement("span"));
    fig.appendChild(x);
  }
  return { y: y.children, x: x.children };
}

// chart draws one polyline per series over the last 15 minutes, now on the right, on
// a scale from 0 to the largest value shown. A null series keeps its colour slot; a
// point without the series' figure (a second no ingress recorded levels for) is skipped.
function chart(id, series, fmt) {
  const svg = $(id);
  const now = history.length ? history[history.length - 1].at : Date.now();
  const has = (f, h) => typeof f(h) === "number";
  let peak = 0;
  for (const f of series) if (f) for (const h of history) if (has(f, h)) peak = Math.max(peak, f(h));
  const top = peak > 0 ? peak * 1.1 : 1;
  const kids = [svgLine("axis-line", 0, H - PAD, W, H - PAD), svgLine("axis-line", 0, 0, 0, H)];
  for (let g = 1; g < 4; g++) {
    const y = PAD + (H - 2 * PAD) * g / 4;
    kids.push(svgLine("grid", 0, y, W, y));
    kids.push(svgLine("grid", W * g / 3, 0, W * g / 3, H - PAD));
  }
  const last = [];
  let oldest = now;
  series.forEach((f, i) => {
    if (!f) return;
    const pts = history.filter(h => has(f, h)).map(h => {
      oldest = Math.min(oldest, h.at);
      const x = W - (now - h.at) / SPAN * W;
      const y = H - PAD - (H - 2 * PAD) * f(h) / top;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const pl = document.createElementNS(SVG, "polyline");
    pl.setAttribute("class", "s" + i);
    pl.setAttribute("points", pts.join(" "));
    kids.push(pl);
    last.push(history.length && has(f, history[history.length - 1]) ? f(history[history.length - 1]) : 0);
  });
  svg.replaceChildren(...kids);
  const ax = axes(svg);
  ax.y[0].textContent = (fmt || fmtNum)(top);
  ax.y[1].textContent = "0";
  for (let i = 0; i < 4; i++) ax.x[i].textContent = clock(now - SPAN + i * SPAN / 3);
  // For people: the scale; for tests: what is drawn.
  svg.dataset.samples = history.length;
  svg.dataset.oldest = new Date(oldest).toISOString();
  svg.dataset.last = JSON.stringify(last);
  svg.dataset.max = JSON.stringify(series.filter(Boolean).map(f => Math.max(0, ...history.filter(h => has(f, h)).map(f))));
  let label = svg.parentNode.querySelector(".max");
  if (!label) {
    label = document.createElement("span");
    label.className = "max muted";
    svg.parentNode.querySelector("figcaption").appendChild(label);
  }
  label.textContent = " · max " + (fmt || fmtNum)(peak);
}

function intOrNull(v) { return v === "" ? null : Number(v); }

async function act(what, fn) {
  try {
    await fn();
    show(what, true);
    tick();
  } catch (e) {
    if (e.message !== "unauthorized") show(e.message);
  }
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const k = $("key").value.trim();
  if (k) { $("key").value = ""; login(k); }
});
$("forget").addEventListener("click", () => logout("key forgotten"));
$("pause").addEventListener("click", () => act("admission paused", () => api("POST", "pause")));
$("resume").addEventListener("click", () => act("admission resumed", () => api("POST", "resume")));
$("limits-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = { global: intOrNull($("global-limit").value), tenant_default: intOrNull($("tenant-default").value) };
  act("limits applied: global " + body.global + ", per tenant " + (body.tenant_default || "none"), async () => {
    await api("PUT", "limits", body);
    limitsLoaded = false;
  });
});
$("tenant-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("tenant-name").value.trim();
  const t = {};
  const l = intOrNull($("tenant-limit").value), w = intOrNull($("tenant-weight").value);
  if (l !== null) t.limit = l;
  if (w !== null) t.weight = w;
  act("tenant " + name + " updated", () => api("PUT", "limits", { tenants: { [name]: t } }));
});

if (key()) login(key()); else logout("");
