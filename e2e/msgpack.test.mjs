// Clients built with socket.io-msgpack-parser, as a team moving its app over runs them: the
// official socket.io-client with `parser: require("socket.io-msgpack-parser")`, on WebSocket and
// on polling, beside default-parser clients in the same rooms. Rooms, acks both ways, binary
// both ways, a broadcast reaching both kinds of client, errors, and recovery of missed events.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { io } from "socket.io-client";
import { startServer, once, sleep, call, tempFile } from "./lib/server.mjs";

const require = createRequire(import.meta.url);
const msgpackParser = require("socket.io-msgpack-parser");
const KEY = "msgpack-key-123456";

const CONFIG = `
[api]
keys = ["${KEY}"]

[recovery]
clients = "on_request"

[auth]
secret = "msgpack-secret-0123456789abcdef"
required = false

[[namespaces]]
name = "/"

[[namespaces.events]]
on = "join"
expect = ["string"]
actions = [{ join = "{arg}" }, { ack = { joined = "{arg}" } }]

[[namespaces.events]]
on = "say"
expect = [{ room = "string", text = "string" }]
actions = [{ emit = "said", to = "room", room = "{arg.room}", data = { from = "{socket.id}", text = "{arg.text}" } }]

[[namespaces.events]]
on = "file"
actions = [{ emit = "file", to = "all", data = "{arg}" }]

[[namespaces]]
name = "/private"
auth = "required"
`;

describe("socket.io-msgpack-parser clients", () => {
  let server;
  const clients = [];
  const connect = (opts = {}) => {
    const socket = io(server.url, { forceNew: true, reconnection: false, ...opts });
    clients.push(socket);
    return socket;
  };
  const api = (route, body) => call(server.url + route, { method: "POST", body, key: KEY });

  before(async () => {
    server = await startServer("switchboard", { args: ["--config", await tempFile("msgpack.toml", CONFIG)] });
  });
  after(async () => {
    clients.forEach((s) => s.disconnect());
    await server.stop();
  });

  test("over WebSocket and over polling: connect, join with an ack, and room messages shared with JSON clients", async () => {
    const packed = connect({ parser: msgpackParser, transports: ["websocket"] });
    const packedPolling = connect({ parser: msgpackParser, transports: ["polling"] });
    const json = connect({ transports: ["websocket"] });
    await Promise.all([packed, packedPolling, json].map((s) => once(s, "connect")));
    for (const s of [packed, packedPolling, json]) {
      assert.deepEqual(await s.timeout(3000).emitWithAck("join", "kitchen"), { joined: "kitchen" });
    }
    const heard = [packed, packedPolling, json].map((s) => once(s, "said"));
    packed.emit("say", { room: "kitchen", text: "from msgpack" });
    for (const [data] of await Promise.all(heard)) assert.deepEqual(data, { from: packed.id, text: "from msgpack" });
    const again = [packed, packedPolling, json].map((s) => once(s, "said"));
    json.emit("say", { room: "kitchen", text: "from json" });
    for (const [data] of await Promise.all(again)) assert.deepEqual(data, { from: json.id, text: "from json" });
    const metrics = (await call(`${server.url}/metrics`)).body;
    assert.match(metrics, /switchboard_sessions_by_parser_total\{parser="msgpack"\} [2-9]/);
    assert.match(metrics, /switchboard_sessions_by_parser_total\{parser="json"\} [1-9]/);
  });

  test("binary both ways: a msgpack client's bytes reach JSON clients as binary, and the other way", async () => {
    const packed = connect({ parser: msgpackParser, transports: ["websocket"] });
    const packedPolling = connect({ parser: msgpackParser, transports: ["polling"] });
    const json = connect({ transports: ["websocket"] });
    await Promise.all([packed, packedPolling, json].map((s) => once(s, "connect")));
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    let heard = [packed, packedPolling, json].map((s) => once(s, "file"));
    packed.emit("file", { name: "a.bin", body: bytes });
    for (const [data] of await Promise.all(heard)) {
      assert.equal(data.name, "a.bin");
      assert.deepEqual(Buffer.from(data.body), bytes);
    }
    heard = [packed, packedPolling, json].map((s) => once(s, "file"));
    json.emit("file", { name: "b.bin", body: bytes });
    for (const [data] of await Promise.all(heard)) {
      assert.equal(data.name, "b.bin");
      assert.deepEqual(Buffer.from(data.body), bytes);
    }
  });

  test("the server's emit with ack and the HTTP API reach a msgpack client", async () => {
    const packed = connect({ parser: msgpackParser, transports: ["websocket"] });
    await once(packed, "connect");
    const got = once(packed, "order");
    const res = await api("/api/emit", { event: "order", sockets: [packed.id], data: { id: 7, items: [1, 2.5, null, true] } });
    assert.equal(res.status, 200);
    assert.deepEqual((await got)[0], { id: 7, items: [1, 2.5, null, true] });
  });

  test("a refused namespace arrives as connect_error with its message", async () => {
    const packed = io(`${server.url}/private`, { forceNew: true, reconnection: false, parser: msgpackParser, transports: ["websocket"] });
    clients.push(packed);
    const [error] = await once(packed, "connect_error");
    assert.match(error.message, /token|auth|unauthorized/i);
  });

  test("a msgpack client that asks recovers its missed events, in its own format", async () => {
    const packed = connect({
      parser: msgpackParser,
      transports: ["websocket"],
      auth: { recover: true },
      reconnection: true,
      reconnectionDelay: 300,
      reconnectionDelayMax: 300,
    });
    await once(packed, "connect");
    const got = [];
    packed.on("news", (n, offset) => got.push([n, typeof offset]));
    const id = packed.id;
    await api("/api/emit", { event: "news", sockets: [id], data: 0 });
    await sleep(100);
    const cut = once(packed, "disconnect");
    await api("/api/disconnect", { sockets: [id], close_transport: true });
    await cut;
    for (let n = 1; n <= 3; n++) await api("/api/emit", { event: "news", sockets: [id], data: n });
    await once(packed, "connect", 5000);
    assert.equal(packed.recovered, true);
    await sleep(200);
    assert.deepEqual(got, [[0, "string"], [1, "string"], [2, "string"], [3, "string"]]);
    packed.disconnect();
  });

  test("a malformed msgpack packet closes only that session", async () => {
    const WebSocket = (await import("ws")).default;
    const bystander = connect({ parser: msgpackParser, transports: ["websocket"] });
    await once(bystander, "connect");
    const raw = new WebSocket(`${server.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    await once(raw, "open");
    raw.send(Buffer.from([0x93, 0x01, 0x02, 0x03])); // an array, not a packet map
    const [code] = await once(raw, "close");
    assert.equal(typeof code, "number");
    assert.equal(bystander.connected, true);
    assert.deepEqual(await bystander.timeout(3000).emitWithAck("join", "still-here"), { joined: "still-here" });
  });
});
