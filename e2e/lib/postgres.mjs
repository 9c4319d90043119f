// Starts a real PostgreSQL (Debian's `postgresql` package) for the cluster tests: a fresh data
// directory under the system's temporary directory, owned by an ordinary user (`postgres` when
// the tests run as root, which PostgreSQL refuses to be), listening on a free loopback port.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, chmodSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConnection } from "node:net";
import { freePort, sleep } from "./server.mjs";

function binaries() {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) throw new Error("PostgreSQL is not installed (Debian's postgresql package)");
  const version = readdirSync(root).sort((a, b) => Number(b) - Number(a))[0];
  return join(root, version, "bin");
}

/** As the ordinary user the server runs as. */
function asOwner(command, args) {
  if (process.getuid?.() === 0) return ["runuser", ["-u", "postgres", "--", command, ...args]];
  return [command, args];
}

/** The server's process id, from its data directory (none once it has stopped). */
function postmasterPid(data) {
  try {
    const pid = Number(readFileSync(join(data, "postmaster.pid"), "utf8").split("\n")[0]);
    return pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

/** Starts PostgreSQL; resolves once it takes connections. */
export async function startPostgres() {
  const bin = binaries();
  const dir = mkdtempSync(join(tmpdir(), "switchboard-pg-"));
  chmodSync(dir, 0o777);
  const data = join(dir, "data");
  if (process.getuid?.() === 0) execFileSync("chown", ["postgres", dir]);
  const [initdb, initArgs] = asOwner(join(bin, "initdb"), ["-D", data, "-U", "switchboard", "--auth=trust", "-E", "UTF8", "--no-sync"]);
  execFileSync(initdb, initArgs, { stdio: "ignore" });
  const port = await freePort();
  const [postgres, args] = asOwner(join(bin, "postgres"), [
    "-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1",
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
  ]);
  /** Starts the server on the data directory; resolves once it takes connections. */
  const launch = async () => {
    const child = spawn(postgres, args, { stdio: "ignore" });
    const deadline = Date.now() + 15000;
    for (;;) {
      const up = await new Promise((resolve) => {
        const probe = createConnection({ port, host: "127.0.0.1" }, () => {
          probe.destroy();
          resolve(true);
        });
        probe.once("error", () => resolve(false));
      });
      if (up) break;
      if (Date.now() > deadline) throw new Error("PostgreSQL did not start");
      await sleep(100);
    }
    await sleep(300);
    return child;
  };
  /** Stops the server (a fast shutdown: its connections are closed); resolves once it exited. */
  const halt = (child) =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      // Killed if it has not stopped in 5 s; the timer ends with it (a server started again on
      // the same data directory must not be the one killed).
      const stubborn = setTimeout(() => {
        const left = postmasterPid(data);
        if (left) process.kill(left, "SIGKILL");
        child.kill("SIGKILL");
      }, 5000);
      stubborn.unref();
      child.once("exit", () => {
        clearTimeout(stubborn);
        resolve();
      });
      // SIGINT to the server itself (runuser does not pass it on): a fast shutdown.
      const pid = postmasterPid(data);
      if (pid) process.kill(pid, "SIGINT");
      else child.kill("SIGINT");
    });
  let child = await launch();
  return {
    port,
    url: `postgres://switchboard@127.0.0.1:${port}/postgres`,
    config: { host: "127.0.0.1", port, user: "switchboard", database: "postgres" },
    /** Stops the server for `downMs` and starts it again on the same data and port. */
    restart: async (downMs) => {
      await halt(child);
      await sleep(downMs);
      child = await launch();
    },
    stop: async () => {
      await halt(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
