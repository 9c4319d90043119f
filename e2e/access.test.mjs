// Blocking users and revoking tokens, as a platform's backend does it through the HTTP API and
// as the official socket.io-client sees it: the sockets concerned are disconnected by the
// server at once (no automatic reconnect), their connects, recoveries and token refreshes are
// refused with a stable code, everyone else is untouched, and lifting the block lets them back.
// On the video platform's config (JWT auth), then across nodes sharing a real redis-server:
// a node started later and a node started after Redis restarted empty still honour a block;
// and on the other engines (PostgreSQL, a Redis Cluster), a block reaches every node.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import path from "node:path";
import { clientPool } from "./lib/clients.mjs";
import { startServer, once, sleep, call, until, untilReady, ROOT } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";
import { startPostgres } from "./lib/postgres.mjs";
import { startRedisCluster } from "./lib/redis-cluster.mjs";

const SECRET = "video-secret-0123456789abcdef";
const KEY = "backend-key-0123456789";
const CONFIG = path.join(ROOT, "examples/video-processing.toml");
const clients = clientPool();
const now = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT as the platform's backend mints them. */
function mint(claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ iat: now(), exp: now() + 600, organizationId: "acme", role: "viewer", ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

const connect = (url, token, opts = {}) => clients.connect(url, { auth: { token }, ...opts });
const connected = (url, token) => clients.connected(url, { auth: { token } });

/** The connect_error a client gets with this token. */
async function refusal(url, token) {
  const socket = connect(url, token, { reconnection: false });
  const [error] = await once(socket, "connect_error");
  socket.disconnect();
  return error;
}

after(() => clients.disconnectAll());

describe("one node", () => {
  let server;
  const api = (route, body, method) => call(server.url + route, { method: method ?? (body ? "POST" : "GET"), body, key: KEY });

  before(async () => {
    server = await startServer("switchboard", {
      args: ["--config", CONFIG],
      env: { JWT_SECRET: SECRET, SWITCHBOARD_API_KEYS: KEY },
    });
  });
  after(() => server.stop());

  test("a blocked user is disconnected everywhere at once and refused until unblocked", async () => {
    const token = mint({ userId: 7 });
    const tabs = [await connected(server.url, token), await connected(server.url, token)];
    const other = await connected(server.url, mint({ userId: 8 }));
    const closed = tabs.map((tab) => once(tab, "disconnect"));
    const blocked = await api("/api/users/7/block", { duration: "10m", reason: "spam" });
    assert.equal(blocked.status, 200, JSON.stringify(blocked.body));
    assert.equal(blocked.body.blocked.user, "7");
    const until_ = blocked.body.blocked.until;
    assert.ok(Math.abs(until_ - (Date.now() + 600_000)) < 5000, String(until_));
    for (const [reason] of await Promise.all(closed)) assert.equal(reason, "io server disconnect");
    await sleep(300);
    assert.ok(tabs.every((tab) => !tab.connected), "no automatic reconnect after a server disconnect");
    assert.ok(other.connected, "another user is untouched");

    const error = await refusal(server.url, token);
    assert.equal(error.message, "Blocked");
    assert.deepEqual(error.data, { code: "blocked", until: until_, reason: "spam" });
    assert.deepEqual((await api("/api/blocks")).body.blocked, [{ kind: "block", user: "7", until: until_, reason: "spam" }]);
    const metrics = (await call(server.url + "/metrics")).body;
    assert.match(metrics, /switchboard_access_refused_total\{reason="blocked"\} 3/);
    assert.match(metrics, /switchboard_access_entries\{kind="block"\} 1/);

    assert.deepEqual((await api("/api/users/7/block", undefined, "DELETE")).body, { unblocked: true });
    (await connected(server.url, token)).disconnect();
    assert.deepEqual((await api("/api/blocks")).body.blocked, []);
  });

  test("a block with no body lasts [api] access_ttl; bad requests name their field", async () => {
    const blocked = await api("/api/users/77/block", undefined, "POST");
    assert.equal(blocked.status, 200);
    assert.ok(blocked.body.blocked.until > Date.now() + 29 * 86_400_000, "30 days by default");
    await api("/api/users/77/block", undefined, "DELETE");
    for (const [route, body, field] of [
      ["/api/users/7/block", { until: 1 }, "until"],
      ["/api/users/7/block", { duration: "soon" }, "duration"],
      ["/api/users/7/block", { until: Date.now() + 1000, duration: 5 }, "duration"],
      ["/api/tokens/revoke", {}, "jti"],
      ["/api/tokens/revoke", { jti: "x", user: 7 }, "user"],
      ["/api/tokens/revoke", { jti: "x", issued_before: 5 }, "issued_before"],
    ]) {
      const answer = await api(route, body);
      assert.equal(answer.status, 400, `${route} ${JSON.stringify(body)}`);
      assert.equal(answer.body.error.field, field, JSON.stringify(answer.body));
    }
    assert.deepEqual((await api("/api/blocks")).body.blocked, []);
  });

  test("a token revoked by its jti no longer connects, refreshes or recovers; the user's other tokens do", async () => {
    const revokedToken = mint({ userId: 9, jti: "tok-a" });
    const keptToken = mint({ userId: 9, jti: "tok-b" });
    const revokedSocket = await connected(server.url, revokedToken);
    const kept = await connected(server.url, keptToken);
    const closed = once(revokedSocket, "disconnect");
    const answer = await api("/api/tokens/revoke", { jti: "tok-a" });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.revoked.kind, "token");
    assert.equal((await closed)[0], "io server disconnect");
    assert.ok(kept.connected);
    const error = await refusal(server.url, revokedToken);
    assert.equal(error.message, "Token revoked");
    assert.equal(error.data.code, "token_revoked");
    // Refreshing a live socket with the revoked token is refused too.
    const refresh = await kept.timeout(2000).emitWithAck("token:refresh", revokedToken);
    assert.equal(refresh.error.code, "token_revoked");
    assert.ok(kept.connected);
    assert.deepEqual((await api("/api/tokens/revoked")).body.revoked.map((e) => e.jti), ["tok-a"]);

    // A client whose transport dropped comes back with its session id and the revoked token:
    // it is not recovered but refused.
    const recovering = await connected(server.url, mint({ userId: 10, jti: "tok-c" }));
    recovering.io.opts.reconnectionDelay = 800;
    recovering.io.opts.reconnectionDelayMax = 800;
    recovering.io.engine.close();
    await api("/api/tokens/revoke", { jti: "tok-c" });
    const [back] = await once(recovering, "connect_error", 5000);
    assert.equal(back.data.code, "token_revoked");
    assert.equal(recovering.connected, false);
    await api("/api/tokens/unrevoke", { jti: "tok-a" });
    (await connected(server.url, revokedToken)).disconnect();
  });

  test("revoking a user's tokens issued before a time (a password change) spares the new ones", async () => {
    const old = mint({ userId: 11, iat: now() - 100 });
    const oldSocket = await connected(server.url, old);
    const closed = once(oldSocket, "disconnect");
    const answer = await api("/api/tokens/revoke", { user: 11 });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.revoked.kind, "user_tokens");
    assert.ok(Math.abs(answer.body.revoked.issued_before - now()) <= 1);
    assert.equal((await closed)[0], "io server disconnect");
    assert.equal((await refusal(server.url, old)).data.code, "token_revoked");
    // The token the backend mints after the password change connects.
    const fresh = await connected(server.url, mint({ userId: 11 }));
    assert.ok(fresh.connected);
    // Another user's old token is not concerned.
    (await connected(server.url, mint({ userId: 12, iat: now() - 100 }))).disconnect();
    const metrics = (await call(server.url + "/metrics")).body;
    assert.match(metrics, /switchboard_access_entries\{kind="user_tokens"\} 1/);
  });
});

test("a block holds on every node, on a node started later, and after Redis restarted empty", async () => {
  const redis = await startRedis();
  const env = { JWT_SECRET: SECRET, SWITCHBOARD_API_KEYS: KEY, SWITCHBOARD_CLUSTER_REDIS_URL: redis.url };
  const start = async () => {
    const node = await startServer("switchboard", { args: ["--config", CONFIG], env });
    await untilReady(node);
    return node;
  };
  const nodes = [await start(), await start()];
  let restarted;
  try {
    const token = mint({ userId: 21 });
    const onB = await connected(nodes[1].url, token);
    const closed = once(onB, "disconnect");
    const blocked = await call(nodes[0].url + "/api/users/21/block", { method: "POST", body: { duration: 600 }, key: KEY });
    assert.equal(blocked.status, 200);
    assert.equal((await closed)[0], "io server disconnect", "disconnected on the other node");
    assert.equal((await refusal(nodes[1].url, token)).data.code, "blocked");

    nodes.push(await start());
    assert.equal((await refusal(nodes[2].url, token)).data.code, "blocked", "a node started later reads it back");

    // Redis restarts with nothing (no persistence): the nodes write back what they know.
    await redis.stop();
    restarted = await startRedis(redis.port);
    for (const node of nodes) await untilReady(node, 20000);
    const late = await start();
    nodes.push(late);
    await until(async () => (await call(late.url + "/api/blocks", { key: KEY })).body.blocked?.length === 1, "the block written back", 10000);
    assert.equal((await refusal(late.url, token)).data.code, "blocked");

    await call(late.url + "/api/users/21/block", { method: "DELETE", key: KEY });
    for (const node of nodes) {
      await until(async () => (await call(node.url + "/api/blocks", { key: KEY })).body.blocked?.length === 0, `lifted on ${node.url}`);
    }
    (await connected(nodes[1].url, token)).disconnect();
  } finally {
    for (const node of nodes) await node.stop();
    await (restarted ?? redis).stop();
  }
});

for (const [engine, startEngine, envOf] of [
  ["PostgreSQL", startPostgres, (pg) => ({ SWITCHBOARD_CLUSTER_POSTGRES_URL: pg.url, SWITCHBOARD_CLUSTER_ADAPTER: "postgres" })],
  ["a Redis Cluster", startRedisCluster, (rc) => ({ SWITCHBOARD_CLUSTER_REDIS_URL: rc.url, SWITCHBOARD_CLUSTER_ADAPTER: "sharded" })],
]) {
  test(`on ${engine}, a revocation reaches every node and a node started later`, async () => {
    const store = await startEngine();
    const env = { JWT_SECRET: SECRET, SWITCHBOARD_API_KEYS: KEY, ...envOf(store) };
    const start = async () => {
      const node = await startServer("switchboard", { args: ["--config", CONFIG], env });
      await untilReady(node, 20000);
      return node;
    };
    const nodes = [await start(), await start()];
    try {
      const token = mint({ userId: 31, jti: `jti-${engine.length}` });
      const onB = await connected(nodes[1].url, token);
      const closed = once(onB, "disconnect");
      const revoked = await call(nodes[0].url + "/api/tokens/revoke", { method: "POST", body: { jti: `jti-${engine.length}` }, key: KEY });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      assert.equal((await closed)[0], "io server disconnect");
      nodes.push(await start());
      await until(async () => (await call(nodes[2].url + "/api/tokens/revoked", { key: KEY })).body.revoked?.length === 1, "read back", 10000);
      assert.equal((await refusal(nodes[2].url, token)).data.code, "token_revoked");
    } finally {
      for (const node of nodes) await node.stop();
      await store.stop();
    }
  });
}
