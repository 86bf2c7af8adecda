/**
 * copyBackup across real sinks: filesystem → S3 offsite → Glacier archive, over the local S3
 * server (its request log shows multipart uploads were aborted, not just hidden).
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, open, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { copyBackup } from "../../src/core/copy.js";
import {
  backup,
  bytesSource,
  filesystemSink,
  gzip,
  listManifests,
  type Manifest,
  readAll,
  restore,
  verify,
} from "../../src/index.js";
import { glacierSink } from "../../src/sinks/glacier.js";
import { type S3Sink, s3Sink } from "../../src/sinks/s3.js";
import { keysOf, rejection, sha } from "../support/expect-helpers.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const MiB = 1024 * 1024;

describe("copyBackup between sinks", () => {
  let server: S3TestServer;
  let root: string;
  let local: ReturnType<typeof filesystemSink>;
  let offsite: S3Sink;
  let bucket: string;
  let data: Buffer<ArrayBuffer>;
  let manifest: Manifest;

  beforeAll(async () => {
    server = await startS3Server({ local: true });
    ({ bucket } = await server.scratch());
    root = await mkdtemp(join(tmpdir(), "stowage-copy-"));
    local = filesystemSink({ root });
    offsite = s3Sink({ client: server.client(), bucket, prefix: "offsite", partSize: 5 * MiB });
    // Incompressible, so the artifact spans several 5 MiB parts.
    data = randomBytes(12 * MiB);
    manifest = await backup({ job: "app", source: bytesSource({ data }), transforms: [gzip()], sink: local });
  });
  afterAll(async () => {
    await server?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it("filesystem → S3 → Glacier: same key and bytes, the manifest names the new place and class", async () => {
    const atS3 = await copyBackup({ manifest, from: local, to: offsite, storageClass: "STANDARD_IA" });
    expect(atS3.id).toBe(manifest.id);
    expect(atS3.artifact).toMatchObject({
      sink: "s3",
      key: manifest.artifact.key,
      location: `s3://${bucket}/offsite/${manifest.artifact.key}`,
      bytes: manifest.artifact.bytes,
      sha256: manifest.artifact.sha256,
      storageClass: "STANDARD_IA",
    });
    expect(atS3.content).toEqual(manifest.content);
    const { manifests } = await listManifests(offsite, { job: "app" });
    expect(manifests).toEqual([atS3]);
    expect((await verify({ sink: offsite, manifest: atS3 })).ok).toBe(true);
    expect(sha(await readAll(await restore({ sink: offsite, manifest: atS3 }), 13 * MiB))).toBe(sha(data));

    const archive = glacierSink({ client: server.client(), bucket, prefix: "archive", partSize: 5 * MiB });
    const atGlacier = await copyBackup({ manifest: atS3, from: offsite, to: archive });
    expect(atGlacier.artifact.sink).toBe("glacier");
    expect(atGlacier.artifact.storageClass).toBe("GLACIER");
    expect((await archive.stat(atGlacier.artifact.key))?.storageClass).toBe("GLACIER");
    expect((await listManifests(archive, { job: "app" })).manifests).toEqual([atGlacier]);
    // And back down to a disk, checked all the way.
    const root2 = await mkdtemp(join(tmpdir(), "stowage-copy-back-"));
    try {
      const disk = filesystemSink({ root: root2 });
      const atDisk = await copyBackup({ manifest: atGlacier, from: archive, to: disk });
      expect(atDisk.artifact.storageClass).toBeUndefined();
      expect(sha(await readAll(await restore({ sink: disk, manifest: atDisk }), 13 * MiB))).toBe(sha(data));
    } finally {
      await rm(root2, { recursive: true, force: true });
    }
  });

  it("a corrupted source artifact leaves nothing at the S3 destination, not even parts", async () => {
    const m = await backup({ job: "bad", source: bytesSource({ data }), sink: local });
    // Flip one byte near the end, after several parts have been uploaded.
    const path = join(root, ...m.artifact.key.split("/"));
    const handle = await open(path, "r+");
    try {
      const at = m.artifact.bytes - 100;
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, at);
      byte[0] = byte[0]! ^ 0xff;
      await handle.write(byte, 0, 1, at);
    } finally {
      await handle.close();
    }
    await server.local!.clearRequests();
    const error = await rejection(copyBackup({ manifest: m, from: local, to: offsite }));
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(await keysOf(offsite, "bad/")).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
    const log = await server.local!.requests();
    expect(log.filter((r) => r.method === "PUT" && r.op === "uploadId").length).toBeGreaterThanOrEqual(2);
    expect(log.some((r) => r.method === "DELETE" && r.op === "uploadId" && r.status === 204)).toBe(true);
  });

  it("a manifest whose digest does not match leaves nothing at a filesystem destination", async () => {
    const lying = { ...manifest, artifact: { ...manifest.artifact, sha256: "0".repeat(64) } };
    const root3 = await mkdtemp(join(tmpdir(), "stowage-copy-lie-"));
    try {
      const disk = filesystemSink({ root: root3 });
      expect((await rejection(copyBackup({ manifest: lying, from: offsite, to: disk }))).code).toBe(
        "INTEGRITY_MISMATCH",
      );
      expect(await readdir(root3, { recursive: true })).toEqual([]);
    } finally {
      await rm(root3, { recursive: true, force: true });
    }
  });

  it("an abort mid-copy leaves nothing and says ABORTED", async () => {
    const controller = new AbortController();
    const slowTarget = s3Sink({ client: server.client(), bucket, prefix: "aborted", partSize: 5 * MiB });
    await server.local!.faults({ holdParts: true });
    const copying = copyBackup({ manifest, from: local, to: slowTarget, signal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    const error = await rejection(copying);
    await server.local!.faults({});
    expect(error.code).toBe("ABORTED");
    expect(await keysOf(slowTarget)).toEqual([]);
    expect(await server.openUploads(bucket)).toEqual([]);
  });

  it("copying to an Object Lock destination records the lock as the manifest's retainUntil", async () => {
    const locked = s3Sink({
      client: server.client(),
      bucket,
      prefix: "locked",
      objectLock: { mode: "COMPLIANCE", retainFor: "7d" },
    });
    const copied = await copyBackup({ manifest, from: local, to: locked });
    expect(Date.parse(copied.retainUntil!)).toBeGreaterThan(Date.now() + 6 * 86_400_000);
    expect((await listManifests(locked, { job: "app" })).manifests[0]?.retainUntil).toBe(copied.retainUntil);
  });

  it("refuses a storage class the destination does not offer, and copying a sink onto itself", async () => {
    expect(
      (await rejection(copyBackup({ manifest, from: local, to: offsite, storageClass: "DEEP_ARCHIVE" })))
        .code,
    ).toBe("CONFIG_INVALID");
    expect((await rejection(copyBackup({ manifest, from: local, to: local }))).code).toBe("CONFIG_INVALID");
  });
});
