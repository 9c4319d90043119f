// Compatibility with the official Socket.IO Admin UI (@socket.io/admin-ui from npm): first its
// protocol, spoken with socket.io-client exactly as the UI does (basic auth with a bcrypt hash,
// config, all_sockets, server_stats, socket and room events, the emit/join/_disconnect
// commands); then the real UI, served locally from the package's ui/dist and driven in
// Chromium, logs in and lists the sockets of a running client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { io } from "socket.io-client";
import { chromium } from "playwright-core";
import { startServer, once, sleep, tempFile, call, freePort, ROOT } from "./lib/server.mjs";

// "changeit", hashed with bcrypt (the Admin UI README's example).
const HASH = "$2b$10$heqvAkYMez.Va6Et2uXInOnkCT6/uQj1brkrbyG3LpopDklcq7ZOS";
const UI = path.join(ROOT, "e2e", "node_modules", "@socket.io", "admin-ui", "ui", "dist");
let server;
const sockets = [];

before(async () => {
  const config = await tempFile(
    "admin.toml",
    `[cors]\norigins = ["*"]\n[admin_ui]\nenabled = true\nusername = "admin"\npassword_hash = "${HASH}"\n`,
  );
  server = await startServer("switchboard", { args: ["--config", config] });
});

after(async () => {
  sockets.forEach((s) => s.disconnect());
  await server.stop();
});

function admin(auth) {
  const socket = io(`${server.url}/admin`, { forceNew: true, auth, transports: ["websocket"] });
  sockets.push(socket);
  return socket;
}

test("the admin namespace speaks the Admin UI protocol", async () => {
  const refused = admin({ username: "admin", password: "wrong" });
  assert.equal((await once(refused, "connect_error"))[0].message, "invalid credentials");

  const client = io(server.url, { forceNew: true, transports: ["websocket"] });
  sockets.push(client);
  await once(client, "connect");

  const ui = admin({ username: "admin", password: "changeit" });
  const session = once(ui, "session");
  const config = once(ui, "config");
  const all = once(ui, "all_sockets");
  const stats = once(ui, "server_stats", 5000);
  await once(ui, "connect");
  const [sessionId] = await session;
  assert.match(sessionId, /^[0-9a-f]+$/);
  assert.ok((await config)[0].supportedFeatures.includes("EMIT"));
  const listed = (await all)[0].find((s) => s.id === client.id);
  assert.ok(listed, "the running client is listed");
  assert.equal(listed.nsp, "/");
  assert.equal(listed.transport, "websocket");
  assert.ok(listed.rooms.includes(client.id));
  const [serverStats] = await stats;
  assert.ok(serverStats.clientsCount >= 2);
  assert.ok(serverStats.namespaces.some((n) => n.name === "/" && n.socketsCount >= 1));

  // A session id stands in for the password next time.
  const again = admin({ sessionId });
  await once(again, "connect");

  // Commands as the UI sends them.
  const received = once(client, "from-admin");
  ui.emit("emit", "/", client.id, "from-admin", { hello: "client" });
  assert.deepEqual((await received)[0], { hello: "client" });

  const joined = once(ui, "room_joined");
  ui.emit("join", "/", "ops", client.id);
  assert.deepEqual((await joined).slice(0, 3), ["/", "ops", client.id]);
  assert.deepEqual((await call(`${server.url}/api/rooms/ops`)).body.sockets.map((s) => s.id), [client.id]);

  const connected = once(ui, "socket_connected");
  const late = io(server.url, { forceNew: true, transports: ["websocket"] });
  sockets.push(late);
  const lateConnected = once(late, "connect");
  const [serialized] = await connected;
  await lateConnected;
  assert.equal(serialized.id, late.id);

  const gone = once(ui, "socket_disconnected");
  const kicked = once(late, "disconnect");
  const lateId = late.id;
  ui.emit("_disconnect", "/", false, lateId);
  assert.equal((await kicked)[0], "io server disconnect");
  const [nsp, id] = await gone;
  assert.deepEqual([nsp, id], ["/", lateId]);
});

test("the Admin UI from the npm package logs in and lists a running client", async () => {
  assert.ok(existsSync(UI), "the Admin UI's built files come with @socket.io/admin-ui");
  const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml" };
  const statics = createServer(async (req, res) => {
    const file = path.join(UI, decodeURIComponent(new URL(req.url, "http://x").pathname).replace(/^\/+/, "") || "index.html");
    try {
      const body = await readFile(file.endsWith(path.sep) ? path.join(file, "index.html") : file);
      res.writeHead(200, { "content-type": types[path.extname(file)] || "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  const port = await freePort();
  await new Promise((resolve) => statics.listen(port, "127.0.0.1", resolve));
  const client = io(server.url, { forceNew: true, transports: ["websocket"] });
  sockets.push(client);
  await once(client, "connect");
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const shots = path.join(ROOT, "target", "screenshots");
  mkdirSync(shots, { recursive: true });
  const page = await browser.newPage();
  try {
    await page.goto(`http://127.0.0.1:${port}/`);
    await page.getByLabel("Server URL").fill(server.url);
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill("changeit");
    await page.getByRole("button", { name: /connect/i }).click();
    await page.goto(`http://127.0.0.1:${port}/#/sockets`);
    await page.waitForFunction((id) => document.body.innerText.includes(id), client.id, { timeout: 15000 });
    await page.screenshot({ path: path.join(shots, "admin-ui-sockets.png"), fullPage: true });
  } catch (error) {
    await page.screenshot({ path: path.join(shots, "admin-ui-failure.png"), fullPage: true });
    throw error;
  } finally {
    await browser.close();
    statics.close();
  }
});
