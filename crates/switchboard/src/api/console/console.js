// The console page: connect to a namespace, watch the status, join and leave rooms (through the
// HTTP API), emit events and see acks, log what arrives, list a room's users and plot the
// server's figures. Works against any Socket.IO v5 server for the connection, emit and log; rooms,
// presence and figures use Switchboard's HTTP API.
"use strict";

const $ = (id) => document.getElementById(id);
let client = null;

$("url").value = location.origin;
fetch("/").then((r) => r.json()).then((info) => { if (info.path) $("path").value = info.path; }).catch(() => {});

function setStatus(state, reason) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = reason ? `${state}: ${reason}` : state;
  $("connect").disabled = state === "connected" || state === "connecting";
  $("disconnect").disabled = !(state === "connected" || state === "connecting");
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("log").prepend(item);
  while ($("log").children.length > 300) $("log").lastChild.remove();
}

$("connect").onclick = () => {
  const token = $("token").value.trim();
  client = new SioClient({
    url: $("url").value.trim(),
    path: $("path").value.trim(),
    namespace: $("namespace").value.trim() || "/",
    auth: token ? { token } : null,
    transport: $("transport").value,
  });
  client.on("state", setStatus);
  client.on("connect", () => { $("socket-id").textContent = client.id; log(`connected as ${client.id}`); });
  client.on("connect_error", (data) => log(`connect_error ${JSON.stringify(data)}`));
  client.on("disconnect", (reason) => { $("socket-id").textContent = "–"; log(`disconnected: ${reason}`); });
  client.on("event", (event, args, reply, offset) => {
    log(`${event} ${JSON.stringify(args)}${offset ? `  (offset ${offset})` : ""}`);
    if (reply) reply();
  });
  client.connect();
};

$("disconnect").onclick = () => client && client.disconnect();

function api(path, body) {
  const headers = { "content-type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  return fetch(path, { method: body ? "POST" : "GET", headers, body: body ? JSON.stringify(body) : undefined })
    .then(async (r) => ({ ok: r.ok, body: await r.json().catch(() => ({})) }));
}

async function membership(op) {
  const room = $("room").value.trim();
  if (!client || !client.id || !room) return ($("rooms-result").textContent = "connect and name a room first");
  const namespace = $("namespace").value.trim() || "/";
  const res = await api(`/api/${op}`, { namespace, sockets: [client.id], rooms: [room] });
  $("rooms-result").textContent = res.ok ? `${op === "join" ? "joined" : "left"} ${room}` : `refused: ${res.body.error ? res.body.error.message : "error"}`;
}
$("join").onclick = () => membership("join");
$("leave").onclick = () => membership("leave");

$("emit").onclick = async () => {
  if (!client || client.state !== "connected") return ($("emit-result").textContent = "not connected");
  let args;
  try {
    args = JSON.parse($("args").value || "[]");
    if (!Array.isArray(args)) args = [args];
  } catch (e) {
    return ($("emit-result").textContent = `arguments are not JSON: ${e.message}`);
  }
  const event = $("event").value.trim();
  if ($("ack").checked) {
    $("emit-result").textContent = "waiting for the ack…";
    try {
      $("emit-result").textContent = `ack: ${JSON.stringify(await client.emitWithAck(event, args))}`;
    } catch (e) {
      $("emit-result").textContent = e.message;
    }
  } else {
    client.emit(event, ...args);
    $("emit-result").textContent = `sent ${event}`;
  }
};

$("presence-refresh").onclick = async () => {
  const room = $("presence-room").value.trim();
  const namespace = encodeURIComponent($("namespace").value.trim() || "/");
  const res = await api(`/api/presence/${encodeURIComponent(room)}?namespace=${namespace}`);
  const list = $("presence");
  list.replaceChildren();
  for (const user of res.ok ? res.body.users : []) {
    const item = document.createElement("li");
    item.textContent = `${user.user} (${user.connections})`;
    list.append(item);
  }
  if (res.ok && res.body.anonymous) {
    const item = document.createElement("li");
    item.textContent = `${res.body.anonymous} anonymous`;
    list.append(item);
  }
};

// Server figures every 2 s, with a small chart of messages per second out.
const rates = [];
let last = null;
async function refreshStats() {
  const res = await api("/api/stats").catch(() => null);
  if (!res || !res.ok) return;
  const s = res.body;
  $("stats-sockets").textContent = s.sockets;
  $("stats-users").textContent = s.users ?? 0;
  $("stats-rooms").textContent = s.rooms;
  if (last) {
    const rate = Math.max(0, (s.packets_out - last.packets_out) / ((Date.now() - last.at) / 1000));
    $("stats-rate").textContent = rate.toFixed(1);
    rates.push(rate);
    if (rates.length > 60) rates.shift();
    drawChart();
  }
  last = { packets_out: s.packets_out, at: Date.now() };
}
function drawChart() {
  const canvas = $("chart");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...rates);
  g.strokeStyle = "#1f77b4";
  g.beginPath();
  rates.forEach((r, i) => {
    const x = (i / 59) * (canvas.width - 4) + 2;
    const y = canvas.height - 4 - (r / max) * (canvas.height - 8);
    i ? g.lineTo(x, y) : g.moveTo(x, y);
  });
  g.stroke();
  g.fillStyle = "#555";
  g.fillText(`${max.toFixed(0)} msg/s`, 4, 12);
}
refreshStats();
setInterval(refreshStats, 2000);
