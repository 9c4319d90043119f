// What plugs into what operators run, checked with the real tools: the Prometheus alert rules
// (packaging/prometheus) with Debian's promtool (syntax and unit tests), the Grafana dashboard
// (packaging/grafana) against the metric names a running node exports, Debian's prometheus
// scraping a node and answering a query for its connections, and the Kubernetes manifests
// (packaging/kubernetes) against the Kubernetes schemas (kubernetes-models' validators), the
// config they carry loaded by `switchboard check-config`.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { parseAllDocuments } from "yaml";
import { startServer, freePort, once, sleep, call, ROOT, RELEASE } from "./lib/server.mjs";
import { startRedis } from "./lib/redis.mjs";

const PACKAGING = path.join(ROOT, "packaging");
const clients = [];
after(() => clients.splice(0).forEach((s) => s.disconnect()));

function client(url, opts = {}) {
  const socket = io(url, { forceNew: true, transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 200, ...opts });
  clients.push(socket);
  return socket;
}

test("the alert rules pass promtool's check and their unit tests", () => {
  const dir = path.join(PACKAGING, "prometheus");
  const check = spawnSync("promtool", ["check", "rules", "alerts.yml"], { cwd: dir, encoding: "utf8" });
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /SUCCESS: \d+ rules found/);
  const unit = spawnSync("promtool", ["test", "rules", "alerts.test.yml"], { cwd: dir, encoding: "utf8" });
  assert.equal(unit.status, 0, unit.stdout + unit.stderr);
  assert.match(unit.stdout, /SUCCESS/);
});

/** The metric names of a /metrics text: every sample's name. */
function exported(text) {
  return new Set(
    text
      .split("\n")
      .filter((line) => line && !line.startsWith("#"))
      .map((line) => line.split(/[{ ]/)[0]),
  );
}

/** The switchboard_* metric names an expression reads. */
function namesIn(expr) {
  return [...expr.matchAll(/\bswitchboard_[a-z0-9_]+/g)].map((m) => m[0]);
}

test("every metric the dashboard and the alerts read is one a node exports", async () => {
  // A node with every part that has metrics in use: a cluster (real Redis), the connect proxy
  // and webhooks (a real HTTP backend), recovery, and traffic through all of them.
  const redis = await startRedis();
  const backend = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(req.url === "/connect" ? JSON.stringify({ accept: true }) : "{}");
    });
  });
  const backendPort = await freePort();
  await new Promise((resolve) => backend.listen(backendPort, "127.0.0.1", resolve));
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-observability-"));
  const config = path.join(dir, "node.toml");
  writeFileSync(
    config,
    `[recovery]\nclients = "all"\n\n[proxy.connect]\nurl = "http://127.0.0.1:${backendPort}/connect"\n\n` +
      `[webhooks]\nurl = "http://127.0.0.1:${backendPort}/hooks"\nsecret = "0123456789abcdef0123"\nbatch_wait = "10ms"\n`,
  );
  const node = await startServer("switchboard", {
    args: ["serve", "--config", config],
    env: { SWITCHBOARD_CLUSTER_REDIS_URL: redis.url },
  });
  try {
    const socket = client(node.url);
    await once(socket, "connect");
    await call(node.url + "/api/emit", { method: "POST", body: { event: "news", data: 1 } });
    // Back with its session: a recovery attempt.
    socket.io.engine.close();
    await once(socket, "connect");
    await sleep(300);
    const names = exported((await call(node.url + "/metrics")).body);
    const dashboard = JSON.parse(readFileSync(path.join(PACKAGING, "grafana", "switchboard.json"), "utf8"));
    const expressions = dashboard.panels.flatMap((panel) => panel.targets.map((t) => t.expr));
    assert.ok(expressions.length >= 20, "the dashboard has its panels");
    const alerts = parseAllDocuments(readFileSync(path.join(PACKAGING, "prometheus", "alerts.yml"), "utf8"))[0].toJSON();
    expressions.push(...alerts.groups.flatMap((group) => group.rules.map((rule) => rule.expr)));
    const unknown = new Set();
    for (const expr of expressions) {
      for (const name of namesIn(expr)) if (!names.has(name)) unknown.add(name);
    }
    assert.deepEqual([...unknown], [], `names the node does not export (it exports ${[...names].filter((n) => n.startsWith("switchboard_")).length})`);
  } finally {
    await node.stop();
    await new Promise((resolve) => backend.close(resolve));
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("Prometheus scrapes a node with the alert rules loaded, and a query answers its connections", async () => {
  const node = await startServer("switchboard");
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-prometheus-"));
  const port = await freePort();
  writeFileSync(
    path.join(dir, "prometheus.yml"),
    `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - ${path.join(PACKAGING, "prometheus", "alerts.yml")}\n` +
      `scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: ["127.0.0.1:${node.port}"]\n`,
  );
  const prometheus = spawn(
    "prometheus",
    [`--config.file=${path.join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${path.join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: "ignore" },
  );
  try {
    for (let i = 0; i < 3; i++) await once(client(node.url), "connect");
    const query = `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent('sum(switchboard_connections{job="switchboard"})')}`;
    let value;
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const answer = await call(query).catch(() => null);
      value = answer?.body?.data?.result?.[0]?.value?.[1];
      if (value === "3") break;
      await sleep(250);
    }
    assert.equal(value, "3", "Prometheus reads the node's three connections");
    const rules = (await call(`http://127.0.0.1:${port}/api/v1/rules`)).body;
    const loaded = rules.data.groups.flatMap((g) => g.rules.map((r) => r.name));
    assert.ok(loaded.includes("SwitchboardClusterLinkDown") && loaded.length >= 10, `the alert rules loaded: ${loaded}`);
    const health = rules.data.groups.flatMap((g) => g.rules.map((r) => r.health));
    assert.ok(health.every((h) => h !== "err"), "every rule evaluates");
  } finally {
    prometheus.kill("SIGTERM");
    await new Promise((resolve) => (prometheus.exitCode !== null ? resolve() : prometheus.once("exit", resolve)));
    await node.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

const MODELS = {
  "v1/ConfigMap": "kubernetes-models/v1/ConfigMap",
  "v1/Service": "kubernetes-models/v1/Service",
  "apps/v1/Deployment": "kubernetes-models/apps/v1/Deployment",
  "policy/v1/PodDisruptionBudget": "kubernetes-models/policy/v1/PodDisruptionBudget",
};

test("the Kubernetes manifests validate against the Kubernetes schemas, and the config they carry loads", async () => {
  const dir = path.join(PACKAGING, "kubernetes");
  const documents = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")) {
    for (const doc of parseAllDocuments(readFileSync(path.join(dir, file), "utf8"))) {
      assert.deepEqual(doc.errors, [], `${file} is YAML`);
      documents.push({ file, object: doc.toJSON() });
    }
  }
  const kustomization = parseAllDocuments(readFileSync(path.join(dir, "kustomization.yaml"), "utf8"))[0].toJSON();
  assert.deepEqual(
    [...kustomization.resources].sort(),
    readdirSync(dir).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort(),
    "kustomization.yaml lists every manifest",
  );
  for (const { file, object } of documents) {
    const model = MODELS[`${object.apiVersion}/${object.kind}`];
    assert.ok(model, `${file}: ${object.apiVersion} ${object.kind} has a schema here`);
    const { [object.kind]: Kind } = await import(model);
    assert.doesNotThrow(() => new Kind(object).validate(), `${file}: ${object.kind} ${object.metadata.name}`);
  }
  // A manifest that breaks the schema is refused (the check can fail).
  const { Deployment } = await import(MODELS["apps/v1/Deployment"]);
  assert.throws(() => new Deployment({ metadata: { name: "x" }, spec: { replicas: "three" } }).validate());

  const deployment = documents.find((d) => d.object.kind === "Deployment" && d.object.metadata.name === "switchboard").object;
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  assert.equal(container.readinessProbe.httpGet.path, "/ready");
  assert.equal(container.livenessProbe.httpGet.path, "/health");
  const configMap = documents.find((d) => d.object.kind === "ConfigMap").object;
  const toml = configMap.data["switchboard.toml"];
  const seconds = (key) => Number(new RegExp(`^${key} = "(\\d+)s"`, "m").exec(toml)[1]);
  assert.ok(pod.terminationGracePeriodSeconds > seconds("drain_period") + seconds("shutdown_timeout"), "the grace period covers the drain and the flush");
  const scratch = mkdtempSync(path.join(tmpdir(), "switchboard-k8s-"));
  try {
    writeFileSync(path.join(scratch, "switchboard.toml"), toml);
    const checked = spawnSync(path.join(RELEASE, "switchboard"), ["check-config", path.join(scratch, "switchboard.toml")], { encoding: "utf8" });
    assert.equal(checked.status, 0, checked.stdout + checked.stderr);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
