// A cluster on PostgreSQL alone ([cluster] adapter = "postgres", Debian's postgresql started by
// the test), with the official socket.io-client: nodes share rooms, reads and presence; a node
// killed with SIGKILL behind a round-robin balancer leaves its clients to recover on another
// node with every event once, in order; a backend publishes with one SQL statement inside its
// own transaction (a rollback publishes nothing); a Node.js socket.io server on
// @socket.io/postgres-adapter and the @socket.io/postgres-emitter share rooms with the nodes
// (payloads too large for a notification or binary through the attachments table, both ways).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import path from "node:path";
import { io } from "socket.io-client";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/postgres-adapter";
import { Emitter } from "@socket.io/postgres-emitter";
import pg from "pg";
import { startServer, freePort, once, sleep, call, ROOT } from "./lib/server.mjs";
import { startPostgres } from "./lib/postgres.mjs";
import { roundRobinProxy } from "./lib/balancer.mjs";

async function untilReady(server, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  while ((await call(server.url + "/ready")).status !== 200) {
    if (Date.now() > deadline) throw new Error(`${server.url} never got ready`);
    await sleep(50);
  }
}
async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const clients = [];
function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 200, ...opts });
  clients.push(socket);
  return socket;
}

function postgresNode(postgres, port) {
  return startServer("switchboard", {
    port,
    args: ["--config", path.join(ROOT, "examples", "chat.toml")],
    env: {
      SWITCHBOARD_CLUSTER_POSTGRES_URL: postgres.url,
      SWITCHBOARD_CLUSTER_ADAPTER: "postgres",
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
    },
  });
}

describe("three nodes on PostgreSQL alone", () => {
  let postgres, nodes, proxy, pool, nodeServer, nodeHttp;
  before(async () => {
    postgres = await startPostgres();
    nodes = await Promise.all([postgresNode(postgres), postgresNode(postgres), postgresNode(postgres)]);
    await Promise.all(nodes.map((n) => untilReady(n)));
    proxy = await roundRobinProxy(nodes.map((n) => n.port));
    pool = new pg.Pool(postgres.config);
    // Idle connections are cut when PostgreSQL stops at the end: not a failure of the test.
    pool.on("error", () => {});
  });
  after(async () => {
    clients.splice(0).forEach((s) => s.disconnect());
    await new Promise((resolve) => (nodeServer ? nodeServer.close(() => resolve()) : resolve()));
    await proxy?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await Promise.race([pool?.end(), sleep(2000)]);
    await postgres?.stop();
  });

  test("a room message, an API emit, reads and presence span the nodes", async () => {
    const [a, b] = nodes;
    const ann = client(a.url, { auth: { userId: "ann" } });
    const bob = client(b.url, { auth: { userId: "bob" } });
    await Promise.all([once(ann, "connect"), once(bob, "connect")]);
    ann.emit("join-room", "kitchen");
    bob.emit("join-room", "kitchen");
    await until(async () => (await call(`${a.url}/api/rooms/kitchen`)).body.sockets?.length === 2, "both members, read on either node");
    const atBob = [];
    bob.on("room-broadcast", (m) => atBob.push(m));
    ann.emit("room-message", { room: "kitchen", message: "soup's ready" });
    const atAnn = [];
    ann.on("order", (m) => atAnn.push(m));
    const emitted = await call(`${b.url}/api/emit`, { method: "POST", body: { event: "order", rooms: ["kitchen"], data: { n: 1 } } });
    assert.equal(emitted.status, 200);
    assert.match(emitted.body.offset, /^\d+-\d+$/, "the offset is the log entry's id");
    await until(() => atBob.length === 1 && atAnn.length === 1, "the room message on b and the API emit on a");
    assert.equal(atBob[0].message, "soup's ready");
    const stats = (await call(`${a.url}/api/stats`)).body;
    assert.equal(stats.cluster.nodes, 3, "every node answered");
    assert.equal(stats.cluster.sockets >= 2, true);
    const metrics = (await call(`${a.url}/metrics`)).body;
    assert.match(metrics, /^switchboard_cluster_connected 1$/m);
    assert.match(metrics, /^switchboard_cluster_nodes_up 2$/m);
    ann.disconnect();
    bob.disconnect();
  });

  test("a backend publishes with one SQL statement inside its transaction; a rollback publishes nothing", async () => {
    const [a] = nodes;
    const watcher = client(a.url);
    await once(watcher, "connect");
    watcher.emit("join-room", "orders");
    await until(async () => (await call(`${a.url}/api/rooms/orders`)).body.sockets?.length === 1, "joined");
    const got = [];
    watcher.on("order_created", (o) => got.push(o));
    const db = await pool.connect();
    try {
      await db.query("BEGIN");
      await db.query("SELECT switchboard_emit('/', 'order_created', $1::jsonb, ARRAY['orders'])", [JSON.stringify([{ id: 1 }])]);
      await db.query("ROLLBACK");
      await db.query("BEGIN");
      await db.query("SELECT switchboard_emit('/', 'order_created', $1::jsonb, ARRAY['orders'])", [JSON.stringify([{ id: 2 }])]);
      await sleep(300);
      assert.deepEqual(got, [], "nothing before the commit");
      await db.query("COMMIT");
    } finally {
      db.release();
    }
    await until(() => got.length === 1, "the committed order");
    await sleep(300);
    assert.deepEqual(got, [{ id: 2 }], "the rolled-back order never came");
    watcher.disconnect();
  });

  test("a node killed with SIGKILL under a stream of room events: its clients recover elsewhere with every event once, in order", async () => {
    const [a, , c] = nodes;
    const watchers = [];
    for (let i = 0; i < 6; i++) {
      const socket = client(proxy.url);
      await once(socket, "connect");
      const got = [];
      socket.on("tick", (n) => got.push(n));
      socket.emit("join-room", "feed");
      watchers.push({ socket, got, id: socket.id, node: nodes[i % 3] });
    }
    await until(async () => (await call(`${a.url}/api/rooms/feed`)).body.sockets?.length === 6, "six members of feed, cluster-wide");
    const total = 150;
    for (let n = 1; n <= total; n++) {
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["feed"], data: n } });
      assert.equal(status, 200);
      if (n === 50) c.child.kill("SIGKILL");
      await sleep(10);
    }
    await until(() => watchers.every((w) => w.got.length >= total), "every event at every client", 15000);
    await sleep(300);
    const expected = Array.from({ length: total }, (_, i) => i + 1);
    for (const w of watchers) {
      assert.deepEqual(w.got, expected, `client on port ${w.node.port}: every event once, in order`);
      assert.equal(w.socket.id, w.id, "the same socket id");
    }
    const moved = watchers.filter((w) => w.node === c);
    assert.equal(moved.length, 2);
    for (const w of moved) assert.equal(w.socket.recovered, true, "recovered on another node");
    nodes = nodes.filter((n) => n !== c);
    clients.splice(0).forEach((s) => s.disconnect());
  });

  test("a Node.js server on @socket.io/postgres-adapter and the postgres emitter share rooms with the nodes, both ways", async () => {
    const [a, b] = nodes;
    nodeHttp = createHttpServer();
    nodeServer = new Server(nodeHttp, { adapter: createAdapter(pool) });
    const port = await freePort();
    await new Promise((resolve) => nodeHttp.listen(port, "127.0.0.1", resolve));
    nodeServer.on("connection", (socket) => socket.join("feed"));
    await sleep(500);
    const onNode = client(`http://127.0.0.1:${port}`);
    await once(onNode, "connect");
    const onSwitchboard = client(b.url);
    await once(onSwitchboard, "connect");
    onSwitchboard.emit("join-room", "feed");
    await until(async () => (await call(`${a.url}/api/rooms/feed`)).body.sockets?.some((s) => s.id === onSwitchboard.id), "joined");
    const atNode = [];
    onNode.on("news", (m) => atNode.push(m));
    const atSwitchboard = [];
    onSwitchboard.on("news", (m) => atSwitchboard.push(m));
    // Switchboard → Node.js: the API's emit goes into the log and is mirrored to the adapter's channel.
    await call(`${a.url}/api/emit`, { method: "POST", body: { event: "news", rooms: ["feed"], data: { from: "switchboard" } } });
    // Node.js → Switchboard: a broadcast on the Node server, and one from the emitter.
    nodeServer.to("feed").emit("news", { from: "node" });
    new Emitter(pool).to("feed").emit("news", { from: "emitter" });
    // The emitter (0.1.1) leaves `nsp` out of its messages: the Node.js adapter (0.5.0) drops
    // them, Switchboard takes the namespace from the channel.
    await until(() => atNode.length === 2 && atSwitchboard.length === 3, "every broadcast, both ways");
    assert.deepEqual(atNode.map((m) => m.from).sort(), ["node", "switchboard"]);
    assert.deepEqual(atSwitchboard.map((m) => m.from).sort(), ["emitter", "node", "switchboard"]);
    // Too large for a notification (8,000 bytes) or binary: through the attachments table, both ways.
    const large = "x".repeat(20_000);
    const bigAtNode = [];
    onNode.on("big", (m) => bigAtNode.push(m));
    const bigAtSwitchboard = [];
    onSwitchboard.on("big", (m) => bigAtSwitchboard.push(m));
    const bigEmit = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "big", rooms: ["feed"], data: { from: "switchboard", text: large } } });
    assert.equal(bigEmit.status, 200);
    nodeServer.to("feed").emit("big", { from: "node", text: large });
    nodeServer.to("feed").emit("big", { from: "node-binary", bytes: Buffer.from([0, 1, 2, 255]) });
    await until(() => bigAtNode.length === 3 && bigAtSwitchboard.length === 3, "the large and binary broadcasts, both ways");
    for (const got of [bigAtNode, bigAtSwitchboard]) {
      const byFrom = Object.fromEntries(got.map((m) => [m.from, m]));
      assert.equal(byFrom.switchboard?.text, large, "Switchboard's large emit, whole");
      assert.equal(byFrom.node?.text, large, "the Node server's large emit, whole");
      assert.deepEqual([...Buffer.from(byFrom["node-binary"]?.bytes ?? [])], [0, 1, 2, 255], "the Node server's binary emit");
    }
    // The Node server counts the nodes (their heartbeats) and lists their sockets.
    const sockets = await nodeServer.in("feed").fetchSockets();
    assert.ok(sockets.some((s) => s.id === onSwitchboard.id), "Switchboard's socket in fetchSockets");
    assert.ok(sockets.some((s) => s.id === onNode.id), "and the Node server's own");
    // A join made by the Node server reaches a Switchboard socket.
    nodeServer.in(onSwitchboard.id).socketsJoin("from-node");
    await until(async () => (await call(`${b.url}/api/rooms/from-node`)).body.sockets?.some((s) => s.id === onSwitchboard.id), "joined by the Node server");
  });

  test("/ready answers 503 while PostgreSQL is down, and 200 once every node linked again by itself; broadcasts cross nodes again", async () => {
    const [a, b] = nodes;
    // The Node.js server of the test before leaves first: @socket.io/postgres-adapter's LISTEN
    // connection has no error handler, so PostgreSQL going away would crash the test's process.
    if (nodeServer) {
      await new Promise((resolve) => nodeServer.close(() => resolve()));
      nodeServer = null;
    }
    const watcher = client(b.url);
    await once(watcher, "connect");
    watcher.emit("join-room", "after-outage");
    await until(async () => (await call(`${a.url}/api/rooms/after-outage`)).body.sockets?.length === 1, "joined");
    const restarting = postgres.restart(3000);
    await until(async () => (await call(`${a.url}/ready`)).status === 503, "node a not ready while PostgreSQL is down", 3000);
    assert.match((await call(`${a.url}/metrics`)).body, /^switchboard_cluster_connected 0$/m);
    const refused = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "during", rooms: ["after-outage"], data: 0 } });
    assert.equal(refused.status, 503, "an emit PostgreSQL cannot take is refused, not lost");
    await restarting;
    await until(async () => (await Promise.all(nodes.map((n) => call(`${n.url}/ready`)))).every((r) => r.status === 200), "every node ready again", 20000);
    const got = [];
    watcher.on("after", (m) => got.push(m));
    const emitted = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "after", rooms: ["after-outage"], data: 1 } });
    assert.equal(emitted.status, 200);
    await until(() => got.length === 1, "a broadcast from a to b's client after the outage");
    watcher.disconnect();
  });
});
