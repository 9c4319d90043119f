// WebSocket close codes as a client sees them (RFC 6455 sections 5.5.1, 7.4 and 8.1), on both
// WebSocket endpoints of the real binary: the Engine.IO transport (/socket.io/) and the plain
// endpoint (examples/online-status.toml). Raw frames from node:net where the client must break
// the protocol on purpose; the `ws` package where a well-behaved client closes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import crypto from "node:crypto";
import path from "node:path";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { startServer, once, ROOT } from "./lib/server.mjs";

let engineServer;
let plainServer;

before(async () => {
  engineServer = await startServer("switchboard");
  plainServer = await startServer("switchboard", {
    args: ["--config", path.join(ROOT, "examples/online-status.toml")],
  });
});
after(async () => {
  await engineServer.stop();
  await plainServer.stop();
});

const endpoints = () => [
  { name: "Engine.IO", port: engineServer.port, path: "/socket.io/?EIO=4&transport=websocket" },
  { name: "plain", port: plainServer.port, path: "/ws-online-status?userId=close-tester" },
];

/** A client frame: masked unless `masked` is false. */
function frame(opcode, payload = Buffer.alloc(0), { fin = true, masked = true } = {}) {
  const head = [(fin ? 0x80 : 0) | opcode];
  const length = payload.length;
  if (length < 126) head.push((masked ? 0x80 : 0) | length);
  else head.push((masked ? 0x80 : 0) | 126, length >> 8, length & 0xff);
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const mask = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]));
  return Buffer.concat([Buffer.from(head), mask, body]);
}

const closePayload = (code, reason = Buffer.alloc(0)) => {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(code);
  return Buffer.concat([head, reason]);
};

/**
 * Opens a raw WebSocket, waits for the server's first message (both endpoints greet), sends
 * `frames`, and resolves with the status code of the server's close frame (null for a close
 * with no code, "no close frame" when the connection ended without one).
 */
async function closeCodeAfter({ port, path: target }, frames) {
  const socket = net.connect(port, "127.0.0.1");
  await once(socket, "connect");
  const key = crypto.randomBytes(16).toString("base64");
  socket.write(
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  let buffer = Buffer.alloc(0);
  let upgraded = false;
  let greeted = false;
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no close frame within 5 s")), 5000);
    const done = (value) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(value);
    };
    socket.on("error", () => {});
    socket.on("close", () => done("no close frame"));
    socket.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!upgraded) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        assert.match(buffer.subarray(0, end).toString(), /^HTTP\/1\.1 101/);
        buffer = buffer.subarray(end + 4);
        upgraded = true;
      }
      // Server frames are unmasked; lengths here stay under 64 KiB.
      while (buffer.length >= 2) {
        let length = buffer[1] & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (buffer.length < 4) return;
          length = buffer.readUInt16BE(2);
          offset = 4;
        }
        if (buffer.length < offset + length) return;
        const opcode = buffer[0] & 0x0f;
        const payload = buffer.subarray(offset, offset + length);
        buffer = buffer.subarray(offset + length);
        if (opcode === 0x8) return done(payload.length >= 2 ? payload.readUInt16BE(0) : null);
        if (!greeted) {
          greeted = true;
          for (const f of frames) socket.write(f);
        }
      }
    });
  });
}

const notUtf8 = Buffer.from([0x34, 0xce, 0xba, 0xe1, 0xbd, 0xff]);

test("text that is not UTF-8 closes with 1007, in one frame or as fragments", async () => {
  for (const endpoint of endpoints()) {
    assert.equal(await closeCodeAfter(endpoint, [frame(0x1, notUtf8)]), 1007, endpoint.name);
    // The first fragment is already invalid: the server need not wait for the rest.
    const firstFragment = frame(0x1, notUtf8, { fin: false });
    assert.equal(await closeCodeAfter(endpoint, [firstFragment]), 1007, `${endpoint.name}, fragment`);
  }
});

test("the client's close code is echoed; a missing code is answered with 1000", async () => {
  for (const endpoint of endpoints()) {
    const withReason = frame(0x8, closePayload(4001, Buffer.from("going away ✓")));
    assert.equal(await closeCodeAfter(endpoint, [withReason]), 4001, endpoint.name);
    assert.equal(await closeCodeAfter(endpoint, [frame(0x8, closePayload(1001))]), 1001, endpoint.name);
    assert.equal(await closeCodeAfter(endpoint, [frame(0x8)]), 1000, endpoint.name);
  }
});

test("a close frame a peer may not send is answered with 1002 (1007 for a reason not UTF-8)", async () => {
  for (const endpoint of endpoints()) {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000]) {
      const got = await closeCodeAfter(endpoint, [frame(0x8, closePayload(code))]);
      assert.equal(got, 1002, `${endpoint.name}: close code ${code}`);
    }
    assert.equal(await closeCodeAfter(endpoint, [frame(0x8, Buffer.from([0x03]))]), 1002, "one byte");
    const badReason = frame(0x8, closePayload(1000, Buffer.from([0xce, 0xba, 0xff])));
    assert.equal(await closeCodeAfter(endpoint, [badReason]), 1007, `${endpoint.name}: reason`);
  }
});

test("protocol errors close with 1002, not 1000", async () => {
  for (const endpoint of endpoints()) {
    const unmasked = frame(0x1, Buffer.from("4hello"), { masked: false });
    assert.equal(await closeCodeAfter(endpoint, [unmasked]), 1002, `${endpoint.name}: unmasked`);
    const orphan = frame(0x0, Buffer.from("4hello"));
    assert.equal(await closeCodeAfter(endpoint, [orphan]), 1002, `${endpoint.name}: continuation`);
    const reservedOpcode = frame(0x3, Buffer.from("x"));
    assert.equal(await closeCodeAfter(endpoint, [reservedOpcode]), 1002, `${endpoint.name}: opcode`);
  }
});

test("a well-behaved client's close is echoed (ws), and Socket.IO clients are unaffected", async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${plainServer.port}/ws-online-status?userId=polite`);
  await once(ws, "message");
  ws.close(4321, "bye");
  const [code] = await once(ws, "close");
  assert.equal(code, 4321);

  const client = io(engineServer.url, { transports: ["websocket"], reconnection: false });
  await once(client, "connect");
  const reason = once(client, "disconnect");
  client.disconnect();
  assert.equal((await reason)[0], "io client disconnect");
});
