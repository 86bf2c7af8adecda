/**
 * The RestoreTarget contract as a drill and `stowage restore` use it: the core's directory and
 * stream targets, a user's own target (refused before anything is read; its cleanup run whatever
 * happened), and the one content-type table.
 */
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { extensionOf, formatOf } from "../../src/core/content-types.js";
import { directoryRestoreTarget, streamRestoreTarget } from "../../src/core/directory-target.js";
import type { RestoreTarget } from "../../src/core/restore-target.js";
import { defineJob, restoreDrill, runJob } from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { gzip } from "../../src/transforms/gzip.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function tempDir() {
  const dir = await mkdtemp(join(tmpdir(), "stowage-target-test-"));
  dirs.push(dir);
  return dir;
}

const DATA = Buffer.from('{"constitutional_hash":"cdd01ef066bc6cf2","n":1}\n'.repeat(2000));

async function jsonJob() {
  const job = defineJob({
    name: "state",
    source: bytesSource({ data: DATA, contentType: "application/json" }),
    transforms: [gzip()],
    sink: memorySink(),
  });
  await runJob(job);
  return job;
}

describe("the core's restore targets", () => {
  it("directoryRestoreTarget writes a non-tar backup as one file named by the content type, and removes its scratch", async () => {
    const job = await jsonJob();
    const parent = await tempDir();
    let restored: Buffer | undefined;
    let file: string | undefined;
    const report = await restoreDrill({
      job,
      target: directoryRestoreTarget({ parent }),
      check: async (context) => {
        file = context.file;
        restored = await readFile(context.file!);
        return true;
      },
    });
    expect(report).toMatchObject({
      ok: true,
      target: "directory",
      restore: { ok: true, bytes: DATA.length },
    });
    expect(report.restore?.details).toEqual({ file: "restored.json", bytes: DATA.length });
    expect(restored?.equals(DATA)).toBe(true);
    expect(file && existsSync(file)).toBe(false);
    expect(await readdir(parent)).toEqual([]);
  });

  it("a tar-only directory target refuses other content before reading it", async () => {
    const job = await jsonJob();
    const directory = await tempDir();
    const target = directoryRestoreTarget({ directory, tarOnly: true });
    const report = await restoreDrill({ job, target });
    expect(report.ok).toBe(false);
    expect(report.errors[0]).toMatchObject({ stage: "restore", code: "CONFIG_INVALID" });
    expect(await readdir(directory)).toEqual([]);
  });

  it("streamRestoreTarget reads every plain byte and keeps nothing", async () => {
    const job = await jsonJob();
    const report = await restoreDrill({ job, target: streamRestoreTarget() });
    expect(report).toMatchObject({ ok: true, target: "stream", restore: { bytes: DATA.length } });
  });

  it("rejects a bad option by name", () => {
    expect(() => directoryRestoreTarget({ tarOnly: "yes" } as never)).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }),
    );
  });
});

describe("a user's own RestoreTarget", () => {
  it("is refused before the backup is read when it does not accept the manifest", async () => {
    const job = await jsonJob();
    let restored = false;
    const target: RestoreTarget = {
      kind: "mine",
      accepts: (m) => (m.content.contentType === "text/csv" ? true : "only csv"),
      async restore() {
        restored = true;
        return { bytes: 0, details: {} };
      },
    };
    const report = await restoreDrill({ job, target });
    expect(restored).toBe(false);
    expect(report.errors).toEqual([expect.objectContaining({ stage: "restore", code: "CONFIG_INVALID" })]);
  });

  it("has its cleanup run when its restore fails half way, and its facts reach the check", async () => {
    const job = await jsonJob();
    const undone: string[] = [];
    const failing: RestoreTarget = {
      kind: "mine",
      accepts: () => true,
      async restore(plain, { onCleanup }) {
        onCleanup?.(async () => void undone.push("failing"));
        plain.destroy();
        throw Object.assign(new Error("refused"), { code: "X" });
      },
    };
    const failed = await restoreDrill({ job, target: failing });
    expect(failed.errors[0]).toMatchObject({ stage: "restore" });
    expect(failed.cleanup.ok).toBe(true);
    expect(undone).toEqual(["failing"]);

    let seen: unknown;
    const working: RestoreTarget = {
      kind: "mine",
      accepts: () => true,
      async restore(plain, { onCleanup }) {
        onCleanup?.(async () => void undone.push("working"));
        let bytes = 0;
        for await (const chunk of plain) bytes += (chunk as Buffer).length;
        return { bytes, details: { bytes }, facts: { answer: 42 } };
      },
    };
    const ok = await restoreDrill({
      job,
      target: working,
      check: (context) => {
        seen = context.answer;
        return true;
      },
    });
    expect(ok).toMatchObject({ ok: true, target: "mine", restore: { bytes: DATA.length } });
    expect(seen).toBe(42);
    expect(undone).toEqual(["failing", "working"]);
  });
});

describe("the content-type table", () => {
  it("names each known type's extension and format once", () => {
    expect(extensionOf("application/x-postgresql-custom")).toBe(".dump");
    expect(formatOf("application/sql")).toBe("sql");
    expect(formatOf("application/x-tar")).toBe("tar");
    expect(extensionOf("application/octet-stream")).toBeUndefined();
  });
});
