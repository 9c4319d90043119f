// The online-status service (examples/online-status.toml): a plain WebSocket endpoint, driven
// by the `ws` package as a non-Socket.IO client would, sharing presence with Socket.IO.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { startServer, sleep, call, tempFile, once, ROOT } from "./lib/server.mjs";

let server;
const open = [];

function connect(userId, srv = server) {
  const url = `ws://127.0.0.1:${srv.port}/ws-online-status` + (userId === undefined ? "" : `?userId=${userId}`);
  const ws = new WebSocket(url);
  ws.on("error", () => {});
  ws.messages = [];
  ws.waiters = [];
  ws.on("message", (data) => {
    const message = JSON.parse(data.toString());
    const waiter = ws.waiters.find((w) => w.match(message));
    if (waiter) {
      ws.waiters.splice(ws.waiters.indexOf(waiter), 1);
      waiter.resolve(message);
    } else ws.messages.push(message);
  });
  open.push(ws);
  return ws;
}

/** The next message matching `match` (already received or still to come). */
function next(ws, match = () => true, timeoutMs = 4000) {
  const index = ws.messages.findIndex(match);
  if (index >= 0) return Promise.resolve(ws.messages.splice(index, 1)[0]);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no matching message")), timeoutMs);
    ws.waiters.push({ match, resolve: (m) => (clearTimeout(timer), resolve(m)) });
  });
}

const about = (type, userId) => (m) => m.type === type && m.userId === userId;

before(async () => {
  server = await startServer("switchboard", {
    args: ["--config", path.join(ROOT, "examples/online-status.toml")],
    env: { SWITCHBOARD_PRESENCE_GRACE: "300ms" },
  });
});
after(async () => {
  open.forEach((ws) => ws.terminate());
  await server.stop();
});

test("a client gets CONNECTION_ESTABLISHED, then everyone hears of users coming and going", async () => {
  const watcher = connect("watcher");
  const hello = await next(watcher);
  assert.equal(hello.type, "CONNECTION_ESTABLISHED");
  assert.equal(hello.userId, "watcher");
  assert.ok(hello.connectionId);
  assert.ok(!Number.isNaN(Date.parse(hello.timestamp)));

  const tab1 = connect("123");
  const online = await next(watcher, about("USER_ONLINE", "123"));
  assert.ok(!Number.isNaN(Date.parse(online.timestamp)));
  await next(tab1, (m) => m.type === "CONNECTION_ESTABLISHED");
  const tab2 = connect("123");
  await next(tab2, (m) => m.type === "CONNECTION_ESTABLISHED");
  assert.deepEqual((await call(server.url + "/api/users/123")).body, { user: "123", online: true, connections: 2 });

  tab1.close();
  await sleep(500);
  assert.ok(!watcher.messages.some(about("USER_OFFLINE", "123")), "still online: one tab is left");
  tab2.close();
  const offline = await next(watcher, about("USER_OFFLINE", "123"));
  assert.equal(offline.userId, "123");
  assert.ok(!watcher.messages.some(about("USER_ONLINE", "123")), "one USER_ONLINE for two tabs");

  const stats = (await call(server.url + "/api/stats")).body;
  assert.equal(stats.users, 1, "only the watcher is online now");
});

test("a page reload within the grace period does not flap", async () => {
  const watcher = connect("watcher-2");
  await next(watcher, (m) => m.type === "CONNECTION_ESTABLISHED");
  const first = connect("reloader");
  await next(watcher, about("USER_ONLINE", "reloader"));
  first.close();
  await sleep(50);
  const second = connect("reloader");
  await next(second, (m) => m.type === "CONNECTION_ESTABLISHED");
  await sleep(500);
  assert.ok(!watcher.messages.some((m) => m.userId === "reloader"), "no offline/online pair");
  second.close();
});

test("Socket.IO clients share the same presence", async () => {
  const watcher = connect("watcher-3");
  await next(watcher, (m) => m.type === "CONNECTION_ESTABLISHED");
  const socket = io(server.url, { forceNew: true, transports: ["websocket"], query: { userId: "sio-7" } });
  await next(watcher, about("USER_ONLINE", "sio-7"));
  socket.disconnect();
  await next(watcher, about("USER_OFFLINE", "sio-7"));
});

test("requests and refusals", async () => {
  const ws = connect("asker");
  await next(ws, (m) => m.type === "CONNECTION_ESTABLISHED");
  ws.send(JSON.stringify({ type: "GET_ONLINE_USERS" }));
  const list = await next(ws, (m) => m.type === "ONLINE_USERS");
  assert.ok(list.users.includes("asker"));
  ws.send("not json");
  assert.equal((await next(ws, (m) => m.type === "ERROR")).type, "ERROR");
  // No user id: refused before the upgrade.
  const anonymous = connect(undefined);
  const status = await new Promise((resolve) => anonymous.on("unexpected-response", (_, res) => resolve(res.statusCode)));
  assert.equal(status, 400);
});

/**
 * Connects `userId` and a bystander, lets `misbehave` break the rules on the first connection,
 * and returns the close code it got once the bystander saw it go offline and still gets answers.
 */
async function closeCodeOfOnly(userId, bystanderId, misbehave) {
  const offender = connect(userId);
  const bystander = connect(bystanderId);
  await next(offender, (m) => m.type === "CONNECTION_ESTABLISHED");
  await next(bystander, (m) => m.type === "CONNECTION_ESTABLISHED");
  const code = await new Promise((resolve) => {
    offender.on("close", (closeCode) => resolve(closeCode));
    misbehave(offender);
  });
  await next(bystander, about("USER_OFFLINE", userId));
  bystander.send(JSON.stringify({ type: "PING" }));
  assert.equal((await next(bystander, (m) => m.type === "PONG")).type, "PONG");
  return code;
}

test("a message over the size limit closes the connection with 1009, and only it", async () => {
  const code = await closeCodeOfOnly("big", "bystander", (ws) => {
    ws.send("x".repeat(1_100_000)); // the default limit is 1 MB
  });
  assert.equal(code, 1009);
});

test("a frame that breaks the WebSocket protocol closes the connection with 1002, and only it", async () => {
  const code = await closeCodeOfOnly("broken", "bystander-2", (ws) => {
    // A text frame "hi" without the mask every client frame must carry (RFC 6455 5.1).
    ws._socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  });
  assert.equal(code, 1002);
});

test("the server pings and drops peers that stop answering", async () => {
  const config = await tempFile(
    "online.toml",
    `[plain_ws]\npath = "/ws-online-status"\nping_interval = "200ms"\n[presence]\ngrace = "0s"\n`,
  );
  const srv = await startServer("switchboard", { args: ["--config", config] });
  try {
    const watcher = connect("w", srv);
    await next(watcher, (m) => m.type === "CONNECTION_ESTABLISHED");
    let pings = 0;
    watcher.on("ping", () => pings++);
    const dead = connect("dead", srv);
    await next(watcher, about("USER_ONLINE", "dead"));
    // The server may announce it before the client has read the 101.
    if (dead.readyState !== WebSocket.OPEN) await once(dead, "open");
    dead._socket.pause(); // a peer that vanished without closing
    await next(watcher, about("USER_OFFLINE", "dead"), 3000);
    assert.ok(pings >= 2, `the watcher was pinged (${pings})`);
    dead.terminate();
  } finally {
    await srv.stop();
  }
});
