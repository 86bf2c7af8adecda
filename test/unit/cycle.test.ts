import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { listManifests } from "../../src/core/catalog.js";
import { isStowageError } from "../../src/core/errors.js";
import { restore, verify } from "../../src/core/restore.js";
import { readAll } from "../../src/core/streams.js";
import type { Sink } from "../../src/core/types.js";
import { defineJob, fanOutSink, runJob, runJobs } from "../../src/jobs/index.js";
import { filesystemSink } from "../../src/sinks/filesystem.js";
import { type MemorySink, memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { aes256gcm, generateKey } from "../../src/transforms/aes-256-gcm.js";
import { gzip } from "../../src/transforms/gzip.js";

const HASH = { constitutional_hash: "cdd01ef066bc6cf2" };
const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function fsSink() {
  const root = await mkdtemp(join(tmpdir(), "stowage-cycle-"));
  dirs.push(root);
  return filesystemSink({ root });
}

const failingSource = {
  kind: "bytes",
  name: "broken",
  async open(): Promise<never> {
    throw new Error("connection refused");
  },
};

/** A sink whose reads flip one byte: what a copy reads no longer matches the manifest. */
function corruptOnRead(inner: MemorySink): Sink {
  return {
    ...inner,
    async read(key, options) {
      const data = await readAll(await inner.read(key, options));
      if (!key.endsWith(".manifest.json") && data.length > 0) data[0] = data[0]! ^ 0xff;
      return Readable.from([data]);
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("defineJob", () => {
  it("validates at definition, naming each bad option", () => {
    const sink = memorySink();
    let error: unknown;
    try {
      defineJob({
        name: "Bad Name",
        source: bytesSource({ data: "x" }),
        sink,
        schedule: "every tuesday",
        retention: { keepLast: -1 },
        copies: [{ sink }],
        rules: { requiredLabels: { a: "b" }, nope: true } as never,
      });
    } catch (e) {
      error = e;
    }
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    const options = (error as { details: { issues: Array<{ path: string }> } }).details.issues.map(
      (i) => i.path,
    );
    expect(options).toEqual(expect.arrayContaining(["name", "schedule", "retention.keepLast", "rules"]));
  });

  it("refuses a copy to the job's own sink", () => {
    const sink = memorySink();
    expect(() =>
      defineJob({ name: "j", source: bytesSource({ data: "x" }), sink, copies: [{ sink }] }),
    ).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
  });

  it("accepts cron nicknames, 6-field patterns and time zones", () => {
    const job = defineJob({
      name: "ok",
      source: bytesSource({ data: "x" }),
      sink: memorySink(),
      schedule: "0 */15 * * * *",
      timeZone: "Europe/Berlin",
    });
    expect(job.schedule).toBe("0 */15 * * * *");
    expect(() =>
      defineJob({
        name: "tz",
        source: bytesSource({ data: "x" }),
        sink: memorySink(),
        timeZone: "Mars/Olympus",
      }),
    ).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
  });
});

describe("runJobs", () => {
  it("records one job's failure and runs the others; the result has status, manifest, durations, bytes and codes", async () => {
    const good = defineJob({
      name: "good",
      source: bytesSource({ data: "hello world ".repeat(1000) }),
      transforms: [gzip()],
      sink: memorySink(),
      labels: HASH,
    });
    const bad = defineJob({ name: "bad", source: failingSource, sink: memorySink() });
    const after = defineJob({ name: "after", source: bytesSource({ data: "after" }), sink: memorySink() });
    const cycle = await runJobs([good, bad, after]);

    expect(cycle.ok).toBe(false);
    expect(cycle.succeeded).toBe(2);
    expect(cycle.failed).toBe(1);
    expect(cycle.jobs.map((j) => [j.job, j.status])).toEqual([
      ["good", "succeeded"],
      ["bad", "failed"],
      ["after", "succeeded"],
    ]);
    const [g, b] = cycle.jobs;
    expect(g!.manifest?.labels).toEqual(HASH);
    expect(g!.bytes.plain).toBe(12_000);
    expect(g!.bytes.stored).toBe(g!.manifest!.artifact.bytes);
    expect(g!.bytes.stored).toBeLessThan(12_000);
    expect(g!.durations.totalMs).toBeGreaterThanOrEqual(g!.durations.backupMs);
    expect(b!.manifest).toBeUndefined();
    expect(b!.errors).toEqual([expect.objectContaining({ stage: "backup", code: "SOURCE_FAILED" })]);
    expect((await listManifests(bad.sink)).manifests).toHaveLength(0);
  });

  it("copies each backup to the other sinks, verifying the bytes as they are copied", async () => {
    const local = memorySink();
    const offsite = await fsSink();
    const key = generateKey();
    const job = defineJob({
      name: "db",
      source: bytesSource({ data: "row\n".repeat(5000) }),
      transforms: [gzip(), aes256gcm({ key: new Uint8Array(key) })],
      sink: local,
      copies: [{ sink: offsite, name: "offsite" }],
      keys: [{ key }],
    });
    const result = await runJob(job);
    expect(result.status).toBe("succeeded");
    expect(result.copies).toEqual([expect.objectContaining({ target: "offsite", status: "succeeded" })]);
    const copied = result.copies[0]!.manifest!;
    expect(copied.artifact.sink).toBe("filesystem");
    expect(copied.artifact.sha256).toBe(result.manifest!.artifact.sha256);
    expect(result.bytes.copied).toBe(result.manifest!.artifact.bytes);
    // The copy restores to the same plain bytes.
    const plain = await readAll(await restore({ sink: offsite, manifest: copied, keys: [{ key }] }));
    expect(plain.toString()).toBe("row\n".repeat(5000));
  });

  it("fails the copy (and writes nothing there) when the bytes read do not match the manifest", async () => {
    const inner = memorySink();
    const local = corruptOnRead(inner);
    const offsite = memorySink();
    const job = defineJob({
      name: "db",
      source: bytesSource({ data: "payload ".repeat(100) }),
      sink: local,
      copies: [{ sink: offsite, name: "offsite", retention: { keepLast: 1 } }],
    });
    const result = await runJob(job);
    expect(result.status).toBe("failed");
    expect(result.manifest).toBeDefined();
    expect(result.copies[0]).toMatchObject({
      status: "failed",
      error: { stage: "copy", code: "INTEGRITY_MISMATCH" },
    });
    expect(offsite.objects.size).toBe(0);
    // Retention on the sink whose write failed is skipped, not run.
    expect(result.retention).toEqual([expect.objectContaining({ target: "offsite", status: "skipped" })]);
  });

  it("applies retention per sink with each sink's own policy", async () => {
    const local = memorySink();
    const offsite = memorySink();
    const job = defineJob({
      name: "tiered",
      source: bytesSource({ data: "state" }),
      sink: local,
      retention: { keepLast: 2 },
      copies: [{ sink: offsite, name: "offsite", retention: { keepLast: 4 } }],
    });
    const results = [];
    for (let i = 0; i < 6; i++) {
      results.push(await runJob(job));
      await sleep(3); // distinct millisecond ids, so "newest" is unambiguous
    }
    expect(results.every((r) => r.status === "succeeded")).toBe(true);
    const ids = results.map((r) => r.manifest!.id);
    const localIds = (await listManifests(local)).manifests.map((m) => m.id);
    const offsiteIds = (await listManifests(offsite)).manifests.map((m) => m.id);
    expect(localIds).toEqual(ids.slice(-2));
    expect(offsiteIds).toEqual(ids.slice(-4));
    // No artifact was left without its manifest.
    expect([...local.objects.keys()].filter((k) => !k.endsWith(".manifest.json"))).toHaveLength(2);
    expect([...offsite.objects.keys()].filter((k) => !k.endsWith(".manifest.json"))).toHaveLength(4);
    const last = results.at(-1)!;
    expect(last.retention.map((r) => [r.target, r.kept, r.deleted.length])).toEqual([
      ["primary", 2, 1],
      ["offsite", 4, 1],
    ]);
  });

  it("does not thin out old backups when the backup fails", async () => {
    const sink = memorySink();
    let fail = false;
    const job = defineJob({
      name: "flaky",
      source: bytesSource({
        data: () =>
          (async function* () {
            if (fail) throw new Error("disk gone");
            yield Buffer.from("ok");
          })(),
      }),
      sink,
      retention: { maxAge: "1ms" },
    });
    await runJob(job, { retention: false });
    await sleep(5);
    fail = true;
    const result = await runJob(job);
    expect(result.status).toBe("failed");
    expect(result.retention).toEqual([expect.objectContaining({ target: "primary", status: "skipped" })]);
    expect((await listManifests(sink)).manifests).toHaveLength(1);
  });

  it("validates each new backup against the job's rules", async () => {
    const job = defineJob({
      name: "unlabelled",
      source: bytesSource({ data: "x" }),
      sink: memorySink(),
      labels: { constitutional_hash: "wrong" },
      rules: { requiredLabels: HASH },
    });
    const result = await runJob(job);
    expect(result.status).toBe("failed");
    expect(result.errors).toEqual([
      expect.objectContaining({ stage: "validation", code: "SOURCE_VALIDATION_FAILED" }),
    ]);
    expect(result.findings).toEqual([expect.objectContaining({ rule: "required-label", severity: "error" })]);

    const labelled = defineJob({ ...job, name: "labelled", labels: HASH, rules: { requiredLabels: HASH } });
    expect((await runJob(labelled)).status).toBe("succeeded");
  });

  it("fans out: one read of the source lands in every sink, each with its own manifest", async () => {
    const local = memorySink();
    const offsite = await fsSink();
    let opens = 0;
    const data = Buffer.alloc(3 << 20, 7);
    const source = {
      kind: "bytes",
      name: "once",
      async open() {
        opens++;
        return {
          stream: Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]),
          contentType: "application/octet-stream",
          details: async () => ({}),
        };
      },
    };
    const job = defineJob({
      name: "fan",
      source,
      transforms: [gzip()],
      sink: local,
      copies: [{ sink: offsite, name: "offsite" }],
      fanOut: true,
    });
    const result = await runJob(job);
    expect(result.status).toBe("succeeded");
    expect(opens).toBe(1);
    const copied = result.copies[0]!.manifest!;
    expect(copied.artifact.sink).toBe("filesystem");
    expect(copied.artifact.location).toMatch(/^file:/);
    expect(result.manifest!.artifact.location).toMatch(/^memory:/);
    const [fromLocal] = (await listManifests(local)).manifests;
    const [fromOffsite] = (await listManifests(offsite)).manifests;
    expect(fromLocal!.artifact.sink).toBe("memory");
    expect(fromOffsite).toEqual(copied);
    expect((await verify({ sink: offsite, manifest: fromOffsite! })).ok).toBe(true);
    expect((await verify({ sink: local, manifest: fromLocal! })).ok).toBe(true);
  });

  it("fan-out is all or nothing: a failing sink leaves no object in any sink", async () => {
    const local = memorySink();
    const inner = memorySink();
    const broken: Sink = {
      ...inner,
      kind: "broken",
      async write(key, body, options) {
        if (!key.endsWith(".manifest.json")) {
          for await (const _ of body) throw new Error("quota exceeded");
        }
        return inner.write(key, body, options);
      },
    };
    const sink = fanOutSink(local, [{ sink: broken }]);
    const job = defineJob({ name: "fan", source: bytesSource({ data: "x".repeat(10_000) }), sink });
    const result = await runJob(job);
    expect(result.status).toBe("failed");
    expect(result.errors[0]).toMatchObject({ stage: "backup", code: "SINK_WRITE_FAILED" });
    expect(local.objects.size).toBe(0);
    expect(inner.objects.size).toBe(0);
  });

  it("runs up to `concurrency` jobs at once", async () => {
    let active = 0;
    let peak = 0;
    const slow = (name: string) =>
      defineJob({
        name,
        sink: memorySink(),
        source: bytesSource({
          data: () =>
            (async function* () {
              active++;
              peak = Math.max(peak, active);
              await sleep(30);
              active--;
              yield Buffer.from(name);
            })(),
        }),
      });
    const jobs = [slow("a"), slow("b"), slow("c"), slow("d")];
    const cycle = await runJobs(jobs, { concurrency: 2 });
    expect(cycle.ok).toBe(true);
    expect(peak).toBe(2);
    peak = 0;
    await runJobs(jobs, { concurrency: 1 });
    expect(peak).toBe(1);
  });

  it("an aborted cycle fails its jobs with ABORTED and leaves no partial backup", async () => {
    const controller = new AbortController();
    const sink = memorySink();
    const job = defineJob({
      name: "long",
      sink,
      source: bytesSource({
        data: () =>
          (async function* () {
            yield Buffer.alloc(1000);
            controller.abort();
            await sleep(20);
            yield Buffer.alloc(1000);
          })(),
      }),
    });
    const cycle = await runJobs([job, defineJob({ ...job, name: "next" })], { signal: controller.signal });
    expect(cycle.jobs.map((j) => j.errors[0]?.code)).toEqual(["ABORTED", "ABORTED"]);
    expect(sink.objects.size).toBe(0);
  });

  it("aborts a job that runs past its timeout", async () => {
    const sink = memorySink();
    const job = defineJob({
      name: "stuck",
      sink,
      timeout: "50ms",
      source: bytesSource({
        data: () =>
          (async function* () {
            yield Buffer.from("a");
            await sleep(2000);
            yield Buffer.from("b");
          })(),
      }),
    });
    const started = Date.now();
    const result = await runJob(job);
    expect(Date.now() - started).toBeLessThan(1500);
    expect(result.errors[0]).toMatchObject({ stage: "backup", code: "ABORTED" });
    expect(sink.objects.size).toBe(0);
  });

  it("refuses jobs not made by defineJob and duplicate names", async () => {
    const job = defineJob({ name: "a", source: bytesSource({ data: "x" }), sink: memorySink() });
    await expect(runJobs([job, job])).rejects.toMatchObject({ code: "CONFIG_INVALID" });
    await expect(runJobs([{ name: "b", source: job.source, sink: job.sink } as never])).rejects.toMatchObject(
      { code: "CONFIG_INVALID" },
    );
  });
});
