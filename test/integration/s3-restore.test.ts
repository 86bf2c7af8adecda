/**
 * Restore from S3 as ranged GETs in parallel, against the local S3 test server (its request log
 * shows every GET and its Range): an unencrypted artifact is read once and checked block by block,
 * an encrypted one chunk by chunk; a connection reset mid-download (a TCP proxy between the SDK and
 * the server cuts it) is resumed from the first byte not yet received, not started over; a tampered
 * block is never released; an object replaced mid-read fails the read.
 */
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ARTIFACT_BLOCK_SIZE } from "../../src/core/blocks.js";
import {
  aes256gcm,
  backup,
  bytesSource,
  generateKey,
  type Manifest,
  readAll,
  restore,
  type StowageError,
} from "../../src/index.js";
import { type S3Sink, s3Sink } from "../../src/sinks/s3.js";
import { rejection, sha } from "../support/expect-helpers.js";
import { type ResetProxy, startResetProxy } from "../support/reset-proxy.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const MiB = 1024 * 1024;
const PART = 2 * MiB;

let server: S3TestServer;
let proxy: ResetProxy;
let bucket: string;
/** Straight to the server. */
let sink: S3Sink;
/** Through the proxy that can reset a connection. */
let proxied: S3Sink;

beforeAll(async () => {
  server = await startS3Server({ local: true });
  proxy = await startResetProxy(server.endpoint);
  ({ bucket } = await server.scratch());
  const options = { bucket, readPartSize: PART, readConcurrency: 3 };
  sink = s3Sink({ client: server.client(), ...options });
  proxied = s3Sink({ client: server.client({ endpoint: proxy.endpoint, maxAttempts: 1 }), ...options });
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

/** Dump-like bytes that do not repeat (random words), so blocks differ. */
const data = Buffer.from(
  randomBytes(13 * MiB)
    .toString("base64")
    .slice(0, 17 * MiB + 12345),
);

const backupOf = (job: string, encrypt?: Uint8Array) =>
  backup({
    job,
    source: bytesSource({ data }),
    transforms: encrypt ? [aes256gcm({ key: encrypt })] : [],
    sink,
  });

/** The GetObject requests of `key` since the log was cleared. */
async function gets(key: string) {
  const requests = (await server.local!.requests()) ?? [];
  return requests.filter((r) => r.method === "GET" && r.key === key && r.op === "");
}
const rangeStart = (range: string | undefined) => Number(/^bytes=(\d+)-/.exec(range ?? "")?.[1]);

describe("restore from S3 with ranged GETs", () => {
  let plain: Manifest;
  beforeAll(async () => {
    plain = await backupOf("plain");
  });

  it("records a SHA-256 a block for an unencrypted artifact, none for an encrypted one", async () => {
    const blocks = plain.artifact.blocks!;
    expect(blocks.size).toBe(ARTIFACT_BLOCK_SIZE);
    expect(Buffer.from(blocks.sha256, "base64").length).toBe(
      32 * Math.ceil(data.length / ARTIFACT_BLOCK_SIZE),
    );
    const encrypted = await backupOf("sealed", generateKey());
    expect(encrypted.artifact.blocks).toBeUndefined();
  });

  it("reads an unencrypted artifact once, in parallel ranges, and restores it byte for byte", async () => {
    await server.local!.clearRequests();
    const restored = await readAll(await restore({ sink, manifest: plain }), 32 * MiB);
    expect(sha(restored)).toBe(sha(data));
    const seen = await gets(plain.artifact.key);
    // Read once: one GET a part, no verify-first pass before them.
    expect(seen.length).toBe(Math.ceil(data.length / PART));
    expect(seen.every((r) => r.range !== undefined)).toBe(true);
    // In parallel: some GET started before the previous one was answered.
    const overlapping = seen.some(
      (r, i) => i > 0 && r.startedAt < seen[i - 1]!.startedAt + (seen[i - 1]!.ms ?? 0),
    );
    expect(overlapping).toBe(true);
  });

  it("an old manifest without blocks is still verified first (read twice)", async () => {
    const { blocks: _, ...artifact } = plain.artifact;
    await server.local!.clearRequests();
    const restored = await readAll(await restore({ sink, manifest: { ...plain, artifact } }), 32 * MiB);
    expect(sha(restored)).toBe(sha(data));
    expect((await gets(plain.artifact.key)).length).toBe(2 * Math.ceil(data.length / PART));
  });

  it("resumes a range whose connection was reset from its first byte not received", async () => {
    await server.local!.clearRequests();
    const resetsBefore = proxy.resets;
    // Well inside the third part's body, whichever order the parallel GETs' bytes arrive in.
    proxy.arm({ afterBytes: 5 * MiB + 54321 });
    const restored = await readAll(await restore({ sink: proxied, manifest: plain }), 32 * MiB);
    expect(proxy.resets).toBe(resetsBefore + 1);
    expect(sha(restored)).toBe(sha(data));
    const seen = await gets(plain.artifact.key);
    const parts = Math.ceil(data.length / PART);
    // One GET more than the parts: the broken range, asked again from where it broke.
    expect(seen.length).toBe(parts + 1);
    const resumed = seen.filter((r) => rangeStart(r.range) % PART !== 0);
    expect(resumed).toHaveLength(1);
  });

  it("restores an encrypted artifact through ranges, across a reset", async () => {
    const key = generateKey();
    const manifest = await backupOf("enc", key);
    await server.local!.clearRequests();
    proxy.arm({ afterBytes: 3 * MiB + 777 });
    const restored = await readAll(await restore({ sink: proxied, manifest, keys: { key } }), 32 * MiB);
    expect(sha(restored)).toBe(sha(data));
    const seen = await gets(manifest.artifact.key);
    expect(seen.length).toBe(Math.ceil(manifest.artifact.bytes / PART) + 1);
  });

  it("never releases a byte of a tampered block", async () => {
    const manifest = await backupOf("tampered");
    const stored = Buffer.from(data);
    const at = 2 * ARTIFACT_BLOCK_SIZE + 1000; // in block 2
    stored[at] = stored[at]! ^ 1;
    await server
      .client()
      .send(new PutObjectCommand({ Bucket: bucket, Key: manifest.artifact.key, Body: stored }));
    let released = 0;
    const error = await rejection(
      (async () => {
        for await (const chunk of await restore({ sink, manifest })) released += (chunk as Buffer).length;
      })(),
    );
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(error.details).toMatchObject({ reason: "block", block: 2, offset: 2 * ARTIFACT_BLOCK_SIZE });
    expect(released).toBeLessThanOrEqual(2 * ARTIFACT_BLOCK_SIZE);
  });

  it("fails the read when the object is replaced mid-read (If-Match), instead of mixing versions", async () => {
    const manifest = await backupOf("replaced");
    const slow = s3Sink({ client: server.client(), bucket, readPartSize: MiB, readConcurrency: 1 });
    const stream = await slow.read(manifest.artifact.key);
    const chunks = stream[Symbol.asyncIterator]();
    await chunks.next();
    await server
      .client()
      .send(
        new PutObjectCommand({ Bucket: bucket, Key: manifest.artifact.key, Body: randomBytes(data.length) }),
      );
    const error = (await rejection(
      (async () => {
        for (;;) if ((await chunks.next()).done) return;
      })(),
    )) as StowageError;
    expect(error.code).toBe("SINK_READ_FAILED");
    expect(error.details).toMatchObject({ reason: "changed" });
  });

  it("a consumer that stops reading holds the read: little piles up, and the pause is no stalled server", async () => {
    const patient = s3Sink({
      client: server.client(),
      bucket,
      readPartSize: PART,
      readConcurrency: 3,
      idleTimeout: "1s",
    });
    const stream = await patient.read(plain.artifact.key);
    const received: Buffer[] = [];
    const chunks = stream[Symbol.asyncIterator]();
    received.push((await chunks.next()).value as Buffer);
    // Longer than idleTimeout: the clock runs only while the consumer waits for bytes.
    await delay(1500);
    // The GETs ahead wait in their sockets; the stream holds its high-water mark and one socket chunk.
    expect(stream.readableLength).toBeLessThanOrEqual(stream.readableHighWaterMark + 64 * 1024);
    expect(stream.readableHighWaterMark).toBeLessThanOrEqual(MiB);
    for (;;) {
      const next = await chunks.next();
      if (next.done) break;
      received.push(next.value as Buffer);
    }
    expect(sha(Buffer.concat(received))).toBe(sha(data));
  });

  it("a consumer that drops the read stops it: no GET after the ones sent ahead, no stray error", async () => {
    // Dropped before the first read: the first answer's body is closed, nothing more is sent.
    await server.local!.clearRequests();
    const unread = await sink.read(plain.artifact.key);
    await delay(200);
    unread.destroy();
    expect(await gets(plain.artifact.key)).toHaveLength(1);

    await server.local!.clearRequests();
    const stream = await sink.read(plain.artifact.key);
    await stream[Symbol.asyncIterator]().next();
    stream.destroy();
    await delay(300);
    // readConcurrency 3: at most the range being read and the two ahead (cancelled, they may never
    // reach the server), of the object's nine.
    const seen = (await gets(plain.artifact.key)).length;
    expect(seen).toBeGreaterThanOrEqual(1);
    expect(seen).toBeLessThanOrEqual(3);
    expect(stream.destroyed).toBe(true);
  });

  it("reads an empty object", async () => {
    const manifest = await backup({ job: "empty", source: bytesSource({ data: Buffer.alloc(0) }), sink });
    expect((await readAll(await restore({ sink, manifest }))).length).toBe(0);
    expect((await readAll(Readable.from(await sink.read(manifest.artifact.key)))).length).toBe(0);
  });
});
