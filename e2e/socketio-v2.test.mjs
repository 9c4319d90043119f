// Mobile and web apps still on socket.io v2 clients, with `[engine] allow_eio3 = true` (the
// reference server's allowEIO3): the real socket.io-client 2.5.0 from npm connects over polling
// (then upgrades to WebSocket), over WebSocket only, and over polling only; events with acks,
// rooms shared with a v4 client, binary both ways, another namespace, the server's heartbeat
// expectations (the v2 client pings), a reconnect after the server drops the transport, and a
// server without allow_eio3 refusing it.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { io as ioV4 } from "socket.io-client";
import { startServer, once, sleep, call, tempFile } from "./lib/server.mjs";

const require = createRequire(import.meta.url);
const ioV2 = require("socket.io-client-v2");
const KEY = "v2-key-123456";

const CONFIG = `
[engine]
allow_eio3 = true
ping_interval = "300ms"
ping_timeout = "400ms"

[api]
keys = ["${KEY}"]

[[namespaces]]
name = "/"

[[namespaces.events]]
on = "join"
expect = ["string"]
actions = [{ join = "{arg}" }, { ack = { joined = "{arg}" } }]

[[namespaces.events]]
on = "say"
expect = [{ room = "string", text = "string" }]
actions = [{ emit = "said", to = "room", room = "{arg.room}", data = { from = "{socket.id}", text = "{arg.text}" } }]

[[namespaces.events]]
on = "file"
actions = [{ emit = "file", to = "all", data = "{arg}" }]

[[namespaces]]
name = "/admin"

[[namespaces.events]]
on = "whoami"
actions = [{ ack = { id = "{socket.id}" } }]
`;

describe("socket.io-client 2.x", () => {
  let server;
  const clients = [];
  const v2 = (opts = {}, nsp = "") => {
    const socket = ioV2(server.url + nsp, { forceNew: true, reconnection: false, ...opts });
    clients.push(socket);
    return socket;
  };
  const v4 = (opts = {}) => {
    const socket = ioV4(server.url, { forceNew: true, reconnection: false, ...opts });
    clients.push(socket);
    return socket;
  };
  const ack = (socket, ...args) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no ack")), 3000);
      socket.emit(...args, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });

  before(async () => {
    server = await startServer("switchboard", { args: ["--config", await tempFile("v2.toml", CONFIG)] });
  });
  after(async () => {
    clients.forEach((s) => s.close());
    await server.stop();
  });

  test("connects by polling and upgrades to WebSocket", async () => {
    const socket = v2();
    await once(socket, "connect");
    if (socket.io.engine.transport.name !== "websocket") await once(socket.io.engine, "upgrade");
    assert.equal(socket.io.engine.transport.name, "websocket");
    assert.deepEqual(await ack(socket, "join", "lobby"), { joined: "lobby" });
    // The v2 client pings (pingInterval 300 ms): well past a ping timeout it is still connected.
    await sleep(1500);
    assert.equal(socket.connected, true);
    const metrics = (await call(`${server.url}/metrics`)).body;
    assert.match(metrics, /switchboard_sessions_by_parser_total\{parser="socket.io-v2"\} [1-9]/);
  });

  test("rooms shared with a v4 client, both ways, over WebSocket and over polling only", async () => {
    const ws = v2({ transports: ["websocket"] });
    const polling = v2({ transports: ["polling"] });
    const modern = v4({ transports: ["websocket"] });
    await Promise.all([once(ws, "connect"), once(polling, "connect"), once(modern, "connect")]);
    for (const s of [ws, polling]) assert.deepEqual(await ack(s, "join", "kitchen"), { joined: "kitchen" });
    assert.deepEqual(await modern.timeout(3000).emitWithAck("join", "kitchen"), { joined: "kitchen" });
    let heard = [ws, polling, modern].map((s) => once(s, "said"));
    polling.emit("say", { room: "kitchen", text: "from v2 polling" });
    const froms = new Set();
    for (const [data] of await Promise.all(heard)) {
      assert.equal(data.text, "from v2 polling");
      froms.add(data.from);
    }
    assert.equal(froms.size, 1, "every member hears the same sender");
    heard = [ws, polling, modern].map((s) => once(s, "said"));
    modern.emit("say", { room: "kitchen", text: "from v4" });
    for (const [data] of await Promise.all(heard)) assert.deepEqual(data, { from: modern.id, text: "from v4" });
    // The HTTP API reaches v2 sockets in a room.
    const direct = [ws, polling].map((s) => once(s, "order"));
    const res = await call(`${server.url}/api/emit`, { method: "POST", key: KEY, body: { event: "order", rooms: ["kitchen"], data: { id: 3 } } });
    assert.equal(res.status, 200);
    for (const [data] of await Promise.all(direct)) assert.deepEqual(data, { id: 3 });
  });

  test("binary both ways between v2 (WebSocket and polling) and v4 clients", async () => {
    const ws = v2({ transports: ["websocket"] });
    const polling = v2({ transports: ["polling"] });
    const modern = v4({ transports: ["websocket"] });
    await Promise.all([once(ws, "connect"), once(polling, "connect"), once(modern, "connect")]);
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    for (const sender of [ws, polling, modern]) {
      const heard = [ws, polling, modern].map((s) => once(s, "file"));
      sender.emit("file", { name: "x.bin", body: bytes });
      for (const [data] of await Promise.all(heard)) {
        assert.equal(data.name, "x.bin");
        assert.deepEqual(Buffer.from(data.body), bytes);
      }
    }
  });

  test("another namespace: connect and ack; the server's socket id never reveals the session id", async () => {
    const admin = v2({ transports: ["websocket"] }, "/admin");
    await once(admin, "connect");
    const reply = await ack(admin, "whoami");
    assert.equal(typeof reply.id, "string");
    // The session id is all it takes to speak for a session: it is not what others see.
    assert.ok(!reply.id.includes(admin.io.engine.id), `${reply.id} vs session ${admin.io.engine.id}`);
  });

  test("a v3 session that stops pinging is closed after pingInterval + pingTimeout; the server never pings it", async () => {
    const WebSocket = (await import("ws")).default;
    const raw = new WebSocket(`${server.url.replace("http", "ws")}/socket.io/?EIO=3&transport=websocket`);
    const got = [];
    raw.on("message", (m) => got.push(m.toString()));
    await once(raw, "open");
    const opened = Date.now();
    await once(raw, "close", 5000);
    const lived = Date.now() - opened;
    assert.ok(lived >= 600 && lived < 2500, `closed after ${lived} ms (300 + 400 ms, checked on the timer)`);
    assert.match(got[0], /^0\{"sid":/);
    assert.equal(got[1], "40", "connected to / unasked, with no payload");
    assert.ok(!got.includes("2"), "no server ping in v3");
  });

  test("a dropped transport: the v2 client reconnects on its own", async () => {
    const socket = v2({ transports: ["websocket"], reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 200 });
    await once(socket, "connect");
    const first = socket.id;
    assert.deepEqual(await ack(socket, "join", "to-drop"), { joined: "to-drop" });
    const res = await call(`${server.url}/api/disconnect`, { method: "POST", key: KEY, body: { rooms: ["to-drop"], close_transport: true } });
    assert.equal(res.body.disconnected, 1);
    await once(socket, "reconnect", 5000);
    assert.equal(socket.connected, true);
    assert.notEqual(socket.id, first);
    assert.deepEqual(await ack(socket, "join", "again"), { joined: "again" });
  });
});

test("without allow_eio3 a v2 client is refused", async () => {
  const server = await startServer("switchboard", { args: ["--config", await tempFile("v4-only.toml", `[[namespaces]]\nname = "/"\n`)] });
  try {
    const res = await fetch(`${server.url}/socket.io/?EIO=3&transport=polling`);
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), { code: 5, message: "Unsupported protocol version" });
    const socket = ioV2(server.url, { forceNew: true, reconnection: false });
    await once(socket, "connect_error");
    socket.close();
  } finally {
    await server.stop();
  }
});
