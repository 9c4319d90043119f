// The backend in the loop, with a real HTTP backend (node:http) started by the test and the
// official socket.io-client: the connect proxy (accept, refuse, timeout, backend down), the
// event proxy (ack and broadcast, order under a slow backend, a failing backend), webhooks
// (signed, retried until the receiver is back, none for a reconnect inside the grace period,
// once across two cluster nodes) and token expiry with refresh.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { clientPool } from "./lib/clients.mjs";
import { startServer, once, sleep, call, tempFile } from "./lib/server.mjs";
import { startBackend } from "./lib/backend.mjs";
import { startRedis } from "./lib/redis.mjs";

const WEBHOOK_SECRET = "whsec-0123456789abcdef";
const clients = clientPool({ reconnection: false });
const connect = clients.connect;

async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** The webhook events the backend received, every batch's signature checked as a receiver would. */
function webhookEvents(receiver) {
  const events = [];
  for (const c of receiver.callsTo("/hooks")) {
    const timestamp = c.headers["x-switchboard-timestamp"];
    const expected = "v1=" + createHmac("sha256", WEBHOOK_SECRET).update(`${timestamp}.${c.raw}`).digest("hex");
    assert.equal(c.headers["x-switchboard-signature"], expected, "every batch is signed");
    assert.ok(Math.abs(Date.now() / 1000 - Number(timestamp)) < 60, "with a current timestamp");
    if ((c.answeredStatus ?? 200) === 200) events.push(...c.json.events);
  }
  return events;
}

function config(backend, receiver, extra = "") {
  return `
[[namespaces]]
name = "/"

[proxy.connect]
url = "${backend.url}/connect"
timeout = "500ms"
forward_headers = ["x-tenant"]
headers = { "x-proxy-secret" = "shared-secret" }

[[proxy.events]]
event = "message"
url = "${backend.url}/message"
timeout = "2s"

[webhooks]
url = "${receiver.url}/hooks"
secret = "${WEBHOOK_SECRET}"
events = ["socket_connected", "socket_disconnected", "user_online", "user_offline", "room_occupied", "room_vacated", "member_joined", "member_left", "client_event"]
client_events = ["message"]
batch_wait = "50ms"
retry_initial = "100ms"
retry_max = "400ms"
max_attempts = 20

[presence]
grace = "600ms"
${extra}`;
}

/** The connect handler most tests use: the user is the auth payload's `user`. */
function acceptByAuth(body) {
  if (body.auth.user === "banned") return { body: { accept: false, message: "Banned", code: "banned" } };
  return { body: { accept: true, user: body.auth.user, data: { plan: "pro" }, rooms: ["lobby"] } };
}

describe("backend in the loop", () => {
  let backend, hooks, server;
  before(async () => {
    backend = await startBackend();
    backend.on("/connect", acceptByAuth);
    hooks = await startBackend();
    hooks.on("/hooks", () => ({ status: 200, body: {} }));
    const file = await tempFile("backend.toml", config(backend, hooks));
    server = await startServer("switchboard", { args: ["--config", file] });
  });
  after(async () => {
    clients.disconnectAll();
    await server.stop();
    await backend.stop();
    await hooks.stop();
  });

  test("connect proxy: the backend sees the handshake and admits with user, data and rooms", async () => {
    const socket = connect(server.url, { auth: { user: "alice", token: "t-1" }, query: { app: "web" }, extraHeaders: { "x-tenant": "acme" } });
    await once(socket, "connect");
    const asked = backend.callsTo("/connect").at(-1);
    assert.equal(asked.headers["x-proxy-secret"], "shared-secret", "static headers are added");
    assert.equal(asked.json.namespace, "/");
    assert.equal(asked.json.transport, "socket.io");
    assert.deepEqual(asked.json.auth, { user: "alice", token: "t-1" });
    assert.equal(asked.json.query.app, "web");
    assert.deepEqual(asked.json.headers, { "x-tenant": "acme" }, "only the selected headers are forwarded");
    assert.match(asked.json.remote_addr, /^127\.0\.0\.1:\d+$/);
    const lobby = (await call(`${server.url}/api/rooms/lobby`)).body.sockets;
    const me = lobby.find((s) => s.id === socket.id);
    assert.ok(me, "the socket is in the room the backend named");
    assert.equal(me.data.plan, "pro");
    assert.equal(me.data.userId, "alice");
    assert.equal((await call(`${server.url}/api/users/alice`)).body.online, true);
    socket.disconnect();
  });

  test("connect proxy: a refusal reaches connect_error with its message and code", async () => {
    const socket = connect(server.url, { auth: { user: "banned" } });
    const [error] = await once(socket, "connect_error");
    assert.equal(error.message, "Banned");
    assert.equal(error.data.code, "banned");
    backend.on("/connect", () => ({ status: 403, body: { message: "Not in this organization" } }));
    const other = connect(server.url, { auth: { user: "mallory" } });
    const [refused] = await once(other, "connect_error");
    assert.equal(refused.message, "Not in this organization");
    assert.equal(refused.data.code, "forbidden");
    backend.on("/connect", acceptByAuth);
  });

  test("connect proxy: a backend too slow or down refuses with a retryable error and leaves open sessions alone", async () => {
    const open = connect(server.url, { auth: { user: "olga" } });
    await once(open, "connect");
    backend.on("/connect", (body) => ({ ...acceptByAuth(body), delay: 1500 }));
    const slow = connect(server.url, { auth: { user: "sam" } });
    const [timedOut] = await once(slow, "connect_error", 3000);
    assert.equal(timedOut.message, "Backend unavailable");
    assert.deepEqual(timedOut.data, { code: "backend_unavailable", retryable: true });
    await sleep(1200);
    assert.equal(slow.connected, false, "never accepted by accident once the backend answers late");
    backend.on("/connect", () => ({ status: 500, body: { oops: true } }));
    const failing = connect(server.url, { auth: { user: "sam" } });
    assert.equal((await once(failing, "connect_error"))[0].data.code, "backend_unavailable");
    backend.on("/connect", acceptByAuth);

    await backend.stop();
    const down = connect(server.url, { auth: { user: "dora" } });
    const [unreachable] = await once(down, "connect_error", 3000);
    assert.equal(unreachable.data.code, "backend_unavailable");
    assert.equal(open.connected, true, "the open session is untouched");
    const got = once(open, "notice");
    await call(`${server.url}/api/emit`, { method: "POST", body: { event: "notice", rooms: ["lobby"], data: 1 } });
    assert.equal((await got)[0], 1);
    await backend.start();
    open.disconnect();
  });

  test("event proxy: the backend's answer is the ack and a broadcast (save, then broadcast)", async () => {
    const saved = [];
    backend.on("/message", (body) => {
      saved.push(body);
      return {
        body: {
          ack: { ok: true, id: saved.length },
          emit: [{ event: "new-message", rooms: ["lobby"], data: { from: body.socket.user, text: body.args[0].text } }],
        },
      };
    });
    const alice = connect(server.url, { auth: { user: "alice" } });
    const bob = connect(server.url, { auth: { user: "bob" } });
    await Promise.all([once(alice, "connect"), once(bob, "connect")]);
    const heard = once(bob, "new-message");
    const ack = await alice.timeout(3000).emitWithAck("message", { text: "hello" });
    assert.deepEqual(ack, { ok: true, id: saved.length });
    assert.deepEqual((await heard)[0], { from: "alice", text: "hello" });
    const asked = saved.at(-1);
    assert.equal(asked.event, "message");
    assert.equal(asked.socket.id, alice.id);
    assert.equal(asked.socket.user, "alice");
    assert.deepEqual(asked.socket.rooms, ["lobby"]);
    assert.equal(asked.socket.data.plan, "pro");
    alice.disconnect();
    bob.disconnect();
  });

  test("event proxy: a socket's events reach the backend one at a time, in order, even when it is slow", async () => {
    let inFlight = 0;
    let most = 0;
    const order = [];
    backend.on("/message", async (body) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      order.push(body.args[0]);
      // The first is the slowest: a server that sent the next before this answer would overtake.
      await sleep(body.args[0] === 1 ? 400 : 20);
      inFlight -= 1;
      return { body: { ack: body.args[0] } };
    });
    const socket = connect(server.url, { auth: { user: "ordered" } });
    await once(socket, "connect");
    const answered = [];
    await Promise.all(
      [1, 2, 3, 4, 5].map((n) => socket.timeout(5000).emitWithAck("message", n).then((a) => answered.push(a))),
    );
    assert.deepEqual(order, [1, 2, 3, 4, 5], "the backend got them in the order sent");
    assert.equal(most, 1, "event N+1 is not sent before N is answered");
    assert.deepEqual(answered, [1, 2, 3, 4, 5], "acks come back in order");
    socket.disconnect();
  });

  test("event proxy: a failing backend gets the client an error ack", async () => {
    const socket = connect(server.url, { auth: { user: "erin" } });
    await once(socket, "connect");
    backend.on("/message", () => ({ status: 500, body: { error: "db down" } }));
    const failed = await socket.timeout(3000).emitWithAck("message", "x");
    assert.equal(failed.error.code, "backend_unavailable");
    backend.on("/message", () => ({ status: 422, body: { error: "too long" } }));
    const refused = await socket.timeout(3000).emitWithAck("message", "x");
    assert.equal(refused.error.code, "backend_refused");
    backend.on("/message", () => ({ body: { ack: "fine" } }));
    assert.equal(await socket.timeout(3000).emitWithAck("message", "x"), "fine", "and it recovers at once");
    socket.disconnect();
  });

  test("webhooks: lifecycle events arrive signed, once each; a reconnect inside the grace period sends nothing", async () => {
    const before = webhookEvents(hooks).length;
    const socket = connect(server.url, { auth: { user: "wendy" } });
    await once(socket, "connect");
    const id = socket.id;
    backend.on("/message", () => ({ body: { ack: true } }));
    await socket.timeout(3000).emitWithAck("message", "tracked");
    socket.disconnect();
    // Back within the grace period (600 ms): no offline, no second online.
    await sleep(150);
    const again = connect(server.url, { auth: { user: "wendy" } });
    await once(again, "connect");
    const againId = again.id;
    await sleep(300);
    again.disconnect();
    const mine = (e) => e.socket === id || e.socket === againId || e.user === "wendy";
    const events = await until(() => {
      const seen = webhookEvents(hooks).slice(before).filter(mine);
      return seen.some((e) => e.type === "user_offline") && seen;
    }, "user_offline after the grace period", 5000);
    const types = events.map((e) => e.type);
    const count = (t) => types.filter((x) => x === t).length;
    assert.equal(count("user_online"), 1, types.join(","));
    assert.equal(count("user_offline"), 1, types.join(","));
    assert.equal(count("socket_connected"), 2);
    assert.equal(count("socket_disconnected"), 2);
    assert.equal(count("member_joined"), 2);
    assert.equal(count("member_left"), 2);
    const first = events.find((e) => e.type === "socket_connected");
    assert.equal(first.user, "wendy");
    // A receiver can tell whose connection closed.
    for (const closed of events.filter((e) => e.type === "socket_disconnected")) {
      assert.equal(closed.user, "wendy", "socket_disconnected names the user");
    }
    assert.equal(first.namespace, "/");
    const clientEvent = events.find((e) => e.type === "client_event");
    assert.deepEqual([clientEvent.event, clientEvent.args], ["message", ["tracked"]]);
    assert.ok(types.indexOf("user_online") < types.indexOf("user_offline"));
    const ids = new Set(events.map((e) => e.id));
    assert.equal(ids.size, events.length, "every event has its own id");
    const all = webhookEvents(hooks);
    assert.ok(all.some((e) => e.type === "room_occupied" && e.room === "lobby"));
    assert.ok(all.some((e) => e.type === "room_vacated" && e.room === "lobby"));
  });

  test("webhooks: a batch is retried until the receiver is back, then delivered", async () => {
    // The receiver is down (connections refused) ...
    await hooks.stop();
    const socket = connect(server.url, { auth: { user: "rita" } });
    await once(socket, "connect");
    const ritaId = socket.id;
    await sleep(500);
    // ... then answers 503 twice, then takes the batch.
    let failures = 0;
    hooks.on("/hooks", (body, c) => {
      if (body.events.some((e) => e.socket === ritaId) && failures < 2) {
        failures += 1;
        c.answeredStatus = 503;
        return { status: 503, body: {} };
      }
      return { status: 200, body: {} };
    });
    await hooks.start();
    const delivered = await until(
      () => webhookEvents(hooks).find((e) => e.type === "socket_connected" && e.socket === ritaId),
      "the webhook after retries",
      8000,
    );
    assert.equal(delivered.user, "rita");
    const attempts = hooks.callsTo("/hooks").filter((c) => c.json.events.some((e) => e.socket === ritaId));
    assert.equal(attempts.length, 3, "two 503s, then delivered");
    assert.ok(Number(attempts.at(-1).headers["x-switchboard-attempt"]) >= 4, "attempts refused while it was down count too");
    assert.equal(new Set(attempts.map((c) => c.raw)).size, 1, "the same batch each time");
    assert.equal(webhookEvents(hooks).filter((e) => e.type === "socket_connected" && e.socket === ritaId).length, 1);
    const metrics = (await call(`${server.url}/metrics`)).body;
    assert.match(metrics, /switchboard_webhook_retries_total [1-9]/);
    assert.match(metrics, /switchboard_webhook_attempts_failed_total [1-9]/);
    assert.match(metrics, /switchboard_proxy_calls_total\{kind="connect",outcome="accepted"\} [1-9]/);
    socket.disconnect();
    hooks.on("/hooks", () => ({ status: 200, body: {} }));
  });
});

describe("webhooks in a cluster", () => {
  let backend, hooks, redis, nodes;
  before(async () => {
    backend = await startBackend();
    backend.on("/connect", acceptByAuth);
    hooks = await startBackend();
    hooks.on("/hooks", () => ({ status: 200, body: {} }));
    redis = await startRedis();
    const file = await tempFile("backend-cluster.toml", config(backend, hooks));
    nodes = [];
    for (let i = 0; i < 2; i++) {
      nodes.push(await startServer("switchboard", { args: ["--config", file], env: { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url } }));
    }
    for (const node of nodes) await until(async () => (await call(node.url + "/ready")).status === 200, "ready");
  });
  after(async () => {
    clients.disconnectAll();
    for (const node of nodes) await node.stop();
    await redis.stop();
    await backend.stop();
    await hooks.stop();
  });

  test("a user going online and offline is reported once, not once per node", async () => {
    const a = connect(nodes[0].url, { auth: { user: "cora" } });
    await once(a, "connect");
    const b = connect(nodes[1].url, { auth: { user: "cora" } });
    await once(b, "connect");
    a.disconnect();
    b.disconnect();
    const seen = await until(() => {
      const events = webhookEvents(hooks).filter((e) => e.user === "cora");
      return events.some((e) => e.type === "user_offline") && events;
    }, "cora offline", 6000);
    await sleep(800);
    const final = webhookEvents(hooks).filter((e) => e.user === "cora");
    assert.equal(final.filter((e) => e.type === "user_online").length, 1, JSON.stringify(final.map((e) => e.type)));
    assert.equal(final.filter((e) => e.type === "user_offline").length, 1);
    assert.equal(final.filter((e) => e.type === "socket_connected").length, 2, "each socket's own events come from its node");
    assert.ok(seen.length >= 3);
  });
});

describe("token expiry and refresh", () => {
  const SECRET = "expiry-secret-0123456789abcdef";
  let backend, server;
  function mint(claims, lifetimeSeconds) {
    const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
    const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + lifetimeSeconds, ...claims })}`;
    return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
  }
  before(async () => {
    backend = await startBackend();
    // The refresh proxy hands fresh tokens to one user only.
    backend.on("/refresh", (body) => (body.user === "renee" ? { body: { token: mint({ userId: "renee" }, 60) } } : { body: {} }));
    const file = await tempFile(
      "expiry.toml",
      `
[auth]
secret = "${SECRET}"
leeway = "0s"
expiry_warning = "2s"

[proxy.refresh]
url = "${backend.url}/refresh"
`,
    );
    server = await startServer("switchboard", { args: ["--config", file] });
  });
  after(async () => {
    clients.disconnectAll();
    await server.stop();
    await backend.stop();
  });

  test("a socket that sends a fresh token stays; one that does not is told and disconnected at expiry", async () => {
    const keeper = connect(server.url, { auth: { token: mint({ userId: "kim" }, 3) } });
    const lapsed = connect(server.url, { auth: { token: mint({ userId: "lou" }, 3) } });
    // Listening from the start: with a 2 s warning, a token minted late in its second warns
    // right after the connect.
    const warned = once(keeper, "token:expiring", 4000);
    const expiredEvent = once(lapsed, "token:expired", 6000);
    const disconnected = once(lapsed, "disconnect", 7000);
    await Promise.all([once(keeper, "connect"), once(lapsed, "connect")]);
    const [warning] = await warned;
    assert.ok(warning.expiresAt > Date.now() && warning.inSeconds <= 2, JSON.stringify(warning));
    const wrongUser = await keeper.timeout(2000).emitWithAck("token:refresh", mint({ userId: "someone-else" }, 60));
    assert.equal(wrongUser.error.code, "user_mismatch");
    const refreshed = await keeper.timeout(2000).emitWithAck("token:refresh", mint({ userId: "kim" }, 60));
    assert.equal(refreshed.ok, true);
    assert.ok(refreshed.expiresAt > Date.now() + 50_000);

    const [expired] = await expiredEvent;
    assert.equal(expired.message, "Token expired");
    const [reason] = await disconnected;
    assert.equal(reason, "io server disconnect");
    await sleep(1500);
    assert.equal(keeper.connected, true, "the refreshed socket outlived its first token");
    const metrics = (await call(`${server.url}/metrics`)).body;
    assert.match(metrics, /switchboard_tokens_total\{outcome="expired"\} [1-9]/);
    assert.match(metrics, /switchboard_tokens_total\{outcome="refreshed"\} [1-9]/);
  });

  test("the refresh proxy hands a socket a fresh token before expiry", async () => {
    const socket = connect(server.url, { auth: { token: mint({ userId: "renee" }, 3) } });
    const refreshed = once(socket, "token:refreshed", 4000);
    await once(socket, "connect");
    const [fresh] = await refreshed;
    assert.ok(fresh.token.split(".").length === 3 && fresh.expiresAt > Date.now() + 50_000);
    const asked = backend.callsTo("/refresh").at(-1).json;
    assert.equal(asked.user, "renee");
    assert.equal(asked.socket, socket.id);
    await sleep(2000);
    assert.equal(socket.connected, true);
  });
});

describe("webhooks on shutdown", () => {
  test("SIGTERM: the webhook receiver gets every socket_disconnected and user_offline the shutdown caused, before the server exits", async () => {
    const backend = await startBackend();
    backend.on("/connect", acceptByAuth);
    const hooks = await startBackend();
    hooks.on("/hooks", () => ({ status: 200, body: {} }));
    // A batch waits long to fill up and users stay online long after their last connection:
    // neither may hold back what the shutdown has to say.
    const file = await tempFile(
      "shutdown-hooks.toml",
      config(backend, hooks).replace('batch_wait = "50ms"', 'batch_wait = "30s"').replace('grace = "600ms"', 'grace = "60s"'),
    );
    const server = await startServer("switchboard", { args: ["--config", file] });
    try {
      const sockets = ["sam", "sue", "sam"].map((user) => connect(server.url, { auth: { user } }));
      await Promise.all(sockets.map((s) => once(s, "connect")));
      const ids = sockets.map((s) => s.id);
      await server.stop();
      const events = webhookEvents(hooks);
      const gone = events.filter((e) => e.type === "socket_disconnected").map((e) => e.socket);
      assert.deepEqual(gone.sort(), [...ids].sort(), "every socket's disconnect was sent before the exit");
      for (const e of events.filter((e) => e.type === "socket_disconnected")) {
        assert.equal(e.reason, "server shutting down");
      }
      const offline = events.filter((e) => e.type === "user_offline").map((e) => e.user);
      assert.deepEqual(offline.sort(), ["sam", "sue"], "each user offline once, not after the 60 s grace");
    } finally {
      await server.stop().catch(() => {});
      await backend.stop();
      await hooks.stop();
    }
  });
});
