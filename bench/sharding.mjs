// The point of sharding, measured: four Switchboard nodes with clients spread over rooms, a
// steady stream of API emits to one room at a time, and each node's inbound cluster messages
// per second (switchboard_cluster_messages_received), with the classic adapter (one Redis,
// every node receives every broadcast) against the sharded adapter on a Redis Cluster of three
// masters in its "static" mode (every broadcast on the namespace's channel) and its "dynamic"
// mode (a node listens to a room's channel only while it has members there).
//
//   node bench/sharding.mjs [--rooms 200] [--clients 400] [--rate 400] [--seconds 10] [--seed 7]
//
// Needs the release binary (cargo build --release), redis-server and redis-cli, and the e2e
// packages (cd e2e && npm ci). Every client counts what it receives: the run fails if one
// event is missing or extra.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, call, sleep } from "../e2e/lib/server.mjs";
import { startRedis } from "../e2e/lib/redis.mjs";
import { startRedisCluster } from "../e2e/lib/redis-cluster.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(ROOT, "e2e", "package.json"));
const { io } = require("socket.io-client");

const option = (name, fallback) => {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const ROOMS = option("rooms", 200);
const CLIENTS = option("clients", 400);
const RATE = option("rate", 400);
const SECONDS = option("seconds", 10);
const NODES = 4;

/** A small seeded generator (the same rooms and nodes for every mode). */
function random(seed) {
  let state = BigInt(seed) || 1n;
  return (n) => {
    state ^= state >> 12n;
    state ^= (state << 25n) & 0xffffffffffffffffn;
    state ^= state >> 27n;
    return Number(((state * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) % BigInt(n));
  };
}

async function received(node) {
  const metrics = (await call(`${node.url}/metrics`)).body;
  return Number(/^switchboard_cluster_messages_received (\d+)$/m.exec(metrics)?.[1] ?? NaN);
}

async function measure(label, env) {
  const nodes = [];
  for (let i = 0; i < NODES; i++) {
    nodes.push(
      await startServer("switchboard", {
        args: ["--config", path.join(ROOT, "examples", "chat.toml")],
        env: { RUST_LOG: "warn", SWITCHBOARD_SERVER_STATS_INTERVAL: "0s", ...env },
      }),
    );
  }
  for (const node of nodes) {
    while ((await call(`${node.url}/ready`)).status !== 200) await sleep(50);
  }
  // Each client lands on a node at random and joins one room; a room's members are then on
  // one or a few nodes, as behind a balancer.
  const pick = random(option("seed", 7));
  const sockets = [];
  const got = new Map();
  const members = new Map();
  for (let i = 0; i < CLIENTS; i++) {
    const room = `room-${i % ROOMS}`;
    const node = nodes[pick(NODES)];
    const socket = io(node.url, { transports: ["websocket"], forceNew: true });
    await new Promise((resolve) => socket.once("connect", resolve));
    socket.emit("join-room", room);
    socket.on("tick", () => got.set(socket, (got.get(socket) ?? 0) + 1));
    sockets.push(socket);
    members.set(room, (members.get(room) ?? 0) + 1);
  }
  await sleep(1000);
  const before = await Promise.all(nodes.map(received));
  const started = Date.now();
  let published = 0;
  const expected = new Map();
  const interval = 1000 / RATE;
  const pending = [];
  while (Date.now() - started < SECONDS * 1000) {
    const room = `room-${pick(ROOMS)}`;
    const node = nodes[published % NODES];
    pending.push(call(`${node.url}/api/emit`, { method: "POST", body: { event: "tick", rooms: [room], data: published } }));
    expected.set(room, (expected.get(room) ?? 0) + 1);
    published += 1;
    const due = started + published * interval;
    if (due > Date.now()) await sleep(due - Date.now());
    if (pending.length >= 64) await Promise.all(pending.splice(0));
  }
  const statuses = await Promise.all(pending.splice(0));
  const elapsed = (Date.now() - started) / 1000;
  await sleep(1000);
  const after = await Promise.all(nodes.map(received));
  let deliveries = 0;
  for (const [room, count] of expected) deliveries += count * (members.get(room) ?? 0);
  const delivered = [...got.values()].reduce((a, b) => a + b, 0);
  const perNode = after.map((a, i) => (a - before[i]) / elapsed);
  const failed = statuses.filter((s) => s.status !== 200).length;
  sockets.forEach((s) => s.disconnect());
  await Promise.all(nodes.map((n) => n.stop()));
  return { label, published, rate: published / elapsed, perNode, deliveries, delivered, failed };
}

const results = [];
{
  const redis = await startRedis();
  try {
    results.push(await measure("pubsub (one Redis)", { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url, SWITCHBOARD_CLUSTER_ADAPTER: "pubsub" }));
  } finally {
    await redis.stop();
  }
}
for (const mode of ["static", "dynamic"]) {
  const cluster = await startRedisCluster({ masters: 3, replicas: 0 });
  try {
    results.push(
      await measure(`sharded ${mode} (3 masters)`, {
        SWITCHBOARD_CLUSTER_REDIS_URL: cluster.url,
        SWITCHBOARD_CLUSTER_ADAPTER: "sharded",
        SWITCHBOARD_CLUSTER_SUBSCRIPTION_MODE: mode,
      }),
    );
  } finally {
    await cluster.stop();
  }
}

console.log(`\n${NODES} nodes, ${CLIENTS} clients over ${ROOMS} rooms (each on a node at random), API emits to one room at a time for ${SECONDS} s`);
console.log("| adapter | emits/s | inbound cluster messages/s per node | mean share of emits | deliveries (expected) |");
console.log("| --- | ---: | --- | ---: | ---: |");
let ok = true;
for (const r of results) {
  const share = r.perNode.reduce((a, b) => a + b, 0) / r.perNode.length / r.rate;
  console.log(`| ${r.label} | ${r.rate.toFixed(0)} | ${r.perNode.map((x) => x.toFixed(0)).join(" / ")} | ${(share * 100).toFixed(0)}% | ${r.delivered} (${r.deliveries}) |`);
  if (r.delivered !== r.deliveries || r.failed > 0) ok = false;
}
if (!ok) {
  console.error("FAILED: a client missed or got extra events, or an emit was refused");
  process.exit(1);
}
