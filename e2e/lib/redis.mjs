// Starts a real redis-server for the cluster tests.
import { spawn } from "node:child_process";
import { createConnection } from "node:net";
import { freePort, sleep } from "./server.mjs";

/** The environment of a Switchboard node on the streams adapter of the Redis at `url`, with
 * more `SWITCHBOARD_*` settings. */
export const streamsNodeEnv = (url, settings = {}) => ({
  SWITCHBOARD_CLUSTER_REDIS_URL: url,
  SWITCHBOARD_CLUSTER_ADAPTER: "streams",
  ...settings,
});

/** Starts redis-server on `port` (a free one by default); resolves once it answers PING. */
export async function startRedis(port) {
  port = port ?? (await freePort());
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
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
    if (up) break;
    if (Date.now() > deadline) throw new Error("redis-server did not start");
    await sleep(50);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    /** Stops (SIGSTOP) or resumes (SIGCONT) the server: it keeps its connections but answers nothing. */
    freeze: (frozen) => child.kill(frozen ? "SIGSTOP" : "SIGCONT"),
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", resolve);
        child.kill("SIGKILL");
      }),
  };
}
