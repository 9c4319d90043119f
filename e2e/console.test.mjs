// The web console in a real browser (Debian's Chromium driven by playwright-core): it connects,
// joins a room, receives an event posted through the API, gets an ack, and its status indicator
// changes when the server stops. Screenshots go to target/ (kept as CI artifacts).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { startServer, call, ROOT } from "./lib/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = path.join(ROOT, "target", "screenshots");
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium is needed at ${CHROMIUM} (scripts/test.sh installs it)`);
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
});

test("the console connects, joins a room, shows API events and acks, and notices the server stopping", async () => {
  const server = await startServer("switchboard");
  const page = await browser.newPage();
  try {
    await page.goto(`${server.url}/console`);
    await page.click("#connect");
    await page.waitForFunction(() => document.querySelector("#status").dataset.state === "connected");
    const socketId = await page.textContent("#socket-id");
    assert.ok(socketId && socketId !== "–");

    await page.fill("#room", "lobby");
    await page.click("#join");
    await page.waitForFunction(() => document.querySelector("#rooms-result").textContent.includes("joined lobby"));
    const members = (await call(`${server.url}/api/rooms/lobby`)).body.sockets.map((s) => s.id);
    assert.deepEqual(members, [socketId]);

    const res = await call(`${server.url}/api/emit`, { method: "POST", body: { event: "news", rooms: ["lobby"], data: { hello: "browser" } } });
    assert.equal(res.body.reached, 1);
    await page.waitForFunction(() => [...document.querySelectorAll("#log li")].some((li) => li.textContent.includes('news [{"hello":"browser"}')));

    await page.fill("#event", "presence:list");
    await page.fill("#args", '["lobby"]');
    await page.check("#ack");
    await page.click("#emit");
    await page.waitForFunction(() => document.querySelector("#emit-result").textContent.startsWith("ack:"));
    assert.match(await page.textContent("#emit-result"), /"room":"lobby"/);
    await page.waitForFunction(() => document.querySelector("#stats-sockets").textContent === "1");
    await page.screenshot({ path: path.join(SHOTS, "console-connected.png"), fullPage: true });

    await server.stop();
    await page.waitForFunction(() => document.querySelector("#status").dataset.state === "error", null, { timeout: 10000 });
    assert.match(await page.textContent("#status"), /error: /);
    await page.screenshot({ path: path.join(SHOTS, "console-server-stopped.png"), fullPage: true });
  } finally {
    await page.close();
    await server.stop();
  }
});

test("the console can be turned off", async () => {
  const server = await startServer("switchboard", { env: { SWITCHBOARD_CONSOLE_ENABLED: "false" } });
  try {
    assert.equal((await call(`${server.url}/console`)).status, 404);
  } finally {
    await server.stop();
  }
});
