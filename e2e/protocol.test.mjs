// The protocol core as the official socket.io-client sees it, against examples/embedded.rs:
// each transport, upgrade, multiplexed namespaces, rooms, acks and binary both ways,
// server-side disconnect, reconnection after a dropped transport, and 200 clients at once.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, once, sleep } from "./lib/server.mjs";

let server;
const clients = [];

function connect(nsp = "/", opts = {}) {
  const socket = io(server.url + nsp, { forceNew: true, reconnectionDelay: 100, ...opts });
  clients.push(socket);
  return socket;
}

/** Emits with an ack and resolves with every argument of the server's reply. */
function ack(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(5000).emit(event, ...args, (err, ...reply) => (err ? reject(err) : resolve(reply)));
  });
}

async function connected(nsp, opts) {
  const socket = connect(nsp, opts);
  await once(socket, "connect");
  return socket;
}

before(async () => {
  server = await startServer("examples/embedded");
});

after(async () => {
  for (const socket of clients) socket.disconnect();
  await server.stop();
});

for (const transports of [["polling"], ["websocket"]]) {
  test(`connects and exchanges events over ${transports[0]} only`, async () => {
    const socket = await connected("/", { transports });
    assert.equal(socket.io.engine.transport.name, transports[0]);
    const reply = await ack(socket, "echo", 1, "two", { three: [true] });
    assert.deepEqual(reply, [1, "two", { three: [true] }]);
    socket.disconnect();
  });
}

test("the default connection starts on polling and upgrades to websocket", async () => {
  const socket = connect("/");
  let firstTransport;
  const upgraded = new Promise((resolve) => {
    socket.io.once("open", () => {
      firstTransport = socket.io.engine.transport.name;
      socket.io.engine.once("upgrade", (transport) => resolve(transport.name));
    });
  });
  await once(socket, "connect");
  assert.equal(await upgraded, "websocket");
  assert.equal(firstTransport, "polling");
  assert.equal(socket.io.engine.transport.name, "websocket");
  assert.deepEqual(await ack(socket, "echo", "after upgrade"), ["after upgrade"]);
  socket.disconnect();
});

test("several namespaces share one connection", async () => {
  const main = connect("/", { forceNew: false });
  const chat = connect("/chat", { forceNew: false });
  await Promise.all([once(main, "connect"), once(chat, "connect")]);
  assert.equal(main.io, chat.io, "one manager, one Engine.IO session");
  assert.notEqual(main.id, chat.id);
  assert.deepEqual(await ack(chat, "echo", "chat"), ["chat"]);
  assert.deepEqual(await ack(main, "echo", "main"), ["main"]);
  chat.disconnect();
  assert.deepEqual(await ack(main, "echo", "still"), ["still"]);
  main.disconnect();
});

test("an unknown namespace is refused with connect_error", async () => {
  const socket = connect("/nope");
  const [error] = await once(socket, "connect_error");
  assert.equal(error.message, "Invalid namespace");
  socket.disconnect();
});

test("rooms: only members receive, each once, and leaving stops delivery", async () => {
  const [a, b, outsider] = await Promise.all([connected("/"), connected("/"), connected("/")]);
  const roomsOfA = await ack(a, "join", "team");
  assert.deepEqual(roomsOfA, [[a.id, "team"].sort()]);
  await ack(b, "join", "team");
  await ack(b, "join", "team-2");

  const got = { a: [], b: [], outsider: [] };
  a.on("news", (n) => got.a.push(n));
  b.on("news", (n) => got.b.push(n));
  outsider.on("news", (n) => got.outsider.push(n));
  outsider.emit("to-room", "team", "news", 1);
  await sleep(200);
  assert.deepEqual(got, { a: [1], b: [1], outsider: [] });

  await ack(b, "leave", "team");
  outsider.emit("to-room", "team", "news", 2);
  await sleep(200);
  assert.deepEqual(got, { a: [1, 2], b: [1], outsider: [] });

  a.emit("to-others", "news", 3);
  await sleep(200);
  assert.deepEqual(got, { a: [1, 2], b: [1, 3], outsider: [3] });
  for (const s of [a, b, outsider]) s.disconnect();
});

test("acks in both directions", async () => {
  const socket = await connected("/");
  assert.deepEqual(await ack(socket, "echo", { deep: { x: [1, 2] } }), [
    { deep: { x: [1, 2] } },
  ]);
  socket.on("question", (q, callback) => callback(`you asked: ${q}`, 42));
  socket.emit("ask", "why?");
  const [answer] = await once(socket, "answer");
  assert.deepEqual(answer, { ok: true, args: ["you asked: why?", 42] });
  socket.disconnect();
});

test("binary payloads in both directions, over both transports", async () => {
  for (const transports of [["polling"], ["websocket"]]) {
    const socket = await connected("/", { transports });
    const bytes = Buffer.from([0, 1, 2, 250, 255]);
    const [echoed, label] = await ack(socket, "echo", bytes, "label");
    assert.ok(Buffer.isBuffer(echoed), "binary comes back as binary");
    assert.deepEqual([...echoed], [...bytes]);
    assert.equal(label, "label");
    socket.disconnect();
  }
  const [sender, receiver] = await Promise.all([connected("/"), connected("/")]);
  const received = once(receiver, "file");
  sender.emit("to-others", "file", { name: "a.bin", data: Buffer.from("hello") });
  const [file] = await received;
  assert.equal(file.name, "a.bin");
  assert.equal(Buffer.from(file.data).toString(), "hello");
  sender.disconnect();
  receiver.disconnect();
});

test("a server-side disconnect is final for the client", async () => {
  const socket = await connected("/");
  socket.emit("kick-me");
  const [reason] = await once(socket, "disconnect");
  assert.equal(reason, "io server disconnect");
  await sleep(500);
  assert.equal(socket.connected, false, "no automatic reconnection after io server disconnect");
});

test("the client reconnects after the server drops its transport", async () => {
  const socket = await connected("/", { transports: ["websocket"] });
  const firstId = socket.id;
  socket.emit("drop-me");
  const [reason] = await once(socket, "disconnect");
  assert.equal(reason, "transport close");
  await once(socket, "connect", 5000);
  assert.notEqual(socket.id, firstId);
  assert.deepEqual(await ack(socket, "echo", "back"), ["back"]);
  socket.disconnect();
});

test("200 clients at once all connect and all receive a room broadcast", async () => {
  const many = await Promise.all(
    Array.from({ length: 200 }, (_, i) => connected("/", i % 2 ? {} : { transports: ["websocket"] })),
  );
  await Promise.all(many.map((s) => ack(s, "join", "crowd")));
  const deliveries = many.map((s) => once(s, "hello", 5000));
  many[0].emit("to-room", "crowd", "hello", "everyone");
  const results = await Promise.all(deliveries);
  assert.equal(results.length, 200);
  assert.ok(results.every(([msg]) => msg === "everyone"));
  for (const s of many) s.disconnect();
});
