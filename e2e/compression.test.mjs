// permessage-deflate ([engine] compression = true) as clients see it: the official client in
// Node (whose `ws` offers deflate) and in Chromium negotiate it and get every event intact; a
// client that does not offer it gets the same events uncompressed; a broadcast to both costs
// fewer bytes on the wire for the first (switchboard_bytes_sent_total); a compressed message
// that inflates past max_payload (a zip bomb) closes only that connection, with 1009; and with
// compression off (the default) nothing is negotiated.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer, once, sleep, call, tempFile, ROOT } from "./lib/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const clients = [];
let server;

/** An order as examples/orders.toml's backend sends them (~1 KB of JSON). */
function order(id) {
  return {
    id,
    status: "paid",
    customer: { name: "Ada Lovelace", email: "ada@example.com", phone: "+44 20 7946 0000" },
    address: { street: "12 Analytical Row", city: "London", postcode: "EC1A 1BB", country: "GB" },
    items: Array.from({ length: 6 }, (_, n) => ({ sku: `SKU-${1000 + n}`, name: `Item number ${n}`, qty: n + 1, price: 9.99 + n })),
    notes: "Leave at the door; ring twice. Fragile items inside, please handle with care.",
    created_at: "2026-12-06T23:00:00Z",
  };
}

async function client(opts = {}) {
  const socket = io(server.url, { forceNew: true, transports: ["websocket"], ...opts });
  clients.push(socket);
  await once(socket, "connect");
  return socket;
}

async function bytesSent() {
  const metrics = (await call(`${server.url}/metrics`)).body;
  return Number(/^switchboard_bytes_sent_total (\d+)/m.exec(metrics)?.[1]);
}

before(async () => {
  const config = await tempFile("compression.toml", '[engine]\ncompression = true\ncompression_threshold = "256B"\n');
  server = await startServer("switchboard", { args: ["--config", config] });
});
after(async () => {
  clients.forEach((s) => s.disconnect());
  await server.stop();
});

test("the official client negotiates deflate, gets events intact, and a broadcast costs fewer bytes", async () => {
  const deflating = await client();
  const plain = await client({ perMessageDeflate: false });
  assert.equal(deflating.io.engine.transport.ws.extensions, "permessage-deflate");
  assert.equal(plain.io.engine.transport.ws.extensions, "");
  assert.match((await call(`${server.url}/metrics`)).body, /^switchboard_websocket_deflate_connections_total 1$/m);
  const got = { deflating: [], plain: [] };
  deflating.on("order", (o) => got.deflating.push(o));
  plain.on("order", (o) => got.plain.push(o));
  // One broadcast reaches both, each in its form.
  const sent = await call(`${server.url}/api/emit`, { method: "POST", body: { event: "order", data: order(1) } });
  assert.equal(sent.body.reached, 2);
  // The same orders to each alone: what each costs on the wire.
  const cost = async (socket) => {
    const before = await bytesSent();
    for (let id = 2; id < 22; id++) {
      await call(`${server.url}/api/emit`, { method: "POST", body: { event: "order", sockets: [socket.id], data: order(id) } });
    }
    await sleep(200);
    return (await bytesSent()) - before;
  };
  const compressed = await cost(deflating);
  const uncompressed = await cost(plain);
  assert.equal(got.deflating.length, 21);
  assert.equal(got.plain.length, 21);
  assert.deepEqual(got.deflating, got.plain, "the same orders, intact");
  // Each message is compressed on its own (no context kept between messages): ~1 KB orders
  // shrink by a third or more.
  assert.ok(compressed < uncompressed * 0.75, `compressed ${compressed} B vs ${uncompressed} B`);
  // A client's own compressed messages are read (its `ws` compresses those over 1 KB): the
  // server counts the inflated bytes, and the connection stays up.
  const metric = async (name) => Number(new RegExp(`^switchboard_${name}_total (\\d+)`, "m").exec((await call(`${server.url}/metrics`)).body)?.[1]);
  const received = await metric("bytes_received");
  deflating.emit("note", "x".repeat(5000));
  await sleep(300);
  assert.ok((await metric("bytes_received")) - received > 5000, "the 5 KB message was inflated");
  assert.ok(deflating.connected);
});

test("a compressed message that inflates past max_payload closes that connection with 1009", async () => {
  const bystander = await client();
  const url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket";
  const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
  const messages = [];
  ws.on("message", (m) => messages.push(String(m)));
  await once(ws, "open");
  assert.equal(ws.extensions, "permessage-deflate");
  ws.send("40");
  const deadline = Date.now() + 3000;
  while (!messages.some((m) => m.startsWith("40")) && Date.now() < deadline) await sleep(20);
  assert.ok(messages[0].startsWith("0{") && messages.some((m) => m.startsWith("40")), messages.join(" | "));
  // 2 MB of one letter: a few KB compressed, twice max_payload inflated.
  ws.send(`42["bomb","${"a".repeat(2_000_000)}"]`);
  const [code] = await once(ws, "close", 5000);
  assert.equal(code, 1009);
  await sleep(100);
  assert.ok(bystander.connected, "nobody else is closed");
});

test("in Chromium, the official client's WebSocket negotiates deflate and gets events intact", async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium is needed at ${CHROMIUM} (scripts/test.sh installs it)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
  try {
    const page = await browser.newPage();
    await page.goto(`${server.url}/health`);
    await page.addScriptTag({ path: path.join(ROOT, "e2e/node_modules/socket.io-client/dist/socket.io.min.js") });
    const extensions = await page.evaluate(async (url) => {
      window.orders = [];
      window.socket = io(url, { transports: ["websocket"] });
      window.socket.on("order", (o) => window.orders.push(o));
      await new Promise((resolve) => window.socket.on("connect", resolve));
      return window.socket.io.engine.transport.ws.extensions;
    }, server.url);
    assert.match(extensions, /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);
    await call(`${server.url}/api/emit`, { method: "POST", body: { event: "order", data: order(99) } });
    await page.waitForFunction(() => window.orders.length === 1);
    assert.deepEqual(await page.evaluate(() => window.orders[0]), order(99));
  } finally {
    await browser.close();
  }
});

test("with compression off (the default) nothing is negotiated", async () => {
  const plainServer = await startServer("switchboard");
  try {
    const socket = io(plainServer.url, { forceNew: true, transports: ["websocket"] });
    clients.push(socket);
    await once(socket, "connect");
    assert.equal(socket.io.engine.transport.ws.extensions, "");
    socket.disconnect();
  } finally {
    await plainServer.stop();
  }
});
