import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { inspect } from "node:util";
import tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  backup,
  gzip,
  isStowageError,
  type Manifest,
  type MemorySink,
  memorySink,
  readAll,
  restore,
  type StowageError,
} from "../../src/index.js";
import { httpBundleSource, httpSource, restoreHttp } from "../../src/sources/http.js";
import { sourceConformance } from "../../src/testing.js";
import { sha } from "../support/expect-helpers.js";
import { json, startHttpServer, type TestHttpServer } from "../support/http.js";

const HASH = "cdd01ef066bc6cf2";
const STATE = { constitutional_hash: HASH, policies: [{ id: 1, rule: "allow" }], version: 7 };
const fast = { retryDelayMs: 10, maxRetryDelayMs: 50 };

let server: TestHttpServer;
beforeAll(async () => {
  server = await startHttpServer({
    "/good": (_req, res) => json(res, 200, STATE),
    "/missing-field": (_req, res) => json(res, 200, { policies: [] }),
    "/wrong-hash": (_req, res) => json(res, 200, { ...STATE, constitutional_hash: "0000000000000000" }),
    "/not-json": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" });
      res.end("{ this is not json");
    },
    "/text": (_req, res) => {
      res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
      res.end("plain state\n");
    },
    "/flaky": (_req, res, { hit }) =>
      hit === 1 ? json(res, 503, { error: "warming up" }) : json(res, 200, STATE),
    "/always-503": (_req, res) => json(res, 503, { error: "down" }),
    "/throttled": (_req, res, { hit }) =>
      hit === 1 ? json(res, 429, { error: "slow down" }, { "Retry-After": "1" }) : json(res, 200, STATE),
    "/throttled-long": (_req, res, { hit }) =>
      hit === 1
        ? json(res, 503, {}, { "Retry-After": new Date(Date.now() + 3_600_000).toUTCString() })
        : json(res, 200, STATE),
    "/missing": (_req, res) => json(res, 404, { error: "no such thing" }),
    "/slow": async (_req, res) => {
      await new Promise((r) => setTimeout(r, 1500));
      if (!res.destroyed) json(res, 200, STATE);
    },
    "/slow-body": async (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "100" });
      res.write('{"constitutional_hash":');
      await new Promise((r) => setTimeout(r, 1500));
      res.destroy();
    },
    "/big": (_req, res) => json(res, 200, { constitutional_hash: HASH, blob: "x".repeat(10_000) }),
    "/big-chunked": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json" }); // no Content-Length: chunked
      res.write(`{"constitutional_hash":"${HASH}","blob":"`);
      for (let i = 0; i < 10; i++) res.write("y".repeat(1000));
      res.end('"}');
    },
    "/cut": (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": "1000" });
      res.write('{"constitutional_hash":"cdd01ef066bc6cf2","pad":"');
      setTimeout(() => res.destroy(), 20);
    },
    "/echo-auth": (req, res) => json(res, 401, { error: `bad token ${req.headers.authorization}` }),
    "/restore": (_req, res) => {
      res.writeHead(204).end();
    },
  });
});
afterAll(async () => {
  await server?.close();
});

async function failure(promise: Promise<unknown>): Promise<StowageError> {
  try {
    await promise;
  } catch (error) {
    if (isStowageError(error)) return error;
    throw error;
  }
  throw new Error("expected the backup to fail");
}

async function runBackup(source: Parameters<typeof backup>[0]["source"], sink: MemorySink = memorySink()) {
  const manifest = await backup({ job: "svc", source, sink, transforms: [gzip()] });
  return { sink, manifest };
}

/** Backs up, expects failure, and checks the sink holds nothing: no artifact, no manifest. */
async function failedBackup(source: Parameters<typeof backup>[0]["source"]): Promise<StowageError> {
  const sink = memorySink();
  const error = await failure(backup({ job: "svc", source, sink }));
  expect([...sink.objects.keys()]).toEqual([]);
  return error;
}

async function plain(sink: MemorySink, manifest: Manifest): Promise<Buffer> {
  return readAll(await restore({ sink, manifest }));
}

describe("httpSource", () => {
  it("keeps a good response and records url, status, bytes, sha256 and attempts", async () => {
    const before = server.hits("/good").length;
    const { sink, manifest } = await runBackup(
      httpSource({
        url: `${server.url}/good`,
        headers: { "X-Constitutional-Hash": HASH },
        expect: {
          status: [200],
          contentType: "application/json",
          schema: z.object({ constitutional_hash: z.string(), policies: z.array(z.unknown()) }),
          requiredFields: { constitutional_hash: HASH, version: 7 },
        },
      }),
    );
    const served = Buffer.from(JSON.stringify(STATE));
    expect(await plain(sink, manifest)).toEqual(served);
    expect(manifest.artifact.key).toMatch(/\.json\.gz$/);
    expect(manifest.content.contentType).toBe("application/json");
    expect(manifest.source.kind).toBe("http");
    expect(manifest.source.details).toEqual({
      url: `${server.url}/good`,
      method: "GET",
      status: 200,
      bytes: served.length,
      sha256: sha(served),
      attempts: 1,
      contentType: "application/json",
    });
    const hits = server.hits("/good").slice(before);
    expect(hits).toHaveLength(1);
    expect(hits[0]!.headers["x-constitutional-hash"]).toBe(HASH);
  });

  it("keeps a non-JSON response as it came", async () => {
    const { sink, manifest } = await runBackup(httpSource({ url: `${server.url}/text` }));
    expect((await plain(sink, manifest)).toString()).toBe("plain state\n");
    expect(manifest.content.contentType).toBe("text/plain");
  });

  it("refuses a response missing a required field, naming it", async () => {
    const error = await failedBackup(
      httpSource({
        url: `${server.url}/missing-field`,
        expect: { requiredFields: { constitutional_hash: HASH } },
      }),
    );
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details.differences).toEqual([
      { expectation: "required-fields", field: "constitutional_hash", expected: HASH, problem: "missing" },
    ]);
  });

  it("refuses a response whose required field has another value, saying both", async () => {
    const error = await failedBackup(
      httpSource({
        url: `${server.url}/wrong-hash`,
        expect: { requiredFields: { constitutional_hash: HASH } },
      }),
    );
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details.differences).toEqual([
      {
        expectation: "required-fields",
        field: "constitutional_hash",
        expected: HASH,
        actual: "0000000000000000",
        problem: "differs",
      },
    ]);
  });

  it("refuses a response that fails the zod schema, a content type, or is not JSON", async () => {
    const schema = await failedBackup(
      httpSource({ url: `${server.url}/good`, expect: { schema: z.object({ version: z.string() }) } }),
    );
    expect(schema.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(schema.details.differences).toMatchObject([{ expectation: "schema", field: "version" }]);

    const type = await failedBackup(
      httpSource({ url: `${server.url}/text`, expect: { contentType: "application/json" } }),
    );
    expect(type.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(type.details.differences).toMatchObject([{ expectation: "content-type", actual: "text/plain" }]);

    const notJson = await failedBackup(httpSource({ url: `${server.url}/not-json` }));
    expect(notJson.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(notJson.details.reason).toBe("json");
  });

  it("retries a 503 and then keeps the 200, counting the attempts", async () => {
    const { sink, manifest } = await runBackup(httpSource({ url: `${server.url}/flaky`, ...fast }));
    expect(server.hits("/flaky")).toHaveLength(2);
    expect(manifest.source.details.attempts).toBe(2);
    expect(JSON.parse((await plain(sink, manifest)).toString())).toEqual(STATE);
  });

  it("gives up on a 503 after the retries, with nothing kept", async () => {
    const before = server.hits("/always-503").length;
    const error = await failedBackup(httpSource({ url: `${server.url}/always-503`, retries: 2, ...fast }));
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details).toMatchObject({ status: 503, attempts: 3, reason: "status" });
    expect(server.hits("/always-503").length - before).toBe(3);
  });

  it("honours Retry-After in seconds on a 429", async () => {
    const { manifest } = await runBackup(
      httpSource({ url: `${server.url}/throttled`, retryDelayMs: 1, maxRetryDelayMs: 10_000 }),
    );
    const [first, second] = server.hits("/throttled");
    expect(manifest.source.details.attempts).toBe(2);
    // Retry-After: 1 means at least a second; backoff alone would have waited about a millisecond.
    expect(second!.at - first!.at).toBeGreaterThanOrEqual(950);
  });

  it("caps a Retry-After date far in the future at maxRetryDelayMs", async () => {
    const { manifest } = await runBackup(
      httpSource({ url: `${server.url}/throttled-long`, retryDelayMs: 1, maxRetryDelayMs: 100 }),
    );
    const [first, second] = server.hits("/throttled-long");
    expect(manifest.source.details.attempts).toBe(2);
    expect(second!.at - first!.at).toBeLessThan(30_000);
  });

  it("does not retry a 404", async () => {
    const error = await failedBackup(httpSource({ url: `${server.url}/missing`, retries: 5, ...fast }));
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details).toMatchObject({ status: 404, attempts: 1 });
    expect(error.details.differences).toMatchObject([{ expectation: "status", actual: 404 }]);
    expect(server.hits("/missing")).toHaveLength(1);
  });

  it("fails a response slower than the timeout, on every attempt", async () => {
    const before = server.hits("/slow").length;
    const error = await failedBackup(
      httpSource({ url: `${server.url}/slow`, timeoutMs: 200, retries: 1, ...fast }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ reason: "timeout", attempts: 2 });
    expect(server.hits("/slow").length - before).toBe(2);
  });

  it("fails a body that stalls past the timeout after its headers", async () => {
    const error = await failedBackup(
      httpSource({ url: `${server.url}/slow-body`, timeoutMs: 200, retries: 0 }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ reason: "timeout", attempts: 1 });
  });

  it("refuses a response over maxBytes, declared or chunked, without retrying", async () => {
    const declared = await failedBackup(httpSource({ url: `${server.url}/big`, maxBytes: 1000, ...fast }));
    expect(declared.code).toBe("SOURCE_FAILED");
    expect(declared.details).toMatchObject({ reason: "too-large", attempts: 1 });
    const chunked = await failedBackup(
      httpSource({ url: `${server.url}/big-chunked`, maxBytes: 1000, ...fast }),
    );
    expect(chunked.code).toBe("SOURCE_FAILED");
    expect(chunked.details).toMatchObject({ reason: "too-large", attempts: 1 });
    // The same responses fit a larger cap.
    await runBackup(httpSource({ url: `${server.url}/big-chunked`, maxBytes: 20_000 }));
  });

  it("fails a body that ends before its Content-Length, after retrying", async () => {
    const before = server.hits("/cut").length;
    const error = await failedBackup(httpSource({ url: `${server.url}/cut`, retries: 1, ...fast }));
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ reason: "incomplete-body", attempts: 2 });
    expect(server.hits("/cut").length - before).toBe(2);
  });

  it("fails when nothing listens, after retrying", async () => {
    const gone = await startHttpServer();
    const url = `${gone.url}/good`;
    await gone.close();
    const error = await failedBackup(httpSource({ url, retries: 2, ...fast }));
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ reason: "connection", attempts: 3 });
  });

  it("stops on abort and closes the connection", async () => {
    const sink = memorySink();
    const controller = new AbortController();
    const before = server.hits("/slow").length;
    const running = backup({
      job: "svc",
      source: httpSource({ url: `${server.url}/slow`, timeoutMs: 10_000 }),
      sink,
      signal: controller.signal,
    });
    while (server.hits("/slow").length === before) await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    expect((await failure(running)).code).toBe("ABORTED");
    await server.hits("/slow")[before]!.closed; // the server saw the client go
    expect([...sink.objects.keys()]).toEqual([]);
  });

  it("keeps secret header values, URL credentials and query secrets out of errors and manifests", async () => {
    const secrets = {
      bearer: "tok-3f9a1c77e2b44d0a",
      apiKey: "key-8d2e6b1f0c9a7e55",
      session: "sess-71c0e9d4b3a2f186",
      query: "q-5b7d9e1f3a2c4e6f",
      password: "pw-0a1b2c3d4e5f6a7b",
    };
    const headers = {
      Authorization: `Bearer ${secrets.bearer}`,
      "X-Api-Key": secrets.apiKey,
      "X-Session": secrets.session,
    };
    const leaks = (text: string) => Object.values(secrets).filter((s) => text.includes(s));

    // The server echoes the token into its error body and the status fails: the error must not carry it.
    const echoed = await failedBackup(
      httpSource({
        url: `${server.url}/echo-auth?access_token=${secrets.query}`,
        headers,
        secretHeaders: ["X-Session"],
      }),
    );
    expect(echoed.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(leaks(inspect(echoed, { depth: 10 }) + JSON.stringify(echoed.details) + echoed.message)).toEqual(
      [],
    );

    const withCreds = `http://admin:${secrets.password}@127.0.0.1:${new URL(server.url).port}`;
    const refused = await failedBackup(
      httpSource({
        url: `${withCreds}/missing?token=${secrets.query}`,
        headers: { "X-Session": secrets.session },
        secretHeaders: ["x-session"],
      }),
    );
    expect(leaks(inspect(refused, { depth: 10 }) + JSON.stringify(refused.details))).toEqual([]);
    expect(refused.details.url).toBe(`${server.url}/missing?token=REDACTED`);
    // The credentials were sent, as Basic auth.
    const sent = server.hits("/missing").at(-1)!;
    expect(sent.headers.authorization).toBe(
      `Basic ${Buffer.from(`admin:${secrets.password}`).toString("base64")}`,
    );

    const timedOut = await failedBackup(
      httpSource({ url: `${server.url}/slow?sig=${secrets.query}`, headers, timeoutMs: 100, retries: 0 }),
    );
    expect(leaks(inspect(timedOut, { depth: 10 }))).toEqual([]);

    const { sink, manifest } = await runBackup(
      httpSource({
        url: `${withCreds}/good?api_key=${secrets.query}`,
        headers,
        secretHeaders: ["X-Session"],
      }),
    );
    const everything = [...sink.objects.values()].map((o) => o.data.toString("latin1")).join("\n");
    expect(leaks(everything + JSON.stringify(manifest))).toEqual([]);
    expect(manifest.source.details.url).toBe(`${server.url}/good?api_key=REDACTED`);
    expect(server.hits("/good").at(-1)!.headers["x-api-key"]).toBe(secrets.apiKey);
  });

  it("names every bad option", async () => {
    const error = await failure(
      Promise.resolve().then(() =>
        httpSource({ url: "ftp://x", retries: -1, expect: { status: [99] } } as never),
      ),
    );
    expect(error.code).toBe("CONFIG_INVALID");
    const options = (error.details.issues as Array<{ path: string }>).map((i) => i.path).sort();
    expect(options).toEqual(["expect.status.0", "retries", "url"]);
  });
});

async function untar(data: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  const feeding = pipeline(Readable.from([data]), extract);
  for await (const entry of extract)
    files.set(entry.header.name, await readAll(entry as unknown as Readable));
  await feeding;
  return files;
}

describe("httpSource with a body larger than memory should hold", () => {
  const MiB = 1 << 20;
  const BODY = 300 * MiB;
  // 1 MiB strings in an array under a required field: valid JSON, generated as it is sent.
  const filler = Buffer.from(`"${"q".repeat(MiB - 3)}",`);
  const head = Buffer.from(`{"constitutional_hash":"${HASH}","data":[`);
  const tail = Buffer.from('"end"]}');
  const count = Math.floor((BODY - head.length - tail.length) / filler.length);
  const length = head.length + count * filler.length + tail.length;

  it("spools a 300 MB JSON body, checks its required field while streaming, and keeps it byte for byte, in bounded memory", async () => {
    server.route("/huge", async (_req, res) => {
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": String(length) });
      const parts = [head, ...Array.from({ length: count }, () => filler), tail];
      for (const part of parts) {
        if (res.destroyed) return;
        if (!res.write(part)) await new Promise((r) => res.once("drain", r));
      }
      res.end();
    });
    const expected = createHash("sha256");
    expected.update(head);
    for (let i = 0; i < count; i++) expected.update(filler);
    expected.update(tail);

    // A sink that hashes and drops what it is given: the test measures the source, not a disk.
    let stored = 0;
    const hash = createHash("sha256");
    const sink = {
      ...memorySink(),
      async write(key: string, body: Readable) {
        if (key.endsWith(".manifest.json")) return { key, location: `null://${key}` };
        for await (const chunk of body) {
          hash.update(chunk as Buffer);
          stored += (chunk as Buffer).length;
        }
        return { key, location: `null://${key}` };
      },
      async stat() {
        return undefined;
      },
    } as unknown as MemorySink;

    global.gc?.();
    const base = process.memoryUsage();
    let peakRss = base.rss;
    let peakHeap = base.heapUsed;
    const sampler = setInterval(() => {
      const now = process.memoryUsage();
      peakRss = Math.max(peakRss, now.rss);
      peakHeap = Math.max(peakHeap, now.heapUsed);
    }, 10);
    try {
      const manifest = await backup({
        job: "huge",
        sink,
        source: httpSource({
          url: `${server.url}/huge`,
          maxBytes: 512 * MiB,
          timeoutMs: 120_000,
          expect: { requiredFields: { constitutional_hash: HASH } },
        }),
      });
      expect(manifest.content.bytes).toBe(length);
      expect(manifest.source.details).toMatchObject({ bytes: length });
    } finally {
      clearInterval(sampler);
    }
    expect(stored).toBe(length);
    expect(hash.digest("hex")).toBe(expected.digest("hex"));
    // The body is 300 MB; the process must not grow by anything near it.
    expect(peakRss - base.rss).toBeLessThan(100 * MiB);
    expect(peakHeap - base.heapUsed).toBeLessThan(64 * MiB);
  }, 300_000);

  it("refuses a body over maxParseBytes when a zod schema needs it whole", async () => {
    const error = await failedBackup(
      httpSource({
        url: `${server.url}/big`,
        maxParseBytes: 1000,
        expect: { schema: z.object({ constitutional_hash: z.literal(HASH) }) },
      }),
    );
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details.reason).toBe("too-large-to-validate");
  });

  it("checks required fields of a body over maxParseBytes while streaming it", async () => {
    const kept = await runBackup(
      httpSource({
        url: `${server.url}/big`,
        maxParseBytes: 1000,
        expect: { requiredFields: { constitutional_hash: HASH } },
      }),
    );
    expect(kept.manifest.content.contentType).toBe("application/json");
    const refused = await failedBackup(
      httpSource({
        url: `${server.url}/big`,
        maxParseBytes: 1000,
        expect: { requiredFields: { constitutional_hash: "other" } },
      }),
    );
    expect(refused.details.reason).toBe("required-fields");
  });
});

describe("httpBundleSource", () => {
  const services = () => [
    { name: "policy", url: `${server.url}/good`, expect: { requiredFields: { constitutional_hash: HASH } } },
    { name: "audit", url: `${server.url}/flaky-bundle`, ...fast },
    { name: "notes", url: `${server.url}/text` },
  ];

  beforeAll(() => {
    server.route("/flaky-bundle", (_req, res, { hit }) =>
      hit === 1 ? json(res, 503, {}) : json(res, 200, { constitutional_hash: HASH, audit: ["a", "b"] }),
    );
  });

  it("packs every service with an index, and restores one request per service", async () => {
    const { sink, manifest } = await runBackup(httpBundleSource({ services: services() }));
    const files = await untar(await plain(sink, manifest));
    expect([...files.keys()]).toEqual(["index.json", "policy.json", "audit.json", "notes.txt"]);
    const index = JSON.parse(files.get("index.json")!.toString());
    expect(index).toMatchObject({ format: "stowage-http-bundle", version: 1, mode: "all-or-nothing" });
    expect(index.services).toMatchObject([
      { name: "policy", ok: true, file: "policy.json", status: 200, attempts: 1 },
      { name: "audit", ok: true, file: "audit.json", status: 200, attempts: 2 },
      { name: "notes", ok: true, file: "notes.txt", contentType: "text/plain" },
    ]);
    for (const s of index.services) {
      expect(s.sha256).toBe(sha(files.get(s.file)!));
      expect(s.bytes).toBe(files.get(s.file)!.length);
    }
    expect(manifest.source.details).toMatchObject({
      mode: "all-or-nothing",
      services: 3,
      succeeded: 3,
      failed: [],
    });

    const before = server.hits("/restore").length;
    const result = await restoreHttp({
      stream: await restore({ sink, manifest }),
      url: `${server.url}/restore?service={name}`,
      headers: { Authorization: "Bearer restore-token-123" },
    });
    expect(result.requests.map((r) => [r.name, r.status])).toEqual([
      ["policy", 204],
      ["audit", 204],
      ["notes", 204],
    ]);
    const sent = server.hits("/restore").slice(before);
    expect(sent.map((r) => r.method)).toEqual(["POST", "POST", "POST"]);
    expect(sent[0]!.body).toEqual(files.get("policy.json"));
    expect(sent[1]!.body).toEqual(files.get("audit.json"));
    expect(sent[2]!.body).toEqual(files.get("notes.txt"));
    expect(sent[2]!.headers["content-type"]).toBe("text/plain");
    expect(sent[0]!.headers.authorization).toBe("Bearer restore-token-123");
  });

  it("all-or-nothing: one failing service fails the backup and leaves nothing", async () => {
    const error = await failedBackup(
      httpBundleSource({
        services: [
          ...services(),
          {
            name: "broken",
            url: `${server.url}/missing-field`,
            expect: { requiredFields: { constitutional_hash: HASH } },
          },
        ],
      }),
    );
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
    expect(error.details.service).toBe("broken");
  });

  it("best-effort: keeps the rest and lists the failures in details and index; restore skips them", async () => {
    const { sink, manifest } = await runBackup(
      httpBundleSource({
        mode: "best-effort",
        services: [
          ...services(),
          {
            name: "broken",
            url: `${server.url}/missing-field`,
            expect: { requiredFields: { constitutional_hash: HASH } },
          },
          { name: "gone", url: `${server.url}/missing`, retries: 0 },
        ],
      }),
    );
    expect(manifest.source.details).toMatchObject({
      mode: "best-effort",
      services: 5,
      succeeded: 3,
      failed: [
        { name: "broken", code: "SOURCE_VALIDATION_FAILED", reason: "required-fields" },
        { name: "gone", code: "SOURCE_VALIDATION_FAILED", reason: "status" },
      ],
    });
    const files = await untar(await plain(sink, manifest));
    expect([...files.keys()].sort()).toEqual(["audit.json", "index.json", "notes.txt", "policy.json"]);
    const index = JSON.parse(files.get("index.json")!.toString());
    expect(index.services.filter((s: { ok: boolean }) => !s.ok)).toMatchObject([
      { name: "broken", ok: false, error: { code: "SOURCE_VALIDATION_FAILED", reason: "required-fields" } },
      { name: "gone", ok: false, error: { code: "SOURCE_VALIDATION_FAILED", reason: "status" } },
    ]);

    const urls = {
      policy: `${server.url}/restore`,
      audit: `${server.url}/restore`,
      notes: `${server.url}/restore`,
    };
    const result = await restoreHttp({
      stream: await restore({ sink, manifest }),
      url: urls,
      services: ["policy", "notes", "broken"],
    });
    expect(result.requests.map((r) => r.name)).toEqual(["policy", "notes"]);
    expect(result.skipped).toEqual([
      { name: "audit", reason: "not-selected" },
      { name: "broken", reason: "failed-at-backup" },
      { name: "gone", reason: "not-selected" },
    ]);
  });

  it("best-effort: fails when every service failed", async () => {
    const error = await failedBackup(
      httpBundleSource({ mode: "best-effort", services: [{ name: "gone", url: `${server.url}/missing` }] }),
    );
    expect(error.code).toBe("SOURCE_VALIDATION_FAILED");
  });

  it("refuses duplicate service names by option", () => {
    expect(() =>
      httpBundleSource({
        services: [
          { name: "a", url: server.url },
          { name: "a", url: server.url },
        ],
      }),
    ).toThrowError(expect.objectContaining({ code: "CONFIG_INVALID" }) as unknown as Error);
  });
});

describe("restoreHttp", () => {
  it("sends a single state back, byte for byte", async () => {
    const { sink, manifest } = await runBackup(httpSource({ url: `${server.url}/good` }));
    const before = server.hits("/restore").length;
    const result = await restoreHttp({
      stream: await restore({ sink, manifest }),
      url: `${server.url}/restore`,
      method: "PUT",
    });
    expect(result.requests).toMatchObject([{ status: 204, bytes: manifest.content.bytes, attempts: 1 }]);
    const [sent] = server.hits("/restore").slice(before);
    expect(sent!.method).toBe("PUT");
    expect(sent!.headers["content-type"]).toBe("application/json");
    expect(sha(sent!.body)).toBe(manifest.content.sha256);
  });

  it("fails with RESTORE_FAILED when the service refuses, and names the service in a bundle", async () => {
    const single = await failure(
      restoreHttp({ stream: Readable.from([Buffer.from("{}")]), url: `${server.url}/missing` }),
    );
    expect(single.code).toBe("RESTORE_FAILED");
    expect(single.details).toMatchObject({ status: 404, reason: "status" });

    const { sink, manifest } = await runBackup(
      httpBundleSource({ services: [{ name: "policy", url: `${server.url}/good` }] }),
    );
    const bundle = await failure(
      restoreHttp({ stream: await restore({ sink, manifest }), url: `${server.url}/missing/{name}` }),
    );
    expect(bundle.code).toBe("RESTORE_FAILED");
    expect(bundle.details).toMatchObject({ service: "policy", status: 404, restored: [] });

    const noUrl = await failure(
      restoreHttp({ stream: await restore({ sink, manifest }), url: { other: server.url } }),
    );
    expect(noUrl.code).toBe("CONFIG_INVALID");
  });
});

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };
const conformanceToken = "conformance-token-9b27";
sourceConformance(slow, "httpSource", async () => {
  const before = server.requests.length;
  // 768 KiB in 64 KiB writes, so a consumer that stops or aborts does so with the body in flight.
  server.route("/conformance", async (req, res) => {
    if (req.headers.authorization !== `Bearer ${conformanceToken}`) return json(res, 401, { error: "no" });
    res.writeHead(200, { "Content-Type": "application/octet-stream" });
    for (let i = 0; i < 12 && !res.destroyed; i++) {
      res.write(Buffer.alloc(64 * 1024, i));
      await new Promise((r) => setTimeout(r, 5));
    }
    res.end();
  });
  const make = (token: string) =>
    httpSource({ url: `${server.url}/conformance`, headers: { Authorization: `Bearer ${token}` } });
  return {
    source: make(conformanceToken),
    // Every exchange this fixture started has closed on the server's side: no socket held open.
    released: async () => {
      const open = server.requests
        .slice(before)
        .map((r) =>
          Promise.race([r.closed.then(() => false), new Promise((r2) => setTimeout(() => r2(true), 10))]),
        );
      if ((await Promise.all(open)).some(Boolean)) throw new Error("a request is still open");
    },
    secrets: [conformanceToken, "wrong-token-41c3"],
    failing: () => make("wrong-token-41c3"),
  };
});
