// What a 2xx from the HTTP API means on a cluster, with real parts: three Switchboard nodes
// and a real redis-server, on each adapter, with the official socket.io-client. A publisher
// that counts an event as published when the API answered 2xx must find every such event on
// every client, in the order of the answers, even when the node that answered is killed with
// SIGKILL a moment later or Redis pauses; and an event answered 503 reached no one. A client
// event's callback answered by a rule means the same as a 2xx.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, once, sleep, call, tempFile } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

async function untilReady(server, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while ((await call(server.url + "/ready")).status !== 200) {
    if (Date.now() > deadline) throw new Error(`${server.url} never got ready`);
    await sleep(50);
  }
}

// The embedded defaults, plus a configured route (its body is the event's payload) and a
// client event a rule relays to everyone.
const CONFIG = `
[[routes]]
path = "/broadcast/tick"
emit = "tick"

[[namespaces]]
name = "/"

[[namespaces.events]]
on = "say"
actions = [{ emit = "tick", to = "all", data = "{arg}" }]
`;

async function node(redis, adapter) {
  return startServer("switchboard", {
    args: ["--config", await tempFile("durable.toml", CONFIG)],
    env: {
      SWITCHBOARD_CLUSTER_REDIS_URL: redis.url,
      SWITCHBOARD_CLUSTER_ADAPTER: adapter,
      SWITCHBOARD_CLUSTER_REQUEST_TIMEOUT: "1s",
      SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "1500ms",
    },
  });
}

/** A client on `server` that records the `seq` of every `tick` event it gets. */
async function listener(server) {
  const socket = io(server.url, { forceNew: true, transports: ["websocket"], reconnection: false });
  socket.seqs = [];
  socket.on("tick", (payload) => socket.seqs.push(payload.seq));
  await once(socket, "connect");
  return socket;
}

/** POSTs a `tick` to /api/emit; status 0 when there was no answer (within `timeoutMs`). */
async function emit(server, seq, timeoutMs = 10000) {
  try {
    const response = await fetch(server.url + "/api/emit", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ event: "tick", data: { seq } }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { status: response.status, body: await response.json() };
  } catch {
    return { status: 0 };
  }
}

/** Freezes Redis for `pauseMs` every `everyMs` until stopped. */
function pauser(redis, pauseMs, everyMs) {
  let running = true;
  const done = (async () => {
    while (running) {
      await sleep(everyMs - pauseMs);
      if (!running) break;
      redis.freeze(true);
      await sleep(pauseMs);
      redis.freeze(false);
    }
  })();
  return async () => {
    running = false;
    await done;
    redis.freeze(false);
  };
}

for (const adapter of ["streams", "pubsub"]) {
  describe(`three nodes on the ${adapter} adapter`, () => {
    let redis, nodes;
    const sockets = [];
    before(async () => {
      redis = await startRedis();
      nodes = await Promise.all([node(redis, adapter), node(redis, adapter), node(redis, adapter)]);
      await Promise.all(nodes.map((n) => untilReady(n)));
    });
    after(async () => {
      sockets.splice(0).forEach((s) => s.disconnect());
      await Promise.all(nodes.map((n) => n.stop()));
      await redis.stop();
    });

    test("every emit answered 2xx reaches every client even when the answering node is killed with SIGKILL right after", async () => {
      const [a, b, c] = nodes;
      const onB = await listener(b);
      const onC = await listener(c);
      sockets.push(onB, onC);
      // Redis pauses for 50 ms every 120 ms: each emit waits for it, then the node dies.
      const stopPausing = pauser(redis, 50, 120);
      const answered = [];
      const killAt = Date.now() + 1500;
      let seq = 0;
      while (Date.now() < killAt) {
        seq += 1;
        const { status } = await emit(a, seq);
        if (status === 200) answered.push(seq);
        else assert.fail(`emit ${seq} answered ${status} while Redis was only pausing`);
      }
      await stopPausing();
      // Then Redis freezes and the publisher goes on, giving each emit 300 ms to be answered;
      // the node is killed while Redis is still frozen. What was answered must not be lost.
      redis.freeze(true);
      const frozenUntil = Date.now() + 1000;
      const unanswered = [];
      for (let i = 0; i < 3; i++) {
        seq += 1;
        const { status } = await emit(a, seq, 300);
        (status === 200 ? answered : unanswered).push(seq);
      }
      a.child.kill("SIGKILL");
      await sleep(Math.max(0, frozenUntil - Date.now()));
      redis.freeze(false);
      assert.ok(answered.length >= 5, `published ${answered.length} events before the kill`);
      const deadline = Date.now() + 5000;
      const missing = (socket) => answered.filter((s) => !socket.seqs.includes(s));
      while ((missing(onB).length || missing(onC).length) && Date.now() < deadline) await sleep(50);
      assert.deepEqual(missing(onB), [], "events answered 2xx that never reached the client on B");
      assert.deepEqual(missing(onC), [], "events answered 2xx that never reached the client on C");
      for (const socket of [onB, onC]) {
        // An emit with no answer may or may not have been delivered (Redis may have it).
        const got = socket.seqs.filter((s) => !unanswered.includes(s));
        assert.deepEqual(got, answered, "once each, in the order answered");
      }
      nodes[0] = await node(redis, adapter);
      await untilReady(nodes[0]);
    });

    test("a 503 when Redis cannot take an emit: it reaches no one; once Redis is back, emits are answered 200 and delivered", async () => {
      const [a, b] = nodes;
      const onA = await listener(a);
      const onB = await listener(b);
      sockets.push(onA, onB);
      const port = redis.port;
      await redis.stop();
      const started = Date.now();
      const refused = await emit(a, 1000);
      assert.equal(refused.status, 503);
      assert.equal(refused.body.error.code, "cluster_unavailable");
      assert.ok(Date.now() - started < 3000, "answered within the request timeout, not held");
      const joined = await call(a.url + "/api/join", { method: "POST", body: { rooms: ["x"], in: ["y"] } });
      assert.equal(joined.status, 503, "a join through the API is refused the same way");
      const routed = await call(a.url + "/broadcast/tick", { method: "POST", body: { seq: 1002 } });
      assert.equal(routed.status, 503, "and an emit through a configured route");
      assert.equal(routed.body.error.code, "cluster_unavailable");
      const batch = await call(a.url + "/api/batch", {
        method: "POST",
        body: { commands: [{ op: "emit", event: "tick", data: { seq: 1003 } }] },
      });
      assert.equal(batch.status, 503);
      assert.equal(batch.body.error.field, "commands[0]", "a batch names the command Redis did not take");
      redis = await startRedis(port);
      await Promise.all(nodes.map((n) => untilReady(n)));
      await sleep(300);
      const accepted = await emit(a, 1001);
      assert.equal(accepted.status, 200);
      const routedAgain = await call(a.url + "/broadcast/tick", { method: "POST", body: { seq: 1004 } });
      assert.equal(routedAgain.status, 200);
      const deadline = Date.now() + 3000;
      while ([onA, onB].some((s) => !s.seqs.includes(1004)) && Date.now() < deadline) await sleep(20);
      await sleep(200);
      for (const socket of [onA, onB]) {
        assert.deepEqual(socket.seqs, [1001, 1004], "the calls answered 503 reached no one");
      }
    });

    test("a client event's callback is answered once Redis took what its rule emits: a SIGKILL right after loses nothing; Redis down answers cluster_unavailable", async () => {
      const [a, b, c] = nodes;
      const onB = await listener(b);
      const onC = await listener(c);
      const sender = io(a.url, { forceNew: true, transports: ["websocket"], reconnection: false });
      sockets.push(onB, onC, sender);
      await once(sender, "connect");
      const stopPausing = pauser(redis, 50, 120);
      const acked = [];
      const until = Date.now() + 1500;
      for (let seq = 2001; Date.now() < until; seq++) {
        const answer = await sender.timeout(5000).emitWithAck("say", { seq });
        assert.deepEqual(answer, { ok: true }, `say ${seq}`);
        acked.push(seq);
      }
      // The node that answered dies the moment its last callback was answered.
      a.child.kill("SIGKILL");
      await stopPausing();
      assert.ok(acked.length >= 5, `${acked.length} client events answered`);
      const deadline = Date.now() + 5000;
      const missing = (socket) => acked.filter((seq) => !socket.seqs.includes(seq));
      while ((missing(onB).length || missing(onC).length) && Date.now() < deadline) await sleep(50);
      assert.deepEqual(missing(onB), [], "answered client events that never reached the client on B");
      assert.deepEqual(missing(onC), [], "answered client events that never reached the client on C");
      for (const socket of [onB, onC]) assert.deepEqual(socket.seqs.filter((seq) => seq > 2000), acked, "once each, in order");
      nodes[0] = await node(redis, adapter);
      await untilReady(nodes[0]);
      // Redis down: the callback says the cluster did not take it.
      const port = redis.port;
      const onBSender = io(b.url, { forceNew: true, transports: ["websocket"], reconnection: false });
      sockets.push(onBSender);
      await once(onBSender, "connect");
      await redis.stop();
      const refused = await onBSender.timeout(5000).emitWithAck("say", { seq: 3000 });
      assert.equal(refused.error?.code, "cluster_unavailable", JSON.stringify(refused));
      redis = await startRedis(port);
      await Promise.all(nodes.map((n) => untilReady(n)));
    });

    if (adapter === "streams") {
      test("emits made one after the other through two nodes reach every client in the order they were answered, with Redis pausing", async () => {
        const [a, b, c] = nodes;
        const listeners = [await listener(a), await listener(b), await listener(c)];
        sockets.push(...listeners);
        const stopPausing = pauser(redis, 150, 300);
        const count = 60;
        for (let seq = 1; seq <= count; seq++) {
          const { status } = await emit(seq % 2 ? a : b, seq);
          assert.equal(status, 200, `emit ${seq}`);
        }
        await stopPausing();
        const expected = Array.from({ length: count }, (_, i) => i + 1);
        const deadline = Date.now() + 5000;
        while (listeners.some((l) => l.seqs.length < count) && Date.now() < deadline) await sleep(50);
        for (const socket of listeners) assert.deepEqual(socket.seqs, expected);
      });
    }
  });
}
