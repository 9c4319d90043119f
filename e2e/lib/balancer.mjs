// A plain round-robin load balancer for the cluster tests (no sticky sessions).
import { createServer as createTcpServer, connect } from "node:net";
import { freePort } from "./server.mjs";

/** A round-robin TCP proxy: each new connection goes to the next port; a port that refuses is
 * skipped (what a load balancer with health checks does once a node is gone). */
export async function roundRobinProxy(ports) {
  let next = 0;
  const open = new Set();
  const server = createTcpServer((client) => {
    open.add(client);
    client.on("close", () => open.delete(client));
    const tryPort = (left) => {
      const port = ports[next++ % ports.length];
      const upstream = connect({ port, host: "127.0.0.1" });
      upstream.once("connect", () => {
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.once("error", () => {
        if (left > 1 && !upstream.bytesRead && client.bytesRead === 0) return tryPort(left - 1);
        client.destroy();
      });
      upstream.on("close", () => client.destroy());
      client.on("close", () => upstream.destroy());
      client.on("error", () => upstream.destroy());
    };
    tryPort(ports.length);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      open.forEach((c) => c.destroy());
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
