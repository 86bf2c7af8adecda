/**
 * Faults of the Kubernetes adapters against the Kubernetes API test server, behind a small proxy
 * that can answer a request itself (401, 410, 409, 422), cut the connection half-way through a
 * page, send a page that is not JSON, or rewrite a page's `continue` token. Every request carries
 * a bearer token; it must appear in no error. Backups check the sink; restores check their spool.
 */
import { randomBytes } from "node:crypto";
import { readdir } from "node:fs/promises";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe } from "vitest";
import { aes256gcm, backup, gzip, type Manifest, memorySink, restore } from "../../src/index.js";
import { kubernetesSource, restoreKubernetes } from "../../src/sources/kubernetes.js";
import { KubeApiServer } from "../support/kube-api-server.js";
import { kubeConfigFor } from "../support/kube-fixtures.js";
import { failureOf, fault, listing } from "./harness.js";

const TOKEN = `bearer-${randomBytes(12).toString("hex")}`;
const SECRET_VALUE = `db-password-${randomBytes(8).toString("hex")}`;
const hexKey = randomBytes(32).toString("hex");
const secrets = [TOKEN, SECRET_VALUE, hexKey];

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
}
/** What the proxy does with one request: pass it on (undefined), or one of the faults. */
type Action =
  | undefined
  | { answer: number; reason: string }
  | "cut"
  | "not-json"
  | { rewrite: (page: Record<string, unknown>) => void };

let server: KubeApiServer;
let decide: (seen: Seen) => Action = () => undefined;
let proxy: Server;
let proxyUrl: string;

/** Forwards to the test server, unless `decide` picks a fault for the request. */
async function handle(req: IncomingMessage, res: import("node:http").ServerResponse): Promise<void> {
  const url = new URL(req.url ?? "/", "http://proxy");
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const action = decide({ method: req.method ?? "GET", path: url.pathname, query: url.searchParams });
  if (action && typeof action === "object" && "answer" in action) {
    res.writeHead(action.answer, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `injected ${action.reason}`,
        reason: action.reason,
        code: action.answer,
      }),
    );
    return;
  }
  const upstream = await new Promise<{ status: number; type: string; body: Buffer }>((resolve, reject) => {
    const target = new URL(server.url);
    const out = httpRequest(
      {
        hostname: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
      },
      (response) => {
        const parts: Buffer[] = [];
        response.on("data", (c: Buffer) => parts.push(c));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 502,
            type: String(response.headers["content-type"] ?? "application/json"),
            body: Buffer.concat(parts),
          }),
        );
        response.on("error", reject);
      },
    );
    out.on("error", reject);
    out.end(Buffer.concat(chunks));
  });
  if (action === "cut") {
    res.writeHead(upstream.status, { "content-type": upstream.type, "content-length": upstream.body.length });
    res.write(upstream.body.subarray(0, upstream.body.length >> 1));
    setTimeout(() => res.socket?.destroy(), 10);
    return;
  }
  if (action === "not-json") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(`${upstream.body.subarray(0, upstream.body.length >> 1).toString("utf8")}<html>proxy error`);
    return;
  }
  let body = upstream.body;
  if (action && "rewrite" in action && upstream.status === 200) {
    const page = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
    action.rewrite(page);
    body = Buffer.from(JSON.stringify(page));
  }
  res.writeHead(upstream.status, { "content-type": upstream.type });
  res.end(body);
}

beforeAll(async () => {
  server = await KubeApiServer.start({ token: TOKEN });
  proxy = createServer((req, res) => {
    handle(req, res).catch(() => res.socket?.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", () => resolve()));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
afterAll(async () => {
  proxy?.closeAllConnections();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  await server?.close();
});

/** A fresh "shop": six ConfigMaps and a Secret. */
function seed(): void {
  server.wipe();
  server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
  for (let i = 0; i < 6; i++) {
    server.put({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: `cm-${i}`, namespace: "shop" },
      data: { index: String(i) },
    });
  }
  server.put({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name: "db", namespace: "shop" },
    type: "Opaque",
    data: { password: Buffer.from(SECRET_VALUE).toString("base64") },
  });
}

const isList = (s: Seen, resource: string) =>
  s.method === "GET" && s.path.endsWith(`/namespaces/shop/${resource}`) && s.query.has("limit");

/** A backup of "shop" through the proxy (or `url`) with `decide` choosing the faults. */
async function backupFault(
  code: string,
  choose: (seen: Seen) => Action,
  extra: { url?: string; token?: string; strict?: boolean; signal?: AbortSignal; httpStatus?: number } = {},
) {
  seed();
  decide = choose;
  const sink = memorySink();
  try {
    const error = await failureOf(
      backup({
        job: "k8s",
        source: kubernetesSource({
          kubeConfig: kubeConfigFor(extra.url ?? proxyUrl, extra.token ?? TOKEN),
          namespaces: ["shop"],
          includeSecrets: true,
          pageSize: 2,
          ...(extra.strict ? { strict: true } : {}),
        }),
        transforms: [gzip(), aes256gcm({ key: hexKey })],
        sink,
        ...(extra.signal ? { signal: extra.signal } : {}),
      }),
    );
    // The run must fail for the injected reason, not another one.
    const status = (error as { details?: { httpStatus?: unknown } } | undefined)?.details?.httpStatus;
    const other =
      extra.httpStatus !== undefined && status !== extra.httpStatus ? [`failed with ${status}`] : [];
    return { error, code, leftovers: [...(await listing(sink)), ...other], secrets };
  } finally {
    decide = () => undefined;
  }
}

const spools = async () =>
  (await readdir(tmpdir())).filter((n) => n.startsWith("stowage-k8s-restore-")).sort();

describe("kubernetes source", () => {
  fault("kubernetes", "API server down", async () => {
    const dead = await KubeApiServer.start();
    await dead.close();
    return backupFault("SOURCE_FAILED", () => undefined, { url: dead.url });
  });

  fault("kubernetes", "wrong bearer token (401 on discovery)", async () =>
    backupFault("SOURCE_FAILED", () => undefined, {
      url: server.url,
      token: `wrong-${TOKEN}`,
      httpStatus: 401,
    }),
  );

  fault("kubernetes", "403 on a list, strict", async () => {
    const check = await backupFault(
      "SOURCE_FAILED",
      (s) => (isList(s, "secrets") ? { answer: 403, reason: "Forbidden" } : undefined),
      { strict: true, httpStatus: 403 },
    );
    return check;
  });

  fault("kubernetes", "401 on the second page of a list (token revoked mid-run)", async () =>
    backupFault(
      "SOURCE_FAILED",
      (s) =>
        isList(s, "configmaps") && s.query.has("continue")
          ? { answer: 401, reason: "Unauthorized" }
          : undefined,
      { httpStatus: 401 },
    ),
  );

  for (const page of ["first", "second"] as const) {
    fault("kubernetes", `connection cut half-way through the ${page} page of a list`, async () =>
      backupFault("SOURCE_FAILED", (s) =>
        isList(s, "configmaps") && s.query.has("continue") === (page === "second") ? "cut" : undefined,
      ),
    );
  }

  fault("kubernetes", "a page of a list that is not JSON", async () =>
    backupFault(
      "SOURCE_FAILED",
      (s) => (isList(s, "configmaps") && s.query.has("continue") ? "not-json" : undefined),
      { httpStatus: 200 },
    ),
  );

  fault("kubernetes", "a continue token the server does not accept (400)", async () =>
    backupFault(
      "SOURCE_FAILED",
      (s) =>
        isList(s, "configmaps") && !s.query.has("continue")
          ? {
              rewrite: (p) => {
                (p.metadata as Record<string, unknown>).continue = "not-a-token!";
              },
            }
          : undefined,
      { httpStatus: 400 },
    ),
  );

  fault("kubernetes", "410 Gone for an expired continue token", async () =>
    backupFault(
      "SOURCE_FAILED",
      (s) =>
        isList(s, "configmaps") && s.query.has("continue") ? { answer: 410, reason: "Expired" } : undefined,
      { httpStatus: 410 },
    ),
  );

  fault("kubernetes", "abort while listing", async () => {
    const controller = new AbortController();
    let lists = 0;
    return backupFault(
      "ABORTED",
      (s) => {
        if (s.query.has("limit") && ++lists === 3) controller.abort();
        return undefined;
      },
      { signal: controller.signal },
    );
  });
});

describe("restoreKubernetes", () => {
  let sink: ReturnType<typeof memorySink>;
  let manifest: Manifest;
  beforeAll(async () => {
    seed();
    sink = memorySink();
    manifest = await backup({
      job: "k8s",
      source: kubernetesSource({
        kubeConfig: kubeConfigFor(server.url, TOKEN),
        namespaces: ["shop"],
        includeSecrets: true,
      }),
      transforms: [gzip(), aes256gcm({ key: hexKey })],
      sink,
    });
  });

  for (const [status, reason] of [
    [409, "Conflict"],
    [422, "Invalid"],
  ] as const) {
    fault("kubernetes", `an apply answered ${status} ${reason}, strict`, async () => {
      server.wipe();
      const before = await spools();
      decide = (s) =>
        s.method === "PATCH" && s.path.includes("/configmaps/cm-3") ? { answer: status, reason } : undefined;
      try {
        const error = await failureOf(async () =>
          restoreKubernetes({
            stream: await restore({ sink, manifest, keys: [{ key: hexKey }] }),
            kubeConfig: kubeConfigFor(proxyUrl, TOKEN),
            strict: true,
          }),
        );
        const after = await spools();
        return {
          error,
          code: "RESTORE_FAILED",
          leftovers: after.filter((s) => !before.includes(s)).map((s) => `spool ${s}`),
          secrets,
        };
      } finally {
        decide = () => undefined;
      }
    });
  }

  fault("kubernetes", "the API server goes away during a restore", async () => {
    server.wipe();
    const before = await spools();
    let patches = 0;
    decide = (s) => (s.method === "PATCH" && ++patches === 2 ? "cut" : undefined);
    try {
      const error = await failureOf(async () =>
        restoreKubernetes({
          stream: await restore({ sink, manifest, keys: [{ key: hexKey }] }),
          kubeConfig: kubeConfigFor(proxyUrl, TOKEN),
          strict: true,
        }),
      );
      const after = await spools();
      return {
        error,
        code: "RESTORE_FAILED",
        leftovers: after.filter((s) => !before.includes(s)).map((s) => `spool ${s}`),
        secrets,
      };
    } finally {
      decide = () => undefined;
    }
  });
});
