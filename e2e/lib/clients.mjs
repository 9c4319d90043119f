// The official socket.io-client as the e2e tests open it: a new Manager per socket (forceNew),
// WebSocket only unless a test says otherwise, and every socket kept in one list so that a
// test file can disconnect all it opened.
import { io } from "socket.io-client";
import { once } from "./server.mjs";

/** Opens clients with `defaults` (options a call may override); `sockets` lists them all. */
export function clientPool(defaults = {}) {
  const sockets = [];
  const connect = (url, opts = {}) => {
    const socket = io(url, { forceNew: true, transports: ["websocket"], ...defaults, ...opts });
    sockets.push(socket);
    return socket;
  };
  const connected = async (url, opts) => {
    const socket = connect(url, opts);
    await once(socket, "connect");
    return socket;
  };
  /** Disconnects every socket opened so far and forgets them. */
  const disconnectAll = () => sockets.splice(0).forEach((s) => s.disconnect());
  return { sockets, connect, connected, disconnectAll };
}
