// The systems teams hand-write today, run from config files with no code, as their users see
// them: examples/orders.toml, chat.toml and device-dashboard.toml, driven by socket.io-client
// and by plain HTTP calls standing in for the backend.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { readdirSync } from "node:fs";
import { clientPool } from "./lib/clients.mjs";
import { startServer, once, sleep, call, tempFile, ROOT, RELEASE } from "./lib/server.mjs";

const clients = clientPool();
const connect = (server, opts) => clients.connect(server.url, opts);
const connected = (server, opts) => clients.connected(server.url, opts);
function collect(socket, event) {
  const got = [];
  socket.on(event, (arg) => got.push(arg));
  return got;
}
function ack(socket, event, ...args) {
  return new Promise((resolve, reject) =>
    socket.timeout(3000).emit(event, ...args, (err, reply) => (err ? reject(err) : resolve(reply))),
  );
}
after(() => clients.disconnectAll());

describe("orders: a Django backend pushes order updates to back-office screens", () => {
  let server;
  before(async () => {
    server = await startServer("switchboard", { args: ["--config", path.join(ROOT, "examples/orders.toml")] });
  });
  after(() => server.stop());

  test("a screen is greeted and joins order_updates on connect; ping gets pong", async () => {
    const socket = connect(server);
    const [greeting] = await once(socket, "connection_established");
    assert.equal(greeting.sid, socket.id);
    assert.match(greeting.timestamp, /^\d{4}-\d\d-\d\dT/);
    const rooms = await call(server.url + "/api/rooms/order_updates");
    assert.ok(rooms.body.sockets.some((s) => s.id === socket.id));
    socket.emit("ping");
    const [pong] = await once(socket, "pong");
    assert.equal(typeof pong.timestamp, "number");
  });

  test("every backend route reaches every screen with the body as payload", async () => {
    const screens = await Promise.all([connected(server), connected(server)]);
    const order = { id: 17, table: 4, items: [{ name: "soup", qty: 2 }], status: "new" };
    const routes = [
      ["order-created", "order_created", { order }],
      ["order-updated", "order_updated", { order: { ...order, table: 5 } }],
      ["order-deleted", "order_deleted", { order_id: 17 }],
      ["order-status-changed", "order_status_changed", { order_id: 17, old_status: "new", new_status: "cooking", order }],
      ["order-image-uploaded", "order_image_uploaded", { order_id: 17, image: { id: 3, url: "/m/3.jpg" }, order }],
      ["order-image-deleted", "order_image_deleted", { order_id: 17, image_id: 3, order }],
      ["order-assigned", "order_assigned", { order_id: 17, assigned_users: [1, 2], order }],
    ];
    for (const [route, event, body] of routes) {
      const received = screens.map((s) => once(s, event));
      const res = await call(`${server.url}/broadcast/${route}`, { method: "POST", body });
      assert.equal(res.status, 200, route);
      assert.equal(res.body.success, true);
      assert.ok(res.body.reached >= 2, `${route} reached ${res.body.reached}`);
      for (const [payload] of await Promise.all(received)) assert.deepEqual(payload, body, route);
    }
  });

  test("bad backend calls are refused with 400 and send nothing", async () => {
    const screen = await connected(server);
    const got = collect(screen, "order_created");
    let res = await call(`${server.url}/broadcast/order-created`, { method: "POST", body: "{broken" });
    assert.equal(res.status, 400);
    assert.equal(res.body.success, false);
    assert.equal(res.body.error.code, "invalid_json");
    res = await call(`${server.url}/broadcast/order-created`, { method: "POST", body: { nothing: 1 } });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.field, "order");
    await sleep(150);
    assert.deepEqual(got, []);
  });

  test("health and server info", async () => {
    assert.equal((await call(server.url + "/health")).body.status, "ok");
    const info = (await call(server.url + "/")).body;
    assert.equal(info.name, "switchboard");
    assert.ok(info.connections >= 1);
  });
});

describe("chat: rooms, messages and who is online", () => {
  let server;
  before(async () => {
    server = await startServer("switchboard", { args: ["--config", path.join(ROOT, "examples/chat.toml")] });
  });
  after(() => server.stop());

  test("a message goes to everyone with its sender and a timestamp", async () => {
    const [a, b] = await Promise.all([connected(server), connected(server)]);
    const received = [once(a, "new-message"), once(b, "new-message")];
    a.emit("message", "hello all");
    for (const [msg] of await Promise.all(received)) {
      assert.equal(msg.from, a.id);
      assert.equal(msg.message, "hello all");
      assert.ok(!Number.isNaN(Date.parse(msg.timestamp)));
    }
    a.disconnect();
    b.disconnect();
  });

  test("rooms: joined, user-joined to the others, room messages stay in the room, user-left", async () => {
    const [a, b, outsider] = await Promise.all([connected(server), connected(server), connected(server)]);
    assert.deepEqual(await ack(a, "join-room", "lobby"), { ok: true });
    const joined = once(a, "user-joined");
    const bJoined = collect(b, "user-joined");
    await ack(b, "join-room", "lobby");
    assert.deepEqual((await joined)[0], { id: b.id, room: "lobby" });
    const outsiderGot = collect(outsider, "room-broadcast");
    const toA = once(a, "room-broadcast");
    const toB = once(b, "room-broadcast");
    a.emit("room-message", { room: "lobby", message: "in the lobby" });
    for (const [msg] of await Promise.all([toA, toB])) {
      assert.deepEqual(msg, { from: a.id, room: "lobby", message: "in the lobby" });
    }
    const left = once(a, "user-left");
    await ack(b, "leave-room", "lobby");
    assert.deepEqual((await left)[0], { id: b.id, room: "lobby" });
    await sleep(150);
    assert.deepEqual(outsiderGot, [], "a socket not in the room gets nothing from it");
    assert.deepEqual(bJoined, [], "user-joined goes to the others only");
    for (const s of [a, b, outsider]) s.disconnect();
  });

  test("malformed client payloads get an error reply, change nothing, and others are served", async () => {
    const [a, b] = await Promise.all([connected(server), connected(server)]);
    // With a callback: the error is the ack.
    let reply = await ack(a, "message", { not: "a string" });
    assert.equal(reply.error.code, "invalid_type");
    reply = await ack(a, "room-message", { message: "no room" });
    assert.equal(reply.error.code, "missing_field");
    assert.match(reply.error.message, /room/);
    reply = await ack(a, "join-room", "r".repeat(300));
    assert.equal(reply.error.code, "room_name_too_long");
    reply = await ack(a, "join-room", b.id);
    assert.equal(reply.error.code, "forbidden_room", "another socket's own room is off limits");
    // Without a callback: an `error` event to the sender.
    const error = once(a, "error");
    a.emit("join-room", 42);
    assert.deepEqual((await error)[0], {
      event: "join-room",
      code: "invalid_type",
      message: "the event's argument must be a string",
    });
    const rooms = (await call(server.url + "/api/rooms")).body.rooms.map((r) => r.name);
    assert.ok(!rooms.some((r) => r.startsWith("rrr")), "the refused join changed nothing");
    const fine = once(b, "new-message");
    b.emit("message", "still working");
    assert.equal((await fine)[0].message, "still working");
    a.disconnect();
    b.disconnect();
  });

  test("the online list updates on user-online and on disconnect", async () => {
    const [a, b, watcher] = await Promise.all([connected(server), connected(server), connected(server)]);
    let update = once(watcher, "users-online");
    a.emit("user-online", "alice");
    assert.deepEqual((await update)[0], ["alice"]);
    update = once(watcher, "users-online");
    b.emit("user-online", "bob");
    assert.deepEqual((await update)[0], ["alice", "bob"]);
    update = once(watcher, "users-online");
    b.disconnect();
    assert.deepEqual((await update)[0], ["alice"]);
    a.disconnect();
    watcher.disconnect();
  });

  test("the online list counts a user once however many tabs, and follows a change of name", async () => {
    const [a, b, c, watcher] = await Promise.all([connected(server), connected(server), connected(server), connected(server)]);
    let update = once(watcher, "users-online");
    a.emit("user-online", "dora");
    assert.deepEqual((await update)[0], ["dora"]);
    update = once(watcher, "users-online");
    b.emit("user-online", "dora");
    assert.deepEqual((await update)[0], ["dora"], "a second tab of the same user is not listed twice");
    update = once(watcher, "users-online");
    c.emit("user-online", 42);
    assert.deepEqual((await update)[0], ["dora", 42], "numbers stay numbers");
    update = once(watcher, "users-online");
    b.disconnect();
    assert.deepEqual((await update)[0], ["dora", 42], "dora is still online in her other tab");
    update = once(watcher, "users-online");
    a.emit("user-online", "eve");
    assert.deepEqual((await update)[0], ["eve", 42], "a socket that names another user no longer counts for the first");
    update = once(watcher, "users-online");
    c.disconnect();
    assert.deepEqual((await update)[0], ["eve"]);
    a.disconnect();
    watcher.disconnect();
  });

  test("GET /notify sends a notification to everyone", async () => {
    const socket = await connected(server);
    let got = once(socket, "notification");
    let res = await call(server.url + "/notify?message=maintenance%20at%205");
    assert.equal(res.body.success, true);
    assert.equal((await got)[0].message, "maintenance at 5");
    got = once(socket, "notification");
    await call(server.url + "/notify");
    assert.equal((await got)[0].message, "You have a new notification");
    socket.disconnect();
  });
});

describe("device dashboard: per-device rooms under a custom path", () => {
  let server;
  const opts = { path: "/api/socket/io" };
  before(async () => {
    server = await startServer("switchboard", {
      args: ["--config", path.join(ROOT, "examples/device-dashboard.toml")],
      readyPath: "/api/socket/io/?EIO=4&transport=polling",
    });
  });
  after(() => server.stop());

  test("the dashboard and the device's room get its events; other devices do not", async () => {
    const [dashboard, device42, device7] = await Promise.all([
      connected(server, opts),
      connected(server, opts),
      connected(server, { ...opts, transports: ["polling"] }),
    ]);
    await ack(dashboard, "join-dashboard");
    await ack(device42, "join-device-room", 42);
    await ack(device7, "join-device-room", "7");
    const got = {
      dashboard: collect(dashboard, "device-heartbeat"),
      d42: collect(device42, "device-heartbeat"),
      d7: collect(device7, "device-heartbeat"),
    };
    const sms = { dashboard: collect(dashboard, "sms-received"), d7: collect(device7, "sms-received"), d42: collect(device42, "sms-received") };
    const stats = { dashboard: collect(dashboard, "stats-update"), d42: collect(device42, "stats-update") };
    const post = (route, body) => call(`${server.url}/broadcast/${route}`, { method: "POST", body });
    let res = await post("device-heartbeat", { deviceId: 42, battery: 80 });
    assert.equal(res.body.reached, 2);
    res = await post("sms-received", { deviceId: "7", from: "+100", text: "hi" });
    assert.equal(res.body.reached, 2);
    res = await post("device-status-change", { deviceId: 42, status: "offline" });
    assert.equal(res.body.reached, 2);
    res = await post("stats-update", { sent: 10, received: 4 });
    assert.equal(res.body.reached, 1);
    await sleep(300);
    assert.deepEqual(got.dashboard, [{ deviceId: 42, battery: 80 }]);
    assert.deepEqual(got.d42, [{ deviceId: 42, battery: 80 }]);
    assert.deepEqual(got.d7, []);
    assert.deepEqual(sms.d7, [{ deviceId: "7", from: "+100", text: "hi" }]);
    assert.deepEqual(sms.d42, []);
    assert.equal(sms.dashboard.length, 1);
    assert.deepEqual(stats.dashboard, [{ sent: 10, received: 4 }]);
    assert.deepEqual(stats.d42, []);

    await ack(device42, "leave-device-room", 42);
    res = await post("device-heartbeat", { deviceId: 42, battery: 79 });
    assert.equal(res.body.reached, 1, "only the dashboard now");
  });

  test("bad device ids and bad backend calls are refused", async () => {
    const socket = await connected(server, opts);
    const reply = await ack(socket, "join-device-room", { id: 1 });
    assert.equal(reply.error.code, "invalid_type");
    let res = await call(`${server.url}/broadcast/device-heartbeat`, { method: "POST", body: { battery: 1 } });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.field, "deviceId");
    res = await call(`${server.url}/broadcast/sms-received`, { method: "POST", body: "not json" });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "invalid_json");
    socket.disconnect();
  });
});

test("check-config accepts every example and rejects a rule naming an unknown action", async () => {
  const bin = path.join(RELEASE, "switchboard");
  const examples = readdirSync(path.join(ROOT, "examples")).filter((f) => f.endsWith(".toml"));
  assert.ok(examples.length >= 4);
  for (const file of examples) {
    const run = spawnSync(bin, ["check-config", path.join(ROOT, "examples", file)], {
      env: {
        ...process.env,
        PRODUCTION_API_KEY: "example-key-123",
        JWT_SECRET: "example-secret-0123456789",
        BACKEND: "http://127.0.0.1:8000",
        PROXY_SECRET: "proxy-secret",
        WEBHOOK_SECRET: "webhook-secret-0123456789",
      },
    });
    assert.equal(run.status, 0, `${file}: ${run.stderr}`);
  }
  const bad = await tempFile(
    "bad.toml",
    `[[namespaces]]\nname = "/"\n\n[[namespaces.events]]\non = "hello"\nactions = [{ shout = "hi" }]\n`,
  );
  const run = spawnSync(bin, ["check-config", bad]);
  assert.equal(run.status, 1);
  assert.match(run.stderr.toString(), /bad\.toml:6:.*shout/);
});
