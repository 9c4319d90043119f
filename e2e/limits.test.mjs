// Limits as an attacked public endpoint meets them, with the official socket.io-client: a
// flooding socket is limited while its neighbours are not, a capped address cannot connect
// while another can (directly and through a trusted proxy), per-user, per-connection and
// per-socket caps, the API's rate limit, the plain endpoint's close code, and crafted packets
// that close only their own session.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Manager } from "socket.io-client";
import WebSocket from "ws";
import { clientPool } from "./lib/clients.mjs";
import { startServer, once, sleep, call, tempFile } from "./lib/server.mjs";

const SECRET = "limits-secret-0123456789abcdef";
const KEY = "limits-api-key-0123";
const clients = clientPool({ reconnection: false });
const connect = clients.connect;

function mint(claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

const CONFIG = `
[server]
header_read_timeout = "1s"

[limits]
max_connections_per_ip = 3
max_connections_per_user = 2
max_namespaces_per_connection = 2
max_rooms_per_socket = 3
trusted_proxies = ["127.0.0.1"]

[rate_limits]
on_excess = "drop"
socket = { rate = 1000, burst = 1000 }
events = [{ event = "message", rate = 5, burst = 10 }]
api = { rate = 1, burst = 3 }

[api]
keys = ["${KEY}"]

[auth]
secret = "${SECRET}"
required = false

[plain_ws]
path = "/ws"

[[namespaces]]
name = "/"

[[namespaces.events]]
on = "message"
actions = [{ ack = "ok" }]

[[namespaces.events]]
on = "join"
expect = ["string"]
actions = [{ join = "{arg}" }]

[[namespaces]]
name = "/a"

[[namespaces]]
name = "/b"
`;

describe("limits", () => {
  let server;
  before(async () => {
    server = await startServer("switchboard", { args: ["--config", await tempFile("limits.toml", CONFIG)] });
  });
  after(async () => {
    clients.disconnectAll();
    await server.stop();
  });
  const metric = async (name) => (await call(`${server.url}/metrics`)).body.split("\n").find((l) => l.startsWith(name));

  test("a flooding socket gets error acks past its rate; its neighbour is not affected", async () => {
    const flooder = connect(server.url, { localAddress: "127.0.0.2" });
    const neighbour = connect(server.url, { localAddress: "127.0.0.3" });
    await Promise.all([once(flooder, "connect"), once(neighbour, "connect")]);
    const flood = await Promise.all(Array.from({ length: 30 }, () => flooder.timeout(3000).emitWithAck("message", "spam")));
    const ok = flood.filter((a) => a === "ok").length;
    const limited = flood.filter((a) => a?.error?.code === "rate_limited").length;
    assert.ok(ok >= 10 && ok <= 12, `the burst of 10 goes through (${ok})`);
    assert.equal(ok + limited, 30, "every event is answered, none dropped silently");
    const calm = await Promise.all(Array.from({ length: 5 }, () => neighbour.timeout(3000).emitWithAck("message", "hi")));
    assert.deepEqual(calm, ["ok", "ok", "ok", "ok", "ok"]);
    assert.equal(flooder.connected, true, "on_excess = drop keeps the socket");
    assert.match(await metric('switchboard_limits_hit_total{limit="event_rate"}'), / [1-9]/);
    flooder.disconnect();
    neighbour.disconnect();
  });

  test("an address at its cap cannot connect while another can; polling gets 429 with a JSON body", async () => {
    const mine = [];
    for (let i = 0; i < 3; i++) {
      const s = connect(server.url, { localAddress: "127.0.0.4" });
      await once(s, "connect");
      mine.push(s);
    }
    const fourth = connect(server.url, { localAddress: "127.0.0.4" });
    await once(fourth, "connect_error");
    const other = connect(server.url, { localAddress: "127.0.0.6" });
    await once(other, "connect");
    const polling = await fetch(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: {} }).then(async (r) => ({ status: r.status, body: await r.text() }));
    assert.equal(polling.status, 200, "loopback 127.0.0.1 is another address");
    mine[0].disconnect();
    await sleep(200);
    const again = connect(server.url, { localAddress: "127.0.0.4" });
    await once(again, "connect");
    assert.match(await metric("switchboard_handshakes_refused_connections_per_ip_total"), / [1-9]/);
    [...mine, again, other].forEach((s) => s.disconnect());
  });

  test("behind a trusted proxy the client address comes from X-Forwarded-For", async () => {
    // Polling requests come from 127.0.0.1, the trusted proxy here.
    const via = (client) => ({ transports: ["polling"], extraHeaders: { "x-forwarded-for": client } });
    const held = [];
    for (let i = 0; i < 3; i++) {
      const s = connect(server.url, via("203.0.113.7"));
      await once(s, "connect");
      held.push(s);
    }
    const refused = connect(server.url, via("203.0.113.7"));
    const [error] = await once(refused, "connect_error");
    assert.equal(error.context?.status, 429, "the polling handshake is refused with 429");
    const direct = await call(`${server.url}/socket.io/?EIO=4&transport=polling`, { headers: { "x-forwarded-for": "203.0.113.7" } });
    assert.equal(direct.status, 429);
    assert.deepEqual(direct.body, { code: 4, message: "Too many connections from this address" });
    const neighbour = connect(server.url, via("203.0.113.8"));
    await once(neighbour, "connect");
    // An untrusted peer's header is its own claim: ignored.
    const spoof = connect(server.url, { localAddress: "127.0.0.7", extraHeaders: { "x-forwarded-for": "203.0.113.7" } });
    await once(spoof, "connect");
    [...held, neighbour, spoof].forEach((s) => s.disconnect());
  });

  test("one user has at most two sockets; one connection at most two namespaces", async () => {
    const token = mint({ userId: "u-limit" });
    const a = connect(server.url, { localAddress: "127.0.0.8", auth: { token } });
    const b = connect(server.url, { localAddress: "127.0.0.9", auth: { token } });
    await Promise.all([once(a, "connect"), once(b, "connect")]);
    const c = connect(server.url, { localAddress: "127.0.0.10", auth: { token } });
    const [error] = await once(c, "connect_error");
    assert.equal(error.message, "Too many connections");
    assert.equal(error.data.code, "too_many_connections");
    [a, b].forEach((s) => s.disconnect());

    const manager = new Manager(server.url, { transports: ["websocket"], reconnection: false, localAddress: "127.0.0.11" });
    const root = manager.socket("/");
    const first = manager.socket("/a");
    await Promise.all([once(root, "connect"), once(first, "connect")]);
    const third = manager.socket("/b");
    const [refusal] = await once(third, "connect_error");
    assert.equal(refusal.message, "Too many namespaces");
    assert.equal(root.connected && first.connected, true, "the others stay");
    clients.sockets.push(root, first, third);
    root.disconnect();
    first.disconnect();
  });

  test("a socket is in at most three rooms", async () => {
    const socket = connect(server.url, { localAddress: "127.0.0.12" });
    await once(socket, "connect");
    const answers = [];
    for (const room of ["r1", "r2", "r3", "r4", "r5", "r1"]) answers.push(await socket.timeout(2000).emitWithAck("join", room));
    assert.deepEqual(answers.slice(0, 3), [{ ok: true }, { ok: true }, { ok: true }]);
    for (const refused of answers.slice(3, 5)) assert.equal(refused.error?.code, "too_many_rooms", JSON.stringify(refused));
    assert.deepEqual(answers[5], { ok: true }, "a room it is in already is not one more");
    await sleep(100);
    const rooms = (await call(`${server.url}/api/rooms`, { key: KEY })).body.rooms.map((r) => r.name).filter((n) => n.startsWith("r"));
    assert.deepEqual(rooms.sort(), ["r1", "r2", "r3"]);
    assert.match(await metric('switchboard_limits_hit_total{limit="rooms_per_socket"}'), / [1-9]/);
    socket.disconnect();
  });

  test("the API answers 429 with Retry-After past a key's rate", async () => {
    await sleep(3000); // the earlier tests' calls refill
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await call(`${server.url}/api/stats`, { key: KEY }));
    const limited = answers.filter((a) => a.status === 429);
    assert.ok(limited.length >= 1, answers.map((a) => a.status).join(","));
    assert.equal(limited[0].body.error.code, "rate_limited");
    assert.ok(Number(limited[0].headers.get("retry-after")) >= 1);
  });

  test("the plain WebSocket endpoint closes an address over its cap with 1008", async () => {
    const open = [];
    for (let i = 0; i < 3; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws?userId=p${i}`, { localAddress: "127.0.0.13" });
      await once(ws, "message");
      open.push(ws);
    }
    const extra = new WebSocket(`ws://127.0.0.1:${server.port}/ws?userId=p9`, { localAddress: "127.0.0.13" });
    const [code] = await once(extra, "close");
    assert.equal(code, 1008);
    open.forEach((ws) => ws.close());
  });

  test("a client that dribbles its request head (slowloris) is cut off", async () => {
    const { createConnection } = await import("node:net");
    const slow = createConnection({ port: server.port, host: "127.0.0.1", localAddress: "127.0.0.17" });
    await once(slow, "connect");
    slow.write("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n");
    const dribble = setInterval(() => slow.write("X-A: b\r\n"), 300);
    const started = Date.now();
    await once(slow, "close", 5000);
    clearInterval(dribble);
    assert.ok(Date.now() - started < 3000, "closed within the header read timeout");
  });

  test("an over-long event name and a deeply nested payload close nothing but their own session", async () => {
    const bystander = connect(server.url, { localAddress: "127.0.0.14" });
    await once(bystander, "connect");
    const named = connect(server.url, { localAddress: "127.0.0.15" });
    await once(named, "connect");
    const answer = await named.timeout(2000).emitWithAck("x".repeat(300), 1);
    assert.equal(answer.error.code, "invalid_event");
    const raw = new WebSocket(`ws://127.0.0.1:${server.port}/socket.io/?EIO=4&transport=websocket`, { localAddress: "127.0.0.16" });
    await once(raw, "message");
    raw.send("40");
    await once(raw, "message");
    // 127 deep, the packet's array counted, is the documented maximum: answered; 128 closes.
    raw.send(`421["message",${"[".repeat(126)}${"]".repeat(126)}]`);
    const [deepest] = await once(raw, "message");
    assert.equal(deepest.toString(), '431["ok"]');
    raw.send(`42["message",${"[".repeat(127)}${"]".repeat(127)}]`);
    await once(raw, "close", 3000);
    assert.equal(await bystander.timeout(2000).emitWithAck("message", "still here"), "ok");
    [bystander, named].forEach((s) => s.disconnect());
  });
});

describe("limits: on_excess = disconnect", () => {
  let server;
  before(async () => {
    const config = `
[rate_limits]
on_excess = "disconnect"
socket = { rate = 2, burst = 5 }
`;
    server = await startServer("switchboard", { args: ["--config", await tempFile("limits-disconnect.toml", config)] });
  });
  after(async () => {
    clients.disconnectAll();
    await server.stop();
  });

  test("a flooding socket is disconnected, the client reads why", async () => {
    const socket = connect(server.url);
    await once(socket, "connect");
    const gone = once(socket, "disconnect", 3000);
    for (let i = 0; i < 20; i++) socket.emit("anything", i);
    const [reason] = await gone;
    assert.equal(reason, "io server disconnect");
  });
});

describe("limits: request bodies", () => {
  let server;
  before(async () => {
    const config = `
[server]
body_read_timeout = "1s"

[api]
keys = ["${KEY}"]

[[routes]]
path = "/broadcast/note"
emit = "note"
`;
    server = await startServer("switchboard", { args: ["--config", await tempFile("limits-bodies.toml", config)] });
  });
  after(async () => {
    await server.stop();
  });

  test("a body declared over the limit gets 413 at once, and a body that stalls gets 408: API, routes, polling", async () => {
    const { createConnection } = await import("node:net");
    /** Sends a request head declaring `length` bytes and then one byte; resolves with the status and how long it took. */
    const stalled = (path, length, localAddress) =>
      new Promise((resolve, reject) => {
        const socket = createConnection({ port: server.port, host: "127.0.0.1", localAddress });
        const started = Date.now();
        let answer = "";
        let ms = null;
        socket.on("data", (d) => {
          answer += d.toString();
          const status = /^HTTP\/1\.1 (\d{3})/.exec(answer);
          if (status && ms === null) {
            ms = Date.now() - started;
            // The rest of the answer (its body) may come in a second segment.
            setTimeout(() => {
              socket.destroy();
              resolve({ status: Number(status[1]), ms, answer });
            }, 100);
          }
        });
        socket.on("error", reject);
        setTimeout(() => reject(new Error(`no answer to ${path} within 5 s`)), 5000).unref();
        socket.write(
          `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${length}\r\n\r\n{`,
        );
      });
    const sid = (await call(`${server.url}/socket.io/?EIO=4&transport=polling`)).body;
    const pollingPath = `/socket.io/?EIO=4&transport=polling&sid=${JSON.parse(sid.slice(1)).sid}`;
    for (const [path, address] of [["/api/emit", "127.0.0.18"], ["/broadcast/note", "127.0.0.19"], [pollingPath, "127.0.0.20"]]) {
      const huge = await stalled(path, 10_000_000_000, address);
      assert.equal(huge.status, 413, `${path}: ${huge.answer}`);
      assert.ok(huge.ms < 500, `${path}: refused before the body, in ${huge.ms} ms`);
    }
    const sid2 = (await call(`${server.url}/socket.io/?EIO=4&transport=polling`)).body;
    const pollingPath2 = `/socket.io/?EIO=4&transport=polling&sid=${JSON.parse(sid2.slice(1)).sid}`;
    for (const [path, address] of [["/api/emit", "127.0.0.18"], ["/broadcast/note", "127.0.0.19"], [pollingPath2, "127.0.0.20"]]) {
      const slow = await stalled(path, 100, address);
      assert.equal(slow.status, 408, `${path}: ${slow.answer}`);
      if (path === "/api/emit") assert.match(slow.answer, /"code":"body_timeout"/, "the catalogue's code for a body that stalls");
      assert.ok(slow.ms >= 900 && slow.ms < 3000, `${path}: answered after the 1 s body timeout (${slow.ms} ms)`);
    }
  });
});
