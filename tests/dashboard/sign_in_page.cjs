// Drives the device sign-in's verification page in headless Chromium (playwright-core, found
// through NODE_PATH) as a user would, for tests/dashboard/test_sign_in_page.py, and prints
// what happened as JSON on stdout.
//
//   node sign_in_page.cjs CONFIG.json
// CONFIG: {"url": "<verification_uri_complete>", "chromium": "/usr/bin/chromium",
//          "username": "ada", "password": "...", "screenshot": "/path.png"}
// It opens the URL, waits a moment to see whether the page submits by itself (it must not),
// reads the pre-filled code, types the user's name and password into the page's own form,
// presses Approve, and reads the result. Errors on the page's console are reported.
"use strict";
const fs = require("fs");
const { chromium } = require("playwright-core");

async function main() {
  const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const browser = await chromium.launch({ executablePath: config.chromium, args: ["--no-sandbox"] });
  try {
    const page = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
    const problems = [];
    page.on("console", (m) => { if (m.type() === "error") problems.push(m.text()); });
    page.on("pageerror", (e) => problems.push(String(e)));
    let posts = 0;
    page.on("request", (r) => { if (r.method() === "POST") posts += 1; });
    await page.goto(config.url);
    await page.waitForTimeout(500);
    const postsBeforeClick = posts;
    const prefilled = await page.inputValue("#user_code");
    const title = await page.title();
    await page.fill("#username", config.username);
    await page.fill("#password", config.password);
    await Promise.all([page.waitForNavigation(), page.click("button[value=approve]")]);
    const result = await page.textContent("#result");
    if (config.screenshot) await page.screenshot({ path: config.screenshot, fullPage: true });
    const overflows = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    process.stdout.write(JSON.stringify({ title, prefilled, postsBeforeClick, result, problems, overflows }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
