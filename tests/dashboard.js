// Drives the admin dashboard in headless Chromium (tests/admin.rs, `the_dashboard_follows_the_cluster`):
// every worker has a row; slot 1's pid changes within 2 s of a kill -9 without reloading the
// page, and the timeline shows its exit; the Reload button runs a reload (every row's generation
// changes, the timeline says it completed); a screenshot is saved.
// Talks to the test over stdin/stdout, one line each way: it prints `pid SLOT1PID` and waits for
// `killed`, then prints `ok …` or throws.
// Usage: node tests/dashboard.js ADMIN_URL WORKERS SCREENSHOT
"use strict";

const { chromium } = require("playwright-core");
const readline = require("readline");

const [url, workers, screenshot] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));

async function cells(page, column) {
  return page.$$eval(`#workers tr td.${column}`, (tds) => tds.map((td) => td.textContent));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction((count) => document.querySelectorAll("#workers tr").length === Number(count),
      workers, { timeout: 10000 });
    const pids = await cells(page, "pid");
    console.log("pid " + pids[0]);
    if (await nextLine() !== "killed") throw new Error("the test did not kill");
    const killedAt = Date.now();
    await page.waitForFunction((old) => {
      const cell = document.querySelector('#workers tr[data-slot="1"] td.pid');
      return cell && cell.textContent !== "" && cell.textContent !== old;
    }, pids[0], { timeout: 2000, polling: 50 });
    const changedIn = Date.now() - killedAt;
    // The timeline has the kill, from the typed lifecycle events.
    await page.waitForFunction((old) => [...document.querySelectorAll("#timeline .worker.exited")]
      .some((entry) => entry.textContent.includes(`(pid ${old},`) && entry.textContent.includes("SIGKILL")),
      pids[0], { timeout: 2000, polling: 50 });
    const generations = await cells(page, "generation");
    await page.click("#reload");
    await page.waitForFunction((before) => {
      const now = [...document.querySelectorAll("#workers tr td.generation")].map((td) => td.textContent);
      return now.length === before.length && now.every((generation, i) => generation !== before[i] && generation !== "");
    }, generations, { timeout: 20000 });
    const after = await cells(page, "generation");
    await page.waitForFunction(() => document.querySelector("#timeline .reload.completed") !== null,
      null, { timeout: 5000 });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`ok changed_in_ms ${changedIn} generations ${generations.join(",")} -> ${after.join(",")}`);
  } finally {
    await browser.close();
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
