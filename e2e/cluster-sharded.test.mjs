// A cluster on a Redis Cluster's sharded pub/sub ([cluster] adapter = "sharded"; three masters
// with a replica each, started by the test with redis-server --cluster-enabled and
// redis-cli --cluster create), with the official socket.io-client: nodes share rooms, reads and
// presence; with the dynamic subscription mode a node hears only the rooms it has members in;
// a Node.js socket.io server on createShardedAdapter of @socket.io/redis-adapter shares rooms
// with the nodes both ways; a backend publishes with one SPUBLISH; a master killed under a
// steady stream of room events fails over and the stream goes on. And the streams adapter on a
// Redis Cluster (redis_cluster = true): a node killed with SIGKILL behind a round-robin balancer
// leaves its clients to recover on another node with every event once, in order.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import path from "node:path";
import { io } from "socket.io-client";
import { Server } from "socket.io";
import { createShardedAdapter } from "@socket.io/redis-adapter";
import { createCluster } from "redis";
import { startServer, freePort, once, sleep, call, until, untilReady, ROOT } from "./lib/server.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { streamsNodeEnv } from "./lib/redis.mjs";
import { roundRobinProxy } from "./lib/balancer.mjs";


const clients = [];
function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 200, ...opts });
  clients.push(socket);
  return socket;
}

function shardedNode(redis, env = {}) {
  return startServer("switchboard", {
    args: ["--config", path.join(ROOT, "examples", "chat.toml")],
    env: {
      SWITCHBOARD_CLUSTER_REDIS_URL: redis.url,
      SWITCHBOARD_CLUSTER_ADAPTER: "sharded",
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "3s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "3s",
      ...env,
    },
  });
}

/** The messages a node has received from the cluster's engine since start. */
async function received(node) {
  const metrics = (await call(`${node.url}/metrics`)).body;
  return Number(/^switchboard_cluster_messages_received (\d+)$/m.exec(metrics)?.[1]);
}

describe("three nodes on a Redis Cluster (sharded pub/sub)", () => {
  let redis, nodes, nodeServer, nodeHttp, pub, sub;
  before(async () => {
    redis = await startRedisCluster();
    nodes = await Promise.all([shardedNode(redis), shardedNode(redis), shardedNode(redis)]);
    await Promise.all(nodes.map((n) => untilReady(n)));
  });
  after(async () => {
    clients.splice(0).forEach((s) => s.disconnect());
    await new Promise((resolve) => (nodeServer ? nodeServer.close(() => resolve()) : resolve()));
    await Promise.race([Promise.allSettled([pub?.quit(), sub?.quit()]), sleep(2000)]);
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("a room message, an API emit, reads and presence span the nodes", async () => {
    const [a, b] = nodes;
    const ann = client(a.url);
    const bob = client(b.url);
    await Promise.all([once(ann, "connect"), once(bob, "connect")]);
    ann.emit("user-online", "ann");
    bob.emit("user-online", "bob");
    ann.emit("join-room", "kitchen");
    bob.emit("join-room", "kitchen");
    await until(async () => (await call(`${a.url}/api/rooms/kitchen`)).body.sockets?.length === 2, "both members, read on either node");
    // The room's channel is subscribed on b once its first member joined there.
    await sleep(200);
    const atBob = [];
    bob.on("room-broadcast", (m) => atBob.push(m));
    ann.emit("room-message", { room: "kitchen", message: "soup's ready" });
    const atAnn = [];
    ann.on("order", (m) => atAnn.push(m));
    const emitted = await call(`${b.url}/api/emit`, { method: "POST", body: { event: "order", rooms: ["kitchen"], data: { n: 1 } } });
    assert.equal(emitted.status, 200);
    await until(() => atBob.length === 1 && atAnn.length === 1, "the room message on b and the API emit on a");
    assert.equal(atBob[0].message, "soup's ready");
    assert.deepEqual(atAnn, [{ n: 1 }]);
    const stats = (await call(`${a.url}/api/stats`)).body;
    assert.equal(stats.cluster.nodes, 3, "every node answered");
    const online = (await call(`${nodes[2].url}/api/users/bob`)).body;
    assert.equal(online.online, true, "bob is online, read on a node he is not on");
    const metrics = (await call(`${a.url}/metrics`)).body;
    assert.match(metrics, /^switchboard_cluster_connected 1$/m);
    assert.match(metrics, /^switchboard_cluster_nodes_up 2$/m);
    ann.disconnect();
    bob.disconnect();
  });

  test("a polling-only client behind a round-robin balancer: every request to another node is passed on (no sticky sessions)", async () => {
    const [a] = nodes;
    const proxy = await roundRobinProxy(nodes.map((n) => n.port));
    try {
      const socket = client(proxy.url, { transports: ["polling"] });
      await once(socket, "connect");
      socket.emit("join-room", "polling-room");
      await until(async () => (await call(`${a.url}/api/rooms/polling-room`)).body.sockets?.length === 1, "joined");
      await sleep(200);
      const got = [];
      socket.on("tick", (n) => got.push(n));
      for (let n = 1; n <= 5; n++) {
        await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["polling-room"], data: n } });
      }
      await until(() => got.length === 5, "five events over polling");
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
      const forwarded = await Promise.all(nodes.map(async (n) => (await call(`${n.url}/metrics`)).body));
      assert.ok(forwarded.some((m) => /switchboard_cluster_forwarded_requests_total\{outcome="polling"\} [1-9]/.test(m)), "requests were passed on to the holder");
      socket.disconnect();
    } finally {
      await proxy.close();
    }
  });

  test("dynamic subscriptions: a node with no member in a room does not receive its traffic", async () => {
    const [a, b, c] = nodes;
    const member = client(b.url);
    await once(member, "connect");
    member.emit("join-room", "only-on-b");
    await until(async () => (await call(`${a.url}/api/rooms/only-on-b`)).body.sockets?.length === 1, "joined");
    await sleep(200);
    const got = [];
    member.on("tick", (n) => got.push(n));
    const [bBefore, cBefore] = [await received(b), await received(c)];
    const total = 100;
    for (let n = 1; n <= total; n++) {
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["only-on-b"], data: n } });
      assert.equal(status, 200);
    }
    await until(() => got.length === total, "every tick at the member");
    assert.deepEqual(got, Array.from({ length: total }, (_, i) => i + 1), "in order");
    const [bAfter, cAfter] = [await received(b), await received(c)];
    assert.ok(bAfter - bBefore >= total, `b received the room's ${total} events (${bAfter - bBefore})`);
    // c hears the cluster's own chatter (heartbeats, presence), not the room.
    assert.ok(cAfter - cBefore < total / 4, `c received ${cAfter - cBefore} messages for a room it has no member in`);
    member.disconnect();
    // Its last member gone, the room's channel is left.
    await until(async () => !(await call(`${a.url}/api/rooms/only-on-b`)).body.sockets?.length, "left");
  });

  test("a Node.js server on createShardedAdapter and a backend's SPUBLISH share rooms with the nodes, both ways", async () => {
    const [a, b] = nodes;
    pub = createCluster({ rootNodes: redis.rootNodes });
    sub = pub.duplicate();
    pub.on("error", () => {});
    sub.on("error", () => {});
    await Promise.all([pub.connect(), sub.connect()]);
    nodeHttp = createHttpServer();
    nodeServer = new Server(nodeHttp, { adapter: createShardedAdapter(pub, sub) });
    const port = await freePort();
    await new Promise((resolve) => nodeHttp.listen(port, "127.0.0.1", resolve));
    nodeServer.on("connection", (socket) => socket.join("feed"));
    const onNode = client(`http://127.0.0.1:${port}`);
    await once(onNode, "connect");
    const onSwitchboard = client(b.url);
    await once(onSwitchboard, "connect");
    onSwitchboard.emit("join-room", "feed");
    await until(async () => (await call(`${a.url}/api/rooms/feed`)).body.sockets?.some((s) => s.id === onSwitchboard.id), "joined");
    await sleep(300);
    const atNode = [];
    onNode.on("news", (m) => atNode.push(m));
    const atSwitchboard = [];
    onSwitchboard.on("news", (m) => atSwitchboard.push(m));
    // Switchboard → Node.js, on the room's channel.
    assert.equal((await call(`${a.url}/api/emit`, { method: "POST", body: { event: "news", rooms: ["feed"], data: { from: "switchboard" } } })).status, 200);
    // Node.js → Switchboard: a broadcast on the Node server.
    nodeServer.to("feed").emit("news", { from: "node" });
    // A backend publishes with one SPUBLISH, in the adapter's message shape.
    const message = { uid: "backend", nsp: "/", type: 3, data: { packet: { type: 2, nsp: "/", data: ["news", { from: "backend" }] }, opts: { rooms: ["feed"], except: [], flags: {} } } };
    await pub.sPublish("socket.io#/#feed#", JSON.stringify(message));
    await until(() => atNode.length === 3 && atSwitchboard.length === 3, "every broadcast, both ways", 8000);
    assert.deepEqual(atNode.map((m) => m.from).sort(), ["backend", "node", "switchboard"]);
    assert.deepEqual(atSwitchboard.map((m) => m.from).sort(), ["backend", "node", "switchboard"]);
    // Binary goes as MessagePack, both ways.
    const bytes = [];
    onNode.on("blob", (m) => bytes.push(Buffer.from(m)));
    onSwitchboard.on("blob", (m) => bytes.push(Buffer.from(m)));
    nodeServer.to("feed").emit("blob", Buffer.from([1, 2, 3]));
    await until(() => bytes.length === 2, "binary from the Node server on both");
    assert.ok(bytes.every((b) => b.equals(Buffer.from([1, 2, 3]))));
    // The Node server counts the nodes (SHARDNUMSUB) and lists their sockets.
    const sockets = await nodeServer.in("feed").fetchSockets();
    assert.ok(sockets.some((s) => s.id === onSwitchboard.id), "Switchboard's socket in fetchSockets");
    assert.ok(sockets.some((s) => s.id === onNode.id), "and the Node server's own");
    // A join made by the Node server reaches a Switchboard socket, and one made on Switchboard's API a Node socket.
    nodeServer.in(onSwitchboard.id).socketsJoin("from-node");
    await until(async () => (await call(`${b.url}/api/rooms/from-node`)).body.sockets?.some((s) => s.id === onSwitchboard.id), "joined by the Node server");
    const joined = await call(`${a.url}/api/join`, { method: "POST", body: { in: ["feed"], rooms: ["from-switchboard"] } });
    assert.ok(joined.status < 300, JSON.stringify(joined.body));
    await until(async () => nodeServer.sockets.adapter.rooms.get("from-switchboard")?.has(onNode.id), "joined through the API");
  });

  test("a room channel's slot migrating to another master under a steady stream: the stream goes on, each event once, in order", async () => {
    const [a, b] = nodes;
    const watcher = client(b.url);
    await once(watcher, "connect");
    watcher.emit("join-room", "moving");
    await until(async () => (await call(`${a.url}/api/rooms/moving`)).body.sockets?.length === 1, "joined");
    await sleep(200);
    const got = [];
    watcher.on("tick", (n) => got.push(n));
    const channel = "socket.io#/#moving#";
    const from = await redis.masterOf(channel);
    const to = (await redis.masters()).find((port) => port !== from);
    const total = 120;
    for (let n = 1; n <= total; n++) {
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["moving"], data: n } });
      assert.equal(status, 200, `event ${n} taken`);
      if (n === 40) await redis.migrateSlot(channel, to);
      await sleep(15);
    }
    assert.equal(await redis.masterOf(channel), to, "the slot moved");
    await until(() => got.at(-1) === total, "the last event", 8000);
    assert.deepEqual(got, [...got].sort((x, y) => x - y), "in order");
    assert.equal(new Set(got).size, got.length, "each once");
    for (let i = 1; i <= 40; i++) assert.ok(got.includes(i), `event ${i}, before the move`);
    for (let i = 61; i <= total; i++) assert.ok(got.includes(i), `event ${i}, after the move`);
    console.log(`slot migration: ${total - got.length} of ${total} events missed while the subscription moved`);
    watcher.disconnect();
  });

  test("a master killed under a steady stream of room events fails over; the stream goes on, in order", async () => {
    const [a, b] = nodes;
    const watcher = client(b.url);
    await once(watcher, "connect");
    watcher.emit("join-room", "failover");
    await until(async () => (await call(`${a.url}/api/rooms/failover`)).body.sockets?.length === 1, "joined");
    await sleep(200);
    const got = [];
    watcher.on("tick", (n) => got.push(n));
    const master = await redis.masterOf("socket.io#/#failover#");
    const answered = [];
    let n = 0;
    const killedAt = 40;
    let failedOverAt = null;
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      n += 1;
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["failover"], data: n } });
      answered.push({ n, status });
      if (n === killedAt) redis.kill(master);
      if (n > killedAt && failedOverAt === null && status === 200 && (await call(`${b.url}/ready`)).status === 200) {
        const promoted = await redis.masterOf("socket.io#/#failover#").catch(() => master);
        if (promoted !== master) failedOverAt = n;
      }
      if (failedOverAt !== null && n >= failedOverAt + 60) break;
      await sleep(20);
    }
    assert.ok(failedOverAt !== null, "the replica took over");
    await until(() => got.at(-1) === n, "the last event", 8000);
    // Everything before the kill arrived; after it, the stream resumed: the last 40 events
    // published once the replica took over all arrived.
    for (let i = 1; i <= killedAt; i++) assert.ok(got.includes(i), `event ${i}, sent before the kill`);
    for (let i = n - 40; i <= n; i++) assert.ok(got.includes(i), `event ${i}, sent after the failover`);
    // Never twice, never out of order.
    assert.deepEqual(got, [...got].sort((x, y) => x - y), "in order");
    assert.equal(new Set(got).size, got.length, "each once");
    const lost = answered.filter((x) => x.status === 200 && !got.includes(x.n)).map((x) => x.n);
    console.log(`failover: ${answered.length} published, ${answered.filter((x) => x.status !== 200).length} answered 503, ${lost.length} answered 200 and lost (${lost.join(",")})`);
    watcher.disconnect();
  });
});

describe("three nodes on the streams adapter over a Redis Cluster", () => {
  let redis, nodes, proxy;
  const watchersClients = [];
  before(async () => {
    redis = await startRedisCluster();
    const env = streamsNodeEnv(redis.url, {
      SWITCHBOARD_CLUSTER_REDIS_CLUSTER: "true",
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "3s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
    });
    nodes = await Promise.all([0, 1, 2].map(() => startServer("switchboard", { args: ["--config", path.join(ROOT, "examples", "chat.toml")], env })));
    await Promise.all(nodes.map((n) => untilReady(n)));
    proxy = await roundRobinProxy(nodes.map((n) => n.port));
  });
  after(async () => {
    watchersClients.splice(0).forEach((s) => s.disconnect());
    await proxy?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("a node killed with SIGKILL under a stream of room events: its clients recover elsewhere with every event once, in order", async () => {
    const [a, , c] = nodes;
    const watchers = [];
    for (let i = 0; i < 6; i++) {
      const socket = client(proxy.url);
      watchersClients.push(socket);
      await once(socket, "connect");
      const got = [];
      socket.on("tick", (n) => got.push(n));
      socket.emit("join-room", "feed");
      watchers.push({ socket, got, id: socket.id, node: nodes[i % 3] });
    }
    await until(async () => (await call(`${a.url}/api/rooms/feed`)).body.sockets?.length === 6, "six members of feed, cluster-wide");
    const total = 150;
    for (let n = 1; n <= total; n++) {
      const { status, body } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["feed"], data: n } });
      assert.equal(status, 200);
      if (n === 1) assert.match(body.offset, /^\d+-\d+$/, "the offset is the stream entry's id");
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
  });
});
