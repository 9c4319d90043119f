// Clustering through a real redis-server, as users run it: two Switchboard nodes running the
// chat example (examples/chat.toml plus SWITCHBOARD_CLUSTER_REDIS_URL) share rooms, client
// broadcasts, the backend's operations and the API's reads; a backend publishing with
// @socket.io/redis-emitter and a Node.js socket.io server with @socket.io/redis-adapter share
// them too. Clients are the official socket.io-client.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import path from "node:path";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { Emitter } from "@socket.io/redis-emitter";
import { createClient } from "redis";
import WebSocket from "ws";
import { clientPool } from "./lib/clients.mjs";
import { startServer, freePort, once, sleep, call, ROOT } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { startPostgres } from "./lib/postgres.mjs";

async function untilReady(server, expected = 200, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await call(server.url + "/ready");
    if (status === expected) return;
    if (Date.now() > deadline) throw new Error(`${server.url}/ready stayed away from ${expected}`);
    await sleep(50);
  }
}

const clients = clientPool();
const connected = clients.connected;
/** Collects the first `count` arguments of each `event` (one: the argument itself); the
 * recovery offset the chat example's events carry last is left out. */
function collect(socket, event, count = 1) {
  const got = [];
  socket.on(event, (...args) => got.push(count === 1 ? args[0] : args.slice(0, count)));
  return got;
}
async function until(check, what, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
/** Joins `room` through the chat example's join-room event; resolves once `node` lists it. */
async function joinRoom(socket, room, node) {
  socket.emit("join-room", room);
  await untilMember(node, room, socket.id);
}
async function untilMember(node, room, id, present = true) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const { body } = await call(`${node.url}/api/rooms/${encodeURIComponent(room)}`);
    if (body.sockets.some((s) => s.id === id) === present) return body;
    if (Date.now() > deadline) throw new Error(`${id} ${present ? "never joined" : "never left"} ${room}`);
    await sleep(20);
  }
}

describe("two Switchboard nodes sharing rooms through Redis", () => {
  let redis, nodeA, nodeB;
  before(async () => {
    redis = await startRedis();
    const start = () =>
      startServer("switchboard", {
        args: ["--config", path.join(ROOT, "examples/chat.toml")],
        // Cluster-wide reads wait 1 s at most for the other nodes (5 s by default).
        env: { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url, SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s" },
      });
    [nodeA, nodeB] = await Promise.all([start(), start()]);
    await Promise.all([untilReady(nodeA), untilReady(nodeB)]);
  });
  after(async () => {
    redis?.freeze(false);
    clients.disconnectAll();
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await redis?.stop();
  });

  test("a room message sent on one node reaches the room's members on the other", async () => {
    const alice = await connected(nodeA.url);
    const bob = await connected(nodeB.url);
    const aliceJoins = collect(alice, "user-joined");
    await joinRoom(alice, "lobby", nodeA);
    await joinRoom(bob, "lobby", nodeB);
    // Bob joined on B; Alice, on A, is told (to = "room-others").
    await until(() => aliceJoins.some((j) => j.id === bob.id), "Alice to hear that Bob joined");
    const atBob = collect(bob, "room-broadcast");
    const atAlice = collect(alice, "room-broadcast");
    alice.emit("room-message", { room: "lobby", message: "hello from A" });
    await until(() => atBob.length === 1 && atAlice.length === 1, "the message on both nodes");
    assert.deepEqual(atBob[0], { from: alice.id, room: "lobby", message: "hello from A" });
    // Exactly once each, also for the sender's own node.
    await sleep(100);
    assert.equal(atBob.length, 1);
    assert.equal(atAlice.length, 1);
  });

  test("the backend's emit on one node reaches the room on every node, in order", async () => {
    const carol = await connected(nodeA.url);
    const dave = await connected(nodeB.url);
    const outsider = await connected(nodeB.url);
    await joinRoom(carol, "orders", nodeA);
    await joinRoom(dave, "orders", nodeB);
    const atCarol = collect(carol, "order-created");
    const atDave = collect(dave, "order-created");
    const atOutsider = collect(outsider, "order-created");
    for (let id = 1; id <= 20; id++) {
      const reply = await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "order-created", rooms: ["orders"], data: { id } } });
      assert.equal(reply.status, 200);
      // `reached` counts this node's sockets.
      assert.equal(reply.body.reached, 1);
    }
    await until(() => atDave.length === 20 && atCarol.length === 20, "20 orders on both nodes");
    assert.deepEqual(atDave.map((o) => o.id), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.deepEqual(atCarol.map((o) => o.id), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.equal(atOutsider.length, 0);
  });

  test("the room's members and sizes read on either node include the other node's", async () => {
    const erin = await connected(nodeA.url);
    const frank = await connected(nodeB.url);
    await joinRoom(erin, "reads", nodeA);
    await joinRoom(frank, "reads", nodeB);
    for (const node of [nodeA, nodeB]) {
      const members = await call(`${node.url}/api/rooms/reads`);
      assert.deepEqual(members.body.sockets.map((s) => s.id).sort(), [erin.id, frank.id].sort());
      assert.equal(members.body.size, 2);
      const rooms = await call(`${node.url}/api/rooms`);
      assert.equal(rooms.body.rooms.find((r) => r.name === "reads").size, 2);
    }
    const stats = await call(nodeB.url + "/api/stats");
    assert.equal(stats.body.cluster.nodes, 2);
    assert.equal(stats.body.cluster.connected, true);
    assert.equal(stats.body.cluster.sockets, (await call(nodeA.url + "/api/stats")).body.sockets + stats.body.sockets);
  });

  test("join, leave and disconnect asked of one node act on the other node's sockets", async () => {
    const grace = await connected(nodeB.url);
    const heidi = await connected(nodeA.url);
    // Node A is asked to put Grace (on B) in "vip".
    const joined = await call(nodeA.url + "/api/join", { method: "POST", body: { sockets: [grace.id], rooms: ["vip"] } });
    assert.equal(joined.status, 200);
    await untilMember(nodeB, "vip", grace.id);
    const atGrace = collect(grace, "offer");
    const atHeidi = collect(heidi, "offer");
    await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "offer", rooms: ["vip"], data: 1 } });
    await until(() => atGrace.length === 1, "Grace to get the offer");
    await call(nodeA.url + "/api/leave", { method: "POST", body: { sockets: [grace.id], rooms: ["vip"] } });
    await untilMember(nodeB, "vip", grace.id, false);
    // Heidi joins by room selection (everyone in "vip-candidates" on every node).
    await call(nodeB.url + "/api/join", { method: "POST", body: { sockets: [heidi.id], rooms: ["vip-candidates"] } });
    await untilMember(nodeA, "vip-candidates", heidi.id);
    await call(nodeB.url + "/api/join", { method: "POST", body: { in: ["vip-candidates"], rooms: ["vip"] } });
    await untilMember(nodeA, "vip", heidi.id);
    await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "offer", rooms: ["vip"], data: 2 } });
    await until(() => atHeidi.length === 1, "Heidi to get the second offer");
    assert.deepEqual(atGrace, [1]);
    // Node B disconnects everyone in "vip": Heidi, on A.
    const gone = once(heidi, "disconnect");
    const reply = await call(nodeB.url + "/api/disconnect", { method: "POST", body: { rooms: ["vip"] } });
    assert.equal(reply.status, 200);
    const [reason] = await gone;
    assert.equal(reason, "io server disconnect");
    assert.equal(grace.connected, true);
  });

  test("an emit to a user reaches their sockets on both nodes; their connections add up", async () => {
    const phone = await connected(nodeA.url);
    const laptop = await connected(nodeB.url);
    const stranger = await connected(nodeB.url);
    const onlineLists = collect(stranger, "users-online");
    phone.emit("user-online", "ivan");
    laptop.emit("user-online", "ivan");
    await until(() => onlineLists.some((list) => list.includes("ivan")), "the users-online list");
    for (const node of [nodeA, nodeB]) {
      const deadline = Date.now() + 3000;
      let user;
      do {
        user = (await call(`${node.url}/api/users/ivan`)).body;
      } while (user.connections !== 2 && Date.now() < deadline && (await sleep(20), true));
      assert.deepEqual(user, { user: "ivan", online: true, connections: 2 });
    }
    const atPhone = collect(phone, "direct");
    const atLaptop = collect(laptop, "direct");
    const atStranger = collect(stranger, "direct");
    await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "direct", user: "ivan", data: "for ivan" } });
    await until(() => atPhone.length === 1 && atLaptop.length === 1, "ivan's two sockets");
    await sleep(100);
    assert.deepEqual([atPhone, atLaptop, atStranger], [["for ivan"], ["for ivan"], []]);
    const gonePhone = once(phone, "disconnect");
    const goneLaptop = once(laptop, "disconnect");
    await call(nodeB.url + "/api/disconnect", { method: "POST", body: { user: "ivan" } });
    await Promise.all([gonePhone, goneLaptop]);
    assert.equal(stranger.connected, true);
  });

  test("the chat's online-users list spans both nodes", async () => {
    const mia = await connected(nodeA.url);
    const noah = await connected(nodeB.url);
    const atMia = collect(mia, "users-online");
    const atNoah = collect(noah, "users-online");
    mia.emit("user-online", "mia");
    await until(() => atNoah.some((list) => list.includes("mia")), "Mia in the list on B");
    noah.emit("user-online", "noah");
    // The list Noah's node sends has Mia, who is on the other node.
    await until(() => atMia.some((list) => list.includes("mia") && list.includes("noah")), "both in the list");
    const leaving = atNoah.length;
    mia.disconnect();
    await until(() => atNoah.length > leaving, "the list after Mia left");
    assert.ok(!atNoah.at(-1).includes("mia"), `Mia is gone: ${atNoah.at(-1)}`);
    assert.ok(atNoah.at(-1).includes("noah"));
    noah.disconnect();
  });

  test("a backend publishing with @socket.io/redis-emitter reaches every node (text and binary)", async () => {
    const judy = await connected(nodeA.url);
    const ken = await connected(nodeB.url);
    await joinRoom(judy, "kitchen", nodeA);
    await joinRoom(ken, "kitchen", nodeB);
    const client = createClient({ url: redis.url });
    await client.connect();
    try {
      const emitter = new Emitter(client);
      const atJudy = collect(judy, "ticket", 2);
      const atKen = collect(ken, "ticket", 2);
      emitter.to("kitchen").emit("ticket", { table: 4 }, Buffer.from([1, 2, 3]));
      await until(() => atJudy.length === 1 && atKen.length === 1, "the emitter's event on both nodes");
      for (const [data, bytes] of [atJudy[0], atKen[0]]) {
        assert.deepEqual(data, { table: 4 });
        assert.deepEqual([...new Uint8Array(bytes)], [1, 2, 3]);
      }
      // The emitter's room operations act on both nodes' sockets.
      emitter.in("kitchen").socketsJoin("chefs");
      await untilMember(nodeA, "chefs", judy.id);
      await untilMember(nodeA, "chefs", ken.id);
      const goneJudy = once(judy, "disconnect");
      const goneKen = once(ken, "disconnect");
      emitter.in("chefs").disconnectSockets();
      await Promise.all([goneJudy, goneKen]);
    } finally {
      await client.quit();
    }
  });

  test("a Node.js socket.io server with @socket.io/redis-adapter shares rooms with the nodes", async () => {
    const pub = createClient({ url: redis.url });
    const sub = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect()]);
    const http = createServer();
    const ioServer = new Server(http, { adapter: createAdapter(pub, sub) });
    ioServer.on("connection", (socket) => socket.join("shared"));
    const port = await freePort();
    await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
    try {
      const nodeClient = await connected(`http://127.0.0.1:${port}`);
      const ours = await connected(nodeB.url);
      await joinRoom(ours, "shared", nodeB);
      const atNodeClient = collect(nodeClient, "news");
      const atOurs = collect(ours, "news");
      await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "news", rooms: ["shared"], data: "from switchboard" } });
      ioServer.to("shared").emit("news", "from node");
      await until(() => atNodeClient.length === 2 && atOurs.length === 2, "both messages on both servers");
      assert.deepEqual(atNodeClient.sort(), ["from node", "from switchboard"]);
      assert.deepEqual(atOurs.sort(), ["from node", "from switchboard"]);
      // The Node.js server sees Switchboard's sockets in the room (it asks every node).
      const sockets = await ioServer.in("shared").fetchSockets();
      const ids = sockets.map((s) => s.id);
      assert.ok(ids.includes(ours.id), `fetchSockets lists ${ours.id}: ${ids}`);
      assert.ok(ids.includes(nodeClient.id));
      // A broadcast that asks for acks: our nodes deliver it (without asking their clients to
      // ack) and tell the Node.js server not to wait for them.
      nodeClient.on("ask", (n, reply) => reply(`node client got ${n}`));
      const asked = collect(ours, "ask");
      const replies = await ioServer.timeout(2000).to("shared").emitWithAck("ask", 5);
      assert.deepEqual(replies, ["node client got 5"]);
      await until(() => asked.length === 1, "the asked event at our client");
      assert.equal(asked[0], 5);
    } finally {
      ioServer.close();
      await Promise.allSettled([pub.quit(), sub.quit()]);
    }
  });

  test("with Redis frozen, API emits get 503, client events still reach the node's own clients, reads answer in bounded time; they share again once Redis answers", async () => {
    const ann = await connected(nodeA.url);
    const bob = await connected(nodeB.url);
    await joinRoom(ann, "kitchen", nodeA);
    await joinRoom(bob, "kitchen", nodeB);
    await untilMember(nodeA, "kitchen", bob.id);

    redis.freeze(true);
    const atAnn = collect(ann, "order-ready");
    const started = Date.now();
    // An API emit is answered once Redis has taken it: a frozen Redis gets the caller a 503
    // within the request timeout (1 s here), and a 503 means nobody got it, Ann included.
    const emitted = await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "order-ready", rooms: ["kitchen"], data: { n: 1 } } });
    assert.equal(emitted.status, 503);
    assert.equal(emitted.body.error.code, "cluster_unavailable");
    assert.ok(Date.now() - started < 3000, "answered within the request timeout, not held");
    await sleep(200);
    assert.deepEqual(atAnn, [], "an emit answered 503 is not delivered on the node that refused it");

    // A cluster-wide read waits for the other nodes at most the request timeout (1 s here),
    // then answers with what it has: this node's own members.
    const asked = Date.now();
    const room = await call(nodeA.url + "/api/rooms/kitchen");
    const took = Date.now() - asked;
    assert.equal(room.status, 200);
    assert.ok(took < 3000, `the read answered in ${took} ms`);
    assert.ok(room.body.sockets.some((s) => s.id === ann.id));
    // Client events are handled too: Ann's own room message comes back to her.
    ann.emit("room-message", { room: "kitchen", message: "still here" });
    const atAnnMessages = collect(ann, "room-broadcast");
    await until(() => atAnnMessages.length === 1, "Ann's room message on her node", 2000);

    redis.freeze(false);
    // A client event published while Redis was frozen may be lost to the other node (pub/sub);
    // new messages reach it again.
    const atBob = collect(bob, "order-ready");
    const deadline = Date.now() + 40000;
    while (!atBob.some((m) => m.n === 2)) {
      if (Date.now() > deadline) throw new Error("no broadcast reached the other node after Redis came back");
      await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "order-ready", rooms: ["kitchen"], data: { n: 2 } } });
      await sleep(250);
    }
    await untilReady(nodeA);
    await untilReady(nodeB);
  });

  test("a node that loses Redis is not ready until it is back, then broadcasts flow again", async () => {
    const port = redis.port;
    await redis.stop();
    await Promise.all([untilReady(nodeA, 503), untilReady(nodeB, 503)]);
    const health = await call(nodeA.url + "/health");
    assert.deepEqual(health.body, { status: "ok", cluster: { redis: "disconnected" } });
    assert.match((await call(nodeA.url + "/metrics")).body, /^switchboard_cluster_connected 0$/m);
    redis = await startRedis(port);
    await Promise.all([untilReady(nodeA), untilReady(nodeB)]);
    assert.match((await call(nodeA.url + "/metrics")).body, /^switchboard_cluster_connected 1$/m);
    const lena = await connected(nodeB.url);
    await joinRoom(lena, "after-outage", nodeB);
    const atLena = collect(lena, "back");
    await call(nodeA.url + "/api/emit", { method: "POST", body: { event: "back", rooms: ["after-outage"] } });
    await until(() => atLena.length === 1, "a broadcast after Redis came back");
  });
});

describe("the online-status service on two nodes", () => {
  let redis, nodeA, nodeB;
  const sockets = [];
  function plain(node, userId) {
    const ws = new WebSocket(`ws://127.0.0.1:${node.port}/ws-online-status?userId=${userId}`);
    sockets.push(ws);
    const messages = [];
    ws.on("message", (data) => messages.push(JSON.parse(data.toString())));
    return { ws, messages, open: once(ws, "open") };
  }
  before(async () => {
    redis = await startRedis();
    const start = () =>
      startServer("switchboard", {
        args: ["--config", path.join(ROOT, "examples/online-status.toml")],
        env: { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url, SWITCHBOARD_PRESENCE_GRACE: "300ms", SWITCHBOARD_PRESENCE_ROOMS: "watchers" },
      });
    [nodeA, nodeB] = await Promise.all([start(), start()]);
    await Promise.all([untilReady(nodeA), untilReady(nodeB)]);
  });
  after(async () => {
    sockets.forEach((ws) => ws.terminate());
    clients.disconnectAll();
    await Promise.all([nodeA?.stop(), nodeB?.stop()]);
    await redis?.stop();
  });

  test("a watcher on one node sees users of the other; a user on both is offline only once gone from both", async () => {
    const watcher = plain(nodeB, "watcher");
    await watcher.open;
    const statusOf = (user) =>
      watcher.messages.filter((m) => m.userId === user && (m.type === "USER_ONLINE" || m.type === "USER_OFFLINE")).map((m) => m.type);
    const phone = plain(nodeA, "olga");
    await phone.open;
    await until(() => statusOf("olga").length === 1, "olga online, told on the other node");
    assert.deepEqual(statusOf("olga"), ["USER_ONLINE"]);
    watcher.ws.send(JSON.stringify({ type: "GET_ONLINE_USERS" }));
    await until(() => watcher.messages.some((m) => m.type === "ONLINE_USERS"), "the online users");
    assert.deepEqual(watcher.messages.find((m) => m.type === "ONLINE_USERS").users.sort(), ["olga", "watcher"]);
    // Olga opens a second device on node B, then closes the first one (on A): still online.
    const laptop = plain(nodeB, "olga");
    await laptop.open;
    phone.ws.close();
    await sleep(800);
    assert.deepEqual(statusOf("olga"), ["USER_ONLINE"], "no offline while on node B, no second online");
    assert.deepEqual((await call(`${nodeA.url}/api/users/olga`)).body, { user: "olga", online: true, connections: 1 });
    // Gone from both: offline, once, after the grace period.
    laptop.ws.close();
    await until(() => statusOf("olga").length === 2, "olga offline");
    await sleep(500);
    assert.deepEqual(statusOf("olga"), ["USER_ONLINE", "USER_OFFLINE"]);
  });

  test("a node that shuts down takes its users with it at once, not after its silence", async () => {
    const watcher = plain(nodeA, "watcher2");
    await watcher.open;
    const statusOf = (user) => watcher.messages.filter((m) => m.userId === user).map((m) => m.type);
    // A Socket.IO client in the presence room, on node A, hears each change once.
    const roomWatcher = await connected(nodeA.url, { query: { userId: "room-watcher" } });
    await call(nodeA.url + "/api/join", { method: "POST", body: { sockets: [roomWatcher.id], rooms: ["watchers"] } });
    await untilMember(nodeA, "watchers", roomWatcher.id);
    const announced = [];
    roomWatcher.on("user:online", (m) => m.userId === "peter" && announced.push("online"));
    roomWatcher.on("user:offline", (m) => m.userId === "peter" && announced.push("offline"));
    const peter = plain(nodeB, "peter");
    await peter.open;
    await until(() => statusOf("peter").length === 1, "peter online, told on node A");
    await until(() => announced.length === 1, "peter online in the presence room");
    const stopped = Date.now();
    assert.equal(await nodeB.stop(), 0);
    await until(() => statusOf("peter").length === 2, "peter offline on node A", 5000);
    assert.deepEqual(statusOf("peter"), ["USER_ONLINE", "USER_OFFLINE"]);
    // Node B left before its grace period ran out: node A, now the only one, announces it.
    await until(() => announced.length === 2, "peter offline in the presence room");
    await sleep(300);
    assert.deepEqual(announced, ["online", "offline"]);
    assert.ok(Date.now() - stopped < 5000);
    assert.deepEqual((await call(`${nodeA.url}/api/users/peter`)).body, { user: "peter", online: false, connections: 0 });
  });
});

for (const adapter of ["pubsub", "streams", "sharded", "postgres"]) describe(`a node killed with SIGKILL leaves no ghost presence (${adapter} adapter)`, () => {
  let redis;
  let nodes = [];
  before(async () => {
    const engines = { postgres: startPostgres, sharded: () => startRedisCluster({ replicas: 0 }) };
    redis = await (engines[adapter] ?? startRedis)();
    const engine = adapter === "postgres" ? { SWITCHBOARD_CLUSTER_POSTGRES_URL: redis.url } : { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url };
    const start = () =>
      startServer("switchboard", {
        args: ["--config", path.join(ROOT, "examples/online-status.toml")],
        env: {
          ...engine,
          SWITCHBOARD_CLUSTER_ADAPTER: adapter,
          SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
          SWITCHBOARD_PRESENCE_GRACE: "300ms",
          SWITCHBOARD_PRESENCE_ROOMS: "watchers",
        },
      });
    nodes = await Promise.all([start(), start(), start()]);
    await Promise.all(nodes.map((n) => untilReady(n)));
  });
  after(async () => {
    clients.disconnectAll();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  test("its users go offline once on every other node within the node timeout, and online once when back elsewhere", async () => {
    const [a, b, c] = nodes;
    // A watcher in the presence room on each surviving node.
    const heard = [];
    for (const node of [a, b]) {
      const watcher = await connected(node.url, { query: { userId: `watcher-${node.port}` } });
      await call(node.url + "/api/join", { method: "POST", body: { sockets: [watcher.id], rooms: ["watchers"] } });
      await untilMember(node, "watchers", watcher.id);
      const seen = [];
      watcher.on("user:online", (m) => m.userId === "ivan" && seen.push("online"));
      watcher.on("user:offline", (m) => m.userId === "ivan" && seen.push("offline"));
      heard.push(seen);
    }
    const ivan = new WebSocket(`ws://127.0.0.1:${c.port}/ws-online-status?userId=ivan`);
    await once(ivan, "open");
    await until(() => heard.every((seen) => seen.length === 1), "ivan online, heard on both nodes");

    const killed = Date.now();
    c.child.kill("SIGKILL");
    await until(() => heard.every((seen) => seen.length === 2), "ivan offline on both nodes", 6000);
    const took = Date.now() - killed;
    assert.ok(took < 4000, `offline ${took} ms after the kill (node_timeout 1500 ms, checked every 500 ms)`);
    await sleep(1500);
    assert.deepEqual(heard, [["online", "offline"], ["online", "offline"]], "announced once, no ghost, no repeat");
    for (const node of [a, b]) {
      assert.deepEqual((await call(`${node.url}/api/users/ivan`)).body, { user: "ivan", online: false, connections: 0 });
    }
    assert.match((await call(`${a.url}/metrics`)).body, /^switchboard_cluster_nodes_expired 1$/m);

    // Ivan comes back through another node: online once more, heard once on each node.
    const back = new WebSocket(`ws://127.0.0.1:${b.port}/ws-online-status?userId=ivan`);
    await once(back, "open");
    await until(() => heard.every((seen) => seen.length === 3), "ivan online again");
    await sleep(500);
    assert.deepEqual(heard, [["online", "offline", "online"], ["online", "offline", "online"]]);
    back.terminate();
    ivan.terminate();
    nodes = [a, b];
  });
});
