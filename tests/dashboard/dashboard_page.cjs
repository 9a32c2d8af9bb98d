// Drives the dashboard in headless Chromium (playwright-core, found through NODE_PATH) and
// prints what the page shows as JSON on stdout, for tests/dashboard/test_dashboard_browser.py.
//
//   node dashboard_page.cjs CONFIG.json
// CONFIG: {"url": "http://127.0.0.1:PORT/dashboard", "chromium": "/usr/bin/chromium",
//          "views": [{"name": "alice", "token": "tok-alice" | null, "screenshot": "/path.png",
//                     "width": 1280, "height": 900}]}
// Each view gets a fresh browser context (so a fresh sessionStorage): it loads the page,
// types the token into the page's own form when the page asks for one, waits for the page's
// first full refresh (body[data-refreshes]), reads the numbers from the DOM, and saves a
// full-page screenshot. Errors on the page's console fail the run.
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

async function readPage(page) {
  return page.evaluate(() => {
    const rows = (sel, f) => Array.from(document.querySelectorAll(sel)).map(f);
    const num = (s) => (s === undefined ? null : Number(s));
    return {
      status: document.getElementById("status").dataset.status,
      spend_pico: num(document.getElementById("tile-spend").dataset.pico),
      spend_text: document.getElementById("tile-spend").textContent,
      messages: num(document.getElementById("tile-messages").dataset.count),
      savings_pico: num(document.getElementById("tile-savings").dataset.pico),
      hit_rate_text: document.getElementById("tile-hit-rate").textContent,
      series: rows("#series-table tbody tr[data-key]", (tr) => ({ key: tr.dataset.key, total_usd: Number(tr.dataset.totalUsd) })),
      models: rows("#cache-table tbody tr[data-model]", (tr) => ({
        model: tr.dataset.model, cost_pico: Number(tr.dataset.costPico),
        savings_pico: Number(tr.dataset.savingsPico), cache_read: Number(tr.dataset.cacheRead) })),
      sessions: rows("#sessions-table tbody tr[data-session-id]", (tr) => ({
        session_id: tr.dataset.sessionId, cost_pico: Number(tr.dataset.costPico), messages: Number(tr.dataset.messages) })),
      tokens: rows("#tokens-table tbody tr[data-token]", (tr) => ({ token: tr.dataset.token, cost_pico: Number(tr.dataset.costPico) })),
      chart_series: rows("#spend-chart .u-legend .u-series .u-label", (el) => el.textContent).slice(1),
      chart_canvas: !!document.querySelector("#spend-chart canvas"),
      budgets_hidden: document.getElementById("budgets-panel").hidden,
      health_text: document.getElementById("health-status").textContent,
      hour_queries: document.getElementById("hour-queries").textContent,
      overflows: document.documentElement.scrollWidth > window.innerWidth,
    };
  });
}

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const browser = await chromium.launch({ executablePath: config.chromium, args: ["--no-sandbox"] });
  const result = {};
  try {
    for (const view of config.views) {
      const context = await browser.newContext({ viewport: { width: view.width || 1280, height: view.height || 900 } });
      const page = await context.newPage();
      const problems = [];
      page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
      page.on("pageerror", (e) => problems.push(String(e)));
      await page.goto(config.url);
      let asked = false;
      if (view.token) {
        await page.waitForSelector("#token-form:not([hidden])", { timeout: 60000 });
        asked = true;
        await page.fill("#token-input", view.token);
        await page.click("#token-form button[type=submit]");
      }
      await page.waitForSelector("body[data-refreshes]", { timeout: 60000 });
      if (view.click) {
        for (const selector of view.click) {
          const before = Number(await page.getAttribute("body", "data-refreshes"));
          await page.click(selector);
          await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, before, { timeout: 60000 });
        }
      }
      const shown = await readPage(page);
      if (view.screenshot) await page.screenshot({ path: view.screenshot, fullPage: true });
      // 401s while the page had no token are expected: the page asks for one.
      const unexpected = problems.filter((p) => !(asked && p.includes("401")));
      result[view.name] = { asked_for_token: asked, problems: unexpected, shown };
      await context.close();
    }
  } finally {
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result));
}

main().catch((err) => { console.error(err && err.stack || String(err)); process.exit(1); });
