import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { filesystemSink, memorySink } from "../../src/index.js";
import { WriteBehind } from "../../src/sinks/filesystem.js";
import { sinkConformance } from "../conformance/sink.js";
import { keysOf } from "../support/expect-helpers.js";

sinkConformance("memory", async () => ({ sink: memorySink() }));

sinkConformance("filesystem", async () => {
  const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
  const sink = filesystemSink({ root });
  return {
    sink,
    leftovers: async () => {
      const temps: string[] = [];
      for await (const info of sink.temporaryFiles()) temps.push(info.key);
      // Also look for temp files by name, independently of the sink's own listing.
      const all = (await readdir(root, { recursive: true })) as string[];
      return [...temps, ...all.filter((p) => p.includes(".stowage-tmp-") && !temps.includes(p))];
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
  const temporaries = async (sink: ReturnType<typeof filesystemSink>) => {
    const keys: string[] = [];
    for await (const info of sink.temporaryFiles()) keys.push(info.key);
    return keys;
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
