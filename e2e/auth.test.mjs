// The video platform (examples/video-processing.toml) as its users see it: JWT auth with the
// three stable refusals, organization rooms, role-gated video rooms, a worker's progress events,
// one user's tabs addressed as one, and presence going online and offline.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, once, sleep, call, ROOT, RELEASE } from "./lib/server.mjs";

const SECRET = "video-secret-0123456789abcdef";
const KEY = "worker-key-0123456789";
const clients = [];

/** An HS256 JWT minted here, independently of the server, as a platform's backend issues them:
 * its claims and an expiry, no audience unless given. */
function mint(claims, secret = SECRET) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: now + 600, ...claims })}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

describe("video platform", () => {
  let server;
  const api = (route, body) => call(server.url + route, { method: body ? "POST" : "GET", body, key: KEY });
  function connect(token, opts = {}) {
    const socket = io(server.url, { forceNew: true, transports: ["websocket"], auth: token ? { token } : {}, ...opts });
    clients.push(socket);
    return socket;
  }
  async function user(claims) {
    const socket = connect(mint(claims));
    await once(socket, "connect");
    return socket;
  }

  before(async () => {
    server = await startServer("switchboard", {
      args: ["--config", path.join(ROOT, "examples/video-processing.toml")],
      env: { JWT_SECRET: SECRET, SWITCHBOARD_API_KEYS: KEY, SWITCHBOARD_PRESENCE_GRACE: "400ms" },
    });
  });
  after(async () => {
    clients.forEach((s) => s.disconnect());
    await server.stop();
  });

  test("missing, bad and expired tokens get the three stable errors", async () => {
    const cases = [
      [null, "Authentication required", "auth_required"],
      [mint({ userId: 1 }, "some-other-secret-0123456789"), "Invalid token", "invalid_token"],
      ["not-a-jwt", "Invalid token", "invalid_token"],
      [mint({ userId: 1, exp: Math.floor(Date.now() / 1000) - 3600 }), "Token expired", "token_expired"],
    ];
    for (const [token, message, code] of cases) {
      const socket = connect(token);
      const [error] = await once(socket, "connect_error");
      assert.equal(error.message, message, String(token).slice(0, 20));
      assert.equal(error.data.code, code);
      socket.disconnect();
    }
    // The token may also come from the query string.
    const viaQuery = connect(null, { query: { token: mint({ userId: 5, organizationId: "acme", role: "viewer" }) } });
    await once(viaQuery, "connect");
    viaQuery.disconnect();
  });

  test("the token such a backend issues (HS256, userId/organizationId/role, no aud) is accepted", async () => {
    // Exactly the claims, header and signature a Django/Node backend signs with a shared secret.
    const header = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
    const claims = { userId: 71, organizationId: "initech", role: "editor", iat: Math.floor(Date.now() / 1000) };
    const payload = Buffer.from(JSON.stringify(claims)).toString("base64url");
    const token = `${header}.${payload}.${createHmac("sha256", SECRET).update(`${header}.${payload}`).digest("base64url")}`;
    const socket = connect(token);
    await once(socket, "connect");
    assert.deepEqual((await api("/api/rooms/org:initech")).body.sockets.map((s) => s.id), [socket.id]);
    assert.equal((await api("/api/users/71")).body.online, true, "per-user lookups work for it");
    const ok = await socket.timeout(2000).emitWithAck("video:subscribe", "v71");
    assert.deepEqual(ok, { ok: true }, "subscribing works");
    const personal = once(socket, "notification:personal");
    const res = await api("/api/emit", { event: "notification:personal", user: 71, data: { text: "done" } });
    assert.equal(res.body.reached, 1);
    assert.equal((await personal)[0].text, "done");
    socket.disconnect();
  });

  test("a valid token joins its organization and user rooms", async () => {
    const socket = await user({ userId: 11, organizationId: "acme", role: "editor" });
    const org = (await api("/api/rooms/org:acme")).body;
    assert.ok(org.sockets.some((s) => s.id === socket.id));
    const mine = (await api("/api/rooms/user:11")).body;
    assert.deepEqual(mine.sockets.map((s) => s.id), [socket.id]);
    assert.equal(mine.sockets[0].data.organizationId, "acme", "claims became socket data");
    socket.disconnect();
  });

  test("a worker's progress reaches its organization only", async () => {
    const acme = await user({ userId: 21, organizationId: "acme", role: "viewer" });
    const globex = await user({ userId: 22, organizationId: "globex", role: "viewer" });
    const leaked = [];
    globex.on("video:progress", (p) => leaked.push(p));
    const progress = once(acme, "video:progress");
    const res = await api("/api/emit", { event: "video:progress", rooms: ["org:acme"], data: { videoId: "v1", progress: 40, stage: "encoding" } });
    assert.equal(res.body.reached >= 1, true);
    assert.deepEqual((await progress)[0], { videoId: "v1", progress: 40, stage: "encoding" });
    for (const event of ["video:processed", "video:failed"]) {
      const got = once(acme, event);
      await api("/api/emit", { event, rooms: ["org:acme"], data: { videoId: "v1" } });
      assert.equal((await got)[0].videoId, "v1");
    }
    await sleep(150);
    assert.deepEqual(leaked, [], "org B never sees org A's events");
    acme.disconnect();
    globex.disconnect();
  });

  test("video rooms: allowed roles may subscribe, others get an error reply", async () => {
    const viewer = await user({ userId: 31, organizationId: "acme", role: "viewer" });
    const guest = await user({ userId: 32, organizationId: "acme", role: "guest" });
    const ok = await viewer.timeout(2000).emitWithAck("video:subscribe", "v9");
    assert.deepEqual(ok, { ok: true });
    const refused = await guest.timeout(2000).emitWithAck("video:subscribe", "v9");
    assert.equal(refused.error.code, "forbidden_room");
    const members = (await api("/api/rooms/video:v9")).body.sockets.map((s) => s.id);
    assert.deepEqual(members, [viewer.id]);
    viewer.disconnect();
    guest.disconnect();
  });

  test("a user's tabs are addressed as one, and nobody else", async () => {
    const tab1 = await user({ userId: 41, organizationId: "acme", role: "viewer" });
    const tab2 = await user({ userId: 41, organizationId: "acme", role: "viewer" });
    const other = await user({ userId: 42, organizationId: "acme", role: "viewer" });
    const leaked = [];
    other.on("notification:personal", (n) => leaked.push(n));
    const both = [once(tab1, "notification:personal"), once(tab2, "notification:personal")];
    const res = await api("/api/emit", { event: "notification:personal", user: 41, data: { text: "your video is ready" } });
    assert.equal(res.body.reached, 2);
    for (const [n] of await Promise.all(both)) assert.equal(n.text, "your video is ready");
    let nobody = await api("/api/emit", { event: "notification:personal", user: "no-such-user", data: {} });
    assert.equal(nobody.body.reached, 0, "an unknown user reaches nobody, not everyone");
    await sleep(150);
    assert.deepEqual(leaked, []);
    const gone = [once(tab1, "disconnect"), once(tab2, "disconnect")];
    const res2 = await api("/api/disconnect", { user: 41 });
    assert.equal(res2.body.disconnected, 2);
    for (const [reason] of await Promise.all(gone)) assert.equal(reason, "io server disconnect");
    other.disconnect();
  });

  test("presence: online while any tab is, offline after the last closes (and the grace)", async () => {
    const tab1 = await user({ userId: 51, organizationId: "acme", role: "viewer" });
    const tab2 = await user({ userId: 51, organizationId: "acme", role: "viewer" });
    assert.deepEqual((await api("/api/users/51")).body, { user: "51", online: true, connections: 2 });
    const presence = await tab1.timeout(2000).emitWithAck("presence:list", "org:acme");
    assert.deepEqual(presence.users.find((u) => u.user === "51"), { user: "51", connections: 2 });
    const roomPresence = (await api("/api/presence/org:acme")).body;
    assert.ok(roomPresence.users.some((u) => u.user === "51"));
    assert.ok((await api("/api/stats")).body.users >= 1);
    tab1.disconnect();
    await sleep(100);
    assert.deepEqual((await api("/api/users/51")).body, { user: "51", online: true, connections: 1 });
    tab2.disconnect();
    await sleep(100);
    assert.equal((await api("/api/users/51")).body.online, true, "still online during the grace period");
    await sleep(600);
    assert.deepEqual((await api("/api/users/51")).body, { user: "51", online: false, connections: 0 });
  });

  test("switchboard token mints a token the server accepts", async () => {
    const run = spawnSync(path.join(RELEASE, "switchboard"), [
      "token", "--secret", SECRET, "--claim", "userId=61", "--claim", "organizationId=acme",
      "--claim", "role=admin", "--expires-in", "5m",
    ]);
    assert.equal(run.status, 0, run.stderr.toString());
    const socket = connect(run.stdout.toString().trim());
    await once(socket, "connect");
    assert.equal((await api("/api/users/61")).body.online, true);
    socket.disconnect();
  });
});

describe("video platform, with the production audience check on", () => {
  let server;
  before(async () => {
    server = await startServer("switchboard", {
      args: ["--config", path.join(ROOT, "examples/video-processing.toml")],
      env: { JWT_SECRET: SECRET, SWITCHBOARD_API_KEYS: KEY, SWITCHBOARD_AUTH_AUDIENCE: "video-platform" },
    });
  });
  after(async () => {
    clients.forEach((s) => s.disconnect());
    await server.stop();
  });

  test("a token for this audience connects; one without it or for another app is refused", async () => {
    const connect = (token) => {
      const socket = io(server.url, { forceNew: true, transports: ["websocket"], auth: { token } });
      clients.push(socket);
      return socket;
    };
    const claims = { userId: 81, organizationId: "acme", role: "viewer" };
    const good = connect(mint({ ...claims, aud: "video-platform" }));
    await once(good, "connect");
    for (const token of [mint(claims), mint({ ...claims, aud: "another-app" })]) {
      const socket = connect(token);
      const [error] = await once(socket, "connect_error");
      assert.equal(error.message, "Invalid token");
      assert.equal(error.data.code, "invalid_token");
      socket.disconnect();
    }
    good.disconnect();
  });
});
