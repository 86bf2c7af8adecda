/**
 * Incremental backups of a folder: a tree changed between runs in every way (new, modified,
 * deleted, renamed, mode-only, a file replaced by a folder and back, symlinks) is restored at each
 * point of the chain and compared byte for byte and mode for mode; a missing or corrupt link is
 * named before anything is written; every link passes extractTar's rules; a failed incremental
 * leaves nothing.
 */
import { createHash, randomBytes } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  unlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  type ChainRecord,
  directorySource,
  filesystemSink,
  gzip,
  INDEX_MEMBER,
  listManifests,
  type Manifest,
  readIndex,
  restoreDirectoryChain,
  type Sink,
  type Source,
  verifyChain,
} from "../../src/index.js";
import { tempFolders } from "../faults/harness.js";

/** Fresh temporary folders, removed after the file. */
const temp = tempFolders("chain");

const key = randomBytes(32);
const keys = [{ key }];
const transforms = () => [gzip({ level: 1 }), aes256gcm({ key })];

type Snapshot = Record<string, string>;
/** Every path with its type, mode and bytes (a hash) or link target: what a restore must give back. */
async function snapshot(root: string, rel = ""): Promise<Snapshot> {
  const out: Snapshot = {};
  for (const name of (await readdir(rel ? join(root, rel) : root)).sort()) {
    const path = rel ? `${rel}/${name}` : name;
    const abs = join(root, path);
    const info = await lstat(abs);
    const mode = (info.mode & 0o777).toString(8);
    if (info.isSymbolicLink()) out[path] = `link -> ${await readlink(abs)}`;
    else if (info.isDirectory()) {
      out[path] = `dir ${mode}`;
      Object.assign(out, await snapshot(root, path));
    } else {
      out[path] = `file ${mode} ${createHash("sha256")
        .update(await readFile(abs))
        .digest("hex")}`;
    }
  }
  return out;
}

async function put(root: string, rel: string, data: string | Buffer, mode = 0o644): Promise<void> {
  await mkdir(join(root, rel, ".."), { recursive: true });
  await writeFile(join(root, rel), data);
  await chmod(join(root, rel), mode);
}

async function _exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

/** One chained run of `tree` into `sink`, as a job would make it. */
function run(tree: string, sink: Sink, kind: ChainRecord["kind"], base?: Manifest) {
  const source = directorySource({ path: tree }).chainFrom({ kind, sink, keys, ...(base ? { base } : {}) });
  return backup({ job: "files", source, sink, transforms: transforms() });
}

describe("a chain of directory backups", () => {
  it("restores the tree exactly as it was at every link: full, incrementals, a differential", async () => {
    const tree = await temp("tree");
    const store = await temp("store");
    const sink = filesystemSink({ root: store });
    const big = randomBytes(300_000);

    // t0: the full.
    await put(tree, "a.txt", "alpha");
    await put(tree, "big.bin", big);
    await put(tree, "dir1/c.txt", "charlie");
    await put(tree, "dir1/sub/d.txt", "delta");
    await put(tree, "gone.txt", "to be deleted");
    await put(tree, "rename-me.txt", "renamed later");
    await put(tree, "mode.sh", "#!/bin/sh\n");
    await put(tree, "becomes-dir", "a file for now");
    await put(tree, "empty", "");
    await symlink("a.txt", join(tree, "link"));
    await chmod(join(tree, "dir1"), 0o750);
    const at0 = await snapshot(tree);
    const full = await run(tree, sink, "full");
    expect(full.chain).toMatchObject({ kind: "full", index: { member: INDEX_MEMBER } });
    expect(full.chain?.parent).toBeUndefined();

    // t1: every kind of change, then an incremental.
    await put(tree, "new.txt", "brand new");
    await put(tree, "a.txt", "ALPHA"); // same size, new bytes
    await utimes(join(tree, "a.txt"), new Date(2020, 0, 1), new Date(2020, 0, 1)); // mtime set back
    await unlink(join(tree, "gone.txt"));
    await rename(join(tree, "rename-me.txt"), join(tree, "renamed.txt"));
    await chmod(join(tree, "mode.sh"), 0o755); // mode only
    await unlink(join(tree, "becomes-dir"));
    await put(tree, "becomes-dir/inside.txt", "now a folder");
    await unlink(join(tree, "link"));
    await symlink("dir1/c.txt", join(tree, "link")); // retargeted
    await symlink("dir1", join(tree, "dirlink"));
    const at1 = await snapshot(tree);
    const inc1 = await run(tree, sink, "incremental", full);
    expect(inc1.chain).toMatchObject({
      kind: "incremental",
      parent: { id: full.id, key: full.artifact.key },
    });
    const changes1 = inc1.source.details.changes as { packed: number; unchanged: number; deleted: number };
    // a.txt, new.txt, renamed.txt, mode.sh, becomes-dir/inside.txt are packed; big.bin, c.txt,
    // d.txt and empty stay in the full; gone.txt and rename-me.txt are deleted.
    expect(changes1).toEqual({ packed: 5, unchanged: 4, deleted: 2 });
    expect(inc1.artifact.bytes).toBeLessThan(full.artifact.bytes / 10);

    // t2: a folder removed whole, a folder replaced by a file, the big file changed.
    await rm(join(tree, "dir1/sub"), { recursive: true });
    await rm(join(tree, "becomes-dir"), { recursive: true });
    await put(tree, "becomes-dir", "a file again", 0o600);
    const big2 = Buffer.from(big);
    big2[1234] = big2[1234]! ^ 0xff;
    await put(tree, "big.bin", big2);
    const at2 = await snapshot(tree);
    const inc2 = await run(tree, sink, "incremental", inc1);
    expect(inc2.chain?.parent?.id).toBe(inc1.id);

    // t3: a differential against the full: everything changed since t0.
    await put(tree, "late.txt", "late");
    const at3 = await snapshot(tree);
    const diff = await run(tree, sink, "differential", full);
    expect(diff.chain).toMatchObject({ kind: "differential", parent: { id: full.id } });

    for (const [manifest, expected, links] of [
      [full, at0, [full.id]],
      [inc1, at1, [full.id, inc1.id]],
      [inc2, at2, [full.id, inc1.id, inc2.id]],
      [diff, at3, [full.id, diff.id]],
    ] as const) {
      const out = join(await temp("out"), "restored");
      const result = await restoreDirectoryChain({ sink, manifest, keys }, out);
      expect(result.links).toEqual(links);
      expect(await snapshot(out)).toEqual(expected);
    }

    // The index is stored with the backup, encrypted: its text appears nowhere in the sink.
    for (const m of [full, inc1, inc2, diff]) {
      const stored = await readFile(join(store, m.artifact.key));
      expect(stored.includes(Buffer.from("stowage-directory-index"))).toBe(false);
      expect(stored.includes(Buffer.from("renamed.txt"))).toBe(false);
    }
    const index = await readIndex({ sink, manifest: inc2, keys });
    expect(index.entries.find((e) => e.path === "renamed.txt")?.origin).toBe(inc1.id);
    expect(index.deleted.sort()).toEqual(["becomes-dir/inside.txt", "dir1/sub", "dir1/sub/d.txt"]);

    // verify of the chain checks every link; the backup's own verify only its artifact.
    const report = await verifyChain({ sink, manifest: inc2, keys });
    expect(report.ok).toBe(true);
    expect(report.links.map((l) => l.id)).toEqual([full.id, inc1.id, inc2.id]);
  });

  it("names a missing or corrupt link before anything is written", async () => {
    const tree = await temp("tree");
    const store = await temp("store");
    const sink = filesystemSink({ root: store });
    await put(tree, "a.txt", "one");
    const full = await run(tree, sink, "full");
    await put(tree, "b.txt", "two");
    const inc1 = await run(tree, sink, "incremental", full);
    await put(tree, "c.txt", "three");
    const inc2 = await run(tree, sink, "incremental", inc1);

    const restoreTo = async () => {
      const parent = await temp("out");
      const out = join(parent, "restored");
      const error = await restoreDirectoryChain({ sink, manifest: inc2, keys }, out).catch((e: unknown) => e);
      expect(await readdir(parent)).toEqual([]);
      return error as { code?: string; details?: { reason?: string; link?: { id?: string } } };
    };

    // A corrupt full: one byte flipped in the middle of its artifact.
    const fullPath = join(store, full.artifact.key);
    const good = await readFile(fullPath);
    const bad = Buffer.from(good);
    bad[bad.length >> 1] = bad[bad.length >> 1]! ^ 1;
    await writeFile(fullPath, bad);
    let error = await restoreTo();
    expect(error.code).toBe("RESTORE_FAILED");
    expect(error.details).toMatchObject({ reason: "corrupt-link", link: { id: full.id } });
    const report = await verifyChain({ sink, manifest: inc2, keys });
    expect(report.ok).toBe(false);
    expect(report.links.map((l) => l.ok)).toEqual([false, true, true]);
    await writeFile(fullPath, good);

    // A missing artifact in the middle of the chain.
    const middle = join(store, inc1.artifact.key);
    const kept = await readFile(middle);
    await unlink(middle);
    error = await restoreTo();
    expect(error.details).toMatchObject({ reason: "missing-link", link: { id: inc1.id } });
    await writeFile(middle, kept);

    // A missing manifest: the chain cannot be followed.
    const listed = (await listManifests(sink, { job: "files" })).manifests;
    const without = listed.filter((m) => m.id !== inc1.id);
    const parent = await temp("out");
    error = (await restoreDirectoryChain(
      { sink, manifest: inc2, manifests: without, keys },
      join(parent, "r"),
    ).catch((e: unknown) => e)) as typeof error;
    expect(error.details).toMatchObject({ reason: "missing-link", link: { id: inc1.id } });
    expect(await readdir(parent)).toEqual([]);
    expect((await verifyChain({ sink, manifest: inc2, manifests: without, keys })).broken?.link.id).toBe(
      inc1.id,
    );

    // Whole again, it restores.
    const out = join(await temp("out"), "restored");
    await restoreDirectoryChain({ sink, manifest: inc2, keys }, out);
    expect(await snapshot(out)).toEqual(await snapshot(tree));
  });

  it.each([
    ["path-traversal", { name: "../evil.txt", type: "file" as const }],
    ["link-escape", { name: "escape", type: "symlink" as const, linkname: "../outside" }],
  ])("applies extractTar's rules to every link (%s in an incremental)", async (reason, entry) => {
    const tree = await temp("tree");
    const store = await temp("store");
    const sink = filesystemSink({ root: store });
    await put(tree, "a.txt", "one");
    const full = await run(tree, sink, "full");
    const inc = await backup({
      job: "files",
      source: craftedIncrement(full, entry),
      sink,
      transforms: transforms(),
    });
    const parent = await temp("out");
    const error = (await restoreDirectoryChain({ sink, manifest: inc, keys }, join(parent, "r")).catch(
      (e: unknown) => e,
    )) as { code?: string; details?: { reason?: string } };
    expect(error.code).toBe("RESTORE_FAILED");
    expect(error.details?.reason).toBe(reason);
    expect(await readdir(parent)).toEqual([]);
  });

  it("leaves nothing when an incremental fails part-way, and the next one still chains", async () => {
    const tree = await temp("tree");
    const store = await temp("store");
    const sink = filesystemSink({ root: store });
    await put(tree, "a.txt", "one");
    const full = await run(tree, sink, "full");
    const before = (await readdir(store, { recursive: true })).sort();
    await put(tree, "big.bin", randomBytes(4 << 20));
    const failing: Sink = {
      ...sink,
      async write(k, body, options) {
        let seen = 0;
        async function* cut() {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            seen += chunk.length;
            if (seen > 64 * 1024) throw Object.assign(new Error("disk full"), { code: "ENOSPC" });
            yield chunk;
          }
        }
        return sink.write(k, Readable.from(cut()), options);
      },
    };
    const source = directorySource({ path: tree }).chainFrom({ kind: "incremental", base: full, sink, keys });
    const error = await backup({ job: "files", source, sink: failing, transforms: transforms() }).catch(
      (e) => e,
    );
    expect(error.code).toBe("SINK_WRITE_FAILED");
    expect((await readdir(store, { recursive: true })).sort()).toEqual(before);

    const inc = await run(tree, sink, "incremental", full);
    const out = join(await temp("out"), "restored");
    await restoreDirectoryChain({ sink, manifest: inc, keys }, out);
    expect(await snapshot(out)).toEqual(await snapshot(tree));
  });

  it("refuses a base that cannot be one, naming the option", async () => {
    const tree = await temp("tree");
    const sink = filesystemSink({ root: await temp("store") });
    await put(tree, "a.txt", "one");
    const plain = await backup({ job: "files", source: directorySource({ path: tree }), sink });
    expect(plain.chain).toBeUndefined();
    const full = await run(tree, sink, "full");
    const inc = await run(tree, sink, "incremental", full);
    for (const [base, kind] of [
      [plain, "incremental"],
      [inc, "differential"],
    ] as const) {
      let error: unknown;
      try {
        directorySource({ path: tree, incremental: { base, kind, sink } });
      } catch (e) {
        error = e;
      }
      expect(error).toMatchObject({
        code: "CONFIG_INVALID",
        details: { issues: [{ path: "incremental.base" }] },
      });
    }
  });
});

/**
 * A source that writes an incremental by hand: the given entry (unsafe), and an index that lists
 * it, chained to `full`.
 */
function craftedIncrement(
  full: Manifest,
  entry: { name: string; type: "file" | "symlink"; linkname?: string },
): Source {
  return {
    kind: "directory",
    name: full.source.name,
    async open() {
      const lines = [
        { format: "stowage-directory-index", version: 1, kind: "incremental", entries: 2 },
        {
          path: "a.txt",
          type: "file",
          size: 3,
          mode: 0o644,
          mtimeNs: "0",
          ctimeNs: "0",
          ino: "1",
          sha256: createHash("sha256").update("one").digest("hex"),
          origin: full.id,
        },
        {
          path: entry.name,
          type: entry.type,
          size: entry.type === "file" ? 4 : 0,
          mode: 0o644,
          mtimeNs: "0",
          ctimeNs: "0",
          ino: "2",
          ...(entry.type === "file" ? { sha256: createHash("sha256").update("evil").digest("hex") } : {}),
        },
      ];
      const index = Buffer.from(`${lines.map((l) => JSON.stringify(l)).join("\n")}\n`);
      const pack = tar.pack();
      if (entry.type === "file") pack.entry({ name: entry.name, mode: 0o644 }, "evil");
      else pack.entry({ name: entry.name, type: "symlink", linkname: entry.linkname! });
      pack.entry({ name: INDEX_MEMBER, mode: 0o600 }, index);
      pack.finalize();
      const record: ChainRecord = {
        kind: "incremental",
        parent: { id: full.id, key: full.artifact.key },
        index: { member: INDEX_MEMBER, entries: 2, sha256: createHash("sha256").update(index).digest("hex") },
      };
      return {
        stream: Readable.from(pack),
        contentType: "application/x-tar",
        details: async () => ({ path: full.source.details.path }),
        chain: () => record,
      };
    },
  };
}
