/**
 * The published conformance suites (`stowage/testing`) run on the built-in transforms and the
 * sources that need no server; the sources with servers run them in their integration files.
 */
import { mkdir, mkdtemp, readdir, readlink, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { StowageError } from "../../src/core/errors.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { directorySource } from "../../src/sources/directory.js";
import { logsSource } from "../../src/sources/logs.js";
import { sourceConformance, testBytes, transformConformance } from "../../src/testing.js";
import { aes256gcm, generateKey } from "../../src/transforms/aes-256-gcm.js";
import { gzip } from "../../src/transforms/gzip.js";
import { zstd, zstdAvailable } from "../../src/transforms/zstd.js";

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 180_000) };

transformConformance(slow, "gzip", () => gzip({ blockSize: 256 * 1024 }), { chunkSize: 256 * 1024 });
const key = generateKey();
transformConformance(slow, "aes-256-gcm", () => aes256gcm({ key, chunkSize: 65_536 }), {
  keys: [{ key }],
  chunkSize: 65_536,
});
if (zstdAvailable()) {
  transformConformance(slow, "zstd", () => zstd({ blockSize: 256 * 1024 }), { chunkSize: 256 * 1024 });
} else {
  it("zstd: this Node has no zstd, and the factory says so (run under Node 24 for its conformance)", () => {
    expect(() => zstd()).toThrow(expect.objectContaining({ code: "UNSUPPORTED" }));
  });
}

/** Resolves once no file descriptor of this process points into `dir`. */
const noFileOpenUnder = (dir: string) => async () => {
  const open: string[] = [];
  for (const fd of await readdir("/proc/self/fd")) {
    const target = await readlink(join("/proc/self/fd", fd)).catch(() => "");
    if (target.startsWith(dir)) open.push(target);
  }
  if (open.length > 0) throw new Error(`still open: ${open.join(", ")}`);
};

async function folderWithFiles() {
  const dir = await mkdtemp(join(tmpdir(), "stowage-conformance-"));
  for (let i = 0; i < 6; i++) await writeFile(join(dir, `app-${i}.log`), testBytes(512 * 1024, i + 1));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Files between folders and a symlink: tar entries without a body queue behind a file's. */
async function treeWithFolders() {
  const folder = await folderWithFiles();
  for (let i = 0; i < 3; i++) {
    await mkdir(join(folder.dir, `sub-${i}`, "deeper"), { recursive: true });
    await writeFile(join(folder.dir, `sub-${i}`, "data.bin"), testBytes(256 * 1024, i + 10));
    await symlink("data.bin", join(folder.dir, `sub-${i}`, "link"));
  }
  return folder;
}

sourceConformance(slow, "bytes", async () => ({
  source: bytesSource({ data: testBytes(1 << 20) }),
  // What feeds a bytes source fails it: its error reaches the stream's consumer with its code.
  failing: () =>
    bytesSource({
      data: async function* () {
        yield testBytes(65_536);
        throw new StowageError("SOURCE_FAILED", "the generator failed");
      },
    }),
}));

sourceConformance(slow, "directory", async () => {
  const { dir, cleanup } = await treeWithFolders();
  return {
    source: directorySource({ path: dir }),
    released: noFileOpenUnder(dir),
    failing: () => directorySource({ path: join(dir, "missing") }),
    cleanup,
  };
});

sourceConformance(slow, "logs", async () => {
  const { dir, cleanup } = await folderWithFiles();
  return {
    source: logsSource({ paths: ["*.log"], baseDir: dir }),
    released: noFileOpenUnder(dir),
    failing: () => logsSource({ paths: ["*.log"], baseDir: dir, since: new Date(Date.now() + 3_600_000) }),
    cleanup,
  };
});
