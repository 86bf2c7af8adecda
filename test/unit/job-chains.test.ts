/**
 * Jobs that run chains: a schedule per kind, the base picked from the sink's listing, retention
 * that keeps what the kept backups need, and the scheduler's rule that the larger kind wins a
 * minute both fall due.
 */
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  bytesSource,
  defineJob,
  directorySource,
  filesystemSink,
  gzip,
  largerKindDue,
  listManifests,
  restoreDirectoryChain,
  runJob,
} from "../../src/index.js";
import { tempFolders } from "../faults/harness.js";

/** Fresh temporary folders, removed after the file. */
const temp = tempFolders("jobchain");

const key = randomBytes(32);

describe("a job with a schedule per kind", () => {
  it("picks its base from the sink, chains incrementals and differentials, and keeps the chain", async () => {
    const tree = await temp("tree");
    const sink = filesystemSink({ root: await temp("store") });
    await writeFile(join(tree, "a.txt"), "one");
    let t = Date.parse("2026-11-20T00:00:00Z");
    const job = defineJob({
      name: "files",
      source: directorySource({ path: tree }),
      transforms: [gzip(), aes256gcm({ key })],
      keys: [{ key }],
      sink,
      schedule: { full: "0 3 * * 0", incremental: "*/15 * * * *" },
      retention: { keepLast: 1 },
    });
    const step = async (kind: "full" | "incremental" | "differential" | undefined, file: string) => {
      await writeFile(join(tree, file), file);
      t += 15 * 60_000;
      const result = await runJob(job, { now: new Date(t), ...(kind ? { kind } : {}) });
      expect(result.status).toBe("succeeded");
      return result.manifest!;
    };
    // No base yet: the first incremental is a full.
    const first = await step(undefined, "b.txt");
    expect(first.chain?.kind).toBe("full");
    const inc1 = await step("incremental", "c.txt");
    expect(inc1.chain).toMatchObject({ kind: "incremental", parent: { id: first.id } });
    const inc2 = await step(undefined, "d.txt");
    expect(inc2.chain).toMatchObject({ kind: "incremental", parent: { id: inc1.id } });
    const diff = await step("differential", "e.txt");
    expect(diff.chain).toMatchObject({ kind: "differential", parent: { id: first.id } });

    // keepLast 1 keeps the differential, and the full it needs; the incrementals go.
    const { manifests } = await listManifests(sink, { job: "files" });
    expect(manifests.map((m) => m.id).sort()).toEqual([first.id, diff.id].sort());
    const out = join(await temp("out"), "restored");
    await restoreDirectoryChain({ sink, manifest: diff, keys: [{ key }] }, out);
    for (const f of ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt"]) {
      expect(await readFile(join(out, f), "utf8")).toBe(await readFile(join(tree, f), "utf8"));
    }

    // A new full starts a new chain; the old one is then needed by nothing kept.
    const full2 = await step("full", "f.txt");
    expect(full2.chain).toEqual(expect.objectContaining({ kind: "full" }));
    expect(full2.chain?.parent).toBeUndefined();
    const after = await listManifests(sink, { job: "files" });
    expect(after.manifests.map((m) => m.id)).toEqual([full2.id]);
  });

  it("refuses a schedule per kind for a source that cannot chain, naming the option", () => {
    let error: unknown;
    try {
      defineJob({
        name: "db",
        source: bytesSource({ data: "x" }),
        sink: filesystemSink({ root: tmpdir() }),
        schedule: { full: "@daily", incremental: "*/15 * * * *" },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: "CONFIG_INVALID", details: { issues: [{ path: "schedule" }] } });
  });

  it("runs only the larger kind when two fall due at the same minute", () => {
    const job = defineJob({
      name: "files",
      source: directorySource({ path: tmpdir() }),
      sink: filesystemSink({ root: tmpdir() }),
      schedule: { full: "0 3 * * 0", incremental: "*/15 * * * *" },
    });
    const sunday3 = new Date("2026-11-22T03:00:00Z"); // a Sunday
    expect(largerKindDue(job, "incremental", sunday3, "UTC")).toBe(true);
    expect(largerKindDue(job, "full", sunday3, "UTC")).toBe(false);
    expect(largerKindDue(job, "incremental", new Date("2026-11-22T03:15:00Z"), "UTC")).toBe(false);
    expect(largerKindDue(job, "incremental", new Date("2026-11-23T03:00:00Z"), "UTC")).toBe(false);
  });
});
