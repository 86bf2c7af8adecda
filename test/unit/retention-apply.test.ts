/**
 * applyRetention and findOrphans against the real filesystem sink in a temp folder, with real
 * backups made by backup(); failures are injected by a thin wrapper that delegates to that sink.
 */
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { backup } from "../../src/core/backup.js";
import { listManifests } from "../../src/core/catalog.js";
import { isStowageError, type StowageError } from "../../src/core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../../src/core/manifest.js";
import { restore } from "../../src/core/restore.js";
import { applyRetention, findOrphans } from "../../src/core/retention-apply.js";
import { readAll } from "../../src/core/streams.js";
import type { Sink } from "../../src/core/types.js";
import { planRetention, type RetentionPolicy } from "../../src/policies/index.js";
import { thisMachine } from "../../src/sinks/filesystem/owner.js";
import { type FilesystemSink, filesystemSink, TEMP_MARKER } from "../../src/sinks/filesystem.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { gzip } from "../../src/transforms/gzip.js";

let root: string;
let sink: FilesystemSink;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "stowage-retention-"));
  sink = filesystemSink({ root });
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

const payload = (job: string, i: number) => `-- ${job} dump number ${i}\n${"row\n".repeat(100 + i)}`;

/** Makes `n` real backups of `job`, oldest first; returns their manifests. */
async function makeBackups(job: string, n: number, target: Sink = sink): Promise<Manifest[]> {
  const out: Manifest[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      await backup({
        job,
        source: bytesSource({ data: payload(job, i), contentType: "application/sql" }),
        transforms: [gzip()],
        sink: target,
      }),
    );
  }
  return out;
}

/** Every key in the sink (committed objects), sorted. */
async function keys(target: Sink = sink): Promise<string[]> {
  const all: string[] = [];
  for await (const info of target.list("")) all.push(info.key);
  return all.sort();
}

/** Files on disk under the root, independently of the sink's own listing. */
async function filesOnDisk(): Promise<string[]> {
  return ((await readdir(root, { recursive: true, withFileTypes: true })) as import("node:fs").Dirent[])
    .filter((d) => d.isFile())
    .map((d) => join(d.parentPath ?? (d as unknown as { path: string }).path, d.name).slice(root.length + 1))
    .sort();
}

/** Later than every backup made here: retention runs "two hours from now". */
const later = () => new Date(Date.now() + 2 * 3_600_000);

async function planFor(target: Sink, policy: RetentionPolicy, now: Date, job?: string) {
  const { manifests, invalid } = await listManifests(target, job ? { job } : {});
  return planRetention(manifests, policy, { now, invalid });
}

/** Delegates to the real sink, recording every delete call, with an optional hook before each. */
function recording(target: Sink, before?: (keys: readonly string[], call: number) => void | Promise<void>) {
  const calls: string[][] = [];
  const wrapped: Sink = {
    kind: target.kind,
    capabilities: target.capabilities,
    write: (k, body, o) => target.write(k, body, o),
    read: (k, o) => target.read(k, o),
    stat: (k, o) => target.stat(k, o),
    list: (p, o) => target.list(p, o),
    async delete(ks, o) {
      calls.push([...ks]);
      await before?.(ks, calls.length);
      return target.delete(ks, o);
    },
  };
  return { sink: wrapped, calls };
}

const isManifestKey = (k: string) => k.endsWith(MANIFEST_SUFFIX);

async function restoredText(m: Manifest): Promise<string> {
  return (await readAll(await restore({ sink, manifest: m }))).toString("utf8");
}

describe("applyRetention", () => {
  it("deletes each dropped backup's manifest before its artifact, and leaves kept ones restorable", async () => {
    const made = await makeBackups("app-db", 5);
    const plan = await planFor(sink, { keepLast: 2 }, later());
    expect(plan.drop.map((d) => d.id)).toEqual(
      made
        .slice(0, 3)
        .map((m) => m.id)
        .reverse(),
    );

    const rec = recording(sink);
    const result = await applyRetention({ sink: rec.sink, plan });

    expect(result).toMatchObject({ dryRun: false, failed: [], orphans: [], kept: 2 });
    expect(result.deleted.map((d) => [d.id, d.reason])).toEqual(
      made
        .slice(0, 3)
        .reverse()
        .map((m) => [m.id, "not kept by any rule"]),
    );
    expect(result.deleted[0]).toMatchObject({
      key: made[2]!.artifact.key,
      manifestKey: made[2]!.artifact.key + MANIFEST_SUFFIX,
    });
    // One batch of manifests, then one batch of their artifacts.
    expect(rec.calls).toEqual([result.deleted.map((d) => d.manifestKey), result.deleted.map((d) => d.key)]);

    const kept = made.slice(3);
    expect(await keys()).toEqual(
      kept.flatMap((m) => [m.artifact.key, m.artifact.key + MANIFEST_SUFFIX]).sort(),
    );
    expect(await filesOnDisk()).toEqual(await keys());
    for (const [i, m] of kept.entries()) expect(await restoredText(m)).toBe(payload("app-db", 3 + i));

    // Applying again, or planning again, deletes nothing more.
    const again = await applyRetention({ sink, plan: await planFor(sink, { keepLast: 2 }, later()) });
    expect(again.deleted).toEqual([]);
  });

  it("dryRun lists what it would delete and deletes nothing", async () => {
    await makeBackups("app-db", 3);
    const before = await keys();
    const plan = await planFor(sink, { keepLast: 1 }, later());
    const result = await applyRetention({ sink, plan, dryRun: true });
    expect(result.dryRun).toBe(true);
    expect(result.deleted.map((d) => d.id)).toEqual(plan.drop.map((d) => d.id));
    expect(result.deleted).toHaveLength(2);
    expect(await keys()).toEqual(before);
  });

  it("a failure between the manifest and the artifact delete leaves no dangling manifest, and the next run finishes", async () => {
    const made = await makeBackups("app-db", 4);
    const now = later();
    const plan = await planFor(sink, { keepLast: 1 }, now);
    const failing = recording(sink, (ks) => {
      if (!ks.some(isManifestKey))
        throw new Error("injected: disk went away after the manifests were deleted");
    });

    const first = await applyRetention({ sink: failing.sink, plan, orphans: false });
    expect(first.deleted).toEqual([]);
    expect(first.failed.map((f) => [f.id, f.stage, f.error.code])).toEqual(
      made
        .slice(0, 3)
        .reverse()
        .map((m) => [m.id, "artifact", "SINK_DELETE_FAILED"]),
    );
    expect(isStowageError(first.failed[0]!.error, "SINK_DELETE_FAILED")).toBe(true);

    // The state in between: manifests gone, artifacts left; every manifest still has its artifact.
    const { manifests } = await listManifests(sink);
    expect(manifests.map((m) => m.id)).toEqual([made[3]!.id]);
    for (const m of manifests) expect(await sink.stat(m.artifact.key)).toBeDefined();
    const orphans = await findOrphans(sink, { olderThan: "1h", now });
    expect(orphans.artifacts.map((a) => a.key).sort()).toEqual(
      made
        .slice(0, 3)
        .map((m) => m.artifact.key)
        .sort(),
    );
    expect(orphans.danglingManifests).toEqual([]);

    // The next run plans from what is listed (the dropped backups are invisible to it) and sweeps.
    const second = await applyRetention({ sink, plan: await planFor(sink, { keepLast: 1 }, now) });
    expect(second.deleted).toEqual([]);
    expect(second.orphans.sort()).toEqual(
      made
        .slice(0, 3)
        .map((m) => m.artifact.key)
        .sort(),
    );
    expect(await keys()).toEqual([made[3]!.artifact.key, made[3]!.artifact.key + MANIFEST_SUFFIX]);
    expect(await filesOnDisk()).toEqual(await keys());
    expect(await restoredText(made[3]!)).toBe(payload("app-db", 3));
  });

  it("an abort between the manifest and the artifact delete throws ABORTED; the next run finishes", async () => {
    const made = await makeBackups("app-db", 3);
    const now = later();
    const plan = await planFor(sink, { keepLast: 1 }, now);
    const controller = new AbortController();
    const crashing = recording(sink, (ks) => {
      // The process is stopped as the artifact delete begins: the sink honours the signal.
      if (!ks.some(isManifestKey)) {
        controller.abort(new Error("killed"));
        throw controller.signal.reason;
      }
    });
    const error = await applyRetention({ sink: crashing.sink, plan, signal: controller.signal }).catch(
      (e: unknown) => e,
    );
    expect(isStowageError(error, "ABORTED")).toBe(true);
    expect((error as StowageError).details.deleted).toEqual([]);
    expect((await listManifests(sink)).manifests.map((m) => m.id)).toEqual([made[2]!.id]);
    expect(await keys()).toHaveLength(4); // two orphan artifacts, one backup

    const next = await applyRetention({ sink, plan: await planFor(sink, { keepLast: 1 }, now) });
    expect(next.orphans).toHaveLength(2);
    expect(await keys()).toEqual([made[2]!.artifact.key, made[2]!.artifact.key + MANIFEST_SUFFIX]);
  });

  it("a manifest that cannot be deleted fails only its own backup, which stays whole", async () => {
    const made = await makeBackups("app-db", 4);
    const locked = made[1]!.artifact.key + MANIFEST_SUFFIX;
    const plan = await planFor(sink, { keepLast: 1 }, later());
    const withLock = recording(sink, (ks) => {
      if (ks.includes(locked))
        throw Object.assign(new Error("AccessDenied: object is locked"), { name: "AccessDenied" });
    });
    const result = await applyRetention({ sink: withLock.sink, plan });
    expect(result.failed.map((f) => [f.id, f.stage])).toEqual([[made[1]!.id, "manifest"]]);
    expect(result.deleted.map((d) => d.id).sort()).toEqual([made[0]!.id, made[2]!.id].sort());
    expect((await listManifests(sink)).manifests.map((m) => m.id)).toEqual([made[1]!.id, made[3]!.id]);
    expect(await restoredText(made[1]!)).toBe(payload("app-db", 1));
  });

  it("refuses a plan made for another kind of sink, before deleting anything", async () => {
    const memory = memorySink();
    await makeBackups("app-db", 2, memory);
    await makeBackups("app-db", 2);
    const before = await keys();
    const plan = await planFor(memory, { keepLast: 1 }, later());
    const error = await applyRetention({ sink, plan }).catch((e: unknown) => e);
    expect(isStowageError(error, "RETENTION_REFUSED")).toBe(true);
    expect(await keys()).toEqual(before);
  });

  it("names bad options", async () => {
    const plan = await planFor(sink, {}, later());
    const error = await applyRetention({ sink, plan, orphans: { olderThan: "an hour" } }).catch(
      (e: unknown) => e,
    );
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect((error as StowageError).details.issues).toEqual([
      { path: "orphans.olderThan", problem: expect.any(String) },
    ]);
    const bad = await applyRetention({ sink, plan: {} as never }).catch((e: unknown) => e);
    expect((bad as StowageError).details.issues).toEqual([{ path: "plan", problem: expect.any(String) }]);
  });

  it("sweeps orphans only under the plan's jobs, and only old ones", async () => {
    const [a] = await makeBackups("app-db", 1);
    const [b] = await makeBackups("logs", 1);
    // Orphan both artifacts by deleting their manifests behind the library's back.
    await sink.delete([a!.artifact.key + MANIFEST_SUFFIX, b!.artifact.key + MANIFEST_SUFFIX]);
    const [c] = await makeBackups("app-db", 1);
    const plan = await planFor(sink, { keepLast: 1 }, later(), "app-db");

    const young = await applyRetention({ sink, plan, now: new Date() });
    expect(young.orphans).toEqual([]); // younger than an hour: may be a backup being written
    const old = await applyRetention({ sink, plan });
    expect(old.orphans).toEqual([a!.artifact.key]);
    expect(await keys()).toEqual(
      [c!.artifact.key, c!.artifact.key + MANIFEST_SUFFIX, b!.artifact.key].sort(),
    );
  });
});

describe("findOrphans", () => {
  it("lists artifacts without a manifest, old temp files and dangling manifests; never foreign files", async () => {
    const [kept, orphaned, dangling] = await makeBackups("app-db", 3);
    await sink.delete([orphaned!.artifact.key + MANIFEST_SUFFIX]);
    await sink.delete([dangling!.artifact.key]);
    // Files that are not stowage's: never orphans.
    await writeFile(join(root, "README.txt"), "not a backup");
    await mkdir(join(root, "app-db", "notes"), { recursive: true });
    await writeFile(join(root, "app-db", "notes", "todo.txt"), "not a backup");
    // A temp file an interrupted write left, two hours old, and a fresh one (a write in progress).
    const folder = join(root, ...kept!.artifact.key.split("/").slice(0, -1));
    const oldTemp = join(folder, `.20261121T000000000Z-0badf00d.sql.gz${TEMP_MARKER}abc123`);
    const freshTemp = join(folder, `.20261121T000000000Z-0badf00e.sql.gz${TEMP_MARKER}def456`);
    await writeFile(oldTemp, "partial");
    await writeFile(freshTemp, "partial");
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(oldTemp, twoHoursAgo, twoHoursAgo);

    const now = new Date(Date.now() + 30 * 60_000);
    const found = await findOrphans(sink, { olderThan: "1h", now });
    expect(found.artifacts).toEqual([]); // the orphaned artifact is still too young
    expect(found.temporary.map((t) => t.key)).toEqual([oldTemp.slice(root.length + 1)]);
    expect(found.danglingManifests).toEqual([dangling!.artifact.key + MANIFEST_SUFFIX]);

    const later = await findOrphans(sink, {
      olderThan: "1h",
      now: new Date(Date.now() + 2 * 3_600_000),
      prefix: "app-db/",
    });
    expect(later.artifacts.map((a) => a.key)).toEqual([orphaned!.artifact.key]);
    expect(later.temporary).toHaveLength(2);
    expect((await findOrphans(sink, { olderThan: "1h", prefix: "logs/" })).temporary).toEqual([]);

    // applyRetention removes temp files too, and a deleted temp file is gone from disk.
    const plan = planRetention(
      (await listManifests(sink)).manifests,
      {},
      { now: new Date(Date.now() + 2 * 3_600_000) },
    );
    const result = await applyRetention({ sink, plan });
    expect(result.deleted).toEqual([]);
    expect(result.orphans.sort()).toEqual(
      [orphaned!.artifact.key, oldTemp.slice(root.length + 1), freshTemp.slice(root.length + 1)].sort(),
    );
    expect((await filesOnDisk()).filter((f) => f.includes(TEMP_MARKER))).toEqual([]);
    expect(await filesOnDisk()).toContain("README.txt");
    expect(await filesOnDisk()).toContain("app-db/notes/todo.txt");
  });

  it("works on a sink without temporary files (memory) and names a bad option", async () => {
    const memory = memorySink();
    const [m] = await makeBackups("app-db", 1, memory);
    await memory.delete([m!.artifact.key + MANIFEST_SUFFIX]);
    const found = await findOrphans(memory, { olderThan: "0s", now: new Date(Date.now() + 1000) });
    expect(found).toEqual({
      artifacts: [expect.objectContaining({ key: m!.artifact.key })],
      temporary: [],
      danglingManifests: [],
    });
    const error = await findOrphans(memory, { olderThan: "1 hour" }).catch((e: unknown) => e);
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
  });
});

describe("the sweep goes through the sink's leftovers()", () => {
  it("removes a dead writer's temporary file at once, and never a live writer's, whatever the clock", async () => {
    const [m] = await makeBackups("app-db", 1);
    const folder = m!.artifact.key.split("/").slice(0, -1).join("/");
    // A live writer: a file open for pg_dump, stalled for two days.
    const live = await sink.openFile({ prefix: `${folder}/20261129T000000000Z-00000001` });
    const liveFiles = (await filesOnDisk()).filter((f) => f.includes(TEMP_MARKER));
    for (const f of liveFiles) await utimes(join(root, f), later(), new Date(Date.now() - 2 * 86_400_000));
    // A dead writer: its record names a process that does not exist on this machine.
    const dead = `${folder}/.20261129T000000000Z-0badf00d.sql${TEMP_MARKER}abc123`;
    await writeFile(join(root, dead), "half a dump");
    await writeFile(
      join(root, `${dead}.owner`),
      JSON.stringify({ v: 1, ...(await thisMachine()), pid: 4_194_304, startedAt: "", heartbeatMs: 30_000 }),
    );

    const found = await findOrphans(sink, { olderThan: "1h", prefix: "app-db/" });
    expect(found.temporary.map((t) => [t.kind, t.key])).toEqual([["temporary-file", dead]]);
    const now = new Date(Date.now() + 3 * 86_400_000); // a sweeper whose clock is days ahead
    const result = await applyRetention({
      sink,
      plan: await planFor(sink, {}, now),
      now,
      orphans: { olderThan: "0s" },
    });
    expect(result.orphans).toEqual([dead]);
    expect((await filesOnDisk()).filter((f) => f.includes(TEMP_MARKER)).sort()).toEqual(liveFiles.sort());
    await live.discard();
    expect((await filesOnDisk()).filter((f) => f.includes(TEMP_MARKER))).toEqual([]);
  });

  it("reports and removes any sink's leftovers (here a sink with uploads), dry runs only report", async () => {
    const memory = memorySink();
    await makeBackups("app-db", 1, memory);
    const upload = {
      kind: "multipart-upload",
      key: "app-db/2026/x.sql",
      id: "upload-1",
      startedAt: new Date(0),
    };
    const asked: Array<{ prefix: string; olderThanMs: number }> = [];
    const removed: string[] = [];
    const withUploads: Sink = {
      ...memory,
      async *leftovers(prefix, options) {
        asked.push({ prefix, olderThanMs: options.olderThanMs });
        if ("app-db/2026/x.sql".startsWith(prefix) && !removed.includes(upload.id)) yield upload;
      },
      async removeLeftovers(leftovers) {
        removed.push(...leftovers.map((l) => l.id));
      },
    };
    const found = await findOrphans(withUploads, { olderThan: "1h", prefix: "app-db/" });
    expect(found.temporary).toEqual([upload]);
    expect(asked).toEqual([{ prefix: "app-db/", olderThanMs: 3_600_000 }]);
    const plan = await planFor(withUploads, {}, later());
    expect((await applyRetention({ sink: withUploads, plan, dryRun: true })).orphans).toEqual([upload.key]);
    expect(removed).toEqual([]);
    expect((await applyRetention({ sink: withUploads, plan })).orphans).toEqual([upload.key]);
    expect(removed).toEqual([upload.id]);
  });
});
