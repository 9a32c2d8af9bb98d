// Switchboard dashboard: polls the gateway's /v1/switchboard/* JSON endpoints every 5 s and
// redraws in place (docs/protocol.md, "Dashboard"). No framework; the one library is uPlot
// (vendored, MIT). Text from the gateway (session ids are chosen by clients) is only ever
// set as textContent, never as HTML.
"use strict";

(function () {
  const POLL_MS = 5000;
  const TOKEN_KEY = "switchboard.dashboard.token";
  const VIEW_KEY = "switchboard.dashboard.view";
  const COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948",
                  "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295"];

  const $ = (id) => document.getElementById(id);
  const view = Object.assign({ bucket: "hour", by: "model" },
    JSON.parse(sessionStorage.getItem(VIEW_KEY) || "{}"));
  let chart = null;
  let chartKeys = "";
  let timer = null;
  let refreshes = 0;

  class AuthNeeded extends Error {}

  // --- formatting -------------------------------------------------------------------------
  function usd(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    if (Math.abs(v) >= 100) return "$" + v.toFixed(2);
    if (Math.abs(v) >= 1) return "$" + v.toFixed(3);
    // Small amounts keep two significant digits (a cheap query costs a few millionths).
    const decimals = Math.min(Math.max(4, 1 - Math.floor(Math.log10(Math.abs(v)))), 8);
    return "$" + v.toFixed(decimals).replace(/0+$/, "").replace(/\.$/, "");
  }
  function count(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "b";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "m";
    if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }
  function pct(r) { return r === null || r === undefined ? "–" : (100 * r).toFixed(1) + "%"; }
  function bucketTime(key) {
    // "YYYY-MM-DD" or "YYYY-MM-DDTHH", UTC -> epoch seconds.
    const [y, m, d] = key.slice(0, 10).split("-").map(Number);
    const h = key.length > 10 ? Number(key.slice(11, 13)) : 0;
    return Date.UTC(y, m - 1, d, h) / 1000;
  }
  function pairs(obj) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return "none";
    return entries.map(([k, v]) => k + " ×" + v).join(", ");
  }
  function total(obj) { return Object.values(obj || {}).reduce((a, b) => a + b, 0); }

  // --- the network ------------------------------------------------------------------------
  async function api(path) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers["Authorization"] = "Bearer " + token;
    const response = await fetch(path, { headers, cache: "no-store" });
    if (response.status === 401) throw new AuthNeeded(path);
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  // --- tables -----------------------------------------------------------------------------
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function fill(tableId, rows, build, empty) {
    const body = $(tableId).tBodies[0];
    const out = document.createDocumentFragment();
    for (const row of rows) out.appendChild(build(row));
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(tr, empty || "nothing yet");
      td.colSpan = $(tableId).tHead.rows[0].cells.length;
      out.appendChild(tr);
    }
    body.replaceChildren(out);
  }

  // --- the chart --------------------------------------------------------------------------
  function drawChart(spend) {
    const el = $("spend-chart");
    const xs = spend.buckets.map(bucketTime);
    // Stacked bars: series i is drawn at the running sum of series 0..i, the tallest first,
    // so each visible band is one series' share. The legend shows each series' own value.
    const raw = spend.series.map((s) => s.cost_usd);
    const stacked = [];
    let running = xs.map(() => 0);
    for (const values of raw) {
      running = running.map((v, i) => v + values[i]);
      stacked.push(running);
    }
    const order = stacked.map((_, i) => i).reverse();
    const data = [xs, ...order.map((i) => stacked[i])];
    const keys = view.bucket + "|" + spend.series.map((s) => s.key).join("|");
    const width = Math.max(el.clientWidth, 280);
    if (chart && keys === chartKeys) {
      chart.setData(data);
      return;
    }
    if (chart) chart.destroy();
    chartKeys = keys;
    const bars = uPlot.paths.bars({ size: [0.8, 48] });
    const hourly = view.bucket === "hour";
    chart = new uPlot({
      width,
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 0.01] } },
      axes: [
        { space: hourly ? 60 : 50,
          // UTC, 24-hour: "14:00", and the date ("12-07") at midnight and on daily charts.
          values: (u, ticks) => ticks.map((t) => {
            const iso = new Date(t * 1000).toISOString();
            return hourly && iso.slice(11, 13) !== "00" ? iso.slice(11, 16) : iso.slice(5, 10);
          }) },
        { size: 64, values: (u, ticks) => ticks.map(usd) },
      ],
      legend: { live: true },
      series: [
        { label: hourly ? "hour (UTC)" : "day (UTC)",
          value: (u, v) => v === null ? "–" : new Date(v * 1000).toISOString().slice(0, hourly ? 13 : 10).replace("T", " ") },
        ...order.map((i) => ({
          label: spend.series[i].key,
          stroke: COLORS[i % COLORS.length],
          fill: COLORS[i % COLORS.length],
          width: 0,
          paths: bars,
          points: { show: false },
          value: (u, v, si, idx) => idx === null ? "–" : usd(raw[i][idx]),
        })),
      ],
    }, data, el);
  }

  function drawSpend(spend) {
    const t = spend.totals;
    const tile = $("tile-spend");
    tile.textContent = usd(t.cost_usd);
    tile.dataset.pico = String(t.cost_pico);
    $("tile-range").textContent = "since " + spend.since.replace("T", " ") + (view.bucket === "hour" ? ":00" : "") + " UTC";
    $("tile-messages").textContent = count(t.messages);
    $("tile-messages").dataset.count = String(t.messages);
    $("tile-savings").textContent = usd(t.cache_savings_usd);
    $("tile-savings").dataset.pico = String(t.cache_savings_pico);
    $("tile-hit-rate").textContent = pct(t.cache_hit_rate);
    $("series-head").textContent = view.by;
    fill("series-table", spend.series, (s) => {
      const tr = document.createElement("tr");
      tr.dataset.key = s.key;
      tr.dataset.totalUsd = String(s.total_usd);
      const name = cell(tr, s.key);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = COLORS[spend.series.indexOf(s) % COLORS.length];
      name.prepend(swatch);
      cell(tr, usd(s.total_usd), "num");
      return tr;
    }, "no spend in this range");
    fill("cache-table", spend.models, (m) => {
      const tr = document.createElement("tr");
      tr.dataset.model = m.model;
      tr.dataset.costPico = String(m.cost_pico);
      tr.dataset.savingsPico = String(m.cache_savings_pico);
      tr.dataset.cacheRead = String(m.cache_read_input_tokens);
      cell(tr, m.model);
      cell(tr, usd(m.cost_usd), "num");
      cell(tr, count(m.cache_read_input_tokens), "num");
      cell(tr, pct(m.cache_hit_rate), "num");
      cell(tr, usd(m.cache_savings_usd), "num");
      return tr;
    }, "no usage in this range");
    drawChart(spend);
  }

  function drawSessions(top, liveIds) {
    fill("sessions-table", top.sessions, (s) => {
      const tr = document.createElement("tr");
      tr.dataset.sessionId = s.session_id;
      tr.dataset.costPico = String(s.cost_pico);
      tr.dataset.messages = String(s.messages);
      const name = cell(tr, s.session_id, "id");
      name.title = s.session_id + "\nfirst " + s.first_at + "\nlast " + s.last_at;
      if (s.live || liveIds.has(s.session_id)) {
        const dot = document.createElement("span");
        dot.className = "live-dot";
        dot.title = "live";
        name.prepend(dot);
      }
      cell(tr, s.token);
      cell(tr, count(s.messages), "num");
      cell(tr, usd(s.cost_usd), "num");
      return tr;
    }, "no sessions yet");
    fill("tokens-table", top.tokens, (t) => {
      const tr = document.createElement("tr");
      tr.dataset.token = t.token;
      tr.dataset.costPico = String(t.cost_pico);
      cell(tr, t.token);
      cell(tr, count(t.sessions), "num");
      cell(tr, count(t.messages), "num");
      cell(tr, usd(t.cost_usd), "num");
      return tr;
    }, "no tokens yet");
  }

  function drawLive(live) {
    $("tile-live-queries").textContent = String(live.active_queries);
    $("tile-live-sessions").textContent = String(live.live_session_count);
    $("live-queries").textContent = String(live.active_queries);
    $("live-sessions-count").textContent = String(live.active_sessions);
    const over = live.overloaded_now;
    $("overloaded-now").textContent = over.length ? over.join(", ") : "none";
    $("overloaded-now").className = over.length ? "bad" : "";
    const h = live.last_hour;
    $("hour-queries").textContent = total(h.queries) + (h.queries ? " (" + pairs(h.queries) + ")" : "");
    $("hour-retries").textContent = total(h.retries) + (h.retries ? " (" + pairs(h.retries) + ")" : "");
    $("hour-fallbacks").textContent = total(h.fallbacks) + (h.fallbacks ? " (" + pairs(h.fallbacks) + ")" : "");
    $("hour-overloads").textContent = total(h.overloads) + (h.overloads ? " (" + pairs(h.overloads) + ")" : "");
    const list = $("live-sessions");
    list.replaceChildren(...live.live_sessions.map((id) => {
      const li = document.createElement("li");
      li.textContent = id;
      li.dataset.sessionId = id;
      return li;
    }));
  }

  function drawHealth(health) {
    const status = $("status");
    status.textContent = health.status === "ok" ? "healthy" : health.status.replace("_", " ");
    status.dataset.status = health.status;
    $("health-status").textContent = health.status;
    $("health-committing").textContent = health.ledger.committing ? "committing" : "failing";
    $("health-pending").textContent = String(health.ledger.pending_records);
    $("health-read").textContent = health.store.readable ? health.store.read_ms.toFixed(1) + " ms" : "unreadable";
    $("health-reason").textContent = health.ledger.reason || "–";
  }

  function drawBudgets(budgets) {
    const rows = budgets.budgets || [];
    $("budgets-panel").hidden = rows.length === 0;
    fill("budgets-table", rows, (b) => {
      const tr = document.createElement("tr");
      tr.dataset.budget = String(b.name);
      cell(tr, String(b.name));
      cell(tr, String(b.period || ""));
      cell(tr, usd(b.limit_usd), "num");
      cell(tr, usd(b.spent_usd), "num");
      cell(tr, usd(b.left_usd), "num");
      return tr;
    });
  }

  // --- the loop ---------------------------------------------------------------------------
  function markControls() {
    for (const b of document.querySelectorAll("[data-bucket]")) b.setAttribute("aria-pressed", String(b.dataset.bucket === view.bucket));
    for (const b of document.querySelectorAll("[data-by]")) b.setAttribute("aria-pressed", String(b.dataset.by === view.by));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [spend, top, live, health, budgets] = await Promise.all([
        api("/v1/switchboard/spend?by=" + view.by + "&bucket=" + view.bucket),
        api("/v1/switchboard/sessions?top=10"),
        api("/v1/switchboard/live"),
        api("/v1/switchboard/health"),
        api("/v1/switchboard/budgets"),
      ]);
      $("token-form").hidden = true;
      $("main").hidden = false;
      $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
      drawSpend(spend);
      drawLive(live);
      drawSessions(top, new Set(live.live_sessions));
      drawHealth(health);
      drawBudgets(budgets);
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      if (err instanceof AuthNeeded) {
        const had = sessionStorage.getItem(TOKEN_KEY);
        $("token-form").hidden = false;
        $("main").hidden = true;
        $("token-error").hidden = !had;
        $("token-error").textContent = had ? "That token was not accepted." : "";
        return; // no polling until a token is given
      }
      $("status").textContent = "unreachable";
      $("status").dataset.status = "unreachable";
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    refresh();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    refresh();
  });
  for (const b of document.querySelectorAll("[data-bucket],[data-by]")) {
    b.addEventListener("click", () => {
      if (b.dataset.bucket) view.bucket = b.dataset.bucket;
      if (b.dataset.by) view.by = b.dataset.by;
      sessionStorage.setItem(VIEW_KEY, JSON.stringify(view));
      markControls();
      refresh();
    });
  }
  window.addEventListener("resize", () => {
    if (chart) chart.setSize({ width: Math.max($("spend-chart").clientWidth, 280), height: 260 });
  });
  markControls();
  refresh();
})();
