/**
 * Incremental backups of a folder (issue 26): a tree of 10,000 files (1 GiB at scale 1, in 100
 * folders of random, non-repeating bytes), backed up in full; then 1 % of the files rewritten
 * (same size, new bytes) and backed up as an incremental. Measured: the incremental's time and
 * stored bytes against the full's, and against `restic backup` of the same tree and the same
 * change (its second snapshot; the repository's growth as its stored bytes).
 *
 * Two incrementals are timed: "warm", by the source that wrote the full (the index it wrote is
 * still in memory, as in a scheduler's process), and "cold", by a new source that reads the full's
 * index back from the sink (a process that restarted). restic keeps its cache in the work folder.
 * Transforms: gzip level 1 then AES-256-GCM, the usual job's choice; restic encrypts and
 * compresses (zstd, repository v2) as well.
 *
 *   npx tsx bench/run.ts --only incremental --scale 0.05
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { backup } from "../src/core/backup.js";
import type { Manifest } from "../src/core/manifest.js";
import { filesystemSink } from "../src/sinks/filesystem.js";
import { directorySource } from "../src/sources/directory.js";
import { aes256gcm } from "../src/transforms/aes-256-gcm.js";
import { gzip } from "../src/transforms/gzip.js";
import type { BenchOptions, BenchRow } from "./lib.js";

const exec = promisify(execFile);
const FILES = 10_000;
const FOLDERS = 100;
const CHANGED = 0.01;
const MiB = 2 ** 20;

const pathOf = (tree: string, i: number) =>
  join(tree, `d${String(i % FOLDERS).padStart(3, "0")}`, `f${String(i).padStart(5, "0")}.bin`);

async function makeTree(tree: string, fileBytes: number): Promise<void> {
  for (let d = 0; d < FOLDERS; d++)
    await mkdir(join(tree, `d${String(d).padStart(3, "0")}`), { recursive: true });
  for (let i = 0; i < FILES; i++) await writeFile(pathOf(tree, i), randomBytes(fileBytes));
}

/** Rewrites every 100th file with new bytes of the same size. */
async function changeTree(tree: string, fileBytes: number): Promise<number> {
  let n = 0;
  for (let i = 0; i < FILES; i += Math.round(1 / CHANGED)) {
    await writeFile(pathOf(tree, i), randomBytes(fileBytes));
    n++;
  }
  return n;
}

async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

const seconds = async (f: () => Promise<unknown>) => {
  const t0 = performance.now();
  await f();
  return (performance.now() - t0) / 1000;
};
const round = (n: number, digits = 2) => Number(n.toFixed(digits));

export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const fileBytes = Math.max(1, Math.round((options.scale * 2 ** 30) / FILES));
  const tree = join(options.workDir, "tree");
  const store = join(options.workDir, "store");
  const repo = join(options.workDir, "restic");
  await makeTree(tree, fileBytes);
  const key = randomBytes(32);
  const sink = filesystemSink({ root: store });
  const transforms = () => [gzip({ level: 1 }), aes256gcm({ key })];
  const source = directorySource({ path: tree });
  const chained = (kind: "full" | "incremental", base?: Manifest, from = source) =>
    backup({
      job: "bench",
      source: from.chainFrom({ kind, sink, keys: [{ key }], ...(base ? { base } : {}) }),
      sink,
      transforms: transforms(),
    });

  // restic's password goes through the environment, never argv.
  const env = {
    ...process.env,
    RESTIC_REPOSITORY: repo,
    RESTIC_PASSWORD: randomBytes(16).toString("hex"),
    RESTIC_CACHE_DIR: join(options.workDir, "restic-cache"),
  };
  const restic = (...args: string[]) => exec("restic", ["--quiet", ...args], { env, maxBuffer: 64 * MiB });
  await restic("init", "--repository-version", "2");

  let full: Manifest | undefined;
  const fullSeconds = await seconds(async () => {
    full = await chained("full");
  });
  const resticFullSeconds = await seconds(() => restic("backup", tree));
  const resticAfterFull = await bytesUnder(repo);

  const changed = await changeTree(tree, fileBytes);
  let warm: Manifest | undefined;
  const warmSeconds = await seconds(async () => {
    warm = await chained("incremental", full);
  });
  // A new source has no index in memory: it reads the full's back from the sink.
  const coldSeconds = await seconds(() => chained("incremental", full, directorySource({ path: tree })));
  const resticIncSeconds = await seconds(() => restic("backup", tree));
  const resticGrowth = (await bytesUnder(repo)) - resticAfterFull;

  const fullBytes = full!.artifact.bytes;
  const incBytes = warm!.artifact.bytes;
  const size = `${FILES} files, ${round((fileBytes * FILES) / MiB, 0)} MiB, ${changed} changed`;
  const timeRow = (
    name: string,
    t: number,
    anchor: number,
    anchorName: string,
    target: string,
    bar: number,
  ) => ({
    name: `${name}, ${size}`,
    stowage: round(t),
    anchor: round(anchor),
    anchorName,
    unit: "s" as const,
    ratio: round(anchor / t),
    target,
    pass: anchor / t >= bar,
  });
  return [
    timeRow(
      "incremental (warm) time vs full",
      warmSeconds,
      fullSeconds,
      "stowage full",
      ">= 20 (<= 5 % of the full's time)",
      20,
    ),
    timeRow(
      "incremental (cold: index read from the sink) time vs full",
      coldSeconds,
      fullSeconds,
      "stowage full",
      "info",
      0,
    ),
    {
      name: `incremental stored MiB vs full, ${size}`,
      stowage: round(incBytes / MiB, 3),
      anchor: round(fullBytes / MiB, 3),
      anchorName: "stowage full",
      unit: "MiB",
      ratio: round(fullBytes / incBytes),
      target: ">= 50 (<= 2 % of the full's bytes)",
      pass: fullBytes / incBytes >= 50,
    },
    timeRow(
      "incremental (warm) time vs restic's second snapshot",
      warmSeconds,
      resticIncSeconds,
      "restic backup",
      "info",
      0,
    ),
    {
      name: `incremental stored MiB vs restic's repository growth, ${size}`,
      stowage: round(incBytes / MiB, 3),
      anchor: round(resticGrowth / MiB, 3),
      anchorName: "restic backup (repo v2)",
      unit: "MiB",
      ratio: round(resticGrowth / incBytes),
      target: "info",
      pass: true,
    },
    timeRow(
      "full time vs restic's first snapshot",
      fullSeconds,
      resticFullSeconds,
      "restic backup",
      "info",
      0,
    ),
  ];
}
