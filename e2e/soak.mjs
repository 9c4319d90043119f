// The soak (bench/soak runs it): an hour of churn, fan-out and recovery against one node and,
// at the same time, a cluster of two nodes on the Redis Streams adapter (a real redis-server),
// all on the chat example with the official socket.io-client. Each setup has:
// - steady clients (WebSocket and polling) in ten rooms, receiving numbered events the backend
//   publishes through the API (20/s over the ten rooms; in the cluster, through both nodes);
// - churn: clients arriving every second, joining a short-lived room (which the backend also
//   publishes to, so the history keeps rooms that come and go), saying who they are (the
//   example's presence list goes to everyone), and leaving a few seconds later, half with a
//   disconnect and half by vanishing (the transport cut, no reconnection: the heartbeat finds
//   them and their sessions are kept for the recovery window, then dropped);
// - recovery: every 15 s a share of the steady clients lose their transport and come back.
// Every minute it samples each node: resident memory, open files, threads, tokio tasks, saved
// sessions, the history's rooms and entries, sockets. At the end it prints the samples and
// their drift (the last ten minutes against minutes 5-15, once the recovery window and history
// limits have filled), writes bench/soak.json and draws bench/soak.svg.
// It exits 1 when a steady client lost, repeated or reordered an event answered 2xx, started
// afresh where recovery was promised, or when a node's tasks, open files or saved sessions kept
// growing (more than 10% and 50 above their level) or its memory did (more than 15%).
//
//   node e2e/soak.mjs --minutes 60
//   node e2e/soak.mjs --redraw          the chart again from bench/soak.json
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { startServer, sleep, call, until, untilReady, processFigures, metricValue, ROOT } from "./lib/server.mjs";
import { startRedis, streamsNodeEnv } from "./lib/redis.mjs";

const { values: options } = parseArgs({
  options: {
    minutes: { type: "string", default: "60" },
    steady: { type: "string", default: "100" },
    out: { type: "string", default: path.join(ROOT, "bench", "soak") },
    sample: { type: "string", default: "60" },
    redraw: { type: "boolean", default: false },
  },
});
const minutes = Number(options.minutes);
const steadyCount = Number(options.steady);
const sampleEvery = Number(options.sample) * 1000;
const started = Date.now();
const log = (...args) => console.log(`[${((Date.now() - started) / 60000).toFixed(1)} min]`, ...args);
const ROOMS = Array.from({ length: 10 }, (_, i) => `room-${i}`);
const CONFIG = ["--config", path.join(ROOT, "examples", "chat.toml")];

async function nodeFigures(node) {
  const metrics = (await call(`${node.url}/metrics`)).body;
  const metric = (name) => metricValue(metrics, name);
  return {
    ...processFigures(node.child.pid),
    tasks: metric("switchboard_tasks"),
    sockets: metric("switchboard_sockets"),
    sessions_saved: metric("switchboard_recovery_sessions_saved"),
    history_rooms: metric("switchboard_history_rooms"),
    history_entries: metric("switchboard_history_entries"),
  };
}

/** One setup: its nodes, its steady clients, its churn, its publisher. */
async function startSetup(name, nodes) {
  const setup = { name, nodes, steady: [], published: new Map(), churned: 0, cuts: 0, running: true, samples: [] };
  const urlOf = (i) => nodes[i % nodes.length].url;
  for (let i = 0; i < steadyCount; i++) {
    const transports = i % 3 === 2 ? ["polling"] : ["websocket"];
    const socket = io(urlOf(i), { forceNew: true, transports, reconnectionDelay: 300, reconnectionDelayMax: 2000 });
    const client = { socket, room: ROOMS[i % ROOMS.length], last: 0, got: new Set(), lost: 0, duplicated: 0, reordered: 0, recovered: 0, fresh: 0, connects: 0 };
    socket.on("tick", (data) => {
      if (client.got.has(data.seq)) client.duplicated++;
      else if (data.seq < client.last) client.reordered++;
      client.got.add(data.seq);
      client.last = Math.max(client.last, data.seq);
    });
    socket.on("connect", () => {
      client.connects++;
      if (client.connects > 1) socket.recovered ? client.recovered++ : client.fresh++;
      if (!socket.recovered) {
        socket.emit("join-room", client.room);
        socket.emit("user-online", `steady-${i}`);
      }
    });
    setup.steady.push(client);
  }
  await until(() => setup.steady.every((c) => c.socket.connected), `${name}: steady clients connected`, 30000);
  await until(async () => {
    const sizes = await Promise.all(ROOMS.map(async (room) => (await call(`${nodes[0].url}/api/rooms/${room}`)).body.size));
    return sizes.reduce((a, b) => a + b, 0) === steadyCount;
  }, `${name}: steady clients in their rooms`, 30000);

  // The backend: numbered events to the steady rooms, and some to the churn's rooms.
  let seq = 0;
  let sent = 0;
  setup.publisher = (async () => {
    while (setup.running) {
      const room = ROOMS[seq % ROOMS.length];
      const number = ++seq;
      const answer = await call(`${urlOf(sent++)}/api/emit`, { method: "POST", body: { event: "tick", rooms: [room], data: { seq: number } } }).catch(() => ({ status: 0 }));
      if (answer.status >= 200 && answer.status < 300) {
        if (!setup.published.has(room)) setup.published.set(room, []);
        setup.published.get(room).push(number);
      }
      if (number % 4 === 0) {
        const churnRoom = `churn-${Math.floor(Math.random() * 200)}`;
        await call(`${urlOf(sent++)}/api/emit`, { method: "POST", body: { event: "news", rooms: [churnRoom], data: { seq: number } } }).catch(() => {});
      }
      await sleep(50);
    }
  })();

  // Churn: five clients a second, each staying 3-10 s.
  setup.churn = (async () => {
    let n = 0;
    while (setup.running) {
      for (let k = 0; k < 5; k++) {
        const index = n++;
        const socket = io(urlOf(index), { forceNew: true, transports: ["websocket"], reconnection: false });
        socket.on("connect", () => {
          socket.emit("join-room", `churn-${index % 200}`);
          socket.emit("user-online", `churn-${index % 500}`);
        });
        setTimeout(() => {
          const ws = socket.io.engine?.transport?.ws;
          if (Math.floor(index / 2) % 2 && ws?._socket) ws._socket.destroy();
          else socket.disconnect();
          setup.churned++;
        }, 3000 + Math.random() * 7000);
      }
      await sleep(1000);
    }
  })();

  // Recovery: a tenth of the steady clients lose their transport every 15 s.
  setup.cutter = (async () => {
    while (setup.running) {
      await sleep(15000);
      if (!setup.running) break;
      for (const client of setup.steady) {
        if (Math.random() > 0.1 || !client.socket.connected) continue;
        const transport = client.socket.io.engine?.transport;
        if (transport?.name === "websocket" && transport.ws?._socket) transport.ws._socket.destroy();
        else client.socket.io.engine?.close();
        setup.cuts++;
      }
    }
  })();

  setup.sampler = (async () => {
    while (setup.running) {
      const at = (Date.now() - started) / 60000;
      const figures = await Promise.all(nodes.map((node) => nodeFigures(node).catch(() => null)));
      setup.samples.push({ minute: Number(at.toFixed(2)), nodes: figures });
      log(`${name}: ${figures.map((f) => f && `rss ${(f.rss_kib / 1024).toFixed(1)} MiB, fds ${f.open_files}, tasks ${f.tasks}, sockets ${f.sockets}, saved ${f.sessions_saved}, history ${f.history_rooms}/${f.history_entries}`).join(" | ")}`);
      await sleep(sampleEvery);
    }
  })();
  return setup;
}

async function stopSetup(setup) {
  setup.running = false;
  await Promise.all([setup.publisher, setup.churn, setup.cutter, setup.sampler]);
  await until(() => setup.steady.every((c) => c.socket.connected), `${setup.name}: steady clients back`, 30000).catch(() => {});
  await sleep(3000);
  for (const client of setup.steady) {
    // Every steady client was in its room before the first event.
    for (const number of setup.published.get(client.room) ?? []) if (!client.got.has(number)) client.lost++;
  }
  setup.steady.forEach((c) => c.socket.disconnect());
}

const NODE_SERIES = ["rss_kib", "open_files", "threads", "tasks", "sessions_saved", "history_entries", "history_rooms", "sockets"];

/** Mean of `key` over the samples between two minutes, per node. */
function meanOver(samples, node, key, from, to) {
  const values = samples.filter((s) => s.minute >= from && s.minute <= to && s.nodes[node]).map((s) => s.nodes[node][key]);
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : NaN;
}

function drift(setup) {
  const rows = [];
  const end = setup.samples.at(-1)?.minute ?? 0;
  // Level: minutes 5-15 (the recovery window, 2 min, and the history have filled by then); a
  // short run compares its second quarter with its last.
  const [levelFrom, levelTo] = end >= 30 ? [5, 15] : [end / 4, end / 2];
  const lastFrom = end >= 30 ? end - 10 : (end * 3) / 4;
  setup.nodes.forEach((node, i) => {
    for (const key of NODE_SERIES) {
      const level = meanOver(setup.samples, i, key, levelFrom, levelTo);
      const last = meanOver(setup.samples, i, key, lastFrom, end);
      rows.push({ node: `${setup.name}${setup.nodes.length > 1 ? `-${"ab"[i]}` : ""}`, key, level, last, change: level ? last / level - 1 : 0 });
    }
  });
  return rows;
}

function growing(row) {
  if (row.key === "rss_kib") return row.change > 0.15;
  if (["tasks", "open_files", "sessions_saved"].includes(row.key)) return row.change > 0.1 && row.last - row.level > 50;
  return false;
}

/** A small SVG: one panel per figure, a line per node, minutes along the bottom. */
function chart(setups) {
  const panels = [
    ["rss_kib", "resident memory (MiB)", (v) => v / 1024],
    ["open_files", "open files", (v) => v],
    ["tasks", "tokio tasks", (v) => v],
    ["threads", "threads", (v) => v],
    ["sessions_saved", "saved sessions", (v) => v],
    ["history_entries", "history entries", (v) => v],
  ];
  const lines = setups.flatMap((setup) => setup.nodes.map((_, i) => ({ name: `${setup.name}${setup.nodes.length > 1 ? ` node ${"ab"[i]}` : ""}`, samples: setup.samples.filter((s) => s.nodes[i]).map((s) => [s.minute, s.nodes[i]]) })));
  const colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
  const W = 420, H = 180, M = { l: 50, r: 26, t: 24, b: 28 };
  const cols = 2;
  const totalW = cols * W, totalH = Math.ceil(panels.length / cols) * H + 30;
  const maxMinute = Math.max(1, ...lines.flatMap((l) => l.samples.map(([m]) => m)));
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${totalW}" height="${totalH}" font-family="sans-serif" font-size="11">\n<rect width="100%" height="100%" fill="white"/>\n`;
  panels.forEach(([key, title, scale], p) => {
    const x0 = (p % cols) * W, y0 = Math.floor(p / cols) * H;
    const values = lines.flatMap((l) => l.samples.map(([, f]) => scale(f[key]))).filter(Number.isFinite);
    const top = Math.max(1, ...values) * 1.1;
    const px = (m) => x0 + M.l + (m / maxMinute) * (W - M.l - M.r);
    const py = (v) => y0 + H - M.b - (v / top) * (H - M.t - M.b);
    svg += `<text x="${x0 + M.l}" y="${y0 + 15}" font-weight="bold">${title}</text>\n`;
    svg += `<line x1="${px(0)}" y1="${py(0)}" x2="${px(maxMinute)}" y2="${py(0)}" stroke="#999"/><line x1="${px(0)}" y1="${py(0)}" x2="${px(0)}" y2="${py(top)}" stroke="#999"/>\n`;
    for (const tick of [0, 0.5, 1]) svg += `<text x="${x0 + M.l - 4}" y="${py(top * tick) + 4}" text-anchor="end">${(top * tick).toFixed(top * tick >= 100 ? 0 : 1)}</text>\n`;
    for (const m of [0, maxMinute / 2, maxMinute]) svg += `<text x="${px(m)}" y="${y0 + H - M.b + 14}" text-anchor="middle">${m.toFixed(0)} min</text>\n`;
    lines.forEach((line, i) => {
      const points = line.samples.filter(([, f]) => Number.isFinite(f[key])).map(([m, f]) => `${px(m).toFixed(1)},${py(scale(f[key])).toFixed(1)}`).join(" ");
      if (points) svg += `<polyline fill="none" stroke="${colours[i % colours.length]}" stroke-width="1.5" points="${points}"/>\n`;
    });
  });
  lines.forEach((line, i) => {
    svg += `<rect x="${10 + i * 150}" y="${totalH - 18}" width="12" height="3" fill="${colours[i % colours.length]}"/><text x="${26 + i * 150}" y="${totalH - 13}">${line.name}</text>\n`;
  });
  return svg + "</svg>\n";
}

// --- run ---------------------------------------------------------------------------------------
if (options.redraw) {
  // Only the chart again, from the samples a run wrote.
  const saved = JSON.parse(readFileSync(`${options.out}.json`, "utf8"));
  const setups = saved.setups.map((s) => ({ ...s, nodes: s.samples[0]?.nodes ?? [] }));
  writeFileSync(`${options.out}.svg`, chart(setups));
  process.exit(0);
}
const single = await startServer("switchboard", { args: CONFIG });
const redis = await startRedis();
const env = streamsNodeEnv(redis.url, { SWITCHBOARD_CLUSTER_NODE_TIMEOUT: "5s" });
const pair = await Promise.all([0, 1].map(() => startServer("switchboard", { args: CONFIG, env })));
await Promise.all([single, ...pair].map((node) => untilReady(node, 20000)));
const setups = await Promise.all([startSetup("single", [single]), startSetup("cluster", pair)]);
log(`soak: ${minutes} min, ${steadyCount} steady clients per setup, churn 5/s, a tenth of the steady clients cut every 15 s`);
await sleep(minutes * 60000);
await Promise.all(setups.map(stopSetup));

let failed = false;
console.log("\nsetup     steady  published  lost  duplicated  out-of-order  recovered  fresh  churned  cuts");
for (const setup of setups) {
  const sum = (key) => setup.steady.reduce((t, c) => t + c[key], 0);
  const published = setup.steady.reduce((t, c) => t + (setup.published.get(c.room)?.length ?? 0), 0);
  console.log(`${setup.name.padEnd(9)} ${String(setup.steady.length).padStart(6)} ${String(published).padStart(10)} ${String(sum("lost")).padStart(5)} ${String(sum("duplicated")).padStart(11)} ${String(sum("reordered")).padStart(13)} ${String(sum("recovered")).padStart(10)} ${String(sum("fresh")).padStart(6)} ${String(setup.churned).padStart(8)} ${String(setup.cuts).padStart(5)}`);
  if (sum("lost") || sum("duplicated") || sum("reordered") || sum("fresh")) failed = true;
}
console.log("\nnode         figure            level (min 5-15)   last 10 min   change");
const rows = setups.flatMap(drift);
for (const row of rows) {
  const flag = growing(row) ? "  GROWING" : "";
  if (flag) failed = true;
  console.log(`${row.node.padEnd(12)} ${row.key.padEnd(17)} ${row.level.toFixed(1).padStart(16)} ${row.last.toFixed(1).padStart(13)} ${(row.change * 100).toFixed(1).padStart(7)}%${flag}`);
}
writeFileSync(`${options.out}.json`, JSON.stringify({ minutes, steady: steadyCount, setups: setups.map((s) => ({ name: s.name, samples: s.samples })) }, null, 1));
writeFileSync(`${options.out}.svg`, chart(setups));
console.log(`\nsamples in ${options.out}.json, chart in ${options.out}.svg`);
await Promise.all([single, ...pair].map((node) => node.stop()));
await redis.stop();
console.log(failed ? "soak: FAILED" : "soak: flat, nothing lost");
process.exit(failed ? 1 : 0);
