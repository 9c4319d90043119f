// Starts a real Redis Cluster for the sharded tests: redis-server processes with
// --cluster-enabled on loopback ports, joined by `redis-cli --cluster create` (three masters,
// each with a replica so that a master can fail over).
import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, sleep } from "./server.mjs";

const run = promisify(execFile);

/** Runs redis-cli against one server; resolves with its output. */
export async function redisCli(port, ...args) {
  const { stdout } = await run("redis-cli", ["-p", String(port), ...args], { timeout: 10000 });
  return stdout.trim();
}

async function answers(port) {
  try {
    return (await redisCli(port, "PING")) === "PONG";
  } catch {
    return false;
  }
}

/**
 * Starts `masters` masters with `replicas` replicas each; resolves once every server says the
 * cluster is ok. `nodeTimeout` (ms) is how long a master is unreachable before its replica
 * takes over.
 */
export async function startRedisCluster({ masters = 3, replicas = 1, nodeTimeout = 1000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-redis-cluster-"));
  const servers = new Map();
  const start = (port) => {
    const child = spawn(
      "redis-server",
      [
        "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`),
        "--cluster-node-timeout", String(nodeTimeout), "--dir", dir,
        // A replica takes over however long ago it last heard its master.
        "--cluster-replica-validity-factor", "0",
      ],
      { stdio: "ignore" },
    );
    servers.set(port, child);
    return child;
  };
  const ports = [];
  for (let i = 0; i < masters * (1 + replicas); i++) {
    const port = await freePort();
    ports.push(port);
    start(port);
  }
  for (const port of ports) {
    const deadline = Date.now() + 10000;
    while (!(await answers(port))) {
      if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
      await sleep(50);
    }
  }
  await run(
    "redis-cli",
    ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", String(replicas), "--cluster-yes"],
    { timeout: 30000 },
  );
  const cluster = {
    ports,
    dir,
    /** The seeds Switchboard is given: every server, comma-separated. */
    url: ports.map((p) => `redis://127.0.0.1:${p}`).join(","),
    rootNodes: ports.map((p) => ({ url: `redis://127.0.0.1:${p}` })),
    /** Resolves once every running server sees all slots served. */
    async ready(timeout = 20000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        let ok = true;
        for (const [port, child] of servers) {
          if (child.exitCode !== null || child.signalCode !== null) continue;
          const info = await redisCli(port, "CLUSTER", "INFO").catch(() => "");
          if (!info.includes("cluster_state:ok")) ok = false;
          // A replica has its master's data (it can take over).
          const replication = await redisCli(port, "INFO", "replication").catch(() => "");
          if (replication.includes("role:slave") && !replication.includes("master_link_status:up")) ok = false;
        }
        if (ok) return;
        if (Date.now() > deadline) throw new Error("the Redis Cluster is not ok");
        await sleep(100);
      }
    },
    /** The port of the master serving `key`'s slot (as a running server sees it). */
    async masterOf(key) {
      for (const [port, child] of servers) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        const slot = Number(await redisCli(port, "CLUSTER", "KEYSLOT", key));
        // One line per server: id, ip:port@bus, flags, master, ..., then its slot ranges.
        for (const line of (await redisCli(port, "CLUSTER", "NODES")).split("\n")) {
          const fields = line.split(" ");
          const flags = fields[2] ?? "";
          if (!flags.includes("master") || flags.includes("fail")) continue;
          for (const range of fields.slice(8)) {
            const [first, last = first] = range.split("-").map(Number);
            if (first <= slot && slot <= last) return Number(fields[1].split("@")[0].split(":")[1]);
          }
        }
      }
      throw new Error(`no master serves ${key}`);
    },
    /**
     * Moves `key`'s slot to the master on `toPort`, as `redis-cli --cluster reshard` does for
     * a slot with no keys: IMPORTING on the target, MIGRATING on the source, then the new owner
     * told to every master.
     */
    async migrateSlot(key, toPort) {
      const fromPort = await cluster.masterOf(key);
      const slot = await redisCli(fromPort, "CLUSTER", "KEYSLOT", key);
      const fromId = await redisCli(fromPort, "CLUSTER", "MYID");
      const toId = await redisCli(toPort, "CLUSTER", "MYID");
      await redisCli(toPort, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromId);
      await redisCli(fromPort, "CLUSTER", "SETSLOT", slot, "MIGRATING", toId);
      for (const port of [toPort, fromPort]) await redisCli(port, "CLUSTER", "SETSLOT", slot, "NODE", toId);
      for (const [port, child] of servers) {
        if (port === toPort || port === fromPort || child.exitCode !== null || child.signalCode !== null) continue;
        await redisCli(port, "CLUSTER", "SETSLOT", slot, "NODE", toId).catch(() => {});
      }
      return { fromPort, toPort, slot: Number(slot) };
    },
    /** The ports of the masters now. */
    async masters() {
      const ports = new Set();
      for (const [port, child] of servers) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        for (const line of (await redisCli(port, "CLUSTER", "NODES")).split("\n")) {
          const fields = line.split(" ");
          if ((fields[2] ?? "").includes("master") && !fields[2].includes("fail") && fields.length > 8) {
            ports.add(Number(fields[1].split("@")[0].split(":")[1]));
          }
        }
        return [...ports];
      }
      return [];
    },
    /** Kills one server at once (SIGKILL). */
    kill(port) {
      servers.get(port)?.kill("SIGKILL");
    },
    async stop() {
      await Promise.all(
        [...servers.values()].map(
          (child) =>
            new Promise((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once("exit", resolve);
              child.kill("SIGKILL");
            }),
        ),
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.ready();
  return cluster;
}
