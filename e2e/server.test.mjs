// The switchboard binary as a backend sees it: the HTTP API (emit, batch, join, leave,
// disconnect, rooms, stats), API keys, error bodies, health/metrics, check-config and a graceful
// shutdown that official clients reconnect from.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { networkInterfaces } from "node:os";
import { io } from "socket.io-client";
import { startServer, once, sleep, until, tempFile, call, freePort, metricValue, RELEASE } from "./lib/server.mjs";

const KEY = "test-key-0123456789";
let server;
const clients = [];

async function client(opts = {}) {
  const socket = io(server.url, { forceNew: true, transports: ["websocket"], ...opts });
  clients.push(socket);
  await once(socket, "connect");
  return socket;
}

const api = (route, body) => call(server.url + route, { method: body ? "POST" : "GET", body, key: KEY });

/** Collects the payload of every `event` a socket receives (recovery appends an offset). */
function collect(socket, event) {
  const got = [];
  socket.on(event, (payload) => got.push(payload));
  return got;
}

before(async () => {
  const config = await tempFile(
    "server.toml",
    `[server]\nstats_interval = "0s"\n\n[[namespaces]]\nname = "/"\n\n[[namespaces]]\nname = "/admin"\n`,
  );
  server = await startServer("switchboard", {
    args: ["serve", "--config", config],
    env: { SWITCHBOARD_API_KEYS: KEY },
  });
});

after(async () => {
  for (const socket of clients) socket.disconnect();
  await server.stop();
});

test("emit reaches the sockets in the named rooms and no others", async () => {
  const [a, b, c] = await Promise.all([client(), client(), client()]);
  const got = { a: collect(a, "order_created"), b: collect(b, "order_created"), c: collect(c, "order_created") };
  let res = await api("/api/join", { sockets: [a.id, b.id], rooms: ["kitchen"] });
  assert.deepEqual(res, { status: 200, body: { affected: 2 }, headers: res.headers });
  res = await api("/api/join", { in: ["kitchen"], rooms: ["staff"] });
  assert.equal(res.body.affected, 2);

  res = await api("/api/emit", { event: "order_created", rooms: ["kitchen"], data: { id: 1 } });
  assert.equal(res.status, 200);
  assert.equal(res.body.reached, 2);
  res = await api("/api/emit", { event: "order_created", rooms: ["kitchen", "staff"], except: [b.id], args: [{ id: 2 }] });
  assert.equal(res.body.reached, 1, "a socket in several targeted rooms counts once; b is excluded");
  res = await api("/api/emit", { event: "order_created", sockets: [c.id], data: { id: 3 } });
  assert.equal(res.body.reached, 1);
  res = await api("/api/emit", { event: "order_created", data: { id: 4 } });
  assert.ok(res.body.reached >= 3, "no rooms, no sockets: everyone in the namespace");
  await sleep(200);
  assert.deepEqual(got.a, [{ id: 1 }, { id: 2 }, { id: 4 }]);
  assert.deepEqual(got.b, [{ id: 1 }, { id: 4 }]);
  assert.deepEqual(got.c, [{ id: 3 }, { id: 4 }]);

  res = await api("/api/leave", { sockets: [a.id], rooms: ["kitchen"] });
  assert.equal(res.body.affected, 1);
  res = await api("/api/emit", { event: "order_created", rooms: ["kitchen"], data: { id: 5 } });
  assert.equal(res.body.reached, 1);

  res = await api("/api/rooms");
  assert.equal(res.status, 200);
  const kitchen = res.body.rooms.find((r) => r.name === "kitchen");
  assert.deepEqual(kitchen, { name: "kitchen", size: 1 });
  assert.ok(!res.body.rooms.some((r) => r.name === a.id), "sockets' own rooms are not listed");
  res = await api("/api/rooms/staff");
  assert.equal(res.body.size, 2);
  assert.deepEqual(res.body.sockets.map((s) => s.id).sort(), [a.id, b.id].sort());
  assert.equal(res.body.sockets[0].transport, "websocket");
  for (const s of [a, b, c]) s.disconnect();
});

test("batch commands are applied in order", async () => {
  const socket = await client();
  const got = collect(socket, "step");
  const res = await api("/api/batch", {
    commands: [
      { op: "emit", event: "step", rooms: ["line"], data: "before join: nobody" },
      { op: "join", sockets: [socket.id], rooms: ["line"] },
      { op: "emit", event: "step", rooms: ["line"], data: 1 },
      { op: "emit", event: "step", rooms: ["line"], data: 2 },
      { op: "leave", sockets: [socket.id], rooms: ["line"] },
      { op: "emit", event: "step", rooms: ["line"], data: "after leave: nobody" },
      { op: "emit", event: "step", sockets: [socket.id], data: 3 },
    ],
  });
  assert.equal(res.status, 200);
  // With recovery on (the default), each emit reports its offset, increasing in batch order.
  const offsets = res.body.results.filter((r) => r.op === "emit").map((r) => Number(r.offset));
  assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b));
  assert.equal(new Set(offsets).size, 5);
  assert.deepEqual(res.body.results.map(({ offset, ...rest }) => rest), [
    { op: "emit", reached: 0 },
    { op: "join", affected: 1 },
    { op: "emit", reached: 1 },
    { op: "emit", reached: 1 },
    { op: "leave", affected: 1 },
    { op: "emit", reached: 0 },
    { op: "emit", reached: 1 },
  ]);
  await sleep(200);
  assert.deepEqual(got, [1, 2, 3]);

  const bad = await api("/api/batch", {
    commands: [
      { op: "emit", event: "step", sockets: [socket.id], data: "must not be sent" },
      { op: "emit", event: "disconnect" },
    ],
  });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.field, "commands[1].event");
  await sleep(100);
  assert.deepEqual(got, [1, 2, 3], "a batch with a bad command applies none");
  socket.disconnect();
});

test("the API requires a configured key", async () => {
  let res = await call(server.url + "/api/stats");
  assert.equal(res.status, 401);
  assert.equal(res.body.error.code, "unauthorized");
  res = await call(server.url + "/api/stats", { key: "wrong-key-0123456789" });
  assert.equal(res.status, 401);
  res = await call(server.url + "/api/emit", { method: "POST", body: { event: "x" } });
  assert.equal(res.status, 401);
  res = await call(server.url + "/api/stats", { key: KEY });
  assert.equal(res.status, 200);
  res = await call(server.url + "/api/openapi.json");
  assert.equal(res.status, 200);
  assert.equal(res.body.openapi, "3.1.0");
});

test("bad requests get 4xx with a JSON body naming the field", async () => {
  const cases = [
    ["/api/emit", "{not json", 400, "invalid_json", null],
    ["/api/emit", { rooms: ["a"] }, 400, "invalid_field", "event"],
    ["/api/emit", { event: 42 }, 400, "invalid_field", "event"],
    ["/api/emit", { event: "x", rooms: ["ok", 7] }, 400, "invalid_field", "rooms[1]"],
    ["/api/emit", { event: "x", rooms: ["r".repeat(300)] }, 400, "invalid_field", "rooms[0]"],
    ["/api/emit", { event: "x", args: [1], data: 2 }, 400, "invalid_field", "data"],
    ["/api/emit", { event: "x", namespace: "/nowhere" }, 404, "unknown_namespace", "namespace"],
    ["/api/emit", { event: "x", colour: "red" }, 400, "invalid_field", "colour"],
    ["/api/join", { rooms: ["a"] }, 400, "invalid_field", "sockets"],
    ["/api/join", { sockets: ["x"] }, 400, "invalid_field", "rooms"],
    ["/api/disconnect", {}, 400, "invalid_field", "sockets"],
  ];
  for (const [route, body, status, code, field] of cases) {
    const res = await api(route, body);
    assert.equal(res.status, status, `${route} ${JSON.stringify(body)}`);
    assert.equal(res.body.error.code, code, `${route} ${JSON.stringify(body)}`);
    assert.equal(res.body.error.field, field, `${route} ${JSON.stringify(body)}`);
    assert.equal(typeof res.body.error.message, "string");
  }
  const huge = await api("/api/emit", { event: "x", data: "y".repeat(1_100_000) });
  assert.equal(huge.status, 413);
  assert.equal(huge.body.error.code, "payload_too_large");
  const missing = await api("/api/nothing-here");
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "not_found");
});

test("the API can disconnect sockets; the client sees io server disconnect", async () => {
  const [main, admin] = await Promise.all([client(), client()]);
  const adminSocket = io(server.url + "/admin", { forceNew: true, transports: ["websocket"] });
  clients.push(adminSocket);
  await once(adminSocket, "connect");
  const disconnected = once(main, "disconnect");
  let res = await api("/api/disconnect", { sockets: [main.id] });
  assert.equal(res.body.disconnected, 1);
  assert.equal((await disconnected)[0], "io server disconnect");
  res = await api("/api/disconnect", { namespace: "/admin", sockets: [adminSocket.id] });
  assert.equal(res.body.disconnected, 1);
  assert.equal(admin.connected, true, "other sockets are untouched");
  admin.disconnect();
});

test("health, readiness, info, stats and metrics", async () => {
  const socket = await client();
  await api("/api/join", { sockets: [socket.id], rooms: ["metrics-room"] });
  assert.deepEqual((await call(server.url + "/health")).body, { status: "ok" });
  assert.deepEqual((await call(server.url + "/ready")).body, { ready: true });
  const info = (await call(server.url + "/")).body;
  assert.equal(info.name, "switchboard");
  assert.ok(info.connections >= 1);
  const stats = (await api("/api/stats")).body;
  assert.ok(stats.sockets >= 1 && stats.rooms >= 1 && stats.connections >= 1);
  assert.deepEqual(stats.namespaces.map((n) => n.name).sort(), ["/", "/admin"]);
  await api("/api/emit", { event: "tick", sockets: [socket.id] });
  const metrics = await (await fetch(server.url + "/metrics")).text();
  for (const series of [
    'switchboard_connections{transport="websocket"}',
    'switchboard_sockets{namespace="/"}',
    'switchboard_rooms{namespace="/"}',
    "switchboard_packets_received_total",
    "switchboard_packets_sent_total",
    "switchboard_bytes_sent_total",
    'switchboard_emits_total{source="api"}',
    'switchboard_api_requests_total{status="200"}',
    "switchboard_broadcast_fanout_seconds_bucket",
  ]) {
    assert.ok(metrics.includes(series), `metrics include ${series}`);
  }
  socket.disconnect();
});

/**
 * 80 WebSocket clients of `target` (a broadcast to 32 or more is written by the flusher threads)
 * are sent 30 numbered events through the API; every client must get all 30, in order. Answers
 * the server's metrics afterwards.
 */
async function broadcastToCrowd(target) {
  const crowd = await Promise.all(
    Array.from({ length: 80 }, async () => {
      const socket = io(target.url, { forceNew: true, transports: ["websocket"] });
      await once(socket, "connect");
      return socket;
    }),
  );
  const got = crowd.map((socket) => collect(socket, "crowd"));
  for (let n = 0; n < 30; n++) {
    const sent = await call(target.url + "/api/emit", { method: "POST", body: { event: "crowd", args: [n] }, key: KEY });
    assert.equal(sent.status, 200);
  }
  await until(() => got.every((events) => events.length >= 30), "every client got the 30 events", 10000);
  const expected = Array.from({ length: 30 }, (_, n) => n);
  got.forEach((events, i) => assert.deepEqual(events, expected, `client ${i}: every event, in order`));
  crowd.forEach((socket) => socket.disconnect());
  return (await fetch(target.url + "/metrics")).text();
}

test("a large broadcast is written through io_uring where the kernel allows it, and one send per client with io_uring = false; every client gets every event in order", async () => {
  const start = async (engine) => {
    const config = await tempFile("engine.toml", `[server]\nstats_interval = "0s"\n\n[engine]\n${engine}\n`);
    // At info, the server says so when the kernel or a seccomp profile refuses io_uring.
    return startServer("switchboard", { args: ["serve", "--config", config], env: { SWITCHBOARD_API_KEYS: KEY, RUST_LOG: "info" } });
  };
  const batched = await start("io_uring = true");
  try {
    const metrics = await broadcastToCrowd(batched);
    if (batched.output.join("").includes("io_uring is not available")) {
      assert.equal(metricValue(metrics, "switchboard_flushers_io_uring"), 0);
    } else {
      assert.ok(metricValue(metrics, "switchboard_flushers_io_uring") >= 1, "a flusher writes through io_uring");
      // One write may carry several events to a client that had more than one waiting.
      const sends = metricValue(metrics, "switchboard_io_uring_sends_total");
      assert.ok(sends >= 80, `every client was written through it (${sends} writes)`);
    }
  } finally {
    await batched.stop();
  }
  const oneByOne = await start("io_uring = false");
  try {
    const metrics = await broadcastToCrowd(oneByOne);
    assert.equal(metricValue(metrics, "switchboard_flushers_io_uring"), 0);
    assert.equal(metricValue(metrics, "switchboard_io_uring_sends_total"), 0);
  } finally {
    await oneByOne.stop();
  }
});

test("without API keys the API answers loopback callers only", async () => {
  const port = await freePort();
  const open = await startServer("switchboard", { args: ["--host", "0.0.0.0"], port });
  try {
    assert.equal((await call(open.url + "/api/stats")).status, 200);
    const external = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === "IPv4" && !a.internal);
    if (external) {
      const res = await call(`http://${external.address}:${port}/api/stats`);
      assert.equal(res.status, 403);
      assert.equal(res.body.error.code, "forbidden");
    }
    assert.ok(open.output.join("").includes("no API key configured"), "a warning is logged");
  } finally {
    await open.stop();
  }
});

test("--log-format json writes one JSON object per log line", async () => {
  const srv = await startServer("switchboard", { args: ["--log-format", "json"], env: { RUST_LOG: "info" } });
  try {
    await sleep(200);
    const lines = srv.output.join("").split("\n").filter((line) => line.trim() !== "");
    assert.ok(lines.length > 0, "the server logged something");
    const records = lines.map((line) => JSON.parse(line));
    for (const record of records) {
      assert.equal(typeof record.level, "string");
      assert.equal(typeof record.timestamp, "string");
      assert.equal(typeof record.message, "string");
    }
    const startup = records.find((r) => r.message === "switchboard listening");
    assert.ok(startup, "the startup line is there");
    assert.equal(startup.level, "INFO");
    assert.ok(startup.address.endsWith(`:${srv.port}`), "it names the address and port as fields");
  } finally {
    await srv.stop();
  }
});

test("check-config names the misspelt key and its line", async () => {
  const bin = path.join(RELEASE, "switchboard");
  const good = await tempFile("good.toml", `[server]\nport = 4100\n`);
  let run = spawnSync(bin, ["check-config", good]);
  assert.equal(run.status, 0, run.stderr.toString());
  const typo = await tempFile("typo.toml", `[server]\nport = 4100\n\n[engine]\nping_intervall = "5s"\n`);
  run = spawnSync(bin, ["check-config", typo]);
  assert.equal(run.status, 1);
  const message = run.stderr.toString();
  assert.match(message, /typo\.toml:5:/);
  assert.match(message, /engine\.ping_intervall/);
  const wrongType = await tempFile("type.toml", `[server]\nport = "four thousand"\n`);
  run = spawnSync(bin, ["check-config", wrongType]);
  assert.equal(run.status, 1);
  assert.match(run.stderr.toString(), /type\.toml:2:.*server\.port/);
});

test("SIGTERM: clients are disconnected, the server exits 0, clients reconnect to its successor", async () => {
  const port = await freePort();
  const first = await startServer("switchboard", { port });
  const socket = io(first.url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
  clients.push(socket);
  await once(socket, "connect");
  const got = collect(socket, "late");
  // Queued just before the signal: delivered before the transport closes.
  await call(first.url + "/api/emit", { method: "POST", body: { event: "late", data: "flushed" } });
  const disconnected = once(socket, "disconnect");
  const code = await first.stop();
  assert.equal(code, 0);
  const [reason] = await disconnected;
  assert.equal(reason, "transport close", "a transport close, so the client reconnects");
  assert.deepEqual(got, ["flushed"]);
  // Listen first: the client retries every 100-200 ms and may be back before startServer returns.
  const back = once(socket, "connect", 15000);
  const second = await startServer("switchboard", { port });
  try {
    await back;
    assert.equal(socket.connected, true);
  } finally {
    socket.disconnect();
    await second.stop();
  }
});

test("during the shutdown drain /ready answers 503 and new sessions are refused, until shutdown_timeout", async () => {
  const config = await tempFile("drain.toml", `[server]\nshutdown_timeout = "2s"\nstats_interval = "0s"\n`);
  const draining = await startServer("switchboard", { args: ["serve", "--config", config] });
  const polling = `${draining.url}/socket.io/?EIO=4&transport=polling`;
  // A polling client that opens a session, joins "/" and then never polls again: the packets
  // queued for it keep the drain waiting.
  const open = await call(polling);
  const sid = JSON.parse(open.body.slice(1)).sid;
  assert.equal((await call(`${polling}&sid=${sid}`, { method: "POST", body: "40" })).status, 200);
  await call(draining.url + "/api/emit", { method: "POST", body: { event: "news", data: "queued" } });
  assert.deepEqual((await call(draining.url + "/ready")).body, { ready: true });

  const exited = new Promise((resolve) => draining.child.once("exit", resolve));
  const signalled = Date.now();
  draining.child.kill("SIGTERM");
  let ready;
  for (let i = 0; i < 50; i++) {
    ready = await call(draining.url + "/ready");
    if (ready.status !== 200) break;
    await sleep(20);
  }
  assert.equal(ready.status, 503, "a load balancer stops sending clients here");
  assert.equal(ready.body.ready, false);
  assert.equal((await call(polling)).status, 503, "a new session is refused while draining");
  assert.equal((await call(draining.url + "/health")).status, 200, "still alive while draining");

  const code = await exited;
  assert.equal(code, 0);
  const waited = Date.now() - signalled;
  assert.ok(waited >= 1500, `waited for the stuck client up to shutdown_timeout (${waited} ms)`);
  assert.match(draining.output.join(""), /shutdown timeout reached with messages still queued/);
});

test("the periodic stats line counts sockets, users, rooms and message rates", async () => {
  const config = await tempFile("stats.toml", `[server]\nstats_interval = "1s"\n`);
  const logging = await startServer("switchboard", { args: ["serve", "--config", config], env: { RUST_LOG: "info" } });
  const sockets = [];
  try {
    for (let i = 0; i < 3; i++) {
      const socket = io(logging.url, { forceNew: true, transports: ["websocket"] });
      sockets.push(socket);
      await once(socket, "connect");
    }
    const line = /(\d+) sockets, (\d+) users, (\d+) rooms, [\d.]+ msg\/s in, [\d.]+ msg\/s out/;
    let counts;
    for (let i = 0; i < 40 && !counts; i++) {
      await sleep(100);
      const lines = logging.output.join("").split("\n").filter((l) => line.test(l));
      const last = lines.length ? lines[lines.length - 1].match(line) : null;
      if (last && last[1] === "3") counts = last.slice(1, 4).map(Number);
    }
    assert.ok(counts, `a stats line with 3 sockets within 4 s:\n${logging.output.join("")}`);
    assert.equal(counts[1], 0, "no authenticated users");
  } finally {
    for (const socket of sockets) socket.disconnect();
    await logging.stop();
  }
});

// 40 members: a broadcast this large is written by the flusher threads; 3 members: by the
// worker that sent it once it is idle; a send to one socket by its own connection. None may
// overtake another, whether the emits come one request at a time or in one batch (one task,
// no idle moment between them).
for (const size of [40, 3]) {
  for (const batched of [false, true]) {
    test(`room broadcasts (${size} members) and events sent to one socket arrive in the order sent${batched ? ", in one batch" : ""}`, async () => {
      const members = await Promise.all(Array.from({ length: size }, () => client()));
      const [first] = members;
      const got = collect(first, "tick");
      const everyoneGot = members.map((socket) => collect(socket, "tick"));
      const room = `crowd-${size}-${batched}`;
      await api("/api/join", { sockets: members.map((s) => s.id), rooms: [room] });
      const sent = [];
      const commands = [];
      for (let seq = 1; seq <= 60; seq++) {
        const toRoom = seq % 3 !== 0;
        const command = { event: "tick", ...(toRoom ? { rooms: [room] } : { sockets: [first.id] }), data: seq };
        if (batched) {
          commands.push({ op: "emit", ...command });
        } else {
          const res = await api("/api/emit", command);
          assert.equal(res.body.reached, toRoom ? size : 1);
        }
        sent.push(seq);
      }
      if (batched) {
        const res = await api("/api/batch", { commands });
        assert.equal(res.status, 200);
        assert.deepEqual(res.body.results.map((r) => r.reached), sent.map((seq) => (seq % 3 !== 0 ? size : 1)));
      }
      for (let i = 0; i < 100 && got.length < sent.length; i++) await sleep(20);
      assert.deepEqual(got, sent, "in order, none missing");
      const roomOnly = sent.filter((seq) => seq % 3 !== 0);
      for (const list of everyoneGot.slice(1)) {
        for (let i = 0; i < 100 && list.length < roomOnly.length; i++) await sleep(20);
        assert.deepEqual(list, roomOnly);
      }
      for (const socket of members) socket.disconnect();
    });
  }
}
