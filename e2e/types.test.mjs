// Typed events as a TypeScript frontend uses them: `switchboard types` writes the declaration of
// a config's events, a small client is compiled against it with tsc (--strict) together with
// the official socket.io-client's own types, the lines a wrong payload would be on must fail to
// compile (@ts-expect-error), and the compiled client then talks to a real server on that config.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync, rmSync } from "node:fs";
import path from "node:path";
import { startServer, ROOT, RELEASE } from "./lib/server.mjs";

const DIR = path.join(ROOT, "e2e", ".generated", "types");
const TSC = path.join(ROOT, "e2e", "node_modules", "typescript", "bin", "tsc");

function types(config) {
  const env = { ...process.env, JWT_SECRET: "types-test-secret-0123456789abcdef", BACKEND: "http://127.0.0.1:9", PROXY_SECRET: "proxy-secret-0123456789", WEBHOOK_SECRET: "webhook-secret-0123456789" };
  return execFileSync(path.join(RELEASE, "switchboard"), ["types", "--config", path.join(ROOT, "examples", config)], { encoding: "utf8", env });
}

function tsc(files) {
  return spawnSync(process.execPath, [TSC, "--strict", "--target", "es2020", "--module", "nodenext", "--moduleResolution", "nodenext", "--outDir", path.join(DIR, "out"), ...files], { encoding: "utf8", cwd: DIR });
}

const CLIENT = `
import { io, Socket } from "socket.io-client";
import type { ServerToClientEvents, ClientToServerEvents } from "./chat-events.js";

const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(process.argv[2], { transports: ["websocket"] });
socket.on("new-message", (data) => {
  // data is { from: string; message: string; timestamp: string }
  const upper: string = data.message.toUpperCase();
  console.log(JSON.stringify({ from: data.from.length > 0, upper }));
  socket.disconnect();
});
socket.on("connect", () => {
  socket.emit("join-room", "lobby", (reply) => {
    if ("error" in reply) throw new Error(reply.error.message);
    const ok: true = reply.ok;
    socket.emit("message", "hello " + ok);
  });
});

// What the config does not allow does not compile (never called: only compiled).
export function wrongUses(socket: Socket<ServerToClientEvents, ClientToServerEvents>) {
  // @ts-expect-error: "message" takes a string
  socket.emit("message", 42);
  // @ts-expect-error: no such event in the config
  socket.emit("no-such-event", "x");
  socket.on("new-message", (data) => {
    // @ts-expect-error: the payload has no such field
    data.nonexistent.trim();
  });
}
`;

test("switchboard types: a client compiled against the chat example's events talks to it", async () => {
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  writeFileSync(path.join(DIR, "package.json"), JSON.stringify({ type: "module" }));
  writeFileSync(path.join(DIR, "chat-events.ts"), types("chat.toml"));
  writeFileSync(path.join(DIR, "client.ts"), CLIENT);
  const compiled = tsc(["client.ts"]);
  assert.equal(compiled.status, 0, `tsc failed:\n${compiled.stdout}${compiled.stderr}`);

  // Without the @ts-expect-error lines' errors, tsc itself complains ("Unused '@ts-expect-error'"):
  // check the wrong uses really are errors by compiling them bare.
  writeFileSync(path.join(DIR, "wrong.ts"), CLIENT.replaceAll("// @ts-expect-error", "//"));
  const wrong = tsc(["wrong.ts"]);
  assert.notEqual(wrong.status, 0);
  assert.match(wrong.stdout, /wrong\.ts\(\d+,\d+\): error TS2345/, "a number where a string is expected");
  assert.match(wrong.stdout, /no-such-event/);
  assert.match(wrong.stdout, /nonexistent/);

  const server = await startServer("switchboard", { args: ["--config", path.join(ROOT, "examples", "chat.toml")] });
  try {
    const run = spawnSync(process.execPath, [path.join(DIR, "out", "client.js"), server.url], { encoding: "utf8", timeout: 10000 });
    assert.equal(run.status, 0, run.stderr);
    assert.deepEqual(JSON.parse(run.stdout.trim()), { from: true, upper: "HELLO TRUE" });
  } finally {
    await server.stop();
  }
});

test("switchboard types: every example's declaration compiles", () => {
  mkdirSync(DIR, { recursive: true });
  const files = [];
  for (const config of ["orders.toml", "chat.toml", "device-dashboard.toml", "video-processing.toml", "chat-backend.toml"]) {
    const file = `${config.replace(".toml", "")}-all.ts`;
    writeFileSync(path.join(DIR, file), types(config));
    files.push(file);
  }
  const compiled = tsc(files);
  assert.equal(compiled.status, 0, `tsc failed:\n${compiled.stdout}${compiled.stderr}`);
});
