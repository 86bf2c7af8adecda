/**
 * Faults of the HTTP source against a real local server: a body cut mid-way, too large, too
 * large to validate, not JSON or missing a field; 401/403/500 answers; a server that hangs; a
 * redirect to another host; an abort mid-body. Every request carries a bearer token (and some a
 * URL password and a query token) that must appear in no error. Leftovers: the sink's folder, the
 * spool files in the OS temporary folder (and in a spoolDir), and spool files still open.
 */
import { mkdtemp, readdir, readlink, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe } from "vitest";
import { z } from "zod";
import { backup, filesystemSink, httpBundleSource, httpSource, type Source } from "../../src/index.js";
import { json, startHttpServer, type TestHttpServer } from "../support/http.js";
import { failureOf, fault, filesUnder } from "./harness.js";

const TOKEN = "tok-9c41f0e2b7d35a68e1f4";
const PASSWORD = "pw-5e7d1c9a3b2f4e60";
const QUERY_TOKEN = "qt-0a8b7c6d5e4f3a2b1c0d";
const HASH = "cdd01ef066bc6cf2";
const fast = { retryDelayMs: 5, maxRetryDelayMs: 20 };
const auth = { Authorization: `Bearer ${TOKEN}` };

let server: TestHttpServer;
let other: TestHttpServer;
const roots: string[] = [];

/** A JSON document of about `bytes` bytes, streamed with backpressure, never held whole. */
async function streamJson(res: import("node:http").ServerResponse, bytes: number, head: string, tail = "]}") {
  res.writeHead(200, { "Content-Type": "application/json" });
  const filler = `"${"x".repeat(64 * 1024 - 3)}",`;
  if (!res.write(head)) await new Promise((r) => res.once("drain", r));
  for (let sent = 0; sent < bytes && !res.destroyed; sent += filler.length) {
    if (!res.write(filler)) await new Promise((r) => res.once("drain", r));
  }
  res.end(`"end"${tail}`);
}

beforeAll(async () => {
  other = await startHttpServer({
    "/landing": (req, res) =>
      req.headers.authorization
        ? json(res, 200, { constitutional_hash: HASH })
        : json(res, 401, { error: "no token" }),
  });
  server = await startHttpServer({
    "/cut": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "100000" });
      res.write(`{"constitutional_hash":"${HASH}","pad":"`);
      setTimeout(() => res.destroy(), 10);
    },
    "/cut-chunked": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.write(`{"constitutional_hash":"${HASH}","pad":"${"y".repeat(300_000)}`);
      setTimeout(() => res.destroy(), 10);
    },
    "/big-declared": (_req, res) => json(res, 200, { constitutional_hash: HASH, blob: "z".repeat(2 << 20) }),
    "/endless": (_req, res) => streamJson(res, 1 << 30, `{"constitutional_hash":"${HASH}","data":[`),
    "/huge": (_req, res) => streamJson(res, 4 << 20, `{"constitutional_hash":"${HASH}","data":[`),
    "/huge-no-hash": (_req, res) => streamJson(res, 4 << 20, `{"data":[`),
    "/huge-invalid": (_req, res) =>
      streamJson(res, 4 << 20, `{"constitutional_hash":"${HASH}","data":[`, "]"),
    "/not-json": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end(`{"constitutional_hash": ${TOKEN}`); // echoes the token, unquoted: never in an error
    },
    "/missing-field": (req, res) => json(res, 200, { policies: [], seen: req.headers.authorization }),
    "/wrong-hash": (req, res) => json(res, 200, { constitutional_hash: req.headers.authorization }),
    "/401": (req, res) => json(res, 401, { error: `bad token ${req.headers.authorization}` }),
    "/403": (req, res) => json(res, 403, { error: `forbidden for ${req.headers.authorization}` }),
    "/500": (req, res) => json(res, 500, { error: `broken, token was ${req.headers.authorization}` }),
    "/hang": () => undefined, // never answers
    "/hang-body": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.write('{"constitutional_hash":');
    },
    "/redirect": (_req, res) => {
      res.writeHead(302, { Location: `${other.url}/landing?token=${QUERY_TOKEN}` }).end();
    },
  });
});
afterAll(async () => {
  await server?.close();
  await other?.close();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "stowage-faults-http-"));
  roots.push(dir);
  return dir;
}

/** Spool folders in the OS temporary folder, and spool files this process still has open. */
async function spoolLeftovers(spoolDir?: string): Promise<string[]> {
  const inTmp = (await readdir(tmpdir()))
    .filter((f) => f.startsWith("stowage-http-"))
    .map((f) => `tmp: ${f}`);
  const inDir = spoolDir ? (await readdir(spoolDir)).map((f) => `spoolDir: ${f}`) : [];
  const open: string[] = [];
  for (const fd of await readdir("/proc/self/fd").catch(() => [] as string[])) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => "");
    if (target.includes("stowage-http-")) open.push(`open fd ${fd}: ${target}`);
  }
  return [...inTmp, ...inDir, ...open];
}

/** Backs up `source` into a fresh folder; returns the fault check with every leftover. */
async function run(source: Source, code: string, extra: { spoolDir?: string; signal?: AbortSignal } = {}) {
  const root = await freshDir();
  const error = await failureOf(
    backup({
      job: "svc",
      source,
      sink: filesystemSink({ root }),
      ...(extra.signal ? { signal: extra.signal } : {}),
    }),
  );
  // A spool is closed on the way out of the failed backup; give a close in flight one turn.
  await new Promise((r) => setImmediate(r));
  return {
    error,
    code,
    leftovers: [...(await filesUnder(root)), ...(await spoolLeftovers(extra.spoolDir))],
    secrets: [TOKEN, PASSWORD, QUERY_TOKEN],
  };
}

const src = (path: string, options: Record<string, unknown> = {}) =>
  httpSource({ url: `${server.url}${path}`, headers: auth, retries: 1, ...fast, ...options });

describe("http source", () => {
  fault("http", "server cuts the body mid-way (Content-Length)", () => run(src("/cut"), "SOURCE_FAILED"));
  fault("http", "server cuts the body mid-way (chunked)", () => run(src("/cut-chunked"), "SOURCE_FAILED"));
  fault("http", "body past maxBytes (declared)", () =>
    run(src("/big-declared", { maxBytes: 1 << 20 }), "SOURCE_FAILED"),
  );
  fault("http", "body past maxBytes (endless, chunked), spooled in a spoolDir", async () => {
    const spoolDir = await freshDir();
    return run(src("/endless", { maxBytes: 8 << 20, spoolDir }), "SOURCE_FAILED", { spoolDir });
  });
  fault("http", "huge body past maxParseBytes with a zod schema", () =>
    run(
      src("/huge", {
        maxParseBytes: 1 << 20,
        expect: { schema: z.object({ constitutional_hash: z.string() }) },
      }),
      "SOURCE_VALIDATION_FAILED",
    ),
  );
  fault("http", "huge body past maxParseBytes missing a required field", () =>
    run(
      src("/huge-no-hash", {
        maxParseBytes: 1 << 20,
        expect: { requiredFields: { constitutional_hash: HASH } },
      }),
      "SOURCE_VALIDATION_FAILED",
    ),
  );
  fault("http", "huge body past maxParseBytes that is not valid JSON", () =>
    run(
      src("/huge-invalid", {
        maxParseBytes: 1 << 20,
        expect: { requiredFields: { constitutional_hash: HASH } },
      }),
      "SOURCE_VALIDATION_FAILED",
    ),
  );
  fault("http", "invalid JSON that echoes the token", () =>
    run(src("/not-json"), "SOURCE_VALIDATION_FAILED"),
  );
  fault("http", "a required field missing", () =>
    run(
      src("/missing-field", { expect: { requiredFields: { constitutional_hash: HASH } } }),
      "SOURCE_VALIDATION_FAILED",
    ),
  );
  fault("http", "a required field with the token as its value", () =>
    run(
      src("/wrong-hash", { expect: { requiredFields: { constitutional_hash: HASH } } }),
      "SOURCE_VALIDATION_FAILED",
    ),
  );
  for (const status of [401, 403, 500]) {
    fault("http", `server answers ${status} (bearer token, URL password, query token)`, () =>
      run(
        httpSource({
          url: `http://stowage:${PASSWORD}@${server.url.slice("http://".length)}/${status}?token=${QUERY_TOKEN}`,
          headers: { "X-Api-Key": TOKEN },
          retries: 1,
          ...fast,
        }),
        "SOURCE_VALIDATION_FAILED",
      ),
    );
  }
  fault("http", "server never answers: timeout", () =>
    run(src("/hang", { timeoutMs: 150, retries: 1 }), "SOURCE_FAILED"),
  );
  fault("http", "server stalls mid-body: timeout", () =>
    run(src("/hang-body", { timeoutMs: 150, retries: 0 }), "SOURCE_FAILED"),
  );
  fault("http", "redirect to another host, not followed (the default)", async () => {
    const before = other.hits("/landing").length;
    const check = await run(src("/redirect"), "SOURCE_VALIDATION_FAILED");
    const reached = other.hits("/landing").length - before;
    return {
      ...check,
      leftovers: [...check.leftovers, ...(reached > 0 ? ["the other host was asked"] : [])],
    };
  });
  fault("http", "redirect to another host, followed: the token is dropped", async () => {
    const before = other.hits("/landing").length;
    const check = await run(src("/redirect", { followRedirects: true }), "SOURCE_VALIDATION_FAILED");
    const leaked = other
      .hits("/landing")
      .slice(before)
      .filter((r) => JSON.stringify(r.headers).includes(TOKEN));
    return {
      ...check,
      leftovers: [...check.leftovers, ...leaked.map(() => "the token reached the other host")],
    };
  });
  fault("http", "abort mid-body names the job and the URL", async () => {
    const controller = new AbortController();
    const seen = server.hits("/hang-body").length;
    const watching = (async () => {
      while (server.hits("/hang-body").length === seen) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 30));
      controller.abort();
    })();
    const check = await run(src(`/hang-body?token=${QUERY_TOKEN}`, { timeoutMs: 10_000 }), "ABORTED", {
      signal: controller.signal,
    });
    await watching;
    const details = (check.error as { details?: { url?: string } }).details;
    const named = details?.url?.startsWith(`${server.url}/hang-body`) ?? false;
    return {
      ...check,
      leftovers: [...check.leftovers, ...(named ? [] : ["the error does not name the URL"])],
    };
  });
  fault("http", "bundle: one service's body too large, all-or-nothing", () =>
    run(
      httpBundleSource({
        services: [
          { name: "ok", url: `${server.url}/huge`, headers: auth, ...fast },
          { name: "big", url: `${server.url}/endless`, headers: auth, maxBytes: 4 << 20, ...fast },
        ],
      }),
      "SOURCE_FAILED",
    ),
  );
});
