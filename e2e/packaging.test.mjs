// Packaging as an operations team meets it. With a container runtime, the image from
// packaging/Dockerfile is built and run on the orders example: it turns healthy, runs as a
// non-root user, and serves the official client. Without one (this rig has no Docker daemon),
// the release binary is built the way the recipe builds it (scripts/release), unpacked from its
// tarball, checked to be statically linked and to match its checksum, and run the same way.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { ROOT, freePort, once, sleep, call } from "./lib/server.mjs";

const dockerWorks = spawnSync("docker", ["info"], { stdio: "ignore" }).status === 0;

async function waitHealthy(url, deadlineMs = 20000) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${url}/health`)).ok) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`${url} never became healthy`);
}

/** The orders system, end to end: a screen connects, the backend's POST reaches it. */
async function ordersWork(url) {
  const screen = io(url, { forceNew: true, reconnection: false, transports: ["websocket"] });
  try {
    const [greeting] = await once(screen, "connection_established", 5000);
    assert.equal(greeting.sid, screen.id);
    const created = once(screen, "order_created");
    const res = await call(`${url}/broadcast/order-created`, { method: "POST", body: { order: { id: 5, table: 2 } } });
    assert.equal(res.status, 200);
    assert.deepEqual((await created)[0], { order: { id: 5, table: 2 } });
  } finally {
    screen.disconnect();
  }
}

test("the container image: healthy, non-root, serving the orders example", { skip: !dockerWorks && "no container runtime here (docker info fails)" }, async () => {
  execFileSync("docker", ["build", "-f", "packaging/Dockerfile", "-t", "switchboard-e2e", "."], { cwd: ROOT, stdio: "inherit" });
  const user = execFileSync("docker", ["image", "inspect", "--format", "{{.Config.User}}", "switchboard-e2e"], { encoding: "utf8" }).trim();
  assert.equal(user, "65532:65532");
  const port = await freePort();
  const id = execFileSync("docker", ["run", "-d", "--rm", "-p", `127.0.0.1:${port}:4000`, "switchboard-e2e", "serve", "--config", "/examples/orders.toml"], { encoding: "utf8" }).trim();
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitHealthy(url);
    await ordersWork(url);
    let health = "";
    for (let i = 0; i < 60 && health !== "healthy"; i++) {
      await sleep(500);
      health = execFileSync("docker", ["inspect", "--format", "{{.State.Health.Status}}", id], { encoding: "utf8" }).trim();
    }
    assert.equal(health, "healthy");
  } finally {
    spawnSync("docker", ["stop", id], { stdio: "ignore" });
  }
});

test("the release binary, built as the recipe builds it: static, checksummed, serving the orders example", { skip: dockerWorks && "the image test covers it" }, async () => {
  execFileSync(path.join(ROOT, "scripts", "release"), ["--install-deps", "x86_64"], { cwd: ROOT, stdio: "inherit" });
  const dist = path.join(ROOT, "dist");
  const tarball = readdirSync(dist).find((f) => f.endsWith("-x86_64-unknown-linux-musl.tar.gz"));
  assert.ok(tarball, "a tarball for x86_64");
  const [sum] = readFileSync(path.join(dist, `${tarball}.sha256`), "utf8").split(/\s+/);
  assert.equal(createHash("sha256").update(readFileSync(path.join(dist, tarball))).digest("hex"), sum);

  const unpacked = mkdtempSync(path.join(tmpdir(), "switchboard-release-"));
  execFileSync("tar", ["-xzf", path.join(dist, tarball), "-C", unpacked]);
  const home = path.join(unpacked, tarball.replace(".tar.gz", ""));
  const binary = path.join(home, "switchboard");
  // No program interpreter: nothing to load at run time, it runs on any Linux of its arch.
  const ldd = spawnSync("ldd", [binary], { encoding: "utf8" });
  assert.match(`${ldd.stdout}${ldd.stderr}`, /not a dynamic executable|statically linked/);
  assert.match(execFileSync(binary, ["--version"], { encoding: "utf8" }), /^switchboard \d+\.\d+\.\d+/);

  const port = await freePort();
  const child = spawn(binary, ["serve", "--config", path.join(home, "examples", "orders.toml")], {
    env: { ...process.env, PORT: String(port), RUST_LOG: "warn" },
    stdio: "ignore",
  });
  try {
    const url = `http://127.0.0.1:${port}`;
    await waitHealthy(url);
    // The container's health check is the binary itself.
    const health = spawnSync(binary, ["health", "--url", `${url}/health`], { encoding: "utf8" });
    assert.equal(health.status, 0, health.stderr);
    await ordersWork(url);
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit", 15000);
  }
  const down = spawnSync(binary, ["health", "--url", `http://127.0.0.1:${port}/health`, "--timeout", "1s"], { encoding: "utf8" });
  assert.equal(down.status, 1, "a server that is not there is unhealthy");
});

test("the systemd unit runs the binary's own commands with a config the binary accepts", () => {
  const unit = readFileSync(path.join(ROOT, "packaging", "switchboard.service"), "utf8");
  const exec = unit.match(/^ExecStart=(\S+) (.+)$/m);
  assert.ok(exec, "an ExecStart line");
  assert.equal(exec[1], "/usr/local/bin/switchboard");
  assert.match(exec[2], /^serve --config \/etc\/switchboard\/switchboard\.toml$/);
  assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m, "reload is SIGHUP (the TLS reload)");
  assert.match(unit, /^LimitNOFILE=\d{6,}$/m, "room for many connections");
  const verify = spawnSync("systemd-analyze", ["verify", path.join(ROOT, "packaging", "switchboard.service")], { encoding: "utf8" });
  if (verify.error === undefined) {
    // Only complaints about the binary's path (not installed here) are acceptable.
    const problems = `${verify.stdout}${verify.stderr}`.split("\n").filter((l) => l.trim() && !/switchboard(\.toml)?:? .*(No such file|not executable|is not executable)|Command .* is not executable/.test(l));
    assert.deepEqual(problems, []);
  }
});
