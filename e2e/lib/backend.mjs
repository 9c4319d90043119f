// A small, real HTTP backend for the tests of the backend in the loop: each path answers with a
// handler the test sets, and every call is recorded (path, headers, raw body, parsed JSON).
import { createServer } from "node:http";
import { freePort } from "./server.mjs";

/** Starts the backend on a free port (or `port`). Resolves to { url, port, calls, on, stop, start }. */
export async function startBackend(port) {
  port = port ?? (await freePort());
  const handlers = new Map();
  const calls = [];
  let server;
  const backend = {
    port,
    url: `http://127.0.0.1:${port}`,
    calls,
    /** `handler(json, call)` answers `{ status, body, delay }` (or a promise of it). */
    on(path, handler) {
      handlers.set(path, handler);
    },
    callsTo(path) {
      return calls.filter((c) => c.path === path);
    },
    start() {
      server = createServer((req, res) => {
        const chunks = [];
        req.on("data", (c) => chunks.push(c));
        req.on("end", async () => {
          const raw = Buffer.concat(chunks).toString();
          let json;
          try {
            json = JSON.parse(raw);
          } catch {}
          const call = { path: req.url, headers: req.headers, raw, json, at: Date.now() };
          calls.push(call);
          const handler = handlers.get(req.url);
          const answer = handler ? await handler(json, call) : { status: 404, body: { error: "no handler" } };
          if (answer.delay) await new Promise((r) => setTimeout(r, answer.delay));
          if (res.destroyed) return;
          res.writeHead(answer.status ?? 200, { "content-type": "application/json" });
          res.end(answer.body === undefined ? "" : JSON.stringify(answer.body));
        });
      });
      return new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
    },
    /** Stops listening and drops open connections: the backend is down. */
    stop() {
      return new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      });
    },
  };
  await backend.start();
  return backend;
}
