/**
 * glacierSink against the local S3 server, whose front speaks the documented Glacier semantics
 * s3rver lacks (RestoreObject 202/409/200, HeadObject x-amz-restore, GetObject 403
 * InvalidObjectState until restored) with a "the hours have passed" hook and a movable clock.
 * Always local: a real archive takes hours to restore.
 */
import { randomBytes } from "node:crypto";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  bytesSource,
  gzip,
  isStowageError,
  listManifests,
  type Manifest,
  manifestKeyFor,
  readAll,
  restore,
  type StowageError,
  verify,
} from "../../src/index.js";
import {
  type GlacierSink,
  glacierSink,
  parseRestoreHeader,
  requestRestore,
  restoreStatus,
  waitForRestore,
} from "../../src/sinks/glacier.js";
import { sinkConformance } from "../../src/testing.js";
import { rejection, sha } from "../support/expect-helpers.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const MiB = 1024 * 1024;
const DAY = 86_400_000;

let started: Promise<S3TestServer> | undefined;
const server = () => {
  started ??= startS3Server({ local: true });
  return started;
};
afterAll(async () => {
  await (await started)?.stop();
});

// The contract, in a bucket where cold objects stay readable (as s3rver itself behaves), so the
// suite's read-backs run; the archive semantics are tested below.
const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };

sinkConformance(slow, "glacier", async () => {
  const s = await server();
  const { bucket } = await s.scratch();
  return {
    sink: glacierSink({ client: s.client(), bucket, partSize: 5 * MiB }),
    leftovers: () => s.openUploads(bucket),
  };
});

describe("glacierSink: cold artifacts, STANDARD manifests, restore workflow", () => {
  let s: S3TestServer;
  let bucket: string;
  let sink: GlacierSink;
  let manifest: Manifest;
  const data = Buffer.from(randomBytes(3 * MiB).toString("hex"));

  beforeAll(async () => {
    s = await server();
    ({ bucket } = await s.scratch());
    await s.local!.coldBucket(bucket);
    sink = glacierSink({ client: s.client(), bucket, prefix: "archive" });
    manifest = await backup({ job: "db", source: bytesSource({ data }), transforms: [gzip()], sink });
  });

  it("declares hours of read latency and its archive classes", () => {
    expect(sink.kind).toBe("glacier");
    expect(sink.capabilities.readLatency).toBe("hours");
    expect(sink.capabilities.storageClasses).toEqual(["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"]);
    const instant = glacierSink({ client: s.client(), bucket, storageClass: "GLACIER_IR" });
    expect(instant.capabilities.readLatency).toBe("immediate");
  });

  it("writes the artifact to GLACIER and the manifest to STANDARD (HeadObject and the AWS CLI agree)", async () => {
    expect(manifest.artifact.storageClass).toBe("GLACIER");
    expect(manifest.artifact.sink).toBe("glacier");
    expect((await sink.stat(manifest.artifact.key))?.storageClass).toBe("GLACIER");
    expect((await sink.stat(manifestKeyFor(manifest.artifact.key)))?.storageClass).toBe("STANDARD");
    const artifact = `archive/${manifest.artifact.key}`;
    const head = JSON.parse(
      (await s.aws(["s3api", "head-object", "--bucket", bucket, "--key", artifact])).stdout,
    ) as { StorageClass?: string };
    expect(head.StorageClass).toBe("GLACIER");
    const manifestHead = JSON.parse(
      (await s.aws(["s3api", "head-object", "--bucket", bucket, "--key", manifestKeyFor(artifact)])).stdout,
    ) as { StorageClass?: string };
    expect(manifestHead.StorageClass ?? "STANDARD").toBe("STANDARD");
  });

  it("lists and reads manifests without any restore", async () => {
    const { manifests, invalid } = await listManifests(sink, { job: "db" });
    expect(invalid).toEqual([]);
    expect(manifests.map((m) => m.id)).toEqual([manifest.id]);
  });

  it("refuses to read an archived artifact with OBJECT_ARCHIVED, and restore/verify say so", async () => {
    expect((await rejection(sink.read(manifest.artifact.key))).code).toBe("OBJECT_ARCHIVED");
    expect((await rejection(restore({ sink, manifest }))).code).toBe("OBJECT_ARCHIVED");
    const report = await verify({ sink, manifest });
    expect(report.ok).toBe(false);
    expect(report.problems[0]?.code).toBe("OBJECT_ARCHIVED");
    expect(await restoreStatus(sink, manifest)).toEqual({ state: "archived", storageClass: "GLACIER" });
  });

  it("waitForRestore without a request fails RESTORE_FAILED rather than waiting forever", async () => {
    expect((await rejection(sink.waitForRestore(manifest, { pollInterval: 10 }))).code).toBe(
      "RESTORE_FAILED",
    );
  });

  it("requests a restore (202), sees it in progress (409 is not an error), waits, and restores", async () => {
    const before = Date.now();
    expect(await requestRestore(sink, manifest, { days: 2, tier: "Bulk" })).toBe("requested");
    expect(await sink.restoreStatus(manifest)).toEqual({ state: "in-progress", storageClass: "GLACIER" });
    expect(await sink.requestRestore(manifest, { days: 2 })).toBe("in-progress");
    expect((await rejection(sink.read(manifest.artifact.key))).code).toBe("OBJECT_ARCHIVED");

    const waiting = waitForRestore(sink, manifest, { pollInterval: 25 });
    await new Promise((r) => setTimeout(r, 150));
    expect(await s.local!.completeRestores()).toBe(1);
    const status = await waiting;
    expect(status.state).toBe("available");
    if (status.state !== "available") throw new Error("unreachable");
    // expiry-date is an HTTP date: whole seconds.
    expect(status.expiresAt.getTime()).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + 2 * DAY);
    expect(status.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 2 * DAY);

    const back = await readAll(await restore({ sink, manifest }), 10 * MiB);
    expect(sha(back)).toBe(sha(data));
    expect((await verify({ sink, manifest })).ok).toBe(true);
    // Asking again extends the restored copy (200).
    expect(await sink.requestRestore(manifest, { days: 5 })).toBe("available");
  });

  it("after the restored copy expires the artifact is archived again", async () => {
    await s.local!.advanceClock(6 * DAY);
    expect((await sink.restoreStatus(manifest)).state).toBe("archived");
    expect((await rejection(sink.read(manifest.artifact.key))).code).toBe("OBJECT_ARCHIVED");
  });

  it("waitForRestore stops with ABORTED when its signal fires", async () => {
    expect(await sink.requestRestore(manifest)).toBe("requested");
    const controller = new AbortController();
    const waiting = sink.waitForRestore(manifest, { pollInterval: "1h", signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    expect((await rejection(waiting)).code).toBe("ABORTED");
    await s.local!.completeRestores();
  });

  it("DEEP_ARCHIVE: Expedited is refused by S3 (RESTORE_FAILED), Standard works", async () => {
    const deep = glacierSink({ client: s.client(), bucket, prefix: "deep", storageClass: "DEEP_ARCHIVE" });
    const m = await backup({ job: "deep", source: bytesSource({ data: "deep" }), sink: deep });
    expect(m.artifact.storageClass).toBe("DEEP_ARCHIVE");
    const head = await s
      .client()
      .send(new HeadObjectCommand({ Bucket: bucket, Key: `deep/${m.artifact.key}` }));
    expect(head.StorageClass).toBe("DEEP_ARCHIVE");
    expect((await rejection(deep.requestRestore(m, { tier: "Expedited" }))).code).toBe("RESTORE_FAILED");
    expect(await deep.requestRestore(m, { tier: "Standard" })).toBe("requested");
  });

  it("a manifest that names a missing artifact: restoreStatus says NOT_FOUND", async () => {
    const ghost = { ...manifest, artifact: { ...manifest.artifact, key: "db/ghost.bin" } };
    expect((await rejection(sink.restoreStatus(ghost))).code).toBe("NOT_FOUND");
  });

  it("bad options are named", () => {
    try {
      glacierSink({ client: s.client(), bucket, storageClass: "STANDARD" as "GLACIER", partSize: 1 });
      throw new Error("expected CONFIG_INVALID");
    } catch (error) {
      expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
      const options = ((error as StowageError).details.issues as Array<{ path: string }>).map((i) => i.path);
      expect(options.sort()).toEqual(["partSize", "storageClass"]);
    }
  });
});

describe("parseRestoreHeader", () => {
  it("reads S3's forms", () => {
    expect(parseRestoreHeader(undefined)).toBeUndefined();
    expect(parseRestoreHeader('ongoing-request="true"')).toEqual({ ongoing: true });
    expect(
      parseRestoreHeader('ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"'),
    ).toEqual({
      ongoing: false,
      expiresAt: new Date("2012-12-21T00:00:00Z"),
    });
    expect(parseRestoreHeader('ongoing-request="false"')).toBeUndefined();
    expect(parseRestoreHeader("garbage")).toBeUndefined();
  });
});
