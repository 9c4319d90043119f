// Deploys without reconnect storms: on SIGTERM a node closes its clients in batches spread over
// server.drain_period (each flushed first), answers /ready 503 and refuses new sessions
// meanwhile; in a cluster on the streams adapter, behind a round-robin balancer, the clients of
// a node being drained resume their sessions on the other node with every event once, in order.
// The official socket.io-client, real redis-server.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, once, sleep, call, until, ROOT } from "./lib/server.mjs";
import { startRedis, streamsNodeEnv } from "./lib/redis.mjs";
import { roundRobinProxy } from "./lib/balancer.mjs";

const clients = [];
after(() => clients.splice(0).forEach((s) => s.disconnect()));


test("SIGTERM closes the clients in batches over drain_period, each flushed first; /ready 503 and new sessions refused meanwhile", async () => {
  const node = await startServer("switchboard", { env: { SWITCHBOARD_SERVER_DRAIN_PERIOD: "1s" } });
  const count = 200;
  const closedAt = [];
  const flushed = [];
  for (let i = 0; i < count; i++) {
    const socket = io(node.url, { forceNew: true, transports: ["websocket"], reconnection: false });
    clients.push(socket);
    socket.on("late", () => flushed.push(i));
    socket.on("disconnect", (reason) => closedAt.push({ at: Date.now(), reason, flushed: flushed.includes(i) }));
    await once(socket, "connect");
  }
  // Queued just before the signal: every client gets it before its transport closes.
  await call(node.url + "/api/emit", { method: "POST", body: { event: "late", data: 1 } });
  const exited = new Promise((resolve) => node.child.once("exit", resolve));
  const signalled = Date.now();
  node.child.kill("SIGTERM");
  await until(async () => (await call(node.url + "/ready")).status === 503, "/ready 503");
  const metrics = (await call(node.url + "/metrics")).body;
  assert.match(metrics, /^switchboard_draining 1$/m);
  assert.equal((await call(`${node.url}/socket.io/?EIO=4&transport=polling`)).status, 503, "a new session is refused while draining");
  assert.equal(await exited, 0);
  assert.equal(closedAt.length, count, "every client was closed");
  assert.ok(closedAt.every((c) => c.reason === "transport close"), "a transport close: the clients reconnect");
  assert.ok(closedAt.every((c) => c.flushed), "each client got what was queued before its close");
  const times = closedAt.map((c) => c.at).sort((a, b) => a - b);
  const spread = times.at(-1) - times[0];
  // The busiest 100 ms: a batch, not everyone.
  let busiest = 0;
  for (let i = 0, j = 0; i < times.length; i++) {
    while (times[i] - times[j] > 100) j++;
    busiest = Math.max(busiest, i - j + 1);
  }
  console.log(`drain: ${count} clients closed over ${spread} ms (signal to last: ${times.at(-1) - signalled} ms), at most ${busiest} in 100 ms`);
  assert.ok(spread >= 600, `spread over the period (${spread} ms)`);
  assert.ok(busiest <= count / 3, `at most a third of the clients in any 100 ms (${busiest})`);
});

test("a client the drain closes while an event waits for it gets the event first (a polling client between two requests)", async () => {
  const node = await startServer("switchboard", { env: { SWITCHBOARD_SERVER_DRAIN_PERIOD: "300ms" } });
  const base = `${node.url}/socket.io/?EIO=4&transport=polling`;
  const sid = JSON.parse((await call(base)).body.slice(1)).sid;
  const url = `${base}&sid=${sid}`;
  assert.equal((await call(url, { method: "POST", body: "40" })).status, 200);
  assert.match((await call(url)).body, /^40\{/);
  // No GET waits: the event stays queued for the client's next request.
  assert.equal((await call(node.url + "/api/emit", { method: "POST", body: { event: "late", data: 7 } })).status, 200);
  const exited = new Promise((resolve) => node.child.once("exit", resolve));
  node.child.kill("SIGTERM");
  // Past the drain period: the session is closed, the event still waits for it.
  await sleep(600);
  const answer = await call(url);
  assert.equal(answer.status, 200);
  assert.match(answer.body, /^42\["late",7[,\]]/, "the queued event, before the close");
  const closing = await call(url);
  assert.equal(String(closing.body), "1", "then the close");
  assert.equal(await exited, 0);
});

test("a node drained in a cluster on the streams adapter: its clients resume on the other node with every event once, in order", async () => {
  const redis = await startRedis();
  const env = streamsNodeEnv(redis.url, {
    SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
    SWITCHBOARD_SERVER_DRAIN_PERIOD: "1s",
  });
  const config = ["--config", path.join(ROOT, "examples", "chat.toml")];
  const [a, b] = await Promise.all([startServer("switchboard", { args: config, env }), startServer("switchboard", { args: config, env })]);
  for (const n of [a, b]) await until(async () => (await call(n.url + "/ready")).status === 200, "ready", 15000);
  const proxy = await roundRobinProxy([a.port, b.port]);
  try {
    const watchers = [];
    for (let i = 0; i < 40; i++) {
      const socket = io(proxy.url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 500 });
      clients.push(socket);
      await once(socket, "connect");
      const got = [];
      socket.on("tick", (n) => got.push(n));
      socket.emit("join-room", "feed");
      watchers.push({ socket, got, id: socket.id, onA: i % 2 === 0 });
    }
    await until(async () => (await call(`${b.url}/api/rooms/feed`)).body.sockets?.length === 40, "forty members, cluster-wide");
    const exited = new Promise((resolve) => a.child.once("exit", resolve));
    const total = 150;
    for (let n = 1; n <= total; n++) {
      const { status } = await call(`${b.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["feed"], data: n } });
      assert.equal(status, 200);
      if (n === 30) a.child.kill("SIGTERM");
      await sleep(10);
    }
    assert.equal(await exited, 0, "the drained node exits 0");
    await until(() => watchers.every((w) => w.got.length >= total), "every event at every client", 15000);
    await sleep(300);
    const expected = Array.from({ length: total }, (_, i) => i + 1);
    for (const w of watchers) {
      assert.deepEqual(w.got, expected, "every event once, in order");
      assert.equal(w.socket.id, w.id, "the same socket id");
    }
    const moved = watchers.filter((w) => w.onA);
    assert.equal(moved.length, 20);
    for (const w of moved) assert.equal(w.socket.recovered, true, "resumed its session on the other node");
  } finally {
    clients.splice(0).forEach((s) => s.disconnect());
    await proxy.close();
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  }
});
