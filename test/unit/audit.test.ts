import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { listManifests } from "../../src/core/catalog.js";
import {
  auditEntrySchema,
  auditLog,
  defineJob,
  readAuditLog,
  redactLocation,
  runJobs,
} from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { aes256gcm, generateKey } from "../../src/transforms/aes-256-gcm.js";
import { gzip } from "../../src/transforms/gzip.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "stowage-audit-"));
  dirs.push(dir);
  return dir;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("audit trail", () => {
  it("appends one parseable line per backup, copy and deletion that matches what happened", async () => {
    const path = join(await tempDir(), "logs", "audit.jsonl");
    const audit = auditLog({ path });
    const local = memorySink();
    const offsite = memorySink();
    const job = defineJob({
      name: "db",
      source: bytesSource({ data: "rows ".repeat(200) }),
      transforms: [gzip()],
      sink: local,
      retention: { keepLast: 1 },
      copies: [{ sink: offsite, name: "offsite" }],
    });
    const broken = defineJob({
      name: "broken",
      sink: memorySink(),
      source: { kind: "bytes", name: "x", open: async () => Promise.reject(new Error("nope")) },
    });
    const first = await runJobs([job, broken], { audit });
    await sleep(3);
    const second = await runJobs([job], { audit });

    const text = await readFile(path, "utf8");
    const lines = text.trimEnd().split("\n");
    for (const line of lines) expect(auditEntrySchema.safeParse(JSON.parse(line)).success).toBe(true);
    const entries = await readAuditLog({ path });
    expect(entries.map((e) => `${e.action}:${e.job}:${e.result}`)).toEqual([
      "backup:db:ok",
      "copy:db:ok",
      "backup:broken:failed",
      "backup:db:ok",
      "copy:db:ok",
      "delete:db:ok",
    ]);
    const m1 = first.jobs[0]!.manifest!;
    const m2 = second.jobs[0]!.manifest!;
    expect(entries[0]).toMatchObject({
      key: m1.artifact.key,
      id: m1.id,
      sink: "memory",
      bytes: m1.artifact.bytes,
      sha256: m1.artifact.sha256,
      plainBytes: 1000,
      plainSha256: m1.content.sha256,
    });
    expect(entries[2]).toMatchObject({ error: "SOURCE_FAILED" });
    expect(entries[3]!.key).toBe(m2.artifact.key);
    // The deletion names the backup retention dropped, which is gone from the sink.
    expect(entries[5]).toMatchObject({ key: m1.artifact.key, sink: "memory", reason: expect.any(String) });
    expect((await listManifests(local)).manifests.map((m) => m.id)).toEqual([m2.id]);
    expect(Date.parse(entries[0]!.time)).toBeLessThanOrEqual(Date.parse(entries[5]!.time));
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it("never contains secrets: no key, passphrase or URL credentials", async () => {
    const path = join(await tempDir(), "audit.jsonl");
    const audit = auditLog({ path });
    const key = generateKey();
    const passphrase = "correct horse battery staple";
    const failing = {
      kind: "http",
      name: "api",
      async open(): Promise<never> {
        throw new Error(
          `GET https://admin:${passphrase}@api.internal/state failed (key ${key.toString("hex")})`,
        );
      },
    };
    const jobs = [
      defineJob({
        name: "raw",
        source: bytesSource({ data: "secret data" }),
        transforms: [aes256gcm({ key: new Uint8Array(key) })],
        sink: memorySink(),
      }),
      defineJob({
        name: "pass",
        source: bytesSource({ data: "secret data" }),
        transforms: [aes256gcm({ passphrase })],
        sink: memorySink(),
      }),
      defineJob({ name: "fails", source: failing, sink: memorySink(), keys: [{ key }] }),
    ];
    const cycle = await runJobs(jobs, { audit });
    expect(cycle.jobs.map((j) => j.status)).toEqual(["succeeded", "succeeded", "failed"]);
    const text = await readFile(path, "utf8");
    expect(text).not.toContain(key.toString("hex"));
    expect(text).not.toContain(key.toString("base64"));
    expect(text).not.toContain(passphrase);
    expect(text).not.toContain("admin");
    expect(text).toContain('"error":"SOURCE_FAILED"');
    // The schema has no free-text field: an entry carrying a message is refused.
    await expect(
      audit.record({ action: "backup", job: "x", result: "failed", message: "boom" } as never),
    ).rejects.toMatchObject({
      code: "CONFIG_INVALID",
    });
    expect(redactLocation("https://user:pw@host/b/k")).toBe("https://host/b/k");
    await audit.record({ action: "restore", job: "x", result: "ok", location: "s3://AKIA:SECRET@bucket/k" });
    expect(await readFile(path, "utf8")).not.toContain("SECRET");
  });

  it("lines from concurrent jobs never interleave", async () => {
    const path = join(await tempDir(), "audit.jsonl");
    const audit = auditLog({ path });
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        audit.record({ action: "verify", job: `job-${i}`, key: `job-${i}/${"k".repeat(400)}`, result: "ok" }),
      ),
    );
    const entries = await readAuditLog({ path });
    expect(entries.map((e) => e.job).sort()).toEqual(
      Array.from({ length: 200 }, (_, i) => `job-${i}`).sort(),
    );
  });

  it("to a sink prefix: buffered, flushed as one object per run, read back in order", async () => {
    const sink = memorySink();
    const audit = auditLog({ sink, prefix: "audit/host-1" });
    const job = defineJob({ name: "state", source: bytesSource({ data: "s" }), sink: memorySink() });
    await runJobs([job], { audit });
    await sleep(3);
    await runJobs([job], { audit });
    const objects = [...sink.objects.keys()];
    expect(objects).toHaveLength(2);
    expect(objects.every((k) => /^audit\/host-1\/\d{4}\/\d{2}\/\d{2}\/.+\.jsonl$/.test(k))).toBe(true);
    const entries = await readAuditLog({ sink, prefix: "audit/host-1" });
    expect(entries.map((e) => e.action)).toEqual(["backup", "backup"]);
    expect(entries[0]!.time < entries[1]!.time).toBe(true);
  });

  it("a sink trail that cannot write keeps its lines and the cycle says it failed", async () => {
    const inner = memorySink();
    let down = true;
    const flaky = {
      ...inner,
      async write(...args: Parameters<typeof inner.write>) {
        if (down) throw new Error("offline");
        return inner.write(...args);
      },
    };
    const audit = auditLog({ sink: flaky });
    const job = defineJob({ name: "state", source: bytesSource({ data: "s" }), sink: memorySink() });
    const cycle = await runJobs([job], { audit });
    expect(cycle.ok).toBe(false);
    expect(cycle.jobs[0]!.status).toBe("succeeded");
    expect(cycle.errors).toEqual([expect.objectContaining({ stage: "audit", code: "SINK_WRITE_FAILED" })]);
    down = false;
    await audit.flush();
    expect((await readAuditLog({ sink: inner })).map((e) => e.action)).toEqual(["backup"]);
  });

  it("reading a damaged log names the line", async () => {
    const path = join(await tempDir(), "audit.jsonl");
    const audit = auditLog({ path });
    await audit.record({ action: "delete", job: "x", result: "ok" });
    const { appendFile } = await import("node:fs/promises");
    await appendFile(path, '{"time":"nope"}\n');
    await expect(readAuditLog({ path })).rejects.toMatchObject({
      code: "MANIFEST_INVALID",
      details: { line: 2 },
    });
    await expect(readAuditLog({ path: join(await tempDir(), "none.jsonl") })).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
  });
});
