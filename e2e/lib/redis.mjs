// Starts a real redis-server for the cluster tests.
import { spawn } from "node:child_process";
import { createConnection } from "node:net";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort, sleep } from "./server.mjs";

/** The environment of a Switchboard node on the streams adapter of the Redis at `url`, with
 * more `SWITCHBOARD_*` settings. */
export const streamsNodeEnv = (url, settings = {}) => ({
  SWITCHBOARD_CLUSTER_REDIS_URL: url,
  SWITCHBOARD_CLUSTER_ADAPTER: "streams",
  ...settings,
});

/** Starts redis-server on `port` (a free one by default); resolves once it answers PING. With
 * `persist`, it keeps its data in an append-only file synced on every write, so `restart()`
 * brings it back with everything it had taken; without, a restart comes back empty. */
export async function startRedis(port, { persist = false } = {}) {
  port = port ?? (await freePort());
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", ""];
  let dir = null;
  if (persist) {
    dir = mkdtempSync(path.join(tmpdir(), "switchboard-redis-"));
    args.push("--appendonly", "yes", "--appendfsync", "always", "--dir", dir);
  } else {
    args.push("--appendonly", "no");
  }
  let child = await spawnRedis(port, args);
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", resolve);
      child.kill("SIGKILL");
    });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** Stops (SIGSTOP) or resumes (SIGCONT) the server: it keeps its connections but answers nothing. */
    freeze: (frozen) => child.kill(frozen ? "SIGSTOP" : "SIGCONT"),
    /** Kills it (SIGKILL) and starts it again on the same port, after `downMs`; with `empty`,
     * without what it persisted (a Redis whose disk was lost, or that never persisted). */
    restart: async (downMs = 0, { empty = false } = {}) => {
      await stop();
      if (empty && dir) {
        for (const name of readdirSync(dir)) rmSync(path.join(dir, name), { recursive: true, force: true });
      }
      await sleep(downMs);
      child = await spawnRedis(port, args);
    },
    stop,
  };
}

async function spawnRedis(port, args) {
  const child = spawn("redis-server", args, { stdio: "ignore" });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const probe = createConnection({ port, host: "127.0.0.1" }, () => probe.write("PING\r\n"));
      probe.once("data", (d) => {
        probe.destroy();
        resolve(d.toString().startsWith("+PONG"));
      });
      probe.once("error", () => resolve(false));
    });
    if (up) return child;
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await sleep(50);
  }
}
