// The chaos lane (bench/chaos runs it): three Switchboard nodes on the Redis Streams adapter
// (the chat example, a real redis-server) behind a round-robin balancer, clients of the
// official socket.io-client of four kinds (WebSocket only, polling only, polling then the
// upgrade, all recovering as socket.io-client does by default; and WebSocket clients that do not
// ask for recovery, as python-socketio) in overlapping rooms, a backend publishing numbered
// events through the balancer (`POST /api/emit` to a room, `GET /notify`, a configured route,
// to everyone), a client publishing numbered `room-message` events (the chat's rule relays them
// to the room; published once its callback is answered), and a seeded schedule of faults: a node
// killed with SIGKILL and started again, a node stopped with SIGTERM and started again, Redis
// frozen (SIGSTOP) for a few seconds, Redis killed and restarted (it persists what it took: an
// append-only file synced on each write), Redis killed and restarted empty (its file lost), a
// share of the clients' connections cut (no close frame), two WebSocket clients that stop
// reading until their node closes them as slow consumers (their queue full), a connect storm.
//
// At the end it prints, per client kind: events published (answered 2xx), delivered, lost,
// duplicated, out of order; sessions recovered and fresh; then ghost users in presence once
// every client left (and the heartbeat has noticed a client whose last requests a fault lost),
// and each node's memory, open files, threads and tokio tasks at the start and the end.
// It exits 1 on any loss of an event answered 2xx, any duplicate, any reordering, a fresh
// session (recovery is promised on this adapter within the window), a client not back at the
// end, or a ghost. An event answered otherwise (a 503, or a request cut by a fault) may or may
// not arrive: it is neither a loss nor a duplicate if it arrives once and in order. A client
// that does not ask for recovery is promised nothing across a reconnect: what it misses while
// away is counted apart (its duplicates and reorderings still fail the run). Redis restarted
// empty loses, as documented, the events answered in its last moments that the nodes had not
// read yet: a loss of an event answered within a second before such a restart is counted apart
// as promised.
//
// `--engine` chooses what the nodes share: `redis` (the streams adapter on one redis-server,
// the default, with the Redis faults), `redis-cluster` (the streams adapter on a Redis Cluster
// of three masters with replicas) or `postgres` (the postgres adapter); the last two run the
// faults that do not touch the engine.
//
//   node e2e/chaos.mjs --seed 7 --seconds 120 --clients 45 [--faults stall,restartRedis] [--engine postgres]
import path from "node:path";
import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { startServer, freePort, sleep, call, until, untilReady, processFigures, metricValue, ROOT } from "./lib/server.mjs";
import { startRedis, streamsNodeEnv } from "./lib/redis.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";
import { startPostgres } from "./lib/postgres.mjs";
import { roundRobinProxy } from "./lib/balancer.mjs";

const { values: options } = parseArgs({
  options: {
    seed: { type: "string" },
    seconds: { type: "string", default: "120" },
    clients: { type: "string", default: "45" },
    rate: { type: "string", default: "30" },
    faults: { type: "string" },
    engine: { type: "string", default: "redis" },
  },
});
const seed = Number(options.seed ?? Math.floor(Math.random() * 1e9));
const seconds = Number(options.seconds);
const clientCount = Number(options.clients);
const rate = Number(options.rate);

/** mulberry32: the same seed, the same schedule. */
function prng(a) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(seed);
const pick = (list) => list[Math.floor(random() * list.length)];
const between = (low, high) => low + random() * (high - low);
const log = (...args) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...args);
const started = Date.now();

const ROOMS = ["r0", "r1", "r2"];
const KINDS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: { transports: ["polling", "websocket"] },
  norecover: { transports: ["websocket"], recover: false },
};

// --- the cluster ------------------------------------------------------------------------------
const engine = options.engine;
let store = null;
let shared;
if (engine === "redis") {
  store = await startRedis(undefined, { persist: true });
  shared = streamsNodeEnv(store.url);
} else if (engine === "redis-cluster") {
  store = await startRedisCluster();
  shared = streamsNodeEnv(store.url, { SWITCHBOARD_CLUSTER_REDIS_CLUSTER: "true" });
} else if (engine === "postgres") {
  store = await startPostgres();
  shared = { SWITCHBOARD_CLUSTER_POSTGRES_URL: store.url, SWITCHBOARD_CLUSTER_ADAPTER: "postgres" };
} else {
  throw new Error(`--engine: redis, redis-cluster or postgres, not ${engine}`);
}
const env = {
  ...shared,
  SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s",
  SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "3s",
  SWITCHBOARD_PRESENCE_GRACE: "500ms",
  SWITCHBOARD_SERVER_DRAIN_PERIOD: "1s",
  // A client that vanishes (its last requests lost to a fault) is noticed by the heartbeat:
  // short, so that the ghost check below waits for it, not for the default 45 s.
  SWITCHBOARD_ENGINE_PING_INTERVAL: "2s",
  SWITCHBOARD_ENGINE_PING_TIMEOUT: "2s",
  // A client that stops reading is closed once this many packets wait for it (the stall fault).
  SWITCHBOARD_LIMITS_SOCKET_QUEUE: "64",
};
const ports = [await freePort(), await freePort(), await freePort()];
const startNode = (port) => startServer("switchboard", { port, args: ["--config", path.join(ROOT, "examples/chat.toml")], env });
const nodes = await Promise.all(ports.map(async (port) => ({ port, server: await startNode(port), down: false })));
await Promise.all(nodes.map((n) => untilReady(n.server)));
const proxy = await roundRobinProxy(ports);

/** A node's memory, threads and open files, and the tokio tasks it reports. */
async function nodeFigures(node) {
  const figures = processFigures(node.server.child.pid);
  const metrics = (await call(`${node.server.url}/metrics`).catch(() => ({ body: "" }))).body;
  const tasks = metricValue(metrics, "switchboard_tasks");
  return figures && { ...figures, tasks: Number.isNaN(tasks) ? null : tasks };
}

// --- the clients ------------------------------------------------------------------------------
const clients = [];
function openClient(index) {
  const kind = Object.keys(KINDS)[index % 4];
  const { recover = true, ...options } = KINDS[kind];
  const rooms = [ROOMS[index % 3], ROOMS[(index + 1) % 3]];
  const socket = io(proxy.url, { forceNew: true, reconnectionDelay: 300, reconnectionDelayMax: 2000, ...options });
  const client = { index, kind, recover, rooms, socket, user: `user${index % Math.ceil(clientCount / 2)}`, got: new Map(), lost: 0, lostEmpty: 0, duplicated: 0, reordered: 0, delivered: 0, recovered: 0, fresh: 0, connects: 0, ids: new Set() };
  const record = (stream, seq) => {
    const seen = client.got.get(stream) ?? { last: 0, all: new Set() };
    client.got.set(stream, seen);
    client.delivered++;
    if (seen.all.has(seq)) client.duplicated++;
    else if (seq < seen.last) client.reordered++;
    seen.all.add(seq);
    seen.last = Math.max(seen.last, seq);
  };
  socket.on("tick", (data) => record(data.room, data.seq));
  socket.on("notification", (data) => record("notify", Number(data.message)));
  socket.on("room-broadcast", (data) => record(`talk-${data.room}`, Number(data.message)));
  // A client without recovery forgets its session id, so it comes back as a new socket.
  if (!recover) socket.on("disconnect", () => (socket._pid = undefined));
  socket.on("connect", () => {
    client.ids.add(socket.id);
    client.connects++;
    if (client.connects > 1) {
      if (socket.recovered) client.recovered++;
      else client.fresh++;
    }
    if (!socket.recovered) {
      // A fresh session (the first, or recovery failed): the app joins its rooms again.
      for (const room of rooms) socket.emit("join-room", room);
      socket.emit("user-online", client.user);
    }
  });
  clients.push(client);
  return client;
}
for (let i = 0; i < clientCount; i++) openClient(i);
await until(() => clients.every((c) => c.socket.connected), "every client connected", 20000);
await until(async () => {
  const sizes = await Promise.all(ROOMS.map(async (room) => (await call(`${nodes[0].server.url}/api/rooms/${room}`)).body.size));
  return sizes.every((size) => size === (clientCount * 2) / 3);
}, "every client in its rooms", 20000);
const figuresAtStart = await Promise.all(nodes.map(nodeFigures));
log(`seed ${seed}: ${clientCount} clients, ${rate} events/s, ${seconds} s of faults`);

// --- the backend ------------------------------------------------------------------------------
const STREAMS = ["r0", "r1", "r2", "notify", "talk-r0", "talk-r1", "talk-r2"];
const published = Object.fromEntries(STREAMS.map((s) => [s, []]));
const uncertain = Object.fromEntries(STREAMS.map((s) => [s, 0]));
/** When each published event was answered (to tell the losses a Redis restarted empty may cause). */
const answeredAt = Object.fromEntries(STREAMS.map((s) => [s, new Map()]));
const emptyRestarts = [];
let publishing = true;
const publisher = (async () => {
  const next = { r0: 0, r1: 0, r2: 0, notify: 0 };
  while (publishing) {
    const stream = pick(["r0", "r1", "r2", "notify"]);
    const seq = ++next[stream];
    let answer;
    try {
      answer = stream === "notify"
        ? await call(`${proxy.url}/notify?message=${seq}`)
        : await call(`${proxy.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: [stream], data: { room: stream, seq } } });
    } catch {
      answer = { status: 0 };
    }
    if (answer.status >= 200 && answer.status < 300) {
      published[stream].push(seq);
      answeredAt[stream].set(seq, Date.now());
    } else uncertain[stream]++;
    await sleep(1000 / rate);
  }
})();
// A chat user talking: numbered `room-message` events, each sent once its previous one was
// answered (a callback answered means the cluster took what the rule emits).
const talker = io(proxy.url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 300, reconnectionDelayMax: 2000 });
const talking = (async () => {
  const next = { r0: 0, r1: 0, r2: 0 };
  while (publishing) {
    const room = pick(ROOMS);
    const stream = `talk-${room}`;
    const seq = ++next[room];
    let answer;
    try {
      answer = await talker.timeout(3000).emitWithAck("room-message", { room, message: String(seq) });
    } catch {
      answer = null;
    }
    if (answer?.ok === true) {
      published[stream].push(seq);
      answeredAt[stream].set(seq, Date.now());
    } else uncertain[stream]++;
    await sleep(100);
  }
})();

// --- the faults -------------------------------------------------------------------------------
const faults = [];
async function restart(node, signal) {
  node.down = true;
  const exited = new Promise((resolve) => node.server.child.once("exit", resolve));
  node.server.child.kill(signal);
  await exited;
  await sleep(between(500, 2500));
  node.server = await startNode(node.port);
  await untilReady(node.server, 20000);
  node.down = false;
}
const FAULTS = {
  async kill() {
    const node = pick(nodes.filter((n) => !n.down));
    if (node) await restart(node, "SIGKILL");
  },
  async term() {
    const node = pick(nodes.filter((n) => !n.down));
    if (node) await restart(node, "SIGTERM");
  },
  async freezeRedis() {
    store.freeze(true);
    await sleep(between(1000, 2500));
    store.freeze(false);
  },
  async restartRedis() {
    await store.restart(between(500, 3000));
  },
  async restartRedisEmpty() {
    emptyRestarts.push(Date.now());
    await store.restart(between(500, 3000), { empty: true });
  },
  async stall() {
    // Two recovering WebSocket clients stop reading; their own rooms get a burst of large
    // events (10 MB each: more than the kernel's buffers and the 64-packet queue hold), so
    // their nodes close them as slow consumers; then they read again, reconnect and recover.
    const stalled = clients.filter((c) => c.recover && c.socket.io.engine?.transport?.name === "websocket" && c.socket.connected).sort(() => random() - 0.5).slice(0, 2);
    const filler = "x".repeat(64 * 1024);
    for (const client of stalled) client.socket.io.engine.transport.ws?._socket?.pause();
    for (const client of stalled) {
      const room = client.socket.id;
      for (let batch = 0; batch < 20; batch++) {
        await Promise.all(Array.from({ length: 8 }, () => call(`${proxy.url}/api/emit`, { method: "POST", body: { event: "filler", rooms: [room], data: filler } }).catch(() => {})));
      }
    }
    const connectsBefore = stalled.map((c) => c.connects);
    await sleep(2000);
    for (const client of stalled) client.socket.io.engine?.transport?.ws?._socket?.resume();
    await until(() => stalled.every((c, i) => c.connects > connectsBefore[i]), "the stalled clients back", 10000).catch(() => {});
    const back = stalled.filter((c, i) => c.connects > connectsBefore[i]).length;
    log(`stall: ${back} of ${stalled.length} stalled clients were closed and came back`);
  },
  async cut() {
    for (const client of clients) {
      if (random() > 0.3 || !client.socket.connected) continue;
      const transport = client.socket.io.engine?.transport;
      // A WebSocket's TCP connection is destroyed (no close frame); a polling client's session
      // is closed on its side (its requests stop).
      if (transport?.name === "websocket" && transport.ws?._socket) transport.ws._socket.destroy();
      else client.socket.io.engine?.close();
    }
  },
  async storm() {
    const storm = Array.from({ length: 40 }, () => io(proxy.url, { forceNew: true, transports: ["websocket"], reconnection: false }));
    await sleep(2000);
    storm.forEach((s) => s.disconnect());
  },
};
/** The faults that act on a single redis-server. */
const ENGINE_FAULTS = ["freezeRedis", "restartRedis", "restartRedisEmpty"];
const deadline = Date.now() + seconds * 1000;
while (Date.now() < deadline) {
  await sleep(between(6000, 10000));
  if (Date.now() >= deadline) break;
  const name = pick(options.faults ? options.faults.split(",") : Object.keys(FAULTS).filter((f) => engine === "redis" || !ENGINE_FAULTS.includes(f)));
  log(`fault: ${name}`);
  faults.push(name);
  await FAULTS[name]();
}
publishing = false;
await publisher;
await talking;

// --- the reckoning ----------------------------------------------------------------------------
const allBack = await until(() => clients.every((c) => c.socket.connected), "every client back", 30000).then(() => true, () => false);
const expectedOf = (client) => [...client.rooms, ...client.rooms.map((r) => `talk-${r}`), "notify"].map((stream) => [stream, published[stream]]);
/** Whether losing this event is promised: answered within a second before Redis restarted empty. */
const lostToAnEmptyRedis = (stream, seq) => {
  const at = answeredAt[stream].get(seq);
  return at !== undefined && emptyRestarts.some((restart) => at <= restart && restart - at < 1000);
};
await until(() => clients.every((c) => expectedOf(c).every(([stream, seqs]) => !seqs.length || c.got.get(stream)?.all.has(seqs.at(-1)))), "the last events delivered", 15000).catch(() => {});
await sleep(1000);
for (const client of clients) {
  for (const [stream, seqs] of expectedOf(client)) {
    const seen = client.got.get(stream)?.all ?? new Set();
    for (const seq of seqs.filter((seq) => !seen.has(seq))) {
      if (lostToAnEmptyRedis(stream, seq)) client.lostEmpty++;
      else client.lost++;
    }
  }
}
const figuresAtEnd = await Promise.all(nodes.map(nodeFigures));
const byKind = {};
for (const client of clients) {
  const row = (byKind[client.kind] ??= { clients: 0, published: 0, delivered: 0, lost: 0, lostEmpty: 0, duplicated: 0, reordered: 0, recovered: 0, fresh: 0 });
  row.clients++;
  row.published += expectedOf(client).reduce((sum, [, seqs]) => sum + seqs.length, 0);
  for (const key of ["delivered", "lost", "lostEmpty", "duplicated", "reordered", "recovered", "fresh"]) row[key] += client[key];
}
// Every client leaves: nobody may stay online anywhere once the heartbeat (4 s), the presence
// grace (0.5 s) and the node timeout (3 s) have passed.
const users = [...new Set(clients.map((c) => c.user))];
clients.forEach((c) => c.socket.disconnect());
await sleep(4000 + 500 + 3000);
const ghosts = [];
for (const node of nodes) {
  for (const user of users) {
    const answer = await call(`${node.server.url}/api/users/${user}`);
    if (answer.body?.online) ghosts.push(`${user} on :${node.port}`);
  }
}

console.log(`\nchaos: seed ${seed}, engine ${engine}, ${seconds} s, ${clientCount} clients, faults: ${faults.join(", ") || "none"}`);
console.log(`published (2xx): ${Object.entries(published).map(([s, v]) => `${s} ${v.length}`).join(", ")}; answered otherwise: ${Object.entries(uncertain).map(([s, v]) => `${s} ${v}`).join(", ")}`);
console.log("kind        clients  published  delivered  lost  duplicated  out-of-order  recovered  fresh  lost-to-empty-redis   (norecover: lost and fresh are not promised)");
for (const [kind, row] of Object.entries(byKind)) {
  console.log(`${kind.padEnd(11)} ${String(row.clients).padStart(7)} ${String(row.published).padStart(10)} ${String(row.delivered).padStart(10)} ${String(row.lost).padStart(5)} ${String(row.duplicated).padStart(11)} ${String(row.reordered).padStart(13)} ${String(row.recovered).padStart(10)} ${String(row.fresh).padStart(6)} ${String(row.lostEmpty).padStart(20)}`);
}
console.log(`ghost users: ${ghosts.length ? ghosts.join(", ") : "none"}; every client back at the end: ${allBack}`);
if (ghosts.length) {
  // Where the ghosts live: each node's own sockets, and whose they were.
  for (const node of nodes) {
    const metrics = (await call(`${node.server.url}/metrics`)).body;
    const here = metricValue(metrics, "switchboard_sockets");
    console.log(`  node :${node.port} still has ${here} sockets`);
  }
  for (const room of ROOMS) {
    const members = (await call(`${nodes[0].server.url}/api/rooms/${room}`)).body.sockets ?? [];
    for (const member of members) {
      const owner = clients.find((c) => c.ids.has(member.id ?? member));
      console.log(`  ${room}: ${JSON.stringify(member)} was client ${owner?.index} (${owner?.kind}, ${owner?.user})`);
    }
  }
}
nodes.forEach((n, i) => console.log(`node :${n.port}: start ${JSON.stringify(figuresAtStart[i])}, end ${JSON.stringify(figuresAtEnd[i])}`));

talker.disconnect();
await proxy.close();
await Promise.all(nodes.map((n) => n.server.stop()));
await store.stop();
// Losses and fresh sessions count only where recovery was asked for (promised).
const totals = Object.entries(byKind).reduce((t, [kind, r]) => {
  const promised = KINDS[kind].recover !== false;
  return { lost: t.lost + (promised ? r.lost : 0), dup: t.dup + r.duplicated, ooo: t.ooo + r.reordered, fresh: t.fresh + (promised ? r.fresh : 0) };
}, { lost: 0, dup: 0, ooo: 0, fresh: 0 });
const failed = totals.lost || totals.dup || totals.ooo || totals.fresh || ghosts.length || !allBack;
console.log(failed ? `chaos: FAILED (replay with --seed ${seed})` : "chaos: nothing lost, duplicated or reordered; no ghost");
process.exit(failed ? 1 : 0);
