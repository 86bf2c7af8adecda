import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** Date.now() when the request arrived. */
  at: number;
  /** Resolves when the server side of the connection has closed. */
  closed: Promise<void>;
}

/** Answers one request; `hit` counts requests to this path so far, from 1. */
export type Handler = (
  req: IncomingMessage,
  res: ServerResponse,
  context: { hit: number; body: Buffer },
) => void | Promise<void>;

export interface TestHttpServer {
  /** `http://127.0.0.1:PORT` */
  url: string;
  requests: RecordedRequest[];
  /** Requests to one path. */
  hits(path: string): RecordedRequest[];
  route(path: string, handler: Handler): void;
  close(): Promise<void>;
}

/**
 * A real HTTP server on 127.0.0.1 and a free port, answering from a table of routes (by path,
 * query ignored) and recording every request. Unknown paths answer 404 JSON. Rejects when it
 * cannot listen, so a test using it fails rather than skips.
 */
export async function startHttpServer(routes: Record<string, Handler> = {}): Promise<TestHttpServer> {
  const table = new Map(Object.entries(routes));
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const closed = new Promise<void>((resolve) => res.once("close", () => resolve()));
    requests.push({ method: req.method ?? "", path, headers: req.headers, body, at: Date.now(), closed });
    const handler = table.get(path);
    const hit = requests.filter((r) => r.path === path).length;
    try {
      if (handler) await handler(req, res, { hit, body });
      else json(res, 404, { error: "not found" });
    } catch {
      res.destroy();
    }
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    hits: (path) => requests.filter((r) => r.path === path),
    route: (path, handler) => table.set(path, handler),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Sends `value` as JSON with a Content-Length. */
export function json(
  res: ServerResponse,
  status: number,
  value: unknown,
  headers: Record<string, string> = {},
): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": body.length, ...headers });
  res.end(body);
}
