// Last state on join, on the device dashboard (examples/device-dashboard.toml: `[[history]]
// rooms = "device-*" on_join = "last_per_event"`), with the official socket.io-client: a page
// that joins a device's room gets the device's last heartbeat and status at once, once per join,
// with their offsets, before anything sent after; a client that recovers its session is not given
// them again; GET /api/rooms/{room}/last shows them; it is given on every way into a room (an
// on_connect rule, the connect proxy's rooms, POST /api/join; the metrics count it); across two
// nodes on a real redis-server a node started after the events reads them from Redis.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, once, sleep, call, untilReady, tempFile, ROOT } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

const CONFIG = path.join(ROOT, "examples/device-dashboard.toml");
const clients = [];
after(() => clients.forEach((s) => s.disconnect()));

async function page(url) {
  const socket = io(url, { forceNew: true, path: "/api/socket/io", transports: ["websocket"] });
  clients.push(socket);
  await once(socket, "connect");
  const seen = [];
  for (const event of ["device-heartbeat", "device-status-change", "sms-received"]) {
    socket.on(event, (data, offset) => seen.push({ event, data, offset }));
  }
  return { socket, seen };
}

const post = (url, route, body) => call(`${url}/broadcast/${route}`, { method: "POST", body });

test("a device page gets the device's last heartbeat and status when it joins, once per join", async () => {
  const server = await startServer("switchboard", { args: ["--config", CONFIG] });
  try {
    await post(server.url, "device-heartbeat", { deviceId: 42, battery: 80 });
    await post(server.url, "device-status-change", { deviceId: 42, status: "offline" });
    await post(server.url, "device-heartbeat", { deviceId: 42, battery: 79 });
    await post(server.url, "device-heartbeat", { deviceId: 7, battery: 50 });

    const { socket, seen } = await page(server.url);
    await socket.timeout(2000).emitWithAck("join-device-room", 42);
    // Given before the join's answer: the last of each event name, in the order they were sent.
    assert.deepEqual(seen.map(({ event, data }) => [event, data]), [
      ["device-status-change", { deviceId: 42, status: "offline" }],
      ["device-heartbeat", { deviceId: 42, battery: 79 }],
    ]);
    assert.ok(seen.every((e) => typeof e.offset === "string"), "each with its recovery offset");
    const last = await call(`${server.url}/api/rooms/device-42/last`);
    assert.deepEqual(last.body.events.map((e) => [e.event, e.args[0], e.offset]), seen.map((e) => [e.event, e.data, e.offset]));

    // Joining again while in the room gives nothing; a live heartbeat arrives once.
    await socket.timeout(2000).emitWithAck("join-device-room", 42);
    await post(server.url, "device-heartbeat", { deviceId: 42, battery: 78 });
    await sleep(200);
    assert.deepEqual(seen.slice(2).map(({ data }) => data), [{ deviceId: 42, battery: 78 }]);

    // A page that recovers its session after a dropped transport is not given it again.
    const before = seen.length;
    socket.io.engine.close();
    await once(socket, "connect");
    assert.equal(socket.recovered, true);
    await sleep(200);
    assert.equal(seen.length, before);

    // Leaving and joining again is a new join: the newest state.
    await socket.timeout(2000).emitWithAck("leave-device-room", 42);
    await socket.timeout(2000).emitWithAck("join-device-room", 42);
    assert.deepEqual(seen.slice(before).map(({ event, data }) => [event, data]), [
      ["device-status-change", { deviceId: 42, status: "offline" }],
      ["device-heartbeat", { deviceId: 42, battery: 78 }],
    ]);
    // The dashboard room keeps nothing; a device with no events gives nothing.
    const other = await page(server.url);
    await other.socket.timeout(2000).emitWithAck("join-dashboard");
    await other.socket.timeout(2000).emitWithAck("join-device-room", 9);
    await sleep(100);
    assert.deepEqual(other.seen, []);
    assert.deepEqual((await call(`${server.url}/api/rooms/dashboard/last`)).body.events, []);
  } finally {
    await server.stop();
  }
});

test("across two nodes, a node started after the events gives them from Redis", async () => {
  const redis = await startRedis();
  const env = { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url };
  const first = await startServer("switchboard", { args: ["--config", CONFIG], env });
  let second;
  try {
    await untilReady(first);
    await post(first.url, "device-heartbeat", { deviceId: 5, battery: 33 });
    await post(first.url, "sms-received", { deviceId: 5, from: "+1", text: "hello" });
    second = await startServer("switchboard", { args: ["--config", CONFIG], env });
    await untilReady(second);
    const { socket, seen } = await page(second.url);
    await socket.timeout(2000).emitWithAck("join-device-room", 5);
    const deadline = Date.now() + 3000;
    while (seen.length < 2 && Date.now() < deadline) await sleep(20);
    assert.deepEqual(seen.map(({ event, data }) => [event, data]), [
      ["device-heartbeat", { deviceId: 5, battery: 33 }],
      ["sms-received", { deviceId: 5, from: "+1", text: "hello" }],
    ]);
    const last = await call(`${second.url}/api/rooms/device-5/last`);
    assert.equal(last.body.events.length, 2);
    // What comes next reaches it live, once.
    await post(first.url, "device-heartbeat", { deviceId: 5, battery: 32 });
    await sleep(300);
    assert.deepEqual(seen.slice(2).map(({ data }) => data), [{ deviceId: 5, battery: 32 }]);
  } finally {
    await second?.stop();
    await first.stop();
    await redis.stop();
  }
});

test("the last state is given on every way into a room: an on_connect rule, the connect proxy, the API", async () => {
  const { createServer } = await import("node:http");
  // The backend's connect proxy puts a socket whose auth says so in device-2 from its first packet.
  const backend = createServer((req, res) => {
    let body = "";
    req.on("data", (d) => (body += d));
    req.on("end", () => {
      const { auth } = JSON.parse(body);
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify(auth?.via === "proxy" ? { accept: true, rooms: ["device-2"] } : { accept: true }));
    });
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const config = await tempFile(
    "last-state.toml",
    `[[history]]\nrooms = "device-*"\non_join = "last"\n\n` +
      `[proxy.connect]\nurl = "http://127.0.0.1:${backend.address().port}/connect"\n\n` +
      `[[namespaces]]\nname = "/"\n[namespaces.on_connect]\njoin = ["device-{auth.device}"]\n`,
  );
  const server = await startServer("switchboard", { args: ["--config", config] });
  try {
    for (const device of [1, 2, 3]) {
      for (const battery of [90, 80]) {
        const emitted = await call(`${server.url}/api/emit`, { method: "POST", body: { event: "heartbeat", rooms: [`device-${device}`], data: { device, battery } } });
        assert.equal(emitted.status, 200);
      }
    }
    const open = async (auth) => {
      const socket = io(server.url, { forceNew: true, transports: ["websocket"], auth });
      clients.push(socket);
      const seen = [];
      socket.on("heartbeat", (data, offset) => seen.push({ data, offset }));
      await once(socket, "connect");
      return { socket, seen };
    };
    const until = async (seen, count, what) => {
      const deadline = Date.now() + 3000;
      while (seen.length < count && Date.now() < deadline) await sleep(20);
      assert.equal(seen.length, count, what);
    };
    // On connect, by the namespace's on_connect rule.
    const byRule = await open({ device: 1 });
    await until(byRule.seen, 1, "the on_connect join gave device-1's last heartbeat");
    assert.deepEqual(byRule.seen[0].data, { device: 1, battery: 80 });
    assert.equal(typeof byRule.seen[0].offset, "string", "with its offset");
    // On connect, by the connect proxy's answer.
    const byProxy = await open({ via: "proxy" });
    await until(byProxy.seen, 1, "the connect proxy's room gave device-2's last heartbeat");
    assert.deepEqual(byProxy.seen[0].data, { device: 2, battery: 80 });
    // Later, by the HTTP API.
    const byApi = await open({});
    await sleep(200);
    assert.deepEqual(byApi.seen, [], "in no device room yet");
    const joined = await call(`${server.url}/api/join`, { method: "POST", body: { sockets: [byApi.socket.id], rooms: ["device-3"] } });
    assert.equal(joined.status, 200);
    await until(byApi.seen, 1, "the API join gave device-3's last heartbeat");
    assert.deepEqual(byApi.seen[0].data, { device: 3, battery: 80 });
    // Each once: nothing more arrived meanwhile.
    await sleep(200);
    assert.deepEqual([byRule.seen.length, byProxy.seen.length, byApi.seen.length], [1, 1, 1]);
    const metrics = (await call(`${server.url}/metrics`)).body;
    assert.match(metrics, /^switchboard_last_state_given_total\{namespace="\/"\} 3$/m, "three joins given their last state");
    assert.match(metrics, /^switchboard_last_state_rooms\{namespace="\/"\} 3$/m, "three rooms keep one");
  } finally {
    await server.stop();
    backend.close();
  }
});
