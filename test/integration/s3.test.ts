/**
 * s3Sink against a real S3-speaking server (test/support/s3-server.ts says which: an endpoint from
 * STOWAGE_TEST_S3_ENDPOINT, MinIO where a container runtime exists, else s3rver in a child
 * process). Tests that need the local server's request log or fault switches use a second,
 * local server, so they run (and can fail) everywhere.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  bytesSource,
  gzip,
  type Leftover,
  listManifests,
  manifestKeyFor,
  readAll,
  restore,
  type StowageError,
  verify,
} from "../../src/index.js";
import { type S3Sink, s3Sink } from "../../src/sinks/s3.js";
import { sinkConformance } from "../../src/testing.js";
import { keysOf, rejection, sha } from "../support/expect-helpers.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const MiB = 1024 * 1024;

let shared: Promise<S3TestServer> | undefined;
let local: Promise<S3TestServer> | undefined;
const sharedServer = () => {
  shared ??= startS3Server();
  return shared;
};
const localServer = () => {
  local ??= startS3Server({ local: true });
  return local;
};
afterAll(async () => {
  await Promise.all([shared, local].map(async (s) => (await s)?.stop()));
});

/** `total` bytes in `chunk`-sized pieces of `data`, then `error` once `failAt` bytes have gone. */
function chunksOf(data: Buffer, chunk = 256 * 1024, failAt?: number, error?: Error) {
  return async function* () {
    for (let i = 0; i < data.length; i += chunk) {
      if (failAt !== undefined && i + chunk > failAt) throw error ?? new Error("injected");
      yield data.subarray(i, i + chunk);
    }
  };
}

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };

// partSize ± 1: one byte short of a part, a part exactly, a part and one byte (a second part).
sinkConformance(
  slow,
  "s3",
  async () => {
    const server = await sharedServer();
    const { bucket, prefix } = await server.scratch();
    const sink = s3Sink({ client: server.client(), bucket, prefix, partSize: 5 * MiB });
    return {
      sink,
      leftovers: () => server.openUploads(bucket, prefix),
    };
  },
  { partSize: 5 * MiB },
);

describe("s3Sink multipart streaming", () => {
  let server: S3TestServer;
  let bucket: string;
  let sink: S3Sink;
  beforeAll(async () => {
    server = await localServer();
    ({ bucket } = await server.scratch());
    sink = s3Sink({ client: server.client(), bucket, partSize: 5 * MiB, queueSize: 3 });
  });

  it("backs up 64 MiB in 5 MiB parts and restores it byte-identical", async () => {
    const data = randomBytes(64 * MiB);
    await server.local!.clearRequests();
    const manifest = await backup({ job: "big", source: bytesSource({ data: chunksOf(data) }), sink });
    const log = (await server.local!.requests()).filter((r) => r.key === manifest.artifact.key);
    const parts = log.filter((r) => r.method === "PUT" && r.op === "uploadId");
    expect(parts.map((p) => p.partNumber)).toEqual(expect.arrayContaining([1, 2, 3, 13]));
    expect(parts).toHaveLength(13);
    expect(parts.filter((p) => p.partNumber! < 13).every((p) => p.bytes === 5 * MiB)).toBe(true);
    expect(log.filter((r) => r.method === "POST" && r.op === "uploads")).toHaveLength(1);
    expect(log.filter((r) => r.method === "POST" && r.op === "uploadId" && r.status === 200)).toHaveLength(1);
    expect(log.filter((r) => r.method === "PUT" && r.op === "")).toHaveLength(0); // never a PutObject
    // Parts go without Expect: 100-continue, over kept-alive connections (the SDK would open a new
    // one for every part that carried the header): at most queueSize (3) and a spare, not 13.
    expect(parts.some((p) => p.expectContinue)).toBe(false);
    expect(new Set(parts.map((p) => p.clientPort)).size).toBeLessThanOrEqual(4);
    expect(manifest.artifact.bytes).toBe(64 * MiB);
    expect(manifest.artifact.location).toBe(`s3://${bucket}/${manifest.artifact.key}`);
    expect(manifest.artifact.storageClass).toBe("STANDARD");

    const back = await readAll(await restore({ sink, manifest }), 65 * MiB);
    expect(back.length).toBe(data.length);
    expect(sha(back)).toBe(sha(data));
    expect((await sink.stat(manifest.artifact.key))?.size).toBe(64 * MiB);
  });

  it("a source failing after the third part leaves no object, no manifest, no open upload", async () => {
    const data = randomBytes(24 * MiB);
    const boom = new Error("the source broke after part 3");
    await server.local!.clearRequests();
    const partsStored = async () =>
      (await server.local!.requests()).filter(
        (r) => r.key.startsWith("fails/") && r.method === "PUT" && r.op === "uploadId" && r.status === 200,
      ).length;
    const error = await rejection(
      backup({
        job: "fails",
        source: bytesSource({
          data: async function* () {
            yield* chunksOf(data.subarray(0, 18 * MiB))();
            // Fail only once the server holds three parts: "after the third part" for certain.
            for (let i = 0; i < 200 && (await partsStored()) < 3; i++) {
              await new Promise((r) => setTimeout(r, 50));
            }
            throw boom;
          },
        }),
        sink,
      }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.cause).toBe(boom);
    expect(await keysOf(sink, "fails/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
    const log = await server.local!.requests();
    const partsSent = log.filter(
      (r) => r.key.startsWith("fails/") && r.method === "PUT" && r.op === "uploadId",
    );
    expect(partsSent.length).toBeGreaterThanOrEqual(3);
    expect(log.some((r) => r.method === "DELETE" && r.op === "uploadId" && r.status === 204)).toBe(true);
  });

  it("a part the server refuses aborts the upload and surfaces the server's error", async () => {
    await server.local!.faults({ failPartsFrom: 2 });
    try {
      const data = randomBytes(16 * MiB);
      const error = await rejection(
        backup({ job: "refused", source: bytesSource({ data: chunksOf(data) }), sink }),
      );
      expect(error.code).toBe("SINK_WRITE_FAILED");
      expect((error.cause as { name?: string }).name).toBe("AccessDenied");
      expect(await keysOf(sink, "refused/")).toEqual([]);
      expect(await server.openUploads(bucket)).toEqual([]);
    } finally {
      await server.local!.faults({});
    }
  });

  it("when the abort fails too, the original error stays the cause and the open upload is named", async () => {
    await server.local!.faults({ failPartsFrom: 2, abortAnswers405: true });
    let error: StowageError;
    try {
      error = await rejection(
        sink.write("abortfails/object.bin", Readable.from(chunksOf(randomBytes(12 * MiB))())),
      );
    } finally {
      await server.local!.faults({});
    }
    expect(error.code).toBe("SINK_WRITE_FAILED");
    expect((error.cause as { name?: string }).name).toBe("AccessDenied");
    const uploadId = String(error.details.uploadId);
    expect(error.details.openUpload).toEqual({ bucket, key: "abortfails/object.bin", uploadId });
    // The parts really were left behind; the sink removes them from what the error reported.
    expect((await server.openUploads(bucket)).join()).toContain(uploadId);
    await sink.removeLeftovers!(error.details.leftovers as Leftover[]);
    expect(await server.openUploads(bucket)).toEqual([]);
    // Already gone counts as removed.
    await sink.removeLeftovers!(error.details.leftovers as Leftover[]);
  });

  it("backup() reports an upload it could not abort, whichever stage failed first", async () => {
    await server.local!.faults({ abortStatus: 500 });
    let error: StowageError;
    try {
      error = await rejection(
        backup({
          job: "openupload",
          source: bytesSource({ data: chunksOf(randomBytes(12 * MiB), 256 * 1024, 11 * MiB) }),
          sink,
        }),
      );
    } finally {
      await server.local!.faults({});
    }
    expect(error.code).toBe("SOURCE_FAILED");
    const open = error.details.openUpload as { bucket: string; key: string; uploadId: string };
    expect(open).toEqual({
      bucket,
      key: expect.stringMatching(/^openupload\//),
      uploadId: expect.any(String),
    });
    expect((await server.openUploads(bucket)).join()).toContain(open.uploadId);
    await sink.removeLeftovers!(error.details.leftovers as Leftover[]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("a part S3 stores after the abort was answered is found and aborted again (race made certain)", async () => {
    await server.local!.faults({ landPartsAfterAbort: true });
    const controller = new AbortController();
    let error: StowageError;
    try {
      const data = randomBytes(12 * MiB);
      let sent = 0;
      error = await rejection(
        backup({
          job: "late-part",
          source: bytesSource({
            data: async function* () {
              for (let i = 0; i < data.length; i += MiB) {
                sent += MiB;
                // Abort once the server holds part 1 whole (received, not answered).
                if (sent === 8 * MiB) {
                  for (let n = 0; n < 200; n++) {
                    const log = await server.local!.requests();
                    if (log.some((r) => r.key.startsWith("late-part/") && r.partNumber === 1)) break;
                    await new Promise((r) => setTimeout(r, 25));
                  }
                  await new Promise((r) => setTimeout(r, 200));
                  controller.abort();
                }
                yield data.subarray(i, i + MiB);
              }
            },
          }),
          sink,
          signal: controller.signal,
        }),
      );
    } finally {
      await server.local!.faults({});
    }
    expect(error.code).toBe("ABORTED");
    const log = await server.local!.requests();
    const mine = log.filter((r) => r.key.startsWith("late-part/"));
    // The part was stored after the first abort's answer: the upload came back, and was aborted again.
    expect(mine.filter((r) => r.method === "DELETE" && r.op === "uploadId").length).toBeGreaterThanOrEqual(2);
    expect(mine.some((r) => r.method === "PUT" && r.partNumber === 1 && r.status === 200)).toBe(true);
    expect(await keysOf(sink, "late-part/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("an abort while CreateMultipartUpload is under way still aborts the upload S3 created", async () => {
    await server.local!.faults({ holdCreate: true });
    const controller = new AbortController();
    const data = randomBytes(8 * MiB);
    const writing = rejection(
      backup({ job: "held-create", source: bytesSource({ data }), sink, signal: controller.signal }),
    );
    for (let n = 0; n < 400; n++) {
      const log = await server.local!.requests();
      if (log.some((r) => r.key.startsWith("held-create/") && r.op === "uploads")) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    controller.abort();
    await new Promise((r) => setTimeout(r, 300));
    await server.local!.faults({});
    const error = await writing;
    expect(error.code).toBe("ABORTED");
    expect(await keysOf(sink, "held-create/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("leftovers() pages through open uploads under a prefix, older than asked; removeLeftovers aborts them", async () => {
    const { CreateMultipartUploadCommand } = await import("@aws-sdk/client-s3");
    const client = server.client();
    const prefixed = s3Sink({ client, bucket, prefix: "lo", partSize: 5 * MiB });
    const ids: string[] = [];
    for (const key of ["lo/a/1.bin", "lo/a/2.bin", "lo/a/3.bin", "lo/b/1.bin", "other/a/1.bin"]) {
      const out = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      ids.push(out.UploadId!);
    }
    await server.local!.faults({ maxUploadsPerPage: 2 });
    try {
      await server.local!.clearRequests();
      const all = [];
      for await (const l of prefixed.leftovers!("a/", { olderThanMs: 0, now: new Date(Date.now() + 1000) })) {
        all.push(l);
      }
      expect(all.map((l) => [l.kind, l.key, l.id])).toEqual([
        ["multipart-upload", "a/1.bin", ids[0]],
        ["multipart-upload", "a/2.bin", ids[1]],
        ["multipart-upload", "a/3.bin", ids[2]],
      ]);
      expect(all.every((l) => l.startedAt instanceof Date)).toBe(true);
      const pages = (await server.local!.requests()).filter((r) => r.method === "GET" && r.op === "uploads");
      expect(pages.length).toBe(2);
      // Younger than olderThanMs: a live writer's, not a leftover.
      const young = [];
      for await (const l of prefixed.leftovers!("", { olderThanMs: 3_600_000, now: new Date() }))
        young.push(l);
      expect(young).toEqual([]);
      await prefixed.removeLeftovers!(all);
    } finally {
      await server.local!.faults({});
    }
    expect((await server.openUploads(bucket)).sort()).toEqual(
      [`lo/b/1.bin (upload ${ids[3]})`, `other/a/1.bin (upload ${ids[4]})`].sort(),
    );
    await s3Sink({ client, bucket }).removeLeftovers!([
      { kind: "multipart-upload", key: "lo/b/1.bin", id: ids[3]!, startedAt: new Date() },
      { kind: "multipart-upload", key: "other/a/1.bin", id: ids[4]!, startedAt: new Date() },
    ]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("a server that accepts the connection and never answers fails after idleTimeout, not never", async () => {
    const impatient = s3Sink({ client: server.client(), bucket, partSize: 5 * MiB, idleTimeout: "1s" });
    await impatient.write("idle/read.bin", Readable.from([randomBytes(1024 * 1024)]));
    await server.local!.faults({ stall: "all" });
    let writeError: StowageError;
    try {
      writeError = await rejection(
        backup({ job: "idle", source: bytesSource({ data: randomBytes(1000) }), sink: impatient }),
      );
    } finally {
      await server.local!.faults({});
    }
    expect(writeError.code).toBe("SINK_WRITE_FAILED");
    expect(writeError.details.reason).toBe("timeout");
    // A read whose body stops half-way fails too, with SINK_READ_FAILED.
    await server.local!.faults({ stall: "get-body" });
    let readError: StowageError;
    try {
      readError = await rejection(readAll(await impatient.read("idle/read.bin"), 2 * MiB));
    } finally {
      await server.local!.faults({});
    }
    expect(readError.code).toBe("SINK_READ_FAILED");
    expect(readError.details.reason).toBe("timeout");
    await impatient.delete(["idle/read.bin"]);
    expect(await keysOf(impatient, "idle/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("an abort mid-upload leaves nothing and says ABORTED", async () => {
    const controller = new AbortController();
    const data = randomBytes(30 * MiB);
    let sent = 0;
    const error = await rejection(
      backup({
        job: "aborted",
        source: bytesSource({
          data: async function* () {
            for (let i = 0; i < data.length; i += MiB) {
              sent += MiB;
              if (sent === 13 * MiB) controller.abort();
              yield data.subarray(i, i + MiB);
            }
          },
        }),
        sink,
        signal: controller.signal,
      }),
    );
    expect(error.code).toBe("ABORTED");
    expect(await keysOf(sink, "aborted/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("holds at most queueSize parts in memory when the server is slow (backpressure)", async () => {
    const slow = s3Sink({ client: server.client(), bucket, partSize: 5 * MiB, queueSize: 2 });
    await server.local!.faults({ holdParts: true });
    let produced = 0;
    const data = randomBytes(40 * MiB);
    const body = Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += 256 * 1024) {
          produced += 256 * 1024;
          yield data.subarray(i, i + 256 * 1024);
        }
      })(),
      { objectMode: false },
    );
    const writing = slow.write("slow/object.bin", body);
    try {
      let last = -1;
      while (produced !== last) {
        last = produced;
        await new Promise((r) => setTimeout(r, 300));
      }
      // Two parts held, plus what the stream itself buffers (its 16 KiB high-water mark, one chunk).
      expect(produced).toBeLessThanOrEqual(2 * 5 * MiB + 512 * 1024);
      expect(produced).toBeGreaterThanOrEqual(5 * MiB);
    } finally {
      await server.local!.faults({});
    }
    await writing;
    expect(sha(await readAll(await slow.read("slow/object.bin"), 41 * MiB))).toBe(sha(data));
  });
});

describe("s3Sink listing, deleting, Object Lock, and an independent client", () => {
  let server: S3TestServer;
  let bucket: string;
  let sink: S3Sink;
  beforeAll(async () => {
    server = await localServer();
    ({ bucket } = await server.scratch());
    sink = s3Sink({ client: server.client(), bucket, prefix: "team/backups" });
  });

  it("lists more than 1,000 objects across pages in key order, and deletes them in batches", async () => {
    const keys = Array.from({ length: 1_105 }, (_, i) => `many/${String(i).padStart(5, "0")}.bin`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < keys.length) {
          const key = keys[next++]!;
          await sink.write(key, Readable.from([Buffer.from(key)]));
        }
      }),
    );
    await server.local!.clearRequests();
    const listed: string[] = [];
    for await (const info of sink.list("many/")) {
      listed.push(info.key);
      expect(info.size).toBe(Buffer.byteLength(info.key));
    }
    expect(listed).toEqual(keys);
    const listCalls = (await server.local!.requests()).filter((r) => r.op === "list-type");
    expect(listCalls.length).toBeGreaterThanOrEqual(2);

    await server.local!.clearRequests();
    await sink.delete(keys);
    const deleteCalls = (await server.local!.requests()).filter((r) => r.op === "delete");
    // s3rver sometimes answers a batch 500 and the SDK retries it; count the batches that landed.
    expect(deleteCalls.filter((r) => r.status === 200)).toHaveLength(2);
    expect(await keysOf(sink, "many/")).toEqual([]);
  });

  it("reports every key a DeleteObjects refused", async () => {
    for (const key of ["keep/a.bin", "keep/b.bin", "gone/c.bin"]) {
      await sink.write(key, Readable.from([Buffer.from(key)]));
    }
    await server.local!.faults({ denyDeletePrefix: "team/backups/keep/" });
    try {
      const error = await rejection(sink.delete(["keep/a.bin", "gone/c.bin", "keep/b.bin"]));
      expect(error.code).toBe("SINK_DELETE_FAILED");
      const errors = error.details.errors as Array<{ key: string; code: string }>;
      expect(errors.map((e) => [e.key, e.code]).sort()).toEqual([
        ["keep/a.bin", "AccessDenied"],
        ["keep/b.bin", "AccessDenied"],
      ]);
    } finally {
      await server.local!.faults({});
    }
    expect(await sink.stat("gone/c.bin")).toBeUndefined();
    await sink.delete(["keep/a.bin", "keep/b.bin"]);
  });

  it("Object Lock: locks artifact and manifest until the same date, which the manifest records", async () => {
    const locked = s3Sink({
      client: server.client(),
      bucket,
      prefix: "locked",
      objectLock: { mode: "GOVERNANCE", retainFor: "30d" },
    });
    const before = Date.now();
    const manifest = await backup({
      job: "locked",
      source: bytesSource({ data: randomBytes(7 * MiB) }),
      sink: locked,
    });
    expect(manifest.retainUntil).toBeDefined();
    const until = Date.parse(manifest.retainUntil!);
    expect(until).toBeGreaterThanOrEqual(before + 30 * 86_400_000);
    expect(until).toBeLessThan(Date.now() + 30 * 86_400_000 + 2_000);
    const client = server.client();
    for (const key of [manifest.artifact.key, manifestKeyFor(manifest.artifact.key)]) {
      const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: `locked/${key}` }));
      expect(head.ObjectLockMode).toBe("GOVERNANCE");
      expect(head.ObjectLockRetainUntilDate?.getTime()).toBe(until);
    }
    // The server refuses locked writes without a checksum (as S3 does); every request carried one.
    const writes = (await server.local!.requests()).filter(
      (r) => r.key.startsWith("locked/") && r.method === "PUT",
    );
    expect(writes.length).toBeGreaterThan(1);
    expect(writes.every((w) => w.contentMd5 && w.status === 200)).toBe(true);
    // A hold the caller asked for that ends later wins.
    const later = new Date(Date.now() + 400 * 86_400_000);
    const held = await backup({
      job: "locked",
      source: bytesSource({ data: "x" }),
      sink: locked,
      retainUntil: later,
    });
    expect(held.retainUntil).toBe(later.toISOString());
  });

  it("the AWS CLI (an independent client) sees the artifact, its storage class and its manifest", async () => {
    const ia = s3Sink({ client: server.client(), bucket, prefix: "cli", storageClass: "STANDARD_IA" });
    const data = Buffer.from("select 1;\n".repeat(100_000));
    const manifest = await backup({
      job: "cli",
      source: bytesSource({ data }),
      transforms: [gzip()],
      sink: ia,
    });
    const artifact = `cli/${manifest.artifact.key}`;
    const listing = JSON.parse(
      (await server.aws(["s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "cli/"])).stdout,
    ) as { Contents: Array<{ Key: string; Size: number }> };
    expect(listing.Contents.map((c) => c.Key).sort()).toEqual([artifact, manifestKeyFor(artifact)]);
    expect(listing.Contents.find((c) => c.Key === artifact)?.Size).toBe(manifest.artifact.bytes);

    const head = JSON.parse(
      (await server.aws(["s3api", "head-object", "--bucket", bucket, "--key", artifact])).stdout,
    ) as { StorageClass?: string; ContentLength: number };
    expect(head.StorageClass).toBe("STANDARD_IA");
    expect(manifest.artifact.storageClass).toBe("STANDARD_IA");
    const manifestHead = JSON.parse(
      (await server.aws(["s3api", "head-object", "--bucket", bucket, "--key", manifestKeyFor(artifact)]))
        .stdout,
    ) as { StorageClass?: string };
    expect(manifestHead.StorageClass ?? "STANDARD").toBe("STANDARD");

    const dir = await mkdtemp(join(tmpdir(), "stowage-cli-"));
    try {
      await server.aws(["s3api", "get-object", "--bucket", bucket, "--key", artifact, join(dir, "artifact")]);
      await server.aws([
        "s3api",
        "get-object",
        "--bucket",
        bucket,
        "--key",
        manifestKeyFor(artifact),
        join(dir, "manifest.json"),
      ]);
      const fetched = await readFile(join(dir, "artifact"));
      expect(sha(fetched)).toBe(manifest.artifact.sha256);
      const stored = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
      expect(stored.id).toBe(manifest.id);
      expect(stored.artifact.location).toBe(`s3://${bucket}/${artifact}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    const { manifests } = await listManifests(ia, { job: "cli" });
    expect(manifests.map((m) => m.id)).toEqual([manifest.id]);
    expect((await verify({ sink: ia, manifest })).ok).toBe(true);
  });

  it("stores exact bytes even with the SDK's default checksum settings (it only sends Buffers)", async () => {
    const defaults = s3Sink({
      client: server.client({
        requestChecksumCalculation: "WHEN_SUPPORTED",
        responseChecksumValidation: "WHEN_SUPPORTED",
      }),
      bucket,
      prefix: "defaults",
      partSize: 5 * MiB,
    });
    for (const size of [1_000, 11 * MiB]) {
      const data = randomBytes(size);
      await defaults.write(`x/${size}.bin`, Readable.from(chunksOf(data)()));
      // Read back through a client that validates nothing, so what is stored is what is compared.
      const plain = s3Sink({ client: server.client(), bucket, prefix: "defaults" });
      const raw = await readAll(await plain.read(`x/${size}.bin`), 12 * MiB);
      expect(raw.length).toBe(size);
      expect(sha(raw)).toBe(sha(data));
    }
  });

  it("answers NOT_FOUND for a missing key and refuses unsafe keys before any request", async () => {
    expect((await rejection(sink.read("missing/key.bin"))).code).toBe("NOT_FOUND");
    await server.local!.clearRequests();
    expect((await rejection(sink.write("../escape", Readable.from([Buffer.from("x")])))).code).toBe(
      "CONFIG_INVALID",
    );
    expect(await server.local!.requests()).toEqual([]);
  });

  it("a wrong secret fails the write with the server's error and leaves nothing", async () => {
    const wrong = s3Sink({
      // s3rver checks the key id (it does not verify V4 signatures), so the wrong key id is the test.
      client: server.client({ credentials: { accessKeyId: "NOT-A-KEY", secretAccessKey: "not-the-secret" } }),
      bucket,
      prefix: "wrong",
    });
    const error = await rejection(
      backup({ job: "wrong", source: bytesSource({ data: randomBytes(1000) }), sink: wrong }),
    );
    expect(error.code).toBe("SINK_WRITE_FAILED");
    expect(JSON.stringify({ message: error.message, details: error.details })).not.toContain(
      "not-the-secret",
    );
    expect(await keysOf(s3Sink({ client: server.client(), bucket, prefix: "wrong" }))).toEqual([]);
  });

  it("a server that is down fails the write, never hangs", async () => {
    const down = s3Sink({
      client: server.client({ endpoint: "http://127.0.0.1:9", maxAttempts: 1 }),
      bucket,
    });
    const error = await rejection(
      backup({ job: "down", source: bytesSource({ data: randomBytes(1000) }), sink: down }),
    );
    expect(error.code).toBe("SINK_WRITE_FAILED");
  });
});
