// fleetlb status page: polls the admin JSON every 2 s and draws it. Plain DOM, no framework.
// URLs are relative to /admin/, so the page also works behind a proxy that adds a path prefix.
// Every value goes into the page as text (textContent / createTextNode), never as markup:
// endpoint and model names come from operators and clients.
"use strict";

(() => {
  const KEY_STORE = "fleetlb.adminKey"; // sessionStorage: this tab only, gone when it closes
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000; // a hung gateway counts as down, the next poll still runs
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let timer = null;
  let run = 0; // the latest poll; an older one still in flight must not draw or reschedule

  // --- DOM building: text only ------------------------------------------------------------
  function el(tag, cls, ...children) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const td = (value, cls) => el("td", cls, value);
  function nameCell(name) {
    const cell = td(name, "name");
    cell.title = String(name); // the whole name where a phone cuts it short
    return cell;
  }
  const dash = "–";
  const fixed = (x, digits) => (x === null || x === undefined ? dash : x.toFixed(digits));
  const ms = (x) => (x === null || x === undefined ? dash : `${Math.round(x)} ms`);
  const pct = (x) => (x === null || x === undefined ? dash : `${(x * 100).toFixed(1)} %`);
  const limit = (used, max) => `${used} / ${max === null || max === undefined || max === 0 ? "∞" : max}`;

  function replaceRows(table, rows, columns, emptyText) {
    const body = table.tBodies[0];
    if (rows.length === 0) {
      const cell = td(emptyText, "empty");
      cell.colSpan = columns;
      rows = [el("tr", null, cell)];
    }
    body.replaceChildren(...rows);
  }

  // --- fleet ------------------------------------------------------------------------------
  function stateOf(ep) {
    if (ep.draining) return "draining";
    const known = ["healthy", "unhealthy", "ejected", "unknown"];
    return known.includes(ep.state) ? ep.state : "unknown";
  }

  function host(url) {
    try {
      return new URL(url).host; // never the user:password part of a URL
    } catch (err) {
      return "?";
    }
  }

  const kvCache = (ep) => (typeof ep.kv_cache_usage === "number" ? pct(ep.kv_cache_usage) : dash);

  function responses(ep) {
    const found = ep.supports_responses_api;
    const native = found === true ? "native" : found === false ? "translate" : "not probed";
    return ep.responses === "auto" ? `auto → ${native}` : String(ep.responses ?? dash);
  }

  function probe(ep, now) {
    if (!ep.last_probe_at) return dash;
    const age = Math.max(0, now - Date.parse(ep.last_probe_at) / 1000);
    return `${ms(ep.probe_latency_ms)} · ${age.toFixed(0)} s ago`;
  }

  function fleetRow(ep, now) {
    const state = stateOf(ep);
    const badge = el("span", `state state-${state}`, state);
    const probeCell = td(probe(ep, now));
    if (ep.last_error) probeCell.title = String(ep.last_error);
    const row = el("tr", null,
      nameCell(ep.name), el("td", null, badge), td(ep.kind), td(host(ep.url)),
      td(limit(ep.in_flight, ep.max_in_flight), "num"), td(ep.backend_queue ?? dash, "num"),
      td(kvCache(ep), "num"), td((ep.loaded_models || []).join(", ") || dash, "wrap"),
      td(responses(ep)), probeCell, td(ep.live_failures ?? 0, "num"));
    row.dataset.endpoint = ep.name;
    row.dataset.state = state;
    return row;
  }

  // --- models -----------------------------------------------------------------------------
  function pool(members) {
    if (!members.length) return "no usable endpoint";
    const tiers = new Map();
    for (const m of members) {
      if (!tiers.has(m.tier)) tiers.set(m.tier, []);
      tiers.get(m.tier).push(`${m.name} ×${m.weight}`);
    }
    return [...tiers].map(([tier, names]) => `${tier}: ${names.join(", ")}`).join("; ");
  }

  function modelRow(m) {
    const row = el("tr", null,
      nameCell(m.name), td(pool(m.members), "wrap"), td(m.strategy ?? dash),
      td(fixed(m.requests_per_s, 2), "num"), td(pct(m.error_rate), "num"),
      td(ms(m.ttft_p50_ms), "num"), td(ms(m.ttft_p90_ms), "num"),
      td(fixed(m.tokens_in_per_s, 1), "num"), td(fixed(m.tokens_out_per_s, 1), "num"));
    row.dataset.model = m.name;
    return row;
  }

  // --- keys (GET /admin/keys, when the gateway has named keys) ----------------------------
  function keyRow(k) {
    const limits = k.limits || {};
    const window = k.window || {};
    const totals = k.totals || {};
    const row = el("tr", null,
      nameCell(k.name), td(Array.isArray(k.models) ? k.models.join(", ") : "all", "wrap"),
      td(k.priority ?? dash, "num"), td(limit(window.requests ?? 0, limits.rpm), "num"),
      td(limit(window.tokens ?? 0, limits.tpm), "num"),
      td(limit(k.in_flight ?? 0, limits.max_in_flight), "num"),
      td(totals.rate_limited ?? 0, "num"), td(totals.requests ?? 0, "num"),
      td(totals.tokens ?? 0, "num"));
    row.dataset.key = k.name;
    return row;
  }

  // --- sparklines -------------------------------------------------------------------------
  function sparkPath(values) {
    const max = Math.max(1e-9, ...values.filter((v) => v !== null));
    const step = values.length > 1 ? 100 / (values.length - 1) : 0;
    let d = "";
    let pen = "M";
    values.forEach((v, i) => {
      if (v === null) {
        pen = "M"; // a gap: no sample in that second
        return;
      }
      d += `${pen}${(i * step).toFixed(2)} ${(38 - (v / max) * 36).toFixed(2)} `;
      pen = "L";
    });
    return d.trim();
  }

  function spark(label, values, format, cls) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 40");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", sparkPath(values)); // numbers only
    svg.append(path);
    const last = [...values].reverse().find((v) => v !== null);
    return el("div", `spark ${cls}`, el("div", "label", label),
      el("div", "value", last === undefined ? dash : format(last)), svg);
  }

  function drawSparks(stats) {
    $("sparklines").replaceChildren(
      spark("Requests/s", stats.requests, (v) => String(v), "requests"),
      spark("TTFT p90", stats.ttft_p90_ms, ms, "ttft"),
      spark("Errors/s", stats.errors, (v) => String(v), "errors"));
  }

  // --- polling ----------------------------------------------------------------------------
  function headers() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function getJson(path) {
    const response = await fetch(path, {
      headers: headers(), cache: "no-store", signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
    });
    if (response.status !== 200) return { status: response.status, body: null };
    return { status: 200, body: await response.json() };
  }

  function setStatus(text, kind) {
    const pill = $("status");
    pill.textContent = text;
    pill.className = `pill pill-${kind}`;
  }

  function showLogin(message) {
    $("dashboard").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    $("updated").textContent = "";
    setStatus("signed out", "wait");
    $("key").focus();
  }

  function render(endpoints, stats, keys) {
    const now = stats.now;
    replaceRows($("fleet"), endpoints.endpoints.map((ep) => fleetRow(ep, now)), 11,
      "no endpoints configured");
    replaceRows($("models"), stats.models.map(modelRow), 9, "no models");
    drawSparks(stats);
    const hasKeys = keys.status === 200 && Array.isArray(keys.body?.keys) && keys.body.keys.length;
    $("keys-section").hidden = !hasKeys; // none (open gateway) or a 404 (an older gateway)
    if (hasKeys) replaceRows($("keys"), keys.body.keys.map(keyRow), 9, "no keys");
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("signout").hidden = !sessionStorage.getItem(KEY_STORE);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    setStatus("live", "live");
  }

  async function poll() {
    clearTimeout(timer);
    timer = null;
    const mine = ++run;
    let results;
    try {
      results = await Promise.all(["endpoints", "stats", "keys"].map(getJson));
    } catch (err) {
      results = null; // gateway down, restarting, or too slow: keep trying
    }
    if (mine !== run) return;
    if (results && (results[0].status === 401 || results[1].status === 401)) {
      const hadKey = sessionStorage.getItem(KEY_STORE) !== null;
      sessionStorage.removeItem(KEY_STORE);
      showLogin(hadKey ? "That admin key was refused." : "");
      return; // no polling until someone signs in
    }
    if (results && results[0].status === 200 && results[1].status === 200) {
      render(results[0].body, results[1].body, results[2]);
    } else {
      setStatus("reconnecting…", "down");
    }
    timer = setTimeout(poll, REFRESH_MS);
  }

  function start() {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_STORE, $("key").value.trim());
      $("key").value = "";
      setStatus("signing in…", "wait");
      poll();
    });
    $("signout").addEventListener("click", () => {
      clearTimeout(timer);
      run++;
      sessionStorage.removeItem(KEY_STORE);
      showLogin("");
    });
    poll();
  }

  start();
})();
