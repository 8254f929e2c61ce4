// The demo page's script: for the page itself and every resource it
// loaded, what the browser measured (Resource Timing) and what the PoP
// said about it (Server-Timing: cdn-pop, cdn-cache, edge, origin, rtt).
// It keeps working without Server-Timing: those cells show a dash.
"use strict";
(function () {
  const body = document.getElementById("timings-body");
  const note = document.getElementById("timing-note");

  function ms(v) {
    if (v === undefined || v === null || isNaN(v)) return "\u2013";
    return v < 10 ? v.toFixed(2) : v.toFixed(1);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  // serverTiming entries by name: {desc, duration}: the first of each
  // name, which the PoP the browser reached sent; a parent tier's (the
  // origin shield's) follow it and are listed under "upstream".
  function timing(e) {
    const out = {upstream: []};
    for (const s of e.serverTiming || []) {
      if (!(s.name in out)) out[s.name] = s;
      else if (s.name === "cdn-pop") out.upstream.push({pop: s.description});
      else if (s.name === "cdn-cache" && out.upstream.length) out.upstream[out.upstream.length - 1].cache = s.description;
    }
    return out;
  }

  function render() {
    const nav = performance.getEntriesByType("navigation")[0];
    // The latest entry per URL (the clock is fetched again and again).
    const latest = new Map();
    for (const e of performance.getEntriesByType("resource")) latest.set(e.name, e);
    const entries = [nav, ...latest.values()].filter(Boolean);
    let timed = 0;
    body.replaceChildren();
    for (const e of entries) {
      const st = timing(e);
      const url = new URL(e.name);
      const tr = document.createElement("tr");
      const path = e === nav ? url.pathname + " (this page)" : url.pathname;
      tr.dataset.path = url.pathname;
      const cached = e.transferSize === 0 && e.decodedBodySize > 0;
      const proto = cached ? "browser cache" : (e.nextHopProtocol || "\u2013");
      tr.dataset.proto = proto;
      const verdict = st["cdn-cache"] ? st["cdn-cache"].description : "\u2013";
      // A miss fetched through a parent PoP says what the parent did.
      const cache = verdict + st.upstream.map(u => " (" + u.pop + ": " + (u.cache || "?") + ")").join("");
      if (st["cdn-pop"] || st["edge"]) timed++;
      cell(tr, path);
      cell(tr, proto);
      cell(tr, st["cdn-pop"] ? st["cdn-pop"].description : "\u2013");
      cell(tr, cache, verdict === "hit" ? "hit" : (verdict === "miss" ? "miss" : ""));
      cell(tr, ms(e.responseStart > 0 && e.requestStart > 0 ? e.responseStart - e.requestStart : undefined));
      cell(tr, ms(st["edge"] && st["edge"].duration));
      cell(tr, ms(st["origin"] && st["origin"].duration));
      cell(tr, ms(st["rtt"] && st["rtt"].duration));
      cell(tr, String(e.encodedBodySize || 0));
      body.appendChild(tr);
    }
    note.textContent = timed > 0
      ? timed + " of " + entries.length + " responses carried the PoP's Server-Timing."
      : "No response carried Server-Timing (a PoP that does not send it yet): PoP, cache and the PoP's timings are unknown.";
  }

  async function clock() {
    try {
      const r = await fetch("/clock", {cache: "no-cache"});
      const c = await r.json();
      document.getElementById("clock").textContent = "tick " + c.tick + " (since " + c.changed + ")";
    } catch (err) {
      document.getElementById("clock").textContent = "unavailable: " + err;
    }
  }

  async function account() {
    try {
      const r = await fetch("/account/me.json", {cache: "no-store"});
      const a = await r.json();
      document.getElementById("account").textContent = a.user + " (" + r.headers.get("Cache-Control") + ")";
    } catch (err) {
      document.getElementById("account").textContent = "unavailable: " + err;
    }
  }

  window.addEventListener("load", function () {
    Promise.all([clock(), account()]).then(render);
    setInterval(function () { clock().then(render); }, 2000);
  });
})();
