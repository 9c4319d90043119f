// Nothing lost across reconnects: connection state recovery with the official client. Transports
// are cut server-side and by a ping timeout while a backend publishes; the client comes back
// with the same socket id and gets exactly the events it missed, in order, once.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import { startServer, once, sleep, tempFile, call } from "./lib/server.mjs";

const KEY = "recovery-key-123456";
const clients = [];
after(() => clients.forEach((s) => s.disconnect()));

async function server(extra = "") {
  const config = await tempFile(
    "recovery.toml",
    `[server]\nstats_interval = "0s"\n[engine]\nping_interval = "400ms"\nping_timeout = "300ms"\n` +
      `[api]\nkeys = ["${KEY}"]\n` +
      `[[namespaces]]\nname = "/"\n[namespaces.on_connect]\njoin = ["news"]\n` +
      extra,
  );
  return startServer("switchboard", { args: ["--config", config] });
}

const api = (srv, route, body) => call(srv.url + route, { method: "POST", body, key: KEY });

/** Records every `news` payload and its offset. */
function record(socket) {
  const got = [];
  socket.on("news", (n, offset) => got.push({ n, offset }));
  return got;
}

function connect(srv, opts = {}) {
  const socket = io(srv.url, {
    forceNew: true,
    transports: ["websocket"],
    reconnectionDelay: 600,
    reconnectionDelayMax: 600,
    randomizationFactor: 0,
    ...opts,
  });
  clients.push(socket);
  return socket;
}

describe("recovery", () => {
  let srv;
  before(async () => {
    srv = await server();
  });
  after(() => srv.stop());

  test("the CONNECT reply carries a pid and events carry offsets", async () => {
    const socket = connect(srv);
    await once(socket, "connect");
    assert.equal(socket.recovered, false);
    const got = record(socket);
    const res = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: 1 });
    assert.match(res.body.offset, /^\d+$/);
    await sleep(100);
    assert.deepEqual(got, [{ n: 1, offset: res.body.offset }]);
    socket.disconnect();
  });

  test("a transport cut server-side: same id, exactly the missed events, in order", async () => {
    const socket = connect(srv);
    await once(socket, "connect");
    const id = socket.id;
    const got = record(socket);
    await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "before" });
    await sleep(100);
    const cut = once(socket, "disconnect");
    const res = await api(srv, "/api/disconnect", { sockets: [id], close_transport: true });
    assert.equal(res.body.disconnected, 1);
    assert.equal((await cut)[0], "transport close");
    const sent = [];
    for (let i = 0; i < 10; i++) {
      const r = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: i });
      sent.push(r.body.offset);
    }
    // To the socket by id, too: it is kept in its own room.
    await api(srv, "/api/emit", { event: "news", sockets: [id], data: "direct" });
    await once(socket, "connect", 5000);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    await sleep(200);
    assert.deepEqual(got.map((g) => g.n), ["before", 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, "direct"]);
    assert.deepEqual(got.slice(1, 11).map((g) => g.offset), sent);
    // Its rooms came back: a new room emit reaches it.
    await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "after" });
    await sleep(100);
    assert.equal(got.at(-1).n, "after");
    socket.disconnect();
  });

  test("a ping timeout: recovered with what was published meanwhile", async () => {
    const socket = connect(srv);
    await once(socket, "connect");
    const id = socket.id;
    const got = record(socket);
    // The network goes quiet: stop reading, so neither side hears the other's heartbeat.
    socket.io.engine.transport.ws._socket.pause();
    await sleep(50);
    for (let i = 0; i < 5; i++) await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: i });
    const [reason] = await once(socket, "disconnect", 5000);
    assert.equal(reason, "ping timeout");
    await once(socket, "connect", 5000);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    await sleep(200);
    assert.deepEqual(got.map((g) => g.n), [0, 1, 2, 3, 4]);
    socket.disconnect();
  });

  test("back with its pid before the server noticed its old transport end: same session, nothing missed", async () => {
    // What thousands of clients reconnecting at once look like to the server: a client that
    // lost its connection presents its pid on a new transport while the old one is, as far as
    // the server knows, still open.
    const old = connect(srv, { reconnection: false });
    await once(old, "connect");
    const id = old.id;
    const got = record(old);
    await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "before" });
    await sleep(100);
    assert.equal(got.length, 1);
    const oldClosed = once(old, "disconnect", 5000);
    const back = connect(srv, { autoConnect: false });
    // socket.io-client sends these on a reconnect: its pid and the offset it got to.
    back._pid = old._pid;
    back._lastOffset = old._lastOffset;
    const missed = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "meanwhile" });
    const gotBack = record(back);
    back.connect();
    await once(back, "connect", 5000);
    assert.equal(back.recovered, true);
    assert.equal(back.id, id);
    await sleep(200);
    // The event the old transport may not have carried arrives on the new one, once.
    assert.deepEqual(gotBack.map((g) => g.offset), [missed.body.offset]);
    // The stale transport is closed; the old socket is gone from the server.
    assert.equal((await oldClosed)[0], "transport close");
    const after = await api(srv, "/api/emit", { event: "news", sockets: [id], data: "after" });
    assert.equal(after.status, 200);
    await sleep(100);
    assert.deepEqual(gotBack.map((g) => g.n), ["meanwhile", "after"]);
    const metrics = (await call(`${srv.url}/metrics`)).body;
    assert.match(metrics, /switchboard_recovery_stale_transports_closed_total\{namespace="\/"\} 1\b/);
    back.disconnect();
  });

  test("a client's own disconnect is not saved", async () => {
    const socket = connect(srv);
    await once(socket, "connect");
    const id = socket.id;
    socket.disconnect();
    await sleep(100);
    socket.connect();
    await once(socket, "connect");
    assert.equal(socket.recovered, false);
    assert.notEqual(socket.id, id);
    socket.disconnect();
  });
});

test("clients = on_request: a client that asks recovers; one that does not gets events exactly as sent", async () => {
  const srv = await server(`[recovery]\nclients = "on_request"\n`);
  try {
    const asking = connect(srv, { auth: { recover: true } });
    const plain = connect(srv);
    await Promise.all([once(asking, "connect"), once(plain, "connect")]);
    const args = { asking: [], plain: [] };
    asking.on("news", (...a) => args.asking.push(a));
    plain.on("news", (...a) => args.plain.push(a));
    const first = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "one" });
    await sleep(100);
    // One broadcast, two forms: with its offset for the client that recovers, without for the other.
    assert.deepEqual(args.asking, [["one", first.body.offset]]);
    assert.deepEqual(args.plain, [["one"]]);

    const ids = { asking: asking.id, plain: plain.id };
    const cut = [once(asking, "disconnect"), once(plain, "disconnect")];
    await api(srv, "/api/disconnect", { sockets: [ids.asking, ids.plain], close_transport: true });
    await Promise.all(cut);
    const metrics = (await call(`${srv.url}/metrics`)).body;
    assert.match(metrics, /switchboard_recovery_sessions_saved\{namespace="\/"\} 1\n/, "only the asking client's session is kept");
    assert.match(metrics, /switchboard_history_rooms\{namespace="\/"\} [2-9]\d*\n/, "the history keeps news's log and everyone's");
    assert.match(metrics, /switchboard_history_entries\{namespace="\/"\} [1-9]\d*\n/, "the event to news is kept");
    await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "missed" });
    await Promise.all([once(asking, "connect", 5000), once(plain, "connect", 5000)]);
    assert.equal(asking.recovered, true);
    assert.equal(asking.id, ids.asking);
    assert.ok(!plain.recovered, "no session was kept for the client that did not ask");
    assert.notEqual(plain.id, ids.plain);
    await sleep(200);
    assert.deepEqual(args.asking.map(([n]) => n), ["one", "missed"]);
    assert.deepEqual(args.plain, [["one"]], "what was sent while it was away is gone for the client that did not ask");
    const after = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: "after" });
    await sleep(100);
    assert.deepEqual(args.plain.at(-1), ["after"]);
    assert.deepEqual(args.asking.at(-1), ["after", after.body.offset]);
    asking.disconnect();
    plain.disconnect();
  } finally {
    await srv.stop();
  }
});

test("after the recovery window the client is a fresh socket", async () => {
  const srv = await server(`[recovery]\nmax_disconnection_duration = "300ms"\n`.replace(/^/, ""));
  try {
    const socket = connect(srv, { reconnectionDelay: 900, reconnectionDelayMax: 900 });
    await once(socket, "connect");
    const id = socket.id;
    await api(srv, "/api/disconnect", { sockets: [id], close_transport: true });
    await once(socket, "connect", 5000);
    assert.equal(socket.recovered, false);
    assert.notEqual(socket.id, id);
    socket.disconnect();
  } finally {
    await srv.stop();
  }
});

test("stress: 200 clients, steady publishing, 20% of transports cut: every client gets every event once, in order", async () => {
  const srv = await server();
  try {
    const many = [];
    for (let i = 0; i < 200; i++) {
      many.push(
        connect(srv, {
          transports: i % 4 === 0 ? ["polling", "websocket"] : ["websocket"],
          reconnectionDelay: 100 + (i % 7) * 50,
          reconnectionDelayMax: 500,
        }),
      );
    }
    await Promise.all(many.map((s) => (s.connected ? null : once(s, "connect", 10000))));
    const received = many.map(record);
    const published = [];
    const victims = new Set();
    while (victims.size < 40) victims.add(Math.floor(Math.random() * 200));
    const cutAt = [...victims].map((v) => ({ v, at: Math.floor(Math.random() * 150) }));
    // 200 events at ~50/s; 40 transports cut at random moments, server-side or by the client.
    for (let i = 0; i < 200; i++) {
      for (const { v, at } of cutAt) {
        if (at !== i) continue;
        if (v % 2) {
          api(srv, "/api/disconnect", { sockets: [many[v].id], close_transport: true });
        } else {
          many[v].io.engine.close();
        }
      }
      const res = await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: i });
      published.push(res.body.offset);
      await sleep(20);
    }
    // Everyone back and caught up.
    const deadline = Date.now() + 15000;
    while (Date.now() < deadline && received.some((r) => r.length < 200)) await sleep(100);
    let recoveredCount = 0;
    for (let c = 0; c < 200; c++) {
      assert.deepEqual(
        received[c].map((r) => r.n),
        Array.from({ length: 200 }, (_, i) => i),
        `client ${c} (${victims.has(c) ? "cut" : "not cut"}) got every event once, in order`,
      );
      assert.deepEqual(received[c].map((r) => r.offset), published);
      if (many[c].recovered) recoveredCount++;
    }
    assert.ok(recoveredCount >= 30, `most cut clients were recovered (${recoveredCount})`);
    for (const s of many) s.disconnect();
  } finally {
    await srv.stop();
  }
});

test("a client that stops reading is dropped at its queue limit; others keep their pace and memory stays flat", async () => {
  const srv = await server(`[limits]\nsocket_queue = 64\n`);
  try {
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${srv.child.pid}/status`, "utf8"))[1]);
    const slow = connect(srv, { reconnection: false });
    const healthy = connect(srv);
    await Promise.all([once(slow, "connect"), once(healthy, "connect")]);
    const latencies = [];
    healthy.on("news", (n) => latencies.push(Date.now() - n.sent));
    slow.io.engine.transport.ws._socket.pause();
    const slowGone = once(slow, "disconnect", 20000).catch(() => null);
    const before = rss();
    const blob = "x".repeat(64 * 1024);
    for (let i = 0; i < 300; i++) {
      await api(srv, "/api/emit", { event: "news", rooms: ["news"], data: { sent: Date.now(), blob } });
    }
    await sleep(500);
    const stats = (await call(srv.url + "/api/stats", { key: KEY })).body;
    assert.equal(stats.sockets, 1, "the slow client was disconnected");
    assert.equal(latencies.length, 300, "the healthy client got every event");
    latencies.sort((a, b) => a - b);
    const p99 = latencies[Math.floor(latencies.length * 0.99)];
    assert.ok(p99 < 500, `healthy client p99 latency ${p99} ms`);
    const grown = (rss() - before) / 1024;
    assert.ok(grown < 64, `server memory grew ${grown.toFixed(1)} MB`);
    assert.ok(srv.output.join("").includes("outbound queue was full"), "the reason is logged");
    const metrics = (await call(srv.url + "/metrics", { key: KEY })).body;
    assert.match(metrics, /^switchboard_slow_consumers_closed_total 1$/m, "and counted");
    assert.ok(await slowGone, "the slow client saw its disconnect");
  } finally {
    await srv.stop();
  }
});
