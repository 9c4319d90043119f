// TLS served by Switchboard itself, as a production deployment without a proxy in front meets it:
// the official socket.io-client on https polling, on wss, and upgrading from one to the other;
// large bursts that overrun the socket buffer arrive whole and in order; the certificate is
// reloaded on SIGHUP without dropping open connections, a broken certificate file on reload
// keeps the one in use; a plain-HTTP client on the TLS port is refused without harm; a config
// naming a missing certificate is refused at start, naming the key.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import tls from "node:tls";
import { io } from "socket.io-client";
import { startServer, once, sleep, httpsGet, tempFile, RELEASE } from "./lib/server.mjs";

const KEY = "tls-api-key-0123";
const dir = mkdtempSync(path.join(tmpdir(), "switchboard-tls-"));
const certFile = path.join(dir, "cert.pem");
const keyFile = path.join(dir, "key.pem");

/** A fresh self-signed certificate for 127.0.0.1 named `name`, written over the two files. */
function issue(name) {
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", keyFile, "-out", certFile, "-days", "2", "-subj", `/CN=${name}`,
    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
  ], { stdio: "ignore" });
  return readFileSync(certFile, "utf8");
}

/** The common name of the certificate a new TLS connection is shown. */
function presented(port, ca) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" }, () => {
      const name = socket.getPeerCertificate().subject.CN;
      socket.end();
      resolve(name);
    });
    socket.on("error", reject);
  });
}

const CONFIG = `
[tls]
cert = "${certFile}"
key = "${keyFile}"

[api]
keys = ["${KEY}"]

[[namespaces]]
name = "/"

[[namespaces.events]]
on = "message"
expect = ["string"]
actions = [{ emit = "new-message", to = "all", data = { message = "{arg}" } }, { ack = "ok" }]
`;

describe("TLS", () => {
  let server;
  let firstCa;
  const clients = [];
  const connect = (opts) => {
    const socket = io(server.url, { forceNew: true, reconnection: false, ca: trusted, ...opts });
    clients.push(socket);
    return socket;
  };
  // The certificate new connections are shown, to trust in the test's own calls.
  let trusted;
  const api = async (route, body, ca = trusted) => {
    const https = await import("node:https");
    return new Promise((resolve, reject) => {
      const request = https.request(`${server.url}${route}`, {
        method: "POST", ca, agent: false,
        headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` },
      }, (response) => {
        let text = "";
        response.on("data", (c) => (text += c));
        response.on("end", () => resolve({ status: response.statusCode, body: JSON.parse(text) }));
      });
      request.on("error", reject);
      request.end(JSON.stringify(body));
    });
  };
  const metric = async (name) => (await httpsGet(`${server.url}/metrics`, trusted)).body.split("\n").find((l) => l.startsWith(name));

  before(async () => {
    firstCa = issue("switchboard-first");
    trusted = firstCa;
    server = await startServer("switchboard", { args: ["--config", await tempFile("tls.toml", CONFIG)], ca: firstCa });
  });
  after(async () => {
    clients.forEach((s) => s.disconnect());
    await server?.stop();
  });

  test("https polling, wss, and the upgrade between them carry events both ways", async () => {
    const polling = connect({ transports: ["polling"] });
    const websocket = connect({ transports: ["websocket"] });
    const upgrading = connect({});
    const upgraded = once(upgrading.io, "open").then(() => once(upgrading.io.engine, "upgrade"));
    await Promise.all([once(polling, "connect"), once(websocket, "connect"), once(upgrading, "connect")]);
    await upgraded;
    assert.equal(upgrading.io.engine.transport.name, "websocket");
    assert.equal(polling.io.engine.transport.name, "polling");
    for (const [sender, text] of [[polling, "from polling"], [websocket, "from wss"], [upgrading, "from upgraded"]]) {
      const arrivals = [polling, websocket, upgrading].map((s) => once(s, "new-message"));
      assert.equal(await sender.timeout(3000).emitWithAck("message", text), "ok");
      for (const [data] of await Promise.all(arrivals)) assert.deepEqual(data, { message: text });
    }
    assert.match(await metric('switchboard_tls_handshakes_total{outcome="ok"}'), / [1-9]/);
  });

  test("a burst larger than the socket buffer arrives whole and in order over wss", async () => {
    const reader = connect({ transports: ["websocket"] });
    await once(reader, "connect");
    const chunk = "x".repeat(64 * 1024);
    const received = [];
    const all = new Promise((resolve) => reader.on("bulk", (n, text) => {
      received.push([n, text.length]);
      if (received.length === 100) resolve();
    }));
    // 100 × 64 KiB from the API at once: far more than a socket buffer, so most of it waits in
    // the TLS session until the client reads.
    const sends = [];
    for (let n = 0; n < 100; n++) sends.push(api("/api/emit", { event: "bulk", sockets: [reader.id], args: [n, chunk] }));
    for (const res of await Promise.all(sends)) assert.equal(res.status, 200);
    await all;
    assert.deepEqual(received.map(([n]) => n).sort((a, b) => a - b), Array.from({ length: 100 }, (_, n) => n));
    assert.ok(received.every(([, length]) => length === chunk.length), "every message whole");
    assert.equal(reader.connected, true);
  });

  test("messages from the client spanning many TLS records arrive whole, over wss and https polling", async () => {
    const websocket = connect({ transports: ["websocket"] });
    const polling = connect({ transports: ["polling"] });
    await Promise.all([once(websocket, "connect"), once(polling, "connect")]);
    // 300 KB: about twenty TLS records of 16 KiB, read by the server in many pieces.
    for (const [sender, receiver, letter] of [[websocket, polling, "w"], [polling, websocket, "p"]]) {
      const text = letter.repeat(300 * 1024);
      const arrival = once(receiver, "new-message");
      assert.equal(await sender.timeout(5000).emitWithAck("message", text), "ok");
      const [data] = await arrival;
      assert.equal(data.message.length, text.length);
      assert.equal(data.message, text);
    }
  });

  test("a TLS 1.2 client is served too", async () => {
    const https = await import("node:https");
    const get = (route) => new Promise((resolve, reject) => {
      const request = https.request(`${server.url}${route}`, { ca: trusted, agent: false, maxVersion: "TLSv1.2", minVersion: "TLSv1.2" }, (response) => {
        let text = "";
        response.on("data", (c) => (text += c));
        response.on("end", () => resolve({ status: response.statusCode, text }));
      });
      request.on("error", reject);
      request.end();
    });
    // A request over TLS 1.2 (the client allows nothing newer), then the version a handshake gets.
    const open = await get("/socket.io/?EIO=4&transport=polling");
    assert.equal(open.status, 200);
    assert.match(open.text, /^0\{"sid":/);
    const socket = tls.connect({ host: "127.0.0.1", port: new URL(server.url).port, ca: trusted, servername: "localhost", maxVersion: "TLSv1.2" });
    await once(socket, "secureConnect");
    assert.equal(socket.getProtocol(), "TLSv1.2");
    socket.end();
  });

  test("a broadcast to a large room (written by the flusher threads) reaches every wss client in order", async () => {
    const crowd = Array.from({ length: 80 }, () => connect({ transports: ["websocket"] }));
    await Promise.all(crowd.map((s) => once(s, "connect")));
    const got = crowd.map(() => []);
    crowd.forEach((s, i) => s.on("tick", (n) => got[i].push(n)));
    for (let n = 0; n < 30; n++) assert.equal((await api("/api/emit", { event: "tick", args: [n] })).status, 200);
    for (let i = 0; i < 50 && got.some((g) => g.length < 30); i++) await sleep(100);
    const expected = Array.from({ length: 30 }, (_, n) => n);
    got.forEach((g) => assert.deepEqual(g, expected));
    crowd.forEach((s) => s.disconnect());
  });

  test("SIGHUP reloads the certificate: open sockets stay, new handshakes get the new one", async () => {
    const websocket = connect({ transports: ["websocket"] });
    const polling = connect({ transports: ["polling"] });
    await Promise.all([once(websocket, "connect"), once(polling, "connect")]);
    assert.equal(await presented(server.port, firstCa), "switchboard-first");

    const secondCa = issue("switchboard-second");
    server.child.kill("SIGHUP");
    let name;
    for (let i = 0; i < 50 && name !== "switchboard-second"; i++) {
      await sleep(100);
      name = await presented(server.port, secondCa).catch(() => undefined);
    }
    assert.equal(name, "switchboard-second", "a new handshake is shown the reloaded certificate");
    trusted = secondCa;
    assert.match(await metric('switchboard_tls_reloads_total{outcome="ok"}'), / 1$/);

    // The sockets opened before the reload are still the same sockets, and still get events.
    assert.equal(websocket.connected && polling.connected, true);
    const arrivals = [once(websocket, "after-reload"), once(polling, "after-reload")];
    const res = await api("/api/emit", { event: "after-reload", data: { ok: true } });
    assert.equal(res.status, 200);
    for (const [data] of await Promise.all(arrivals)) assert.deepEqual(data, { ok: true });

    // A broken file on the next reload: counted, logged, and the second certificate stays.
    writeFileSync(certFile, "not a certificate\n");
    server.child.kill("SIGHUP");
    let failed;
    for (let i = 0; i < 50 && !failed; i++) {
      await sleep(100);
      failed = (await metric('switchboard_tls_reloads_total{outcome="failed"}'))?.endsWith(" 1");
    }
    assert.ok(failed, "the failed reload is counted");
    assert.equal(await presented(server.port, secondCa), "switchboard-second");
    assert.match(server.output.join(""), /TLS reload failed/);
  });

  test("a plain HTTP client on the TLS port is refused and counted; the server carries on", async () => {
    const plain = await fetch(`http://127.0.0.1:${server.port}/health`).then(() => "answered", () => "refused");
    assert.equal(plain, "refused");
    assert.match(await metric('switchboard_tls_handshakes_total{outcome="failed"}'), / [1-9]/);
    const socket = connect({ transports: ["websocket"] });
    await once(socket, "connect");
  });
});

test("a config naming a certificate file that does not exist is refused, naming the key", async () => {
  const config = await tempFile("bad-tls.toml", `[tls]\ncert = "/nonexistent/cert.pem"\nkey = "/nonexistent/key.pem"\n`);
  let failure;
  try {
    execFileSync(path.join(RELEASE, "switchboard"), ["check-config", config], { stdio: "pipe" });
  } catch (error) {
    failure = error;
  }
  assert.ok(failure, "check-config fails");
  assert.match(failure.stderr.toString(), /tls\.cert/);
  assert.match(failure.stderr.toString(), /cannot read \/nonexistent\/cert\.pem/);
});
