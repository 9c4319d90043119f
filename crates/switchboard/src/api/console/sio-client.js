// A small Socket.IO v5 / Engine.IO v4 client for the Switchboard console. It speaks to any
// Socket.IO v5 server (not only ours): WebSocket or HTTP long-polling, namespaces, auth payload,
// events with acks both ways, heartbeat answers. Binary attachments are shown as placeholders.
"use strict";

class SioClient {
  /**
   * @param {object} o { url, path, namespace, auth, transport: "websocket"|"polling"|"auto" }
   */
  constructor(o) {
    this.url = o.url.replace(/\/$/, "");
    this.path = o.path || "/socket.io/";
    this.namespace = o.namespace || "/";
    this.auth = o.auth || null;
    this.transport = o.transport || "auto";
    this.listeners = {};
    this.acks = new Map();
    this.nextAck = 0;
    this.state = "idle";
    this.id = null;
  }

  on(event, fn) { (this.listeners[event] ||= []).push(fn); return this; }
  fire(event, ...args) { for (const fn of this.listeners[event] || []) fn(...args); }
  setState(state, reason) { this.state = state; this.fire("state", state, reason); }

  endpoint(transport, sid) {
    const base = new URL(this.url);
    const proto = transport === "websocket" ? (base.protocol === "https:" ? "wss:" : "ws:") : base.protocol;
    let path = this.path.endsWith("/") ? this.path : this.path + "/";
    let q = `?EIO=4&transport=${transport}`;
    if (sid) q += `&sid=${encodeURIComponent(sid)}`;
    return `${proto}//${base.host}${path}${q}`;
  }

  connect() {
    this.closing = false;
    this.setState("connecting");
    if (this.transport === "polling") return this.openPolling();
    this.openWebSocket(this.transport === "auto");
  }

  openWebSocket(fallback) {
    let opened = false;
    let ws;
    try {
      ws = new WebSocket(this.endpoint("websocket"));
    } catch (e) {
      return fallback ? this.openPolling() : this.setState("error", e.message);
    }
    this.ws = ws;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (m) => this.onEnginePacket(typeof m.data === "string" ? m.data : "b");
    ws.onerror = () => {};
    ws.onclose = (e) => {
      if (!opened && fallback) return this.openPolling();
      this.onTransportClose(e.code === 1000 ? "transport close" : `transport closed (${e.code})`);
    };
    this.sendRaw = (text) => ws.readyState === 1 && ws.send(text);
    this.closeTransport = () => ws.close();
  }

  async openPolling() {
    this.ws = null;
    try {
      const r = await fetch(this.endpoint("polling") + `&t=${Date.now()}`);
      if (!r.ok) throw new Error(`handshake: HTTP ${r.status}`);
      const body = await r.text();
      this.sid = JSON.parse(body.slice(1)).sid;
      const url = () => this.endpoint("polling", this.sid) + `&t=${Date.now()}`;
      this.sendRaw = (text) => fetch(url(), { method: "POST", body: text }).catch(() => {});
      this.closeTransport = () => { this.polling = false; this.sendRaw("1"); };
      this.polling = true;
      this.onEnginePacket(body);
      (async () => {
        while (this.polling) {
          let r;
          try { r = await fetch(url()); } catch { r = null; }
          if (!r || !r.ok) { this.polling = false; this.onTransportClose(r ? `poll: HTTP ${r.status}` : "transport error"); return; }
          for (const p of (await r.text()).split("\x1e")) this.onEnginePacket(p);
        }
      })();
    } catch (e) {
      this.setState("error", e.message);
    }
  }

  onTransportClose(reason) {
    this.id = null;
    for (const [, entry] of this.acks) entry.reject(new Error("disconnected"));
    this.acks.clear();
    if (this.state !== "error" || !this.closing) this.setState(this.closing ? "disconnected" : "error", this.closing ? "closed" : reason);
    this.fire("disconnect", reason);
  }

  disconnect() {
    this.closing = true;
    if (this.sendRaw) this.sendRaw(this.nsPrefix("41"));
    if (this.closeTransport) this.closeTransport();
    this.setState("disconnected", "closed by you");
  }

  nsPrefix(head) { return this.namespace === "/" ? head : `${head}${this.namespace},`; }

  onEnginePacket(packet) {
    if (!packet) return;
    const type = packet[0];
    if (type === "0") {
      this.engine = JSON.parse(packet.slice(1));
      this.sendRaw("4" + this.nsPrefix("0") + (this.auth ? JSON.stringify(this.auth) : ""));
    } else if (type === "2") {
      this.sendRaw("3" + packet.slice(1));
    } else if (type === "4") {
      this.onSocketPacket(packet.slice(1));
    } else if (type === "1") {
      this.polling = false;
      this.onTransportClose("transport close");
    } else if (type === "b") {
      this.fire("binary", packet.length);
    }
  }

  onSocketPacket(text) {
    const type = Number(text[0]);
    let i = 1;
    if (type === 5 || type === 6) i = text.indexOf("-", i) + 1;
    let nsp = "/";
    if (text[i] === "/") {
      const comma = text.indexOf(",", i);
      nsp = comma < 0 ? text.slice(i) : text.slice(i, comma);
      i = comma < 0 ? text.length : comma + 1;
    }
    if (nsp !== this.namespace) return;
    let idText = "";
    while (i < text.length && text[i] >= "0" && text[i] <= "9") idText += text[i++];
    const data = i < text.length ? JSON.parse(text.slice(i)) : undefined;
    const ackId = idText === "" ? null : Number(idText);
    if (type === 0) {
      this.id = data.sid;
      this.pid = data.pid;
      this.setState("connected");
      this.fire("connect", data);
    } else if (type === 4) {
      this.setState("error", data && data.message ? data.message : "connect error");
      this.fire("connect_error", data);
    } else if (type === 1) {
      this.id = null;
      this.setState("disconnected", "io server disconnect");
      this.fire("disconnect", "io server disconnect");
    } else if (type === 2 || type === 5) {
      const [event, ...args] = data;
      // With connection state recovery on (a pid was given), the last argument is the offset.
      let offset = null;
      if (this.pid && args.length && typeof args[args.length - 1] === "string") offset = args.pop();
      const reply = ackId === null ? null : (...values) => this.sendRaw("4" + this.nsPrefix("3") + ackId + JSON.stringify(values));
      this.fire("event", event, args, reply, offset);
    } else if (type === 3 || type === 6) {
      const entry = this.acks.get(ackId);
      if (entry) { this.acks.delete(ackId); entry.resolve(data); }
    }
  }

  emit(event, ...args) {
    this.sendRaw("4" + this.nsPrefix("2") + JSON.stringify([event, ...args]));
  }

  emitWithAck(event, args, timeoutMs = 5000) {
    const id = this.nextAck++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.acks.delete(id); reject(new Error("ack timeout")); }, timeoutMs);
      this.acks.set(id, { resolve: (v) => { clearTimeout(timer); resolve(v); }, reject });
      this.sendRaw("4" + this.nsPrefix("2") + id + JSON.stringify([event, ...args]));
    });
  }
}

if (typeof window !== "undefined") window.SioClient = SioClient;
