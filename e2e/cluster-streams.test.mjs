// A cluster that loses nothing, with real parts: three Switchboard nodes running the chat
// example on the Redis Streams adapter ([cluster] adapter = "streams", a real redis-server), a
// round-robin TCP proxy in front of them as a plain load balancer, and the official
// socket.io-client. A node is killed with SIGKILL under a steady stream of room events: its
// clients come back through the proxy on another node and recover (same id, rooms, every event
// once and in order). A Node.js socket.io server on @socket.io/redis-streams-adapter shares the
// stream with them.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer } from "node:http";
import path from "node:path";
import { io } from "socket.io-client";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { startServer, freePort, once, sleep, call, until, untilReady, ROOT } from "./lib/server.mjs";
import { startRedis, streamsNodeEnv } from "./lib/redis.mjs";
import { roundRobinProxy } from "./lib/balancer.mjs";


const clients = [];
function client(url, opts = {}) {
  const socket = io(url, {
    forceNew: true,
    transports: ["websocket"],
    reconnectionDelay: 100,
    reconnectionDelayMax: 200,
    ...opts,
  });
  clients.push(socket);
  return socket;
}

function streamsNode(redis, port, example = "chat.toml") {
  return startServer("switchboard", {
    port,
    args: ["--config", path.join(ROOT, "examples", example)],
    env: streamsNodeEnv(redis.url, {
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
    }),
  });
}

/** `count` nodes on one redis-server behind a round-robin proxy; `stop()` ends what is there
 * then (a test may restart `redis` or narrow `nodes` to those still running). */
async function streamsCluster(count, example) {
  const cluster = { redis: await startRedis() };
  cluster.nodes = await Promise.all(Array.from({ length: count }, () => streamsNode(cluster.redis, undefined, example)));
  await Promise.all(cluster.nodes.map((n) => untilReady(n)));
  cluster.proxy = await roundRobinProxy(cluster.nodes.map((n) => n.port));
  cluster.stop = async () => {
    clients.splice(0).forEach((s) => s.disconnect());
    await cluster.proxy.close();
    await Promise.all(cluster.nodes.map((n) => n.stop()));
    await cluster.redis.stop();
  };
  return cluster;
}

describe("three nodes on the Redis Streams adapter", () => {
  let redis, nodes, proxy, nodeServer, nodeHttp, redisClient;
  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all([streamsNode(redis), streamsNode(redis), streamsNode(redis)]);
    await Promise.all(nodes.map((n) => untilReady(n)));
    proxy = await roundRobinProxy(nodes.map((n) => n.port));
  });
  after(async () => {
    clients.splice(0).forEach((s) => s.disconnect());
    nodeServer?.close();
    nodeHttp?.close();
    await redisClient?.quit().catch(() => {});
    await proxy?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("a node killed with SIGKILL under a stream of room events: its clients recover elsewhere with every event once, in order", async () => {
    const [a, , c] = nodes;
    // Six clients through the round-robin proxy: two on each node, in turn.
    const watchers = [];
    for (let i = 0; i < 6; i++) {
      const socket = client(proxy.url);
      await once(socket, "connect");
      const got = [];
      socket.on("tick", (n) => got.push(n));
      socket.emit("join-room", "feed");
      watchers.push({ socket, got, id: socket.id, node: nodes[i % 3] });
    }
    await until(async () => {
      const { body } = await call(`${a.url}/api/rooms/feed`);
      return body.sockets?.length === 6;
    }, "six members of feed, cluster-wide");

    const total = 200;
    let killedAt = 0;
    for (let n = 1; n <= total; n++) {
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["feed"], data: n } });
      assert.equal(status, 200);
      if (n === 60) {
        c.child.kill("SIGKILL");
        killedAt = n;
      }
      await sleep(10);
    }
    assert.equal(killedAt, 60);
    await until(() => watchers.every((w) => w.got.length >= total), "every event at every client", 10000);
    await sleep(300);
    const expected = Array.from({ length: total }, (_, i) => i + 1);
    for (const w of watchers) {
      assert.deepEqual(w.got, expected, `client on port ${w.node.port}: every event once, in order`);
      assert.equal(w.socket.id, w.id, "the same socket id");
    }
    const moved = watchers.filter((w) => w.node === c);
    assert.equal(moved.length, 2);
    for (const w of moved) assert.equal(w.socket.recovered, true, "recovered on another node");
    const taken = await Promise.all(nodes.filter((n) => n !== c).map(async (n) => {
      const text = (await call(`${n.url}/metrics`)).body;
      return Number(/^switchboard_cluster_shared_sessions_taken (\d+)$/m.exec(text)?.[1] ?? "NaN");
    }));
    assert.equal(taken[0] + taken[1], 2, "two sessions taken from Redis by the survivors");
    // Their rooms came with them: a later event still reaches them.
    await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["feed"], data: total + 1 } });
    await until(() => moved.every((w) => w.got.at(-1) === total + 1), "an event after the recovery");
    // History is the stream's: the offsets clients got are its entry ids.
    const { body: history } = await call(`${a.url}/api/history/feed?limit=1000`);
    assert.match(history.latest_offset, /^\d+-\d+$/);
    const entries = await (async () => {
      const r = createClient({ url: redis.url });
      await r.connect();
      const range = await r.xRange("socket.io", "-", "+");
      await r.quit();
      return range;
    })();
    assert.equal(entries.filter((e) => e.message.type === "3").length >= total + 1, true);
    nodes = nodes.filter((n) => n !== c);
  });

  test("a Node.js server on @socket.io/redis-streams-adapter exchanges broadcasts with the nodes, both ways", async () => {
    const [a, b] = nodes;
    redisClient = createClient({ url: redis.url });
    await redisClient.connect();
    nodeHttp = createHttpServer();
    nodeServer = new Server(nodeHttp, { adapter: createAdapter(redisClient), connectionStateRecovery: {} });
    const port = await freePort();
    await new Promise((resolve) => nodeHttp.listen(port, "127.0.0.1", resolve));
    nodeServer.on("connection", (socket) => socket.join("feed"));
    await sleep(300);

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

    // Switchboard → Node.js: through the HTTP API, into the stream.
    await call(`${a.url}/api/emit`, { method: "POST", body: { event: "news", rooms: ["feed"], data: { from: "switchboard" } } });
    // Node.js → Switchboard: a broadcast on the Node server.
    nodeServer.to("feed").emit("news", { from: "node" });
    // And a client event turned into a room broadcast by the chat example's rules.
    onSwitchboard.emit("room-message", { room: "feed", message: "hi" });
    const fromRule = [];
    onNode.on("room-broadcast", (m) => fromRule.push(m));

    await until(() => atNode.length === 2 && atSwitchboard.length === 2 && fromRule.length === 1, "both ways");
    assert.deepEqual(atNode.map((m) => m.from).sort(), ["node", "switchboard"]);
    assert.deepEqual(atSwitchboard.map((m) => m.from).sort(), ["node", "switchboard"]);
    assert.equal(fromRule[0].message, "hi");
    // The Node server sees Switchboard's sockets (fetchSockets is answered over pub/sub).
    const sockets = await nodeServer.in("feed").fetchSockets();
    assert.ok(sockets.some((s) => s.id === onSwitchboard.id), "Switchboard's socket in fetchSockets");
    // Joins made by the Node server reach Switchboard's sockets through the stream.
    nodeServer.in(onSwitchboard.id).socketsJoin("from-node");
    await until(async () => (await call(`${b.url}/api/rooms/from-node`)).body.sockets?.some((s) => s.id === onSwitchboard.id), "joined by the Node server");
  });

  test("a node killed and started again on its port: its clients recover there, with what the others published meanwhile", async () => {
    const [a, b] = nodes;
    const socket = client(b.url);
    await once(socket, "connect");
    const id = socket.id;
    const got = [];
    socket.on("tick", (n) => got.push(n));
    socket.emit("join-room", "restart");
    await until(async () => (await call(`${a.url}/api/rooms/restart`)).body.sockets?.length === 1, "joined restart");
    const emit = (n) => call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["restart"], data: n } });
    for (let n = 1; n <= 10; n++) await emit(n);
    await until(() => got.length === 10, "ten events before the kill");
    b.child.kill("SIGKILL");
    await until(() => !socket.connected, "the client sees its node go");
    for (let n = 11; n <= 30; n++) await emit(n);
    // The same node comes back: a fresh process, whose copy of the log starts after event 30.
    const back = once(socket, "connect", 15000);
    const again = await streamsNode(redis, b.port);
    nodes = [a, again];
    await back;
    assert.equal(socket.recovered, true, "recovered on the restarted node");
    assert.equal(socket.id, id, "the same socket id");
    await emit(31);
    await until(() => got.length >= 31, "every event");
    await sleep(200);
    assert.deepEqual(got, Array.from({ length: 31 }, (_, i) => i + 1), "every event once, in order");
  });

  test("the API's joins, leaves and disconnects keep their order with its emits on the socket's own node", async () => {
    const [a] = nodes;
    const socket = client(a.url);
    await once(socket, "connect");
    const seen = [];
    socket.on("notice", (m) => seen.push(`notice:${m}`));
    socket.on("disconnect", (reason) => seen.push(`disconnect:${reason}`));
    // One batch, applied in order on the socket's own node: joined, told, left, then removed.
    const { status } = await call(`${a.url}/api/batch`, { method: "POST", body: { commands: [
      { op: "join", sockets: [socket.id], rooms: ["kick"] },
      { op: "emit", event: "notice", rooms: ["kick"], data: "welcome" },
      { op: "emit", event: "notice", sockets: [socket.id], data: "you are being removed" },
      { op: "leave", sockets: [socket.id], rooms: ["kick"] },
      { op: "emit", event: "notice", rooms: ["kick"], data: "after it left" },
      { op: "disconnect", sockets: [socket.id] },
    ] } });
    assert.equal(status, 200);
    await until(() => seen.length === 3, "the notices and the disconnect");
    await sleep(200);
    assert.deepEqual(seen, ["notice:welcome", "notice:you are being removed", "disconnect:io server disconnect"]);
  });
});

describe("socket data across a kill on the Redis Streams adapter", () => {
  let cluster;
  // The online-status example: a Socket.IO socket's user is set on connect from its query.
  before(async () => (cluster = await streamsCluster(3, "online-status.toml")));
  after(() => cluster?.stop());

  test("a session recovered on another node keeps the data set on connect: its user is online again everywhere", async () => {
    const [a, b, c] = cluster.nodes;
    const { proxy } = cluster;
    // Three clients through the round-robin proxy, one per node in turn: the third is on c.
    const users = [];
    for (let i = 0; i < 3; i++) {
      const socket = client(proxy.url, { query: { userId: `kept-${i}` } });
      await once(socket, "connect");
      users.push({ socket, id: socket.id, user: `kept-${i}` });
    }
    const onC = users[2];
    const online = async (server, user) => (await call(`${server.url}/api/users/${user}`)).body.online;
    await until(async () => await online(a, onC.user), "the user on c online, seen from a");
    c.child.kill("SIGKILL");
    // This client has received no event at all: its offset is "none yet" (0).
    await until(() => onC.socket.connected && onC.socket.recovered, "c's client recovered elsewhere", 10000);
    assert.equal(onC.socket.id, onC.id, "the same socket id");
    // Past the node timeout c's users are taken for gone; the recovered socket brings its user
    // back, from the session data kept in Redis.
    await sleep(2500);
    for (const server of [a, b]) {
      assert.equal(await online(server, onC.user), true, `${onC.user} online, seen from port ${server.port}`);
    }
    const { body: stats } = await call(`${a.url}/api/stats`);
    assert.equal(stats.cluster.users, 3, "every user online once, cluster-wide");
    cluster.nodes = [a, b];
  });
});

describe("Redis restarted empty on the Redis Streams adapter", () => {
  let cluster;
  before(async () => (cluster = await streamsCluster(2)));
  after(() => cluster?.stop());

  test("the nodes write their sessions back, so a node killed afterwards loses no client: connected or dropped, they recover on the other node", async () => {
    const [a, b] = cluster.nodes;
    const { proxy } = cluster;
    // Two clients on a (the proxy alternates from its first port), in a room; one of them
    // then drops (its session saved on a) and stays away for now.
    const onA = [];
    const socketsOnA = async () => (await call(`${a.url}/api/stats`)).body.sockets;
    for (let i = 0; i < 4 && onA.length < 2; i++) {
      const before = await socketsOnA();
      const socket = client(proxy.url);
      await once(socket, "connect");
      socket.emit("join-room", "kept");
      if ((await socketsOnA()) > before) onA.push(socket);
    }
    assert.equal(onA.length, 2, "two clients on node a");
    await until(async () => (await call(`${a.url}/api/rooms/kept`)).body.size >= 2, "both in the room");
    const [stays, drops] = onA;
    const ids = onA.map((s) => s.id);
    drops.io.reconnection(false);
    drops.io.engine.transport.ws._socket.destroy();
    await until(async () => /switchboard_recovery_sessions_saved\{namespace="\/"\} 1/.test((await call(`${a.url}/metrics`)).body), "a saved the dropped session");

    // Redis restarts without persistence: every session kept there is gone.
    await cluster.redis.stop();
    cluster.redis = await startRedis(cluster.redis.port);
    await Promise.all(cluster.nodes.map((n) => untilReady(n)));
    await sleep(500);

    a.child.kill("SIGKILL");
    const got = { stays: [], drops: [] };
    stays.on("room-broadcast", (m) => got.stays.push(m.message));
    drops.on("room-broadcast", (m) => got.drops.push(m.message));
    drops.io.reconnection(true);
    drops.connect();
    await until(() => stays.connected && stays.recovered && drops.connected && drops.recovered, "both recovered on node b", 15000);
    assert.deepEqual([stays.id, drops.id], ids, "the same sockets");
    // Still in their room.
    const sender = client(b.url);
    await once(sender, "connect");
    sender.emit("room-message", { room: "kept", message: "after" });
    await until(() => got.stays.includes("after") && got.drops.includes("after"), "both hear their room");
    cluster.nodes = [b];
  });
});
