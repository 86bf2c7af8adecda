import { randomBytes } from "node:crypto";
import {
  chmod,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import tar, { type Header } from "tar-stream";

type Headers = Partial<Header> & { name: string; pax?: Record<string, string> };

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  backup,
  bytesSource,
  directorySource,
  extractTar,
  gzip,
  isStowageError,
  memorySink,
  readAll,
  restore,
} from "../../src/index.js";

type Entry = { header: Headers; body?: Buffer | string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack();
  const collected = readAll(Readable.from(pack, { objectMode: false }));
  for (const { header, body } of entries) {
    await new Promise<void>((done, fail) => {
      const cb = (error?: Error | null) => (error ? fail(error) : done());
      if (body === undefined) pack.entry(header, cb);
      else pack.entry(header, body, cb);
    });
  }
  pack.finalize();
  return collected;
}

/** Rewrites the size field of the header at `offset` and fixes its checksum: a tar that lies. */
function withDeclaredSize(archive: Buffer, offset: number, size: number): Buffer {
  const copy = Buffer.from(archive);
  copy.write(`${size.toString(8).padStart(11, "0")}\0`, offset + 124, "latin1");
  copy.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = offset; i < offset + 512; i++) sum += copy[i]!;
  copy.write(`${sum.toString(8).padStart(6, "0")}\0 `, offset + 148, "latin1");
  return copy;
}

async function refusal(promise: Promise<unknown>): Promise<{ code: string; reason?: unknown }> {
  try {
    await promise;
  } catch (error) {
    if (isStowageError(error)) return { code: error.code, reason: error.details.reason };
    throw error;
  }
  throw new Error("expected extractTar to refuse the archive");
}

let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-extract-"));
  await mkdir(join(work, "outside"));
  await writeFile(join(work, "outside", "victim.txt"), "original");
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

/** The target is absent, nothing outside changed, and no temporary folder is left. */
async function expectNothingLeft(target: string, targetExisted = false): Promise<void> {
  if (targetExisted) expect(await readdir(target)).toEqual([]);
  else await expect(lstat(target)).rejects.toMatchObject({ code: "ENOENT" });
  expect((await readdir(work)).sort()).toEqual(targetExisted ? ["outside", "target"] : ["outside"]);
  expect(await readdir(join(work, "outside"))).toEqual(["victim.txt"]);
  expect(await readFile(join(work, "outside", "victim.txt"), "utf8")).toBe("original");
}

const file = (name: string, body = "pwned"): Entry => ({ header: { name, type: "file" }, body });
const link = (name: string, linkname: string, type: "symlink" | "link" = "symlink"): Entry => ({
  header: { name, type, linkname },
});

describe("extractTar refuses malicious archives and leaves nothing", () => {
  const cases: Array<{ title: string; entries: Entry[]; reason: string }> = [
    {
      title: "a '..' path",
      entries: [file("ok.txt"), file("../outside/victim.txt")],
      reason: "path-traversal",
    },
    {
      title: "a '..' in the middle of a path",
      entries: [file("a/../../outside/victim.txt")],
      reason: "path-traversal",
    },
    { title: "an absolute path", entries: [file("/tmp/stowage-evil.txt")], reason: "absolute-path" },
    {
      title: "a symlink out of the target",
      entries: [link("out", "../outside")],
      reason: "link-escape",
    },
    {
      title: "a symlink to an absolute path",
      entries: [link("passwd", "/etc/passwd")],
      reason: "link-escape",
    },
    {
      title: "a hard link out of the target",
      entries: [link("hard", "../outside/victim.txt", "link")],
      reason: "link-escape",
    },
    {
      title: "a hard link to an absolute path",
      entries: [link("hard", "/etc/passwd", "link")],
      reason: "link-escape",
    },
    {
      title: "a write through a symlink (link first, then a file under it)",
      entries: [link("dir", "."), file("dir/x.txt")],
      reason: "write-through-symlink",
    },
    {
      title: "a write through a symlink that points out",
      entries: [file("a.txt"), link("sub", "sub2/.."), file("sub/victim.txt")],
      reason: "write-through-symlink",
    },
    {
      title: "a symlink that escapes only through another symlink",
      entries: [
        { header: { name: "a/b", type: "directory" } },
        link("a/b/up", "../.."),
        link("a/b/evil", "up/../outside"),
      ],
      reason: "link-escape",
    },
    {
      title: "a symlink that escapes through a link made after it",
      entries: [
        { header: { name: "a/b", type: "directory" } },
        link("evil", "q/../outside/victim.txt"),
        link("a/b/up", "../.."),
        link("q", "a/b/up"),
      ],
      reason: "link-escape",
    },
    {
      title: "a symlink loop",
      entries: [link("x", "y/z"), link("y", "x")],
      reason: "link-escape",
    },
    {
      title: "a character device",
      entries: [{ header: { name: "null", type: "character-device", devmajor: 1, devminor: 3 } }],
      reason: "special-file",
    },
    {
      title: "a block device",
      entries: [{ header: { name: "sda", type: "block-device", devmajor: 8, devminor: 0 } }],
      reason: "special-file",
    },
    {
      title: "a FIFO",
      entries: [file("ok.txt"), { header: { name: "pipe", type: "fifo" } }],
      reason: "special-file",
    },
  ];

  for (const { title, entries, reason } of cases) {
    it(`refuses ${title}`, async () => {
      const target = join(work, "target");
      const archive = await tarOf(entries);
      expect(await refusal(extractTar(Readable.from([archive]), target))).toEqual({
        code: "RESTORE_FAILED",
        reason,
      });
      await expectNothingLeft(target);
    });
  }

  it("leaves an existing empty target folder as it was", async () => {
    const target = join(work, "target");
    await mkdir(target);
    const archive = await tarOf([file("fine.txt"), file("../outside/victim.txt")]);
    expect(await refusal(extractTar(Readable.from([archive]), target))).toEqual({
      code: "RESTORE_FAILED",
      reason: "path-traversal",
    });
    await expectNothingLeft(target, true);
  });

  it("refuses a truncated archive", async () => {
    const target = join(work, "target");
    const archive = await tarOf([file("a.txt", "x".repeat(5000)), file("b.txt", "y".repeat(5000))]);
    // Cut in the middle of the second file's data.
    const cut = archive.subarray(0, 512 + 5120 + 512 + 2000);
    expect(await refusal(extractTar(Readable.from([cut]), target))).toEqual({
      code: "RESTORE_FAILED",
      reason: "truncated",
    });
    await expectNothingLeft(target);
  });

  it("refuses a header that declares more bytes than the archive holds", async () => {
    const target = join(work, "target");
    const archive = withDeclaredSize(await tarOf([file("a.txt", "short")]), 0, 1 << 20);
    expect(await refusal(extractTar(Readable.from([archive]), target))).toEqual({
      code: "RESTORE_FAILED",
      reason: "truncated",
    });
    await expectNothingLeft(target);
  });

  it("refuses an entry whose data is longer than its header declares", async () => {
    const target = join(work, "target");
    // 600 bytes of data declared as 10: the rest lands where the next header should be.
    const archive = withDeclaredSize(await tarOf([file("a.txt", "A".repeat(600)), file("b.txt")]), 0, 10);
    expect(await refusal(extractTar(Readable.from([archive]), target))).toEqual({
      code: "RESTORE_FAILED",
      reason: "corrupt",
    });
    await expectNothingLeft(target);
  });

  it("refuses an archive larger than maxBytes before writing past it", async () => {
    const target = join(work, "target");
    const archive = await tarOf([file("a.txt", "a".repeat(1000)), file("b.txt", "b".repeat(1000))]);
    expect(await refusal(extractTar(Readable.from([archive]), target, { maxBytes: 1500 }))).toEqual({
      code: "RESTORE_FAILED",
      reason: "too-large",
    });
    await expectNothingLeft(target);
  });

  it("limits itself to the plain size the manifest declares, by default", async () => {
    const archive = await tarOf([file("a.txt", "a".repeat(4 << 20))]);
    const sink = memorySink();
    const manifest = await backup({
      job: "x",
      source: bytesSource({ data: new Uint8Array(archive) }),
      sink,
      transforms: [gzip()],
    });
    // A manifest that declares less than the archive's files hold: refused at the header, before
    // restore's own check would stop the stream at the declared size.
    const lying = { ...manifest, content: { ...manifest.content, bytes: 3 << 20 } };
    const target = join(work, "target");
    expect(
      await refusal(extractTar(await restore({ sink, manifest: lying, verifyFirst: false }), target)),
    ).toEqual({ code: "RESTORE_FAILED", reason: "too-large" });
    await expectNothingLeft(target);
    // The same through a stream that is not restore's own, given the manifest.
    expect(
      await refusal(
        extractTar(Readable.from([archive]), target, { manifest: { content: { bytes: 3 << 20 } } }),
      ),
    ).toEqual({ code: "RESTORE_FAILED", reason: "too-large" });
    await expectNothingLeft(target);
  });

  it("refuses a target that is a symlink or a file before reading a byte", async () => {
    const archive = await tarOf([file("a.txt")]);
    const target = join(work, "target");
    await mkdir(join(work, "empty"));
    await symlink(join(work, "empty"), target);
    let reads = 0;
    const stream = new Readable({
      read() {
        reads++;
        this.push(archive);
        this.push(null);
      },
    });
    expect(await refusal(extractTar(stream, target))).toEqual({ code: "CONFIG_INVALID", reason: undefined });
    expect(reads).toBe(0);
    expect(await readdir(join(work, "empty"))).toEqual([]);
    await rm(target);
    await writeFile(target, "a file");
    expect((await refusal(extractTar(Readable.from([archive]), target))).code).toBe("CONFIG_INVALID");
    expect(await readFile(target, "utf8")).toBe("a file");
  });

  it("stops with ABORTED when the signal fires, and leaves nothing", async () => {
    const target = join(work, "target");
    const controller = new AbortController();
    const archive = await tarOf([file("a.txt", "a".repeat(100_000))]);
    const slow = Readable.from(
      (async function* () {
        yield archive.subarray(0, 2048);
        controller.abort();
        await new Promise((r) => setTimeout(r, 20));
        yield archive.subarray(2048);
      })(),
    );
    const outcome = await refusal(extractTar(slow, target, { signal: controller.signal }));
    expect(outcome.code).toBe("ABORTED");
    await expectNothingLeft(target);
  });

  it("refuses a non-empty target without touching it", async () => {
    const target = join(work, "target");
    await mkdir(target);
    await writeFile(join(target, "keep.txt"), "mine");
    const archive = await tarOf([file("a.txt")]);
    expect((await refusal(extractTar(Readable.from([archive]), target))).code).toBe("CONFIG_INVALID");
    expect(await readdir(target)).toEqual(["keep.txt"]);
  });

  it("passes a StowageError from the input stream through with its own code", async () => {
    const target = join(work, "target");
    const { StowageError } = await import("../../src/index.js");
    const broken = Readable.from(
      (async function* () {
        yield (await tarOf([file("a.txt", "a".repeat(2000))])).subarray(0, 1024);
        throw new StowageError("INTEGRITY_MISMATCH", "test: damaged");
      })(),
    );
    expect((await refusal(extractTar(broken, target))).code).toBe("INTEGRITY_MISMATCH");
    await expectNothingLeft(target);
  });
});

describe("extractTar accepts what is safe", () => {
  it("keeps links that stay inside, later entries replacing earlier files, and pax mtimes", async () => {
    const target = join(work, "target");
    const mtime = new Date("2024-05-06T07:08:09.250Z");
    const archive = await tarOf([
      { header: { name: "./", type: "directory", mode: 0o750 } },
      { header: { name: "d", type: "directory", mode: 0o700 } },
      file("d/f.txt", "first"),
      file("d/f.txt", "second"),
      link("d/up", ".."),
      link("d/sibling", "../e/g.txt"),
      {
        header: {
          name: "e/g.txt",
          type: "file",
          mode: 0o640,
          pax: { mtime: String(mtime.getTime() / 1000) },
        },
        body: "g",
      },
      link("hard.txt", "e/g.txt", "link"),
    ]);
    const result = await extractTar(Readable.from([archive]), target);
    // Counts are of entries written: the replaced file counts twice.
    expect(result).toMatchObject({ files: 3, directories: 1, symlinks: 2, hardlinks: 1, bytes: 12 });
    expect(await readFile(join(target, "d/f.txt"), "utf8")).toBe("second");
    expect(await readFile(join(target, "d/sibling"), "utf8")).toBe("g");
    expect(await readlink(join(target, "d/up"))).toBe("..");
    expect(await readFile(join(target, "hard.txt"), "utf8")).toBe("g");
    const g = await lstat(join(target, "e/g.txt"));
    expect(g.mode & 0o777).toBe(0o640);
    expect(g.mtimeMs).toBe(mtime.getTime());
    expect(g.nlink).toBe(2);
    expect((await lstat(target)).mode & 0o777).toBe(0o750);
    expect((await readdir(work)).sort()).toEqual(["outside", "target"]);
  });
});

describe("directorySource → backup → restore → extractTar", () => {
  async function snapshot(root: string) {
    const out: Record<string, unknown> = {};
    async function walk(rel: string): Promise<void> {
      for (const name of (await readdir(join(root, rel))).sort()) {
        const childRel = rel ? `${rel}/${name}` : name;
        const path = join(root, childRel);
        const info = await lstat(path);
        const base = { mode: info.mode & 0o777, mtime: Math.floor(info.mtimeMs / 1000) };
        if (info.isDirectory()) {
          out[childRel] = { type: "dir", ...base };
          await walk(childRel);
        } else if (info.isSymbolicLink()) {
          out[childRel] = { type: "symlink", target: await readlink(path), mtime: base.mtime };
        } else {
          out[childRel] = { type: "file", ...base, data: (await readFile(path)).toString("base64") };
        }
      }
    }
    await walk("");
    return out;
  }

  it("restores the tree byte for byte, with modes, mtimes and symlinks", async () => {
    const src = join(work, "src");
    await mkdir(join(src, "nested/deeper"), { recursive: true });
    await writeFile(join(src, "empty.txt"), "");
    await writeFile(join(src, "small.txt"), "hello\n");
    await writeFile(join(src, "nested/big.bin"), randomBytes(3 * 1024 * 1024 + 17));
    await writeFile(join(src, "nested/deeper/run.sh"), "#!/bin/sh\necho hi\n");
    await chmod(join(src, "nested/deeper/run.sh"), 0o755);
    await writeFile(join(src, "secret.key"), randomBytes(32));
    await chmod(join(src, "secret.key"), 0o600);
    await symlink("nested/deeper/run.sh", join(src, "run-link"));
    await chmod(join(src, "nested/deeper"), 0o750);
    const times = [
      new Date("2020-01-02T03:04:05Z"),
      new Date("2021-06-07T08:09:10Z"),
      new Date("2022-11-12T13:14:15Z"),
    ];
    await utimes(join(src, "empty.txt"), times[0]!, times[0]!);
    await utimes(join(src, "small.txt"), times[1]!, times[1]!);
    await utimes(join(src, "nested/big.bin"), times[2]!, times[2]!);
    await utimes(join(src, "nested/deeper/run.sh"), times[0]!, times[0]!);
    await lutimes(join(src, "run-link"), times[1]!, times[1]!);
    await utimes(join(src, "nested/deeper"), times[2]!, times[2]!);
    await utimes(join(src, "nested"), times[1]!, times[1]!);

    const before = await snapshot(src);
    const sink = memorySink();
    const manifest = await backup({
      job: "tree",
      source: directorySource({ path: src }),
      transforms: [gzip()],
      sink,
    });
    const target = join(work, "restored");
    const result = await extractTar(await restore({ sink, manifest }), target);
    expect(result).toMatchObject({ files: 5, directories: 2, symlinks: 1 });
    expect(await snapshot(target)).toEqual(before);
    expect(Object.keys(before)).toHaveLength(8);
  });
});
