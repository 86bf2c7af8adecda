/**
 * Which folders the filesystem sink fsyncs: a crash test would need a block device that drops
 * writes, so this records the folders opened for a sync instead (the real calls still happen).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";

const foldersSynced: string[] = [];
vi.mock("node:fs/promises", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:fs/promises")>();
  return {
    ...real,
    open: async (...args: Parameters<typeof real.open>) => {
      const handle = await real.open(...args);
      if (args[1] === "r" && (await handle.stat()).isDirectory()) {
        const sync = handle.sync.bind(handle);
        handle.sync = async () => {
          foldersSynced.push(String(args[0]));
          return sync();
        };
      }
      return handle;
    },
  };
});

const { filesystemSink } = await import("../../src/sinks/filesystem.js");

const roots: string[] = [];
afterEach(async () => {
  foldersSynced.length = 0;
  for (const root of roots.splice(0)) await rm(root, { recursive: true, force: true });
});

/** A sink whose root does not exist yet, in a fresh folder `base`. */
async function freshSink() {
  const base = await mkdtemp(join(tmpdir(), "stowage-fsync-"));
  roots.push(base);
  const root = join(base, "root");
  return { base, root, sink: filesystemSink({ root }) };
}

/** Every folder from `base` down to the key's folder job/2026/11/29. */
const everyFolder = (base: string, root: string) =>
  new Set([base, root, ...["job", "job/2026", "job/2026/11", "job/2026/11/29"].map((f) => join(root, f))]);

describe("filesystem sink: folders it makes are on disk before a write resolves", () => {
  it("syncs the object's folder and the parent of every folder it made", async () => {
    const { base, root, sink } = await freshSink();
    await sink.write("job/2026/11/29/a.sql", Readable.from([Buffer.from("x")]));
    expect(new Set(foldersSynced)).toEqual(everyFolder(base, root));

    // The folders exist now: the next write syncs only its own folder.
    foldersSynced.length = 0;
    await sink.write("job/2026/11/29/b.sql", Readable.from([Buffer.from("y")]));
    expect(foldersSynced).toEqual([join(root, "job/2026/11/29")]);
  });

  it("does the same for a file a process wrote into (openFile)", async () => {
    const { base, root, sink } = await freshSink();
    const file = await sink.openFile!();
    await file.handle.write("z");
    await file.commit("job/2026/11/29/c.sql");
    expect(new Set(foldersSynced)).toEqual(everyFolder(base, root));
  });
});
