package view

// page is the live view: self-contained (no external scripts, styles or
// fonts), it renders the snapshot the server put in it (stateMark, replaced
// by the latest snapshot's JSON) while it loads, and then every snapshot
// of /events.
// stateMark is where the page takes the snapshot it first shows.
const stateMark = "/*STATE*/null"

const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgecdn lab: live</title>
<style>
body { margin: 0; font-family: sans-serif; background: #f6f7f9; color: #1b2433; }
header { display: flex; align-items: baseline; gap: 16px; padding: 10px 24px; background: #1b2433; color: #fff; }
header h1 { font-size: 20px; margin: 0; }
#status { font-size: 13px; color: #cfe; }
main { padding: 16px 24px; max-width: 1240px; }
.regions { display: grid; grid-template-columns: repeat(3, 1fr); gap: 16px; }
.region { background: #fff; border: 1px solid #d5d9e0; border-radius: 6px; padding: 12px 16px; }
.region h2 { margin: 0 0 8px; font-size: 18px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 13px; color: #fff; }
.up { background: #2a7; } .degraded { background: #e92; } .down { background: #c44; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 4px 12px; margin: 8px 0 0; font-size: 14px; }
dt { color: #667; } dd { margin: 0; font-variant-numeric: tabular-nums; }
.moved { color: #c44; font-weight: bold; }
table { border-collapse: collapse; margin-top: 8px; background: #fff; font-size: 14px; }
th, td { border: 1px solid #d5d9e0; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { color: #667; font-size: 13px; }
</style>
</head>
<body>
<header><h1>edgecdn lab: live</h1><span id="status">connecting...</span></header>
<main>
<div class="regions" id="regions"></div>
<h2>Round trips, PoP to each region's clients</h2>
<p class="note">Milliseconds: the matrix of docker-compose.yml / what the PoP measured (its /rtt, for the client's /24; a dash before it has measured any).</p>
<table id="rtt"></table>
<p class="note">Health from each PoP's /readyz (degraded: ready, but its origin is down); requests per second, hit ratio and cache bytes
from its /metrics; TTFB of one request a second from each region's client (DNS, TCP, TLS and the request, p50 and p99 over the last
minute); GeoDNS's answer for www.cdn.lab with the region's client subnet. Updated every second.</p>
</main>
<script>
"use strict";
(function () {
  const regions = document.getElementById("regions");
  const rtt = document.getElementById("rtt");
  const status = document.getElementById("status");
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function num(v, d) { return v === undefined || v === null ? "\u2013" : v.toFixed(d); }
  function bytes(v) {
    if (!v) return "0 B";
    const u = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function render(s) {
    regions.replaceChildren();
    for (const r of s.regions || []) {
      const p = r.pop;
      const sec = el("section", {"class": "region", "id": "region-" + r.name, "data-health": p.health, "data-answer": r.answer_pop || ""});
      const h = el("h2", {}, r.name + " ");
      h.appendChild(el("span", {"class": "badge " + p.health}, p.name + ": " + p.health));
      sec.appendChild(h);
      const dl = el("dl");
      const row = function (k, v, cls) { dl.appendChild(el("dt", {}, k)); dl.appendChild(el("dd", cls ? {"class": cls} : {}, v)); };
      row("requests/s", num(p.rps, 1));
      row("hit ratio", p.requests_total ? num(p.hit_ratio * 100, 1) + " %" : "\u2013");
      row("cache", bytes(p.cache_bytes));
      row("TTFB p50 / p99", r.probes > r.probe_errors ? num(r.ttfb_p50_ms, 1) + " / " + num(r.ttfb_p99_ms, 1) + " ms" : "\u2013");
      row("probes", (r.probes - r.probe_errors) + " ok, " + r.probe_errors + " failed" + (r.last_pop ? ", last from " + r.last_pop : ""));
      const ans = (r.answer || []).join(", ") || (r.dns_error ? "error: " + r.dns_error : "none");
      row("GeoDNS", r.client + " \u2192 " + (r.answer_pop || "?") + " (" + ans + ")", r.answer_pop && r.answer_pop !== p.name ? "moved" : "");
      if (p.error) row("error", p.error);
      if (r.last_error) row("last probe", r.last_error);
      sec.appendChild(dl);
      regions.appendChild(sec);
    }
    const m = s.rtt || {};
    rtt.replaceChildren();
    const head = el("tr");
    head.appendChild(el("th", {}, "PoP"));
    for (const name of m.regions || []) head.appendChild(el("th", {}, name));
    rtt.appendChild(head);
    (m.pops || []).forEach(function (pop, i) {
      const tr = el("tr");
      tr.appendChild(el("td", {}, pop));
      (m.regions || []).forEach(function (_, j) {
        const meas = m.measured_ms[i][j];
        tr.appendChild(el("td", {}, num(m.configured_ms[i][j], 0) + " / " + (meas ? num(meas, 1) : "\u2013")));
      });
      rtt.appendChild(tr);
    });
    status.textContent = "updated " + new Date(s.time).toLocaleTimeString();
  }
  const initial = /*STATE*/null;
  if (initial) render(initial);
  const es = new EventSource("/events");
  es.onmessage = function (ev) { render(JSON.parse(ev.data)); };
  es.onerror = function () { status.textContent = "reconnecting..."; };
})();
</script>
</body>
</html>
`
