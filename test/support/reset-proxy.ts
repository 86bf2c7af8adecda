/**
 * A TCP proxy between a client and a server that resets connections: once `arm({ afterBytes })`
 * is called, the connection that carries the `afterBytes`-th byte from server to client (counted
 * over all connections since arming) is reset (RST) right there, and the proxy disarms, so later
 * connections pass untouched. Used between the AWS SDK and the S3 test server to cut a download
 * mid-body, as a flaky network or a load balancer would.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export interface ResetProxy {
  /** `http://127.0.0.1:<port>`: point the client here. */
  endpoint: string;
  /** Resets the connection carrying the `afterBytes`-th server byte from now on; once. */
  arm(options: { afterBytes: number }): void;
  /** How many connections were reset so far. */
  resets: number;
  close(): Promise<void>;
}

export async function startResetProxy(target: string): Promise<ResetProxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let budget: number | undefined;
  const proxy: ResetProxy = {
    endpoint: "",
    resets: 0,
    arm({ afterBytes }) {
      budget = afterBytes;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: Server = createServer((client) => {
    const upstream = connect(Number(port), hostname === "localhost" ? "127.0.0.1" : hostname);
    sockets.add(client).add(upstream);
    let cut = false;
    const cleanup = () => {
      sockets.delete(client);
      sockets.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", cleanup).on("close", cleanup);
    upstream.on("error", cleanup).on("close", cleanup);
    client.on("data", (chunk: Buffer) => {
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on("drain", () => client.resume());
    upstream.on("data", (chunk: Buffer) => {
      if (cut) return;
      if (budget !== undefined && chunk.length >= budget) {
        const head = chunk.subarray(0, budget);
        budget = undefined;
        cut = true;
        proxy.resets += 1;
        // The bytes before the cut go out, then the reset; the server side is simply closed.
        client.write(head, () => {
          client.resetAndDestroy();
          upstream.destroy();
        });
        return;
      }
      if (budget !== undefined) budget -= chunk.length;
      if (!client.write(chunk)) upstream.pause();
    });
    client.on("drain", () => upstream.resume());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  if (!address || typeof address === "string") throw new Error("reset proxy: no port");
  proxy.endpoint = `http://127.0.0.1:${address.port}`;
  return proxy;
}
