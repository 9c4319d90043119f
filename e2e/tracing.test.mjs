// OpenTelemetry traces end to end: a node configured only through the standard OTEL_*
// variables sends its spans to a real OTLP/HTTP receiver (e2e/python/otlp_receiver.py, decoding
// with the opentelemetry-proto package), in a cluster on a real redis-server, with a real HTTP
// backend for the connect proxy and webhooks. The test checks the parent/child links: an API
// emit continues the caller's traceparent, its broadcast and the cluster publish are its
// children; the connect proxy call continues the client's traceparent and passes its own span
// on to the backend; a webhook batch is a span whose traceparent the backend receives; an
// unsampled caller's trace sends nothing.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, freePort, once, sleep, call, until, ROOT } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

const cleanup = [];
after(async () => {
  for (const step of cleanup.reverse()) await step();
});


async function startReceiver() {
  const port = await freePort();
  const python = path.join(ROOT, ".venv", "bin", "python");
  const child = spawn(python, [path.join(ROOT, "e2e", "python", "otlp_receiver.py"), String(port)], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise((resolve, reject) => {
    child.stdout.once("data", resolve);
    child.once("exit", (code) => reject(new Error(`the OTLP receiver exited with ${code}`)));
  });
  cleanup.push(async () => child.kill());
  return { url: `http://127.0.0.1:${port}`, spans: async () => (await call(`http://127.0.0.1:${port}/spans`)).body };
}

const hex = (bytes) => [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0")).join("");

test("spans go to a real OTLP receiver with their parent/child links, and traceparent goes on to the backend", async () => {
  const receiver = await startReceiver();
  const redis = await startRedis();
  cleanup.push(() => redis.stop());
  const seen = { connect: [], hooks: [] };
  const backend = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const which = req.url === "/connect" ? "connect" : "hooks";
      seen[which].push(req.headers.traceparent);
      res.setHeader("content-type", "application/json");
      res.end(which === "connect" ? JSON.stringify({ accept: true }) : "{}");
    });
  });
  const backendPort = await freePort();
  await new Promise((resolve) => backend.listen(backendPort, "127.0.0.1", resolve));
  cleanup.push(() => new Promise((resolve) => backend.close(resolve)));
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-tracing-"));
  cleanup.push(async () => rmSync(dir, { recursive: true, force: true }));
  const config = path.join(dir, "node.toml");
  writeFileSync(
    config,
    `[proxy.connect]\nurl = "http://127.0.0.1:${backendPort}/connect"\n\n` +
      `[webhooks]\nurl = "http://127.0.0.1:${backendPort}/hooks"\nsecret = "0123456789abcdef0123"\nbatch_wait = "10ms"\nevents = ["socket_connected"]\n`,
  );
  const node = await startServer("switchboard", {
    args: ["serve", "--config", config],
    env: {
      SWITCHBOARD_CLUSTER_REDIS_URL: redis.url,
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_SERVICE_NAME: "switchboard-e2e",
    },
  });
  cleanup.push(() => node.stop());
  while ((await call(node.url + "/ready")).status !== 200) await sleep(50);

  // A client whose page carries a trace: the connect proxy call continues it.
  const clientTrace = hex(16);
  const clientSpan = hex(8);
  const socket = io(node.url, { forceNew: true, transports: ["websocket"], extraHeaders: { traceparent: `00-${clientTrace}-${clientSpan}-01` } });
  cleanup.push(async () => socket.disconnect());
  await once(socket, "connect");

  // A backend's API call with its trace: the emit, its broadcast and the cluster publish.
  const apiTrace = hex(16);
  const apiSpan = hex(8);
  const got = [];
  socket.on("news", (m) => got.push(m));
  const emitted = await call(node.url + "/api/emit", {
    method: "POST",
    headers: { traceparent: `00-${apiTrace}-${apiSpan}-01` },
    body: { event: "news", data: { n: 1 } },
  });
  assert.equal(emitted.status, 200);
  // A caller that does not sample its trace: nothing of it is sent.
  const unsampledTrace = hex(16);
  await call(node.url + "/api/emit", {
    method: "POST",
    headers: { traceparent: `00-${unsampledTrace}-${hex(8)}-00` },
    body: { event: "news", data: { n: 2 } },
  });
  await until(() => got.length === 2, "both events delivered", 10000);

  const byTrace = (trace) => async () => {
    const spans = (await receiver.spans()).filter((s) => s.traceId === trace);
    return spans.length ? spans : null;
  };
  const api = await until(async () => {
    const spans = await byTrace(apiTrace)();
    return spans?.length >= 3 ? spans : null;
  }, "the API emit's spans", 10000);
  const server = api.find((s) => s.name === "POST /api/emit");
  assert.ok(server, `the server span: ${JSON.stringify(api.map((s) => s.name))}`);
  assert.equal(server.parentSpanId, apiSpan, "the API span continues the caller's span");
  assert.equal(server.kind, 2, "SERVER");
  assert.equal(server.service, "switchboard-e2e", "service.name from OTEL_SERVICE_NAME");
  assert.equal(server.attributes["http.response.status_code"], 200);
  const broadcast = api.find((s) => s.name === "broadcast");
  assert.equal(broadcast?.parentSpanId, server.spanId, "the broadcast is a child of the API span");
  assert.equal(broadcast.attributes["switchboard.event"], "news");
  const publish = api.find((s) => s.name === "cluster publish");
  assert.equal(publish?.parentSpanId, broadcast.spanId, "the cluster publish is a child of the broadcast");
  assert.equal(publish.kind, 4, "PRODUCER");
  assert.ok(BigInt(publish.start) >= BigInt(broadcast.start) && BigInt(publish.end) <= BigInt(broadcast.end), "inside its parent's time");

  const connect = await until(byTrace(clientTrace), "the connect proxy's span", 10000);
  const proxy = connect.find((s) => s.name === "connect proxy");
  assert.ok(proxy, JSON.stringify(connect));
  assert.equal(proxy.parentSpanId, clientSpan, "the connect proxy call continues the client's trace");
  assert.equal(proxy.kind, 3, "CLIENT");
  assert.ok(seen.connect.includes(`00-${clientTrace}-${proxy.spanId}-01`), `the backend got the proxy span's traceparent: ${seen.connect}`);

  await until(() => seen.hooks.length > 0, "a webhook batch", 10000);
  const [, hookTrace, hookSpan] = seen.hooks[0].split("-");
  const hooks = await until(byTrace(hookTrace), "the webhook batch's span", 10000);
  const hook = hooks.find((s) => s.spanId === hookSpan);
  assert.equal(hook?.name, "webhooks");
  assert.equal(hook.kind, 3, "CLIENT");

  await sleep(1500);
  assert.deepEqual((await receiver.spans()).filter((s) => s.traceId === unsampledTrace), [], "an unsampled trace sends nothing");
  const metrics = (await call(node.url + "/metrics")).body;
  assert.match(metrics, /^switchboard_trace_spans_exported [1-9]\d*$/m);
});
