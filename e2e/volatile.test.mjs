// Volatile events ("volatile": true on /api/emit): not queued for a client that has something
// queued already, never stored in history, no offset; everyone else gets them at once. A
// polling client that has not fetched what is queued for it stands for the client that is
// behind (deterministic: its queue is not empty until its next GET); the official
// socket.io-client over WebSocket stands for the clients that keep up. On one node, and across
// two nodes through a real redis-server (the flag travels in the adapter's flags).
// A polling client between two GETs is not writable either (as in engine.io): no volatile event
// is queued for it.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, once, sleep, call } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

const cleanup = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});

/** A polling session that joined "/" and has not fetched its CONNECT reply: its queue is not empty. */
async function behindClient(url) {
  const base = `${url}/socket.io/?EIO=4&transport=polling`;
  const open = await call(base);
  const sid = JSON.parse(open.body.slice(1)).sid;
  assert.equal((await call(`${base}&sid=${sid}`, { method: "POST", body: "40" })).status, 200);
  return { read: async () => (await call(`${base}&sid=${sid}`)).body };
}

async function untilBody(check, what) {
  const deadline = Date.now() + 5000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

for (const clustered of [false, true]) {
  test(`volatile events skip a client that is behind and are never stored${clustered ? " (across two nodes)" : ""}`, async () => {
    let env = {};
    if (clustered) {
      const redis = await startRedis();
      cleanup.push(() => redis.stop());
      env = { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url };
    }
    const publisher = await startServer("switchboard", { env });
    cleanup.push(() => publisher.stop());
    const node = clustered ? await startServer("switchboard", { env }) : publisher;
    if (clustered) {
      cleanup.push(() => node.stop());
      for (const n of [publisher, node]) await untilBody(async () => (await call(n.url + "/ready")).status === 200, "ready");
    }
    const keepingUp = io(node.url, { forceNew: true, transports: ["websocket"] });
    cleanup.push(async () => keepingUp.disconnect());
    await once(keepingUp, "connect");
    const ticks = [];
    keepingUp.on("tick", (n) => ticks.push(n));
    const news = [];
    keepingUp.on("news", (n) => news.push(n));
    const behind = await behindClient(node.url);

    for (let n = 1; n <= 3; n++) {
      const emitted = await call(publisher.url + "/api/emit", { method: "POST", body: { event: "tick", data: n, volatile: true } });
      assert.equal(emitted.status, 200);
      assert.equal(emitted.body.offset, undefined, "a volatile event has no offset");
      // The client keeps up: it has its tick before the next is sent (a tick still being
      // written to it when the next comes would make it, rightly, skip that one).
      await untilBody(() => ticks.length === n, `tick ${n} at the client that keeps up`);
    }
    const stored = await call(publisher.url + "/api/emit", { method: "POST", body: { event: "news", data: "kept" } });
    assert.equal(stored.status, 200);
    await untilBody(() => ticks.length === 3 && news.length === 1, "the client that keeps up got every tick and the news");
    assert.deepEqual(ticks, [1, 2, 3]);

    // The client that was behind gets what was queued for it: its CONNECT reply and the news,
    // none of the ticks.
    const payload = await behind.read();
    assert.match(payload, /40\{/);
    assert.match(payload, /42\["news","kept"/);
    assert.doesNotMatch(payload, /tick/, "no volatile event was queued behind the CONNECT reply");

    const history = (await call(node.url + "/api/history?since=0")).body;
    const events = JSON.stringify(history);
    assert.match(events, /news/, "the news is in history");
    assert.doesNotMatch(events, /tick/, "a volatile event is never stored");
    const metrics = (await call(node.url + "/metrics")).body;
    assert.match(metrics, /^switchboard_volatile_dropped_total\{namespace="\/"\} 3$/m);
  });
}

test("volatile = true on a configured route and on a rule's emit", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-volatile-"));
  cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, "volatile.toml");
  writeFileSync(
    config,
    `[[routes]]\npath = "/broadcast/progress"\nemit = "progress"\nvolatile = true\n\n` +
      `[[namespaces]]\nname = "/"\n\n[[namespaces.events]]\non = "cursor"\n` +
      `actions = [{ emit = "cursor", to = "others", data = "{arg}", volatile = true }]\n`,
  );
  const node = await startServer("switchboard", { args: ["serve", "--config", config] });
  cleanup.push(() => node.stop());
  const keepingUp = io(node.url, { forceNew: true, transports: ["websocket"] });
  cleanup.push(async () => keepingUp.disconnect());
  const mover = io(node.url, { forceNew: true, transports: ["websocket"] });
  cleanup.push(async () => mover.disconnect());
  await Promise.all([once(keepingUp, "connect"), once(mover, "connect")]);
  const got = [];
  keepingUp.on("progress", (p) => got.push(["progress", p]));
  keepingUp.on("cursor", (c) => got.push(["cursor", c]));
  const behind = await behindClient(node.url);
  assert.equal((await call(node.url + "/broadcast/progress", { method: "POST", body: { percent: 40 } })).status, 200);
  mover.emit("cursor", { x: 3, y: 4 });
  await untilBody(() => got.length === 2, "the route's and the rule's volatile events");
  const payload = await behind.read();
  assert.doesNotMatch(payload, /progress|cursor/, "neither was queued for the client that is behind");
  const metrics = (await call(node.url + "/metrics")).body;
  assert.match(metrics, /^switchboard_volatile_dropped_total\{namespace="\/"\} 2$/m);
});

test("a polling client gets a volatile event only while its GET waits (between two GETs it is not writable)", async () => {
  const node = await startServer("switchboard");
  cleanup.push(() => node.stop());
  const base = `${node.url}/socket.io/?EIO=4&transport=polling`;
  const sid = JSON.parse((await call(base)).body.slice(1)).sid;
  const url = `${base}&sid=${sid}`;
  assert.equal((await call(url, { method: "POST", body: "40" })).status, 200);
  // Its CONNECT reply fetched: nothing is queued, and no GET waits.
  assert.match((await call(url)).body, /^40\{/);
  const emit = (data) => call(node.url + "/api/emit", { method: "POST", body: { event: "tick", data, volatile: true } });
  assert.equal((await emit("between two GETs")).status, 200);
  const waiting = call(url);
  await sleep(300);
  assert.equal((await emit("while a GET waits")).status, 200);
  assert.equal((await waiting).body, '42["tick","while a GET waits"]', "only the event sent while its GET waited");
  const metrics = (await call(node.url + "/metrics")).body;
  assert.match(metrics, /^switchboard_volatile_dropped_total\{namespace="\/"\} 1$/m);
});
