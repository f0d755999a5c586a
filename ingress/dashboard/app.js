// sluice operations dashboard: polls the admin API once a second and draws the
// figures as small SVG line charts. No dependencies, no build step.
"use strict";

const KEY = "sluice.operatorKey";
const HISTORY = 120; // samples kept: two minutes at one per second
const $ = (id) => document.getElementById(id);
const history = [];
let timer = null;
let limitsLoaded = false;

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

function record(s) {
  const a = s.activity || {};
  history.push({
    backlog: s.backlog, admissible: s.admissible_backlog,
    inUse: s.slots_in_use, limit: s.global_limit,
    admissions: a.admissions_per_second || 0, bytes: a.bytes_per_second || 0,
    p50: a.wait_p50_seconds || 0, p90: a.wait_p90_seconds || 0,
  });
  while (history.length > HISTORY) history.shift();
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
    Math.max(0, (now - Date.parse(n.last_beat)) / 1000).toFixed(1) + " s ago"])));
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

// chart draws one polyline per series over the history, newest on the right, on a
// scale from 0 to the largest value shown. A null series keeps its colour slot.
function chart(id, series, fmt) {
  const svg = $(id);
  let peak = 0;
  for (const f of series) if (f) for (const h of history) peak = Math.max(peak, f(h));
  const top = peak > 0 ? peak * 1.1 : 1;
  const kids = [];
  for (let g = 1; g < 4; g++) {
    const y = PAD + (H - 2 * PAD) * g / 4;
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("class", "grid");
    line.setAttribute("x1", 0); line.setAttribute("x2", W);
    line.setAttribute("y1", y); line.setAttribute("y2", y);
    kids.push(line);
  }
  const last = [];
  series.forEach((f, i) => {
    if (!f) return;
    const pts = history.map((h, j) => {
      const x = W - (history.length - 1 - j) * (W / (HISTORY - 1));
      const y = H - PAD - (H - 2 * PAD) * f(h) / top;
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const pl = document.createElementNS(SVG, "polyline");
    pl.setAttribute("class", "s" + i);
    pl.setAttribute("points", pts.join(" "));
    kids.push(pl);
    last.push(history.length ? f(history[history.length - 1]) : 0);
  });
  svg.replaceChildren(...kids);
  // For people: the scale; for tests: what is drawn.
  svg.dataset.samples = history.length;
  svg.dataset.last = JSON.stringify(last);
  svg.dataset.max = JSON.stringify(series.filter(Boolean).map(f => Math.max(0, ...history.map(f))));
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
