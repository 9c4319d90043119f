// Polling without sticky sessions, with real parts: three Switchboard nodes running the chat
// example in a cluster (a real redis-server), the official socket.io-client, and in front of the
// nodes an HTTP load balancer started by the test that is the opposite of sticky: it opens each
// session on the next node in turn, then sends every later request of that session (polls,
// posts, the WebSocket upgrade) to one of the *other* nodes. Each of those requests must be
// passed on to the node holding the session, so clients see a server that just works.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer as createHttpServer, request as httpRequest } from "node:http";
import { connect } from "node:net";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, freePort, once, sleep, call, ROOT } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const sidOf = (url) => new URL(url, "http://balancer").searchParams.get("sid");

/**
 * An HTTP balancer with no stickiness at all: a request without a session id goes to the next
 * node in turn; a request for a session goes to a node other than the one that opened it
 * (learnt from the handshake's answer), in turn. A node that refuses connections is skipped from
 * then on (a health check). Counts what it sent where.
 */
async function antiStickyBalancer(ports) {
  let nextOpen = 0;
  let nextOther = 0;
  const opener = new Map();
  const down = new Set();
  const sent = { polling: 0, upgrades: 0, toOpener: 0 };
  const reached = new Map();
  const open = new Set();
  const pick = (sid) => {
    const live = ports.filter((p) => !down.has(p));
    const owner = opener.get(sid);
    const choices = owner === undefined ? live : live.filter((p) => p !== owner);
    const from = choices.length ? choices : live;
    const port = from[(owner === undefined ? nextOpen++ : nextOther++) % from.length];
    if (sid) {
      if (!reached.has(sid)) reached.set(sid, new Set());
      reached.get(sid).add(port);
      if (port === owner) sent.toOpener++;
    }
    return port;
  };
  const server = createHttpServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    const sid = sidOf(req.url);
    const send = (left) => {
      const port = pick(sid);
      const upstream = httpRequest(
        { host: "127.0.0.1", port, method: req.method, path: req.url, headers: req.headers, agent: false },
        async (answer) => {
          if (sid) {
            sent.polling++;
            res.writeHead(answer.statusCode, answer.headers);
            answer.pipe(res);
            return;
          }
          const parts = [];
          for await (const part of answer) parts.push(part);
          const text = Buffer.concat(parts);
          const opened = /"sid":"([^"]+)"/.exec(text.toString());
          if (opened) opener.set(opened[1], port);
          res.writeHead(answer.statusCode, answer.headers);
          res.end(text);
        },
      );
      upstream.on("error", (error) => {
        if (error.code === "ECONNREFUSED" && left > 1) {
          down.add(port);
          return send(left - 1);
        }
        res.destroy();
      });
      upstream.end(body);
    };
    send(ports.length);
  });
  server.on("connection", (socket) => {
    open.add(socket);
    socket.on("close", () => open.delete(socket));
  });
  server.on("upgrade", (req, socket, head) => {
    open.add(socket);
    const sid = sidOf(req.url);
    const port = pick(sid);
    if (sid) sent.upgrades++;
    const upstream = connect({ host: "127.0.0.1", port });
    upstream.once("connect", () => {
      let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      upstream.write(lines + "\r\n");
      upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
    });
    upstream.on("error", () => socket.destroy());
    upstream.on("close", () => socket.destroy());
    socket.on("error", () => upstream.destroy());
    socket.on("close", () => {
      open.delete(socket);
      upstream.destroy();
    });
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    opener,
    reached,
    sent,
    close: () => {
      open.forEach((s) => s.destroy());
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const clients = [];
/** A chat client that (re)joins `room` whenever it connects and records what it sees. */
function chatClient(url, room, opts) {
  const socket = io(url, { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 300, ...opts });
  const seen = { ticks: [], messages: [], disconnects: [], connects: 0 };
  socket.on("connect", () => {
    seen.connects++;
    socket.emit("join-room", room);
  });
  socket.on("disconnect", (reason) => seen.disconnects.push(reason));
  socket.on("tick", (n) => seen.ticks.push(n));
  socket.on("room-broadcast", (m) => seen.messages.push(m.message));
  clients.push(socket);
  return { socket, seen };
}

function clusterNode(redis, adapter) {
  return startServer("switchboard", {
    args: ["--config", path.join(ROOT, "examples/chat.toml")],
    env: {
      SWITCHBOARD_CLUSTER_REDIS_URL: redis.url,
      SWITCHBOARD_CLUSTER_ADAPTER: adapter,
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
      SWITCHBOARD_ENGINE_PING_INTERVAL: "1s",
      SWITCHBOARD_ENGINE_PING_TIMEOUT: "1s",
    },
  });
}

async function forwarded(nodes, outcome) {
  const counts = await Promise.all(nodes.map(async (n) => {
    const text = (await call(`${n.url}/metrics`)).body;
    const match = new RegExp(`^switchboard_cluster_forwarded_requests_total\\{outcome="${outcome}"\\} (\\d+)$`, "m").exec(text);
    return Number(match?.[1] ?? 0);
  }));
  return counts.reduce((a, b) => a + b, 0);
}

async function roomSize(node, room) {
  return (await call(`${node.url}/api/rooms/${room}`)).body.sockets?.length ?? 0;
}

for (const adapter of ["pubsub", "streams"]) describe(`a cluster (${adapter} adapter) behind a load balancer without sticky sessions`, () => {
  let redis, nodes, balancer;
  before(async () => {
    redis = await startRedis();
    nodes = await Promise.all([clusterNode(redis, adapter), clusterNode(redis, adapter), clusterNode(redis, adapter)]);
    await sleep(300);
    balancer = await antiStickyBalancer(nodes.map((n) => n.port));
  });
  after(async () => {
    clients.splice(0).forEach((s) => s.disconnect());
    await balancer?.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis?.stop();
  });

  const polling = [];
  test("polling-only clients stay connected across heartbeats and get every room event, though no request after the handshake reaches their node", async () => {
    for (let i = 0; i < 6; i++) {
      const client = chatClient(balancer.url, "lobby", { transports: ["polling"] });
      await once(client.socket, "connect");
      polling.push(client);
    }
    const [a] = nodes;
    await until(async () => (await roomSize(a, "lobby")) === 6, "six members of lobby, cluster-wide");
    // The sessions were opened on all three nodes, two on each.
    const openers = polling.map((c) => balancer.opener.get(c.socket.io.engine.id));
    for (const node of nodes) assert.equal(openers.filter((p) => p === node.port).length, 2);

    // Client events posted through other nodes, answered by rules on the owner.
    polling.forEach((c, i) => c.socket.emit("room-message", { room: "lobby", message: `hi ${i}` }));
    // Room events from the API, in order, collected by long polls answered through other nodes.
    for (let n = 1; n <= 20; n++) {
      const { status } = await call(`${a.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["lobby"], data: n } });
      assert.equal(status, 200);
    }
    const ticks = Array.from({ length: 20 }, (_, i) => i + 1);
    await until(() => polling.every((c) => c.seen.ticks.length >= 20 && c.seen.messages.length >= 6), "every event at every client");
    const ids = polling.map((c) => c.socket.id);
    // Three heartbeats (ping every second): pongs posted through other nodes keep them alive.
    await sleep(3500);
    for (const [i, c] of polling.entries()) {
      assert.deepEqual(c.seen.ticks, ticks, "every API event once, in order");
      assert.deepEqual([...c.seen.messages].sort(), polling.map((_, j) => `hi ${j}`).sort());
      assert.deepEqual(c.seen.disconnects, [], "never disconnected");
      assert.equal(c.seen.connects, 1);
      assert.equal(c.socket.id, ids[i]);
      assert.equal(c.socket.io.engine.transport.name, "polling");
      // Its requests went to the two other nodes, never to its own.
      const reached = balancer.reached.get(c.socket.io.engine.id);
      assert.equal(reached.size, 2);
      assert.ok(!reached.has(balancer.opener.get(c.socket.io.engine.id)));
    }
    assert.equal(balancer.sent.toOpener, 0);
    assert.ok(balancer.sent.polling > 6 * 3, `many polling requests passed on (${balancer.sent.polling})`);
    const passedOn = await forwarded(nodes, "polling");
    assert.ok(passedOn >= balancer.sent.polling - 12, `nodes passed on ${passedOn} of ${balancer.sent.polling}`);
  });

  test("a client that upgrades behind the balancer gets its WebSocket tunnelled to the node holding its session", async () => {
    const before = await forwarded(nodes, "websocket");
    const upgrading = [];
    for (let i = 0; i < 3; i++) {
      const client = chatClient(balancer.url, "upgraded", {});
      await once(client.socket, "connect");
      upgrading.push(client);
    }
    await until(() => upgrading.every((c) => c.socket.io.engine.transport.name === "websocket"), "three upgrades");
    await until(async () => (await roomSize(nodes[0], "upgraded")) === 3, "three members of upgraded");
    assert.equal(balancer.sent.upgrades, 3);
    assert.equal(await forwarded(nodes, "websocket"), before + 3, "each upgrade tunnelled by a node");
    for (let n = 1; n <= 20; n++) {
      await call(`${nodes[1].url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["upgraded"], data: n } });
    }
    await until(() => upgrading.every((c) => c.seen.ticks.length >= 20), "every event over the tunnels");
    await sleep(2500);
    for (const c of upgrading) {
      assert.deepEqual(c.seen.ticks, Array.from({ length: 20 }, (_, i) => i + 1));
      assert.deepEqual(c.seen.disconnects, [], "never disconnected (heartbeats cross the tunnel)");
      assert.equal(c.socket.io.engine.transport.name, "websocket");
    }
    upgrading.forEach((c) => c.socket.disconnect());
    await until(async () => (await roomSize(nodes[0], "upgraded")) === 0, "the tunnelled sockets gone when they close");
  });

  if (adapter === "pubsub") test("when a node is killed, its polling clients reconnect to the others", async () => {
    const victim = nodes[2];
    const owned = polling.filter((c) => balancer.opener.get(c.socket.io.engine.id) === victim.port);
    assert.equal(owned.length, 2);
    victim.child.kill("SIGKILL");
    await until(() => owned.every((c) => c.seen.connects === 2 && c.socket.connected), "the victim's clients back", 10000);
    const survivors = nodes.filter((n) => n !== victim);
    await until(() => polling.every((c) => c.socket.connected), "every client connected", 10000);
    await until(async () => (await roomSize(survivors[0], "lobby")) === 6, "six members of lobby again", 10000);
    await call(`${survivors[0].url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["lobby"], data: 21 } });
    await until(() => polling.every((c) => c.seen.ticks.at(-1) === 21), "an event after the kill at all six");
    for (const c of owned) {
      assert.notEqual(balancer.opener.get(c.socket.io.engine.id), victim.port, "reopened on a live node");
    }
    const refused = (await forwarded(survivors, "unreachable")) + (await forwarded(survivors, "unknown_node"));
    assert.ok(refused >= 1, "requests for the dead node's sessions were answered as errors");
    nodes = survivors;
  });

  // A poll relayed through the killed node breaks too (as behind any balancer), so clients of
  // the live nodes may lose their transport as well: with the streams adapter every one of them
  // recovers, wherever it lands.
  if (adapter === "streams") test("a node killed under a stream of room events: every polling client recovers, with every event once and in order", async () => {
    const victim = nodes[2];
    const ids = polling.map((c) => c.socket.id);
    const survivors = nodes.filter((n) => n !== victim);
    for (let n = 21; n <= 80; n++) {
      const { status } = await call(`${survivors[0].url}/api/emit`, { method: "POST", body: { event: "tick", rooms: ["lobby"], data: n } });
      assert.equal(status, 200);
      if (n === 40) victim.child.kill("SIGKILL");
      await sleep(20);
    }
    await until(() => polling.every((c) => c.seen.ticks.length >= 80 && c.socket.connected), "every event at every client", 15000);
    await sleep(500);
    const expected = Array.from({ length: 80 }, (_, i) => i + 1);
    const owned = polling.filter((c) => c.seen.disconnects.length > 0);
    assert.ok(owned.length >= 2, "at least the victim's two clients lost their transport");
    for (const [i, c] of polling.entries()) {
      assert.deepEqual(c.seen.ticks, expected, "every event once, in order");
      assert.equal(c.socket.id, ids[i], "the same socket id");
    }
    for (const c of owned) assert.equal(c.socket.recovered, true, "recovered on a live node");
    nodes = survivors;
  });
});
