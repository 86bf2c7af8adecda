import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import {
  type FilesystemSink,
  filesystemSink,
  isStowageError,
  type Leftover,
  memorySink,
  type StowageError,
} from "../../src/index.js";
import { fanOutSink } from "../../src/jobs/index.js";
import { WriteBehind } from "../../src/sinks/filesystem/file-writer.js";
import { thisMachine } from "../../src/sinks/filesystem/owner.js";
import { TEMP_MARKER } from "../../src/sinks/filesystem.js";
import { sinkConformance } from "../../src/testing.js";
import { keysOf } from "../support/expect-helpers.js";

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };

sinkConformance(slow, "memory", async () => ({ sink: memorySink() }));

sinkConformance(slow, "filesystem", async () => {
  const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
  const sink = filesystemSink({ root });
  return {
    sink,
    leftovers: async () => {
      // Temporary files and owner records by name, independently of the sink's own sweep.
      const all = (await readdir(root, { recursive: true })) as string[];
      return all.filter((p) => p.includes(".stowage-tmp-"));
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

// Through fanOutSink every write lands in both sinks or neither: the secondary's own listing and
// temporary files are leftovers when a write fails, since reads and listings go to the primary.
sinkConformance(slow, "fanOutSink (memory, filesystem)", async () => {
  const root = await mkdtemp(join(tmpdir(), "stowage-fanout-"));
  const secondary = filesystemSink({ root });
  return {
    sink: fanOutSink(memorySink(), [{ sink: secondary }]),
    leftovers: async () => {
      const all = (await readdir(root, { recursive: true })) as string[];
      const files = all.filter((p) => p.includes(".stowage-tmp-"));
      return [...files, ...(await keysOf(secondary, ""))]; // each case has a fresh fixture
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

describe("filesystem sink batching", () => {
  it("writes thousands of tiny chunks, batches across the 1 MiB boundary, byte for byte", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
    try {
      const sink = filesystemSink({ root });
      // 5,000 chunks of 1..600 bytes (more than IOV_MAX in one batch), then one of 3 MiB.
      const chunks = Array.from({ length: 5000 }, (_, i) => randomBytes(1 + (i % 600)));
      chunks.push(randomBytes(3 << 20));
      const expected = Buffer.concat(chunks);
      await sink.write("a/tiny.bin", Readable.from(chunks));
      expect((await readFile(join(root, "a", "tiny.bin"))).equals(expected)).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe("filesystem sink files for another process to write (openFile)", () => {
  const withRoot = async (body: (root: string) => Promise<void>) => {
    const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
    try {
      await body(root);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  };
  /** Temporary files (not their owner records) on disk, by name. */
  const temporaries = async (sink: ReturnType<typeof filesystemSink>) => {
    const all = (await readdir(sink.root, { recursive: true })) as string[];
    return all.filter((p) => p.includes(".stowage-tmp-") && !p.endsWith(".owner"));
  };
  const openFile = async (sink: ReturnType<typeof filesystemSink>) => {
    const file = await sink.openFile?.();
    if (!file) throw new Error("the filesystem sink offers openFile");
    return file;
  };

  it("commits what was written through the handle under its key, private, and leaves no temporary", () =>
    withRoot(async (root) => {
      const sink = filesystemSink({ root });
      const file = await openFile(sink);
      expect(await temporaries(sink)).toHaveLength(1); // visible as a temporary, not as an object
      expect(await keysOf(sink)).toEqual([]);
      const parts = Array.from({ length: 20 }, () => randomBytes(2 << 20)); // 40 MiB: past write-behind
      let written = 0;
      for (const part of parts) {
        await file.handle.write(part, 0, part.length, written);
        written += part.length;
        file.grown(written);
      }
      const object = await file.commit("job/2026/11/29/a.sql");
      expect(object.key).toBe("job/2026/11/29/a.sql");
      const path = join(root, "job", "2026", "11", "29", "a.sql");
      expect((await readFile(path)).equals(Buffer.concat(parts))).toBe(true);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      expect(await temporaries(sink)).toEqual([]);
      await expect(file.commit("job/again.sql")).rejects.toThrow();
    }));

  it("discard, and a commit after an abort, leave nothing", () =>
    withRoot(async (root) => {
      const sink = filesystemSink({ root });
      const dropped = await openFile(sink);
      await dropped.handle.write(Buffer.from("half a dump"));
      await dropped.discard();
      const aborted = await openFile(sink);
      await aborted.handle.write(Buffer.from("half a dump"));
      const controller = new AbortController();
      controller.abort();
      await expect(aborted.commit("job/x.sql", { signal: controller.signal })).rejects.toMatchObject({
        code: "ABORTED",
      });
      expect(await temporaries(sink)).toEqual([]);
      expect(await keysOf(sink)).toEqual([]);
    }));
});

describe("filesystem sink write-behind", () => {
  /** A file whose syncs are recorded, and whose first write-behind sync fails like a lost write-back. */
  const file = (failFirstDatasync: boolean) => {
    const calls: string[] = [];
    let datasyncs = 0;
    return {
      calls,
      handle: {
        datasync: async () => {
          calls.push("datasync");
          if (failFirstDatasync && datasyncs++ === 0) throw Object.assign(new Error("EIO"), { code: "EIO" });
        },
        sync: async () => {
          calls.push("sync");
        },
      },
    };
  };

  it("syncs every 32 MiB as the file grows, then fsyncs once at the end", async () => {
    const { calls, handle } = file(false);
    const behind = new WriteBehind(handle);
    for (let mib = 1; mib <= 100; mib++) behind.grown(mib << 20);
    await behind.sync();
    // At 32, 64 and 96 MiB; the final fsync runs beside the last of them.
    expect([...calls].sort()).toEqual(["datasync", "datasync", "datasync", "sync"]);
  });

  it("fails the final sync when a write-behind sync failed, though the final fsync itself succeeds", async () => {
    const { calls, handle } = file(true);
    const behind = new WriteBehind(handle);
    for (let mib = 1; mib <= 70; mib++) behind.grown(mib << 20);
    await expect(behind.sync()).rejects.toMatchObject({ code: "EIO" });
    expect(calls).toContain("sync");
  });
});

describe("filesystem sink leftovers: a temporary file is removed only when its writer is gone", () => {
  const roots: string[] = [];
  afterEach(async () => {
    for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
  });
  const fresh = async (options: { heartbeatMs?: number } = {}) => {
    const root = await mkdtemp(join(tmpdir(), "stowage-fs-left-"));
    roots.push(root);
    return filesystemSink({ root, ...options });
  };
  const sweep = async (sink: FilesystemSink, prefix: string, now = new Date(), olderThanMs = 0) => {
    const found: Leftover[] = [];
    for await (const l of sink.leftovers(prefix, { olderThanMs, now })) found.push(l);
    return found;
  };
  const onDisk = async (sink: FilesystemSink) =>
    ((await readdir(sink.root, { recursive: true })) as string[])
      .filter((p) => p.includes(TEMP_MARKER))
      .sort();
  const daysAgo = (days: number) => new Date(Date.now() - days * 86_400_000);
  /** A temporary file and an owner record as a writer would leave them, with `record` as its content. */
  const plant = async (sink: FilesystemSink, folder: string, record: object | string) => {
    await mkdir(join(sink.root, folder), { recursive: true });
    const temp = join(sink.root, folder, `.20261129T000000000Z-0badf00d.sql${TEMP_MARKER}abc123`);
    await writeFile(temp, "half a dump");
    await writeFile(`${temp}.owner`, typeof record === "string" ? record : JSON.stringify(record));
    return `${folder}/${temp.slice(temp.lastIndexOf("/") + 1)}`;
  };
  const me = async () => ({
    v: 1,
    ...(await thisMachine()),
    startedAt: new Date().toISOString(),
    heartbeatMs: 30_000,
  });

  it("keeps a live writer's file, stalled for days and swept with any clock; a dead one goes at once", async () => {
    const sink = await fresh();
    const file = await sink.openFile({ prefix: "job/2026/11/29/20261129T000000000Z-00000001" });
    await file.handle.write("the first bytes of a dump");
    const [temp, record] = await onDisk(sink);
    expect(temp).toMatch(/^job\/2026\/11\/29\/\.20261129T000000000Z-00000001\.stowage-tmp-[0-9a-f]+$/);
    expect(record).toBe(`${temp}.owner`);
    for (const f of [temp!, record!]) await utimes(join(sink.root, f), daysAgo(2), daysAgo(2));
    for (const ahead of [0, 10 * 60_000, 3 * 86_400_000]) {
      expect(await sweep(sink, "job/", new Date(Date.now() + ahead))).toEqual([]);
      expect(await sweep(sink, "", new Date(Date.now() + ahead))).toEqual([]);
    }
    await file.discard();
    expect(await onDisk(sink)).toEqual([]);

    // The same record with a pid that no longer exists, or a recycled pid (another start time).
    for (const owner of [
      { ...(await me()), pid: 4_194_304 },
      { ...(await me()), pid: process.pid, pidStart: "1" },
    ]) {
      const key = await plant(sink, "job/2026/11/29", owner);
      const found = await sweep(sink, "job/", new Date(), 365 * 86_400_000);
      expect(found).toEqual([{ kind: "temporary-file", key, id: key, startedAt: expect.any(Date) }]);
      await sink.removeLeftovers(found);
      expect(await onDisk(sink)).toEqual([]);
    }
  });

  it("judges a writer on another host by its heartbeat against the filesystem's clock, never the sweeper's", async () => {
    const sink = await fresh();
    const key = await plant(sink, "job", { ...(await me()), host: "another-host", bootId: "x", pid: 1 });
    // Fresh heartbeat: kept, even by a sweeper whose clock is 10 minutes or a day ahead.
    for (const ahead of [10 * 60_000, 86_400_000]) {
      expect(await sweep(sink, "job/", new Date(Date.now() + ahead))).toEqual([]);
    }
    // 14 minutes without a beat: still within the window (15 min).
    const path = join(sink.root, `${key}.owner`);
    await utimes(path, new Date(Date.now() - 14 * 60_000), new Date(Date.now() - 14 * 60_000));
    expect(await sweep(sink, "job/")).toEqual([]);
    // 16 minutes: dead, even for a sweeper whose clock is an hour behind.
    await utimes(path, new Date(Date.now() - 16 * 60_000), new Date(Date.now() - 16 * 60_000));
    expect((await sweep(sink, "job/", new Date(Date.now() - 3_600_000))).map((l) => l.key)).toEqual([key]);
  });

  it("keeps a file whose record is still empty (being written), and drops a lone record of a dead writer", async () => {
    const sink = await fresh();
    await plant(sink, "a", "");
    expect(await sweep(sink, "a/")).toEqual([]);
    // A record whose file is gone (a crash between the rename and removing the record).
    await mkdir(join(sink.root, "b"), { recursive: true });
    const lone = `b/.x.sql${TEMP_MARKER}def456.owner`;
    await writeFile(join(sink.root, lone), JSON.stringify({ ...(await me()), pid: 4_194_304 }));
    const found = await sweep(sink, "b/");
    expect(found).toEqual([{ kind: "owner-record", key: lone, id: lone, startedAt: expect.any(Date) }]);
    await sink.removeLeftovers(found);
    expect(await onDisk(sink)).toEqual([
      "a/.20261129T000000000Z-0badf00d.sql.stowage-tmp-abc123",
      "a/.20261129T000000000Z-0badf00d.sql.stowage-tmp-abc123.owner",
    ]);
    // A temporary file without any record (an older version's) is judged by age, as before.
    await mkdir(join(sink.root, "b")); // removed with its last leftover
    await writeFile(join(sink.root, "b", `.y.sql${TEMP_MARKER}0000aa`), "old");
    await utimes(join(sink.root, "b", `.y.sql${TEMP_MARKER}0000aa`), daysAgo(1), daysAgo(1));
    expect(await sweep(sink, "b/", new Date(), 2 * 86_400_000)).toEqual([]);
    expect((await sweep(sink, "b/", new Date(), 3_600_000)).map((l) => l.kind)).toEqual(["temporary-file"]);
  });

  it("beats while a write is open, and leaves no record once the write ends", async () => {
    const sink = await fresh({ heartbeatMs: 20 });
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    async function* slow() {
      yield Buffer.from("a");
      await gate;
      yield Buffer.from("b");
    }
    const writing = sink.write("job/a.bin", Readable.from(slow()));
    await delay(50);
    const record = (await onDisk(sink)).find((f) => f.endsWith(".owner"))!;
    const path = join(sink.root, record);
    await utimes(path, daysAgo(1), daysAgo(1));
    await delay(200);
    expect((await stat(path)).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    release();
    await writing;
    expect(await onDisk(sink)).toEqual([]);
    expect(await readFile(join(sink.root, "job", "a.bin"), "utf8")).toBe("ab");
  });

  it("removeLeftovers refuses a key that is not a temporary file", async () => {
    const sink = await fresh();
    await sink.write("job/a.bin", Readable.from([Buffer.from("keep me")]));
    const error = await sink
      .removeLeftovers([{ kind: "temporary-file", key: "job/a.bin", id: "job/a.bin", startedAt: new Date() }])
      .catch((e: unknown) => e);
    expect(isStowageError(error, "SINK_DELETE_FAILED")).toBe(true);
    expect(await readFile(join(sink.root, "job", "a.bin"), "utf8")).toBe("keep me");
  });
});

describe("filesystem sink and symbolic links: never through a link below the root", () => {
  const made: string[] = [];
  afterEach(async () => {
    for (const dir of made.splice(0)) await rm(dir, { recursive: true, force: true });
  });
  const setup = async () => {
    const base = await mkdtemp(join(tmpdir(), "stowage-fs-link-"));
    made.push(base);
    const outside = join(base, "outside");
    await mkdir(join(outside, "2026"), { recursive: true });
    await writeFile(join(outside, "2026", "x.sql"), "not the sink's");
    // The root itself is a link: allowed.
    await mkdir(join(base, "real-root"));
    await symlink(join(base, "real-root"), join(base, "root"));
    const sink = filesystemSink({ root: join(base, "root") });
    await sink.write("good/a.bin", Readable.from([Buffer.from("a")]));
    await symlink(outside, join(base, "real-root", "linked"));
    return { base, outside, sink };
  };
  const code = (promise: Promise<unknown>) =>
    promise.then(
      () => "resolved",
      (e: unknown) => (isStowageError(e) ? `${e.code}:${e.details.reason}` : String(e)),
    );
  const drain = async (iterable: AsyncIterable<unknown>) => {
    for await (const _ of iterable);
  };

  it("refuses to write, read, stat, list, sweep or delete through a job folder linked out of the root", async () => {
    const { outside, sink } = await setup();
    expect(await code(sink.write("linked/2026/y.sql", Readable.from([Buffer.from("y")])))).toBe(
      "SINK_WRITE_FAILED:symbolic-link",
    );
    expect(await code(sink.read("linked/2026/x.sql"))).toBe("SINK_READ_FAILED:symbolic-link");
    expect(await code(sink.stat("linked/2026/x.sql"))).toBe("SINK_READ_FAILED:symbolic-link");
    expect(await code(sink.delete(["linked/2026/x.sql"]))).toBe("SINK_DELETE_FAILED:symbolic-link");
    expect(await code(drain(sink.list("linked/")))).toBe("SINK_READ_FAILED:symbolic-link");
    expect(await code(drain(sink.list("")))).toBe("SINK_READ_FAILED:symbolic-link"); // the two agree
    expect(await code(drain(sink.leftovers("linked/", { olderThanMs: 0, now: new Date() })))).toBe(
      "SINK_READ_FAILED:symbolic-link",
    );
    expect(await code(sink.openFile({ prefix: "linked/2026/z" }))).toBe("SINK_WRITE_FAILED:symbolic-link");
    expect(((await readdir(outside, { recursive: true })) as string[]).sort()).toEqual([
      "2026",
      "2026/x.sql",
    ]);
    expect(await readFile(join(outside, "2026", "x.sql"), "utf8")).toBe("not the sink's");
  });

  it("refuses a link to a file, or one that stays inside the root, the same way", async () => {
    const { base, sink } = await setup();
    await rm(join(base, "real-root", "linked"));
    await symlink(join(base, "real-root", "good"), join(base, "real-root", "alias"));
    await symlink(join(base, "real-root", "good", "a.bin"), join(base, "real-root", "good", "b.bin"));
    expect(await code(sink.read("alias/a.bin"))).toBe("SINK_READ_FAILED:symbolic-link");
    expect(await code(sink.read("good/b.bin"))).toBe("SINK_READ_FAILED:symbolic-link");
    expect(await code(drain(sink.list("good/")))).toBe("SINK_READ_FAILED:symbolic-link");
    await rm(join(base, "real-root", "good", "b.bin"));
    expect(await code(drain(sink.list("")))).toBe("SINK_READ_FAILED:symbolic-link");
    await rm(join(base, "real-root", "alias"));
    expect(await keysOf(sink)).toEqual(["good/a.bin"]);
  });
});

describe("filesystem sink: a folder it cannot create is named with the real cause", () => {
  it("a root below a file: ENOTDIR", async () => {
    const base = await mkdtemp(join(tmpdir(), "stowage-fs-ro-"));
    try {
      await writeFile(join(base, "file"), "x");
      const sink = filesystemSink({ root: join(base, "file", "root") });
      const error = await sink.write("job/a.bin", Readable.from([Buffer.from("a")])).catch((e: unknown) => e);
      expect(isStowageError(error, "SINK_WRITE_FAILED")).toBe(true);
      expect((error as StowageError).details).toMatchObject({ errno: "ENOTDIR" });
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });

  it("a root on a read-only mount: EROFS, not Node's ENOENT", async () => {
    const base = await mkdtemp(join(tmpdir(), "stowage-fs-ro-"));
    const mount = promisify(execFile);
    try {
      await mount("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", base]);
      try {
        const sink = filesystemSink({ root: join(base, "root") });
        const error = await sink
          .write("job/a.bin", Readable.from([Buffer.from("a")]))
          .catch((e: unknown) => e);
        expect(isStowageError(error, "SINK_WRITE_FAILED")).toBe(true);
        expect((error as StowageError).details).toMatchObject({ folder: join(base, "root"), errno: "EROFS" });
        const file = await sink.openFile().catch((e: unknown) => e);
        expect((file as StowageError).details).toMatchObject({ errno: "EROFS" });
      } finally {
        await mount("umount", [base]);
      }
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
