// Starts one of our binaries on a free port for a test and stops it afterwards.
import { spawn } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const RELEASE = path.join(ROOT, "target", "release");

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** GET over HTTPS trusting `ca` (a PEM): resolves to { status, body, cert } (the peer's). */
export async function httpsGet(url, ca) {
  const https = await import("node:https");
  return new Promise((resolve, reject) => {
    const request = https.get(url, { ca, agent: false }, (response) => {
      const cert = response.socket.getPeerCertificate();
      let body = "";
      response.on("data", (chunk) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode, body, cert }));
    });
    request.on("error", reject);
  });
}

async function waitUntilUp(url, child, output, ca) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`server exited with ${child.exitCode}:\n${output.join("")}`);
    }
    try {
      if (ca) await httpsGet(url, ca);
      else await fetch(url);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`server did not start:\n${output.join("")}`);
}

/**
 * Runs `binary` (a path under target/release) with `args` and `env`, on a free port passed as
 * PORT. Resolves to { port, url, stop(), output }. With `ca` (a PEM), the server serves TLS and
 * `url` is https.
 */
export async function startServer(binary, { args = [], env = {}, port, ca } = {}) {
  port = port ?? (await freePort());
  const output = [];
  const child = spawn(path.join(RELEASE, binary), args, {
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", PORT: String(port), ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d) => output.push(d.toString()));
  child.stderr.on("data", (d) => output.push(d.toString()));
  const url = `${ca ? "https" : "http"}://127.0.0.1:${port}`;
  await waitUntilUp(`${url}/health`, child, output, ca).catch(async (e) => {
    child.kill("SIGKILL");
    throw e;
  });
  return {
    port,
    url,
    output,
    child,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        child.once("exit", (code) => resolve(code));
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 15000).unref();
      }),
  };
}

/** Resolves with the first `event` emitted by `emitter` (its arguments as an array). */
export function once(emitter, event, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${event}`)), timeoutMs);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves with `check()`'s first truthy answer, polling every 20 ms; fails naming `what` after `timeoutMs`. */
export async function until(check, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves once `server` answers /ready with 200 (a cluster node linked to its engine). */
export async function untilReady(server, timeoutMs = 15000) {
  await until(async () => (await call(server.url + "/ready")).status === 200, `${server.url} ready`, timeoutMs);
}

/** Writes `text` to a fresh temporary file and returns its path. */
export async function tempFile(name, text) {
  const { mkdtemp, writeFile } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const dir = await mkdtemp(path.join(tmpdir(), "switchboard-"));
  const file = path.join(dir, name);
  await writeFile(file, text);
  return file;
}

/** A JSON HTTP call: resolves to { status, body } (body parsed when it is JSON). */
export async function call(url, { method = "GET", body, key, headers = {} } = {}) {
  const response = await fetch(url, {
    method,
    headers: {
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: response.status, body: parsed, headers: response.headers };
}

/** A process's resident memory (KiB), threads and open files, from /proc; null once it is gone. */
export function processFigures(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (name) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1]);
    return { rss_kib: field("VmRSS"), threads: field("Threads"), open_files: readdirSync(`/proc/${pid}/fd`).length };
  } catch {
    return null;
  }
}

/** The value of an unlabelled (or `namespace="/"`) metric in a /metrics text; NaN if absent. */
export function metricValue(metrics, name) {
  return Number(new RegExp(`^${name}(?:\\{namespace="/"\\})? (\\d+)`, "m").exec(metrics)?.[1] ?? NaN);
}
