import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { auditLog, defineJob, readAuditLog, restoreDrill, runJob } from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { directorySource } from "../../src/sources/directory.js";
import { aes256gcm, generateKey } from "../../src/transforms/aes-256-gcm.js";
import { gzip } from "../../src/transforms/gzip.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "stowage-drill-test-"));
  dirs.push(dir);
  return dir;
}

async function filesJob() {
  const data = await tempDir();
  await writeFile(join(data, "config.json"), '{"constitutional_hash":"cdd01ef066bc6cf2"}');
  const key = generateKey().toString("base64");
  const sink = memorySink();
  const job = defineJob({
    name: "files",
    source: directorySource({ path: data }),
    transforms: [gzip(), aes256gcm({ key })],
    keys: [{ key }],
    sink,
  });
  await runJob(job);
  return { job, sink, key };
}

describe("restoreDrill", () => {
  it("restores the latest backup into a scratch folder, runs the check there, measures RPO and RTO, cleans up", async () => {
    const { job } = await filesJob();
    const parent = await tempDir();
    let seen: string | undefined;
    const now = new Date(Date.now() + 60_000);
    const report = await restoreDrill({
      job,
      target: { kind: "directory", parent },
      now,
      rpo: "1h",
      check: async ({ directory }) => {
        seen = directory;
        const config = JSON.parse(await readFile(join(directory!, "config.json"), "utf8"));
        return { ok: config.constitutional_hash === "cdd01ef066bc6cf2", details: { files: 1 } };
      },
    });
    expect(report).toMatchObject({ ok: true, target: "directory", cleanup: { ok: true }, errors: [] });
    expect(report.verify).toMatchObject({ ok: true, plainChecked: true });
    expect(report.check).toMatchObject({ ok: true, details: { files: 1 } });
    expect(report.rpoMs).toBeGreaterThanOrEqual(60_000);
    expect(report.objectives.rpo).toEqual({ limitMs: 3_600_000, met: true });
    expect(report.rtoMs).toBeGreaterThanOrEqual(0);
    expect(seen && existsSync(seen)).toBe(false);
    expect(await readdir(parent)).toEqual([]);
  });

  it("fails at verify, before restoring, when the stored bytes were damaged", async () => {
    const { job, sink } = await filesJob();
    const [artifact] = [...sink.objects.entries()].filter(([k]) => !k.endsWith(".manifest.json"));
    artifact![1].data[20] = artifact![1].data[20]! ^ 0xff;
    const report = await restoreDrill({ job, target: { kind: "stream" }, check: () => true });
    expect(report.ok).toBe(false);
    expect(report.errors[0]).toMatchObject({ stage: "verify", code: "INTEGRITY_MISMATCH" });
    expect(report.restore).toBeUndefined();
  });

  it("fails on a check that says no, a breached RPO, or no backup at all — and audits each drill", async () => {
    const { job } = await filesJob();
    const path = join(await tempDir(), "audit.jsonl");
    const audit = auditLog({ path });
    const no = await restoreDrill({ job, target: { kind: "directory" }, check: () => false, audit });
    expect(no.errors).toEqual([expect.objectContaining({ stage: "check" })]);
    const late = await restoreDrill({
      job,
      target: { kind: "stream" },
      now: new Date(Date.now() + 7_200_000),
      rpo: "1h",
      audit,
    });
    expect(late.errors).toEqual([expect.objectContaining({ stage: "objective", code: "RPO_BREACHED" })]);
    const throws = await restoreDrill({
      job,
      target: { kind: "stream" },
      audit,
      check: () => {
        throw new Error("table missing");
      },
    });
    expect(throws.errors).toEqual([expect.objectContaining({ stage: "check", code: "UNKNOWN" })]);
    const empty = defineJob({ name: "empty", source: bytesSource({ data: "x" }), sink: memorySink() });
    const none = await restoreDrill({ job: empty, target: { kind: "stream" } });
    expect(none.errors).toEqual([expect.objectContaining({ stage: "select", code: "NOT_FOUND" })]);
    const entries = await readAuditLog({ path });
    expect(entries.filter((e) => e.action === "drill").map((e) => `${e.result}:${e.error}`)).toEqual([
      "failed:RESTORE_FAILED",
      "failed:RPO_BREACHED",
      "failed:UNKNOWN",
    ]);
  });

  it("with a wrong key the drill fails with DECRYPT_FAILED and still cleans up", async () => {
    const { job, sink } = await filesJob();
    const report = await restoreDrill({
      job: job.name,
      sink,
      keys: [{ key: generateKey().toString("base64") }],
      target: { kind: "directory" },
    });
    expect(report.ok).toBe(false);
    expect(report.errors[0]?.code).toBe("DECRYPT_FAILED");
    expect(report.cleanup.ok).toBe(true);
  });
});
