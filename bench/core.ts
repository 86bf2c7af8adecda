/**
 * The core pipeline against the shell pipelines people use instead, on the same generated data,
 * in the same run:
 *
 *   backup:  stowage (file -> SHA-256 -> gzip-6 -> AES-256-GCM -> SHA-256 -> filesystem sink, with
 *            fsync and rename) vs `gzip -6 < file | openssl enc -aes-256-cbc -pbkdf2 > out`
 *            (and vs `pigz -6 | openssl` when pigz is installed);
 *   restore: stowage restore() (decrypt, gunzip, both SHA-256 checked) vs
 *            `openssl enc -d ... < out | gzip -d`, both into nothing (/dev/null);
 *   memory:  stowage's peak RSS for a 1 GiB and a 4 GiB backup (child process, maxRSS).
 *
 * Both sides read the same pre-written file (from the page cache: it was just written), which is
 * what users do. The openssl password travels in the environment (`-pass env:…`), never in argv.
 * The shell anchor does not fsync its output; stowage does (and renames), so the comparison
 * leans, slightly, against stowage.
 */
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { zstdAvailable } from "../src/transforms/zstd.js";
import type { ChildResult } from "./core-child.js";
import { writeDumpFile } from "./data.js";
import type { BenchOptions, BenchRow } from "./lib.js";
import {
  childCommand,
  cpuNote,
  fastest,
  GiB,
  hasCommand,
  mbps,
  round,
  runChild,
  shell,
  sizeName,
  type Timed,
} from "./processes.js";

export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const { workDir, scale } = options;
  /** Runs of each measurement; the fastest is kept. `--repeat` in bench/run.ts. @default 1 */
  const repeat = Math.max(1, options.repeat ?? 1);
  const small = Math.max(1 << 20, Math.round((GiB * scale) / (1 << 20)) * (1 << 20));
  const large = 4 * small;
  const rows: BenchRow[] = [];
  const key = randomBytes(32).toString("hex");
  const env = { STOWAGE_BENCH_PASS: randomBytes(24).toString("base64") };
  const openssl = "openssl enc -aes-256-cbc -pbkdf2 -pass env:STOWAGE_BENCH_PASS";
  const { argv, how } = await childCommand(workDir);
  const pigz = await hasCommand("pigz");
  const cpuFile = join(workDir, "cpu.txt");

  const generateStarted = process.hrtime.bigint();
  const smallFile = join(workDir, "dump-small.sql");
  const largeFile = join(workDir, "dump-large.sql");
  await writeDumpFile(smallFile, small, 1);
  await writeDumpFile(largeFile, large, 2);
  const generateSeconds = Number(process.hrtime.bigint() - generateStarted) / 1e9;
  process.stderr.write(
    `core: generated ${sizeName(small)} + ${sizeName(large)} in ${round(generateSeconds)} s; stowage runs as ${how}\n`,
  );

  const backupRow = async (file: string, bytes: number, job: string) => {
    const root = join(workDir, `sink-${job}`);
    await mkdir(root, { recursive: true });
    const shellOut = join(workDir, `shell-${job}.enc`);
    let ours: ChildResult | undefined;
    let theirs: Timed | undefined;
    // Alternate the two sides, so that both see the same mix of outside load.
    for (let i = 0; i < repeat; i++) {
      const a = await runChild(argv, { mode: "backup", file, root, job, codec: "gzip", level: 6 }, key);
      if (!ours || a.seconds < ours.seconds) ours = a;
      const b = await shell(`gzip -6 < '${file}' | ${openssl} > '${shellOut}'`, env, cpuFile);
      if (!theirs || b.seconds < theirs.seconds) theirs = b;
    }
    if (!ours || !theirs) throw new Error("repeat must be at least 1");
    const shellBytes = (await stat(shellOut)).size;
    return { ours, theirs, root, shellOut, shellBytes, bytes };
  };

  // 1. Backup, 1 GiB (scaled), vs gzip | openssl.
  const one = await backupRow(smallFile, small, "small");
  const ratioSmall = mbps(small, one.ours.seconds) / mbps(small, one.theirs.seconds);
  rows.push({
    name: `backup gzip-6 + AES-256-GCM + 2×SHA-256 -> file, ${sizeName(small)}`,
    stowage: round(mbps(small, one.ours.seconds)),
    anchor: round(mbps(small, one.theirs.seconds)),
    anchorName: "gzip -6 | openssl enc -aes-256-cbc -pbkdf2",
    unit: "MB/s",
    ratio: round(ratioSmall, 2),
    target: ">= 1.6; RSS <= 128 MiB",
    pass: ratioSmall >= 1.6 && one.ours.peakRssMiB <= 128,
    peakRssMiB: round(one.ours.peakRssMiB),
    note: `stored ${round(small / one.ours.storedBytes, 2)}:1 (shell ${round(small / one.shellBytes, 2)}:1); gzip concurrency ${String(one.ours.concurrency)}; ${cpuNote(one.ours, one.theirs)}`,
  });

  // 2. The same backup vs pigz | openssl, when pigz is installed.
  if (pigz) {
    const out = join(workDir, "pigz.enc");
    const theirs = await fastest(repeat, () =>
      shell(`pigz -6 < '${smallFile}' | ${openssl} > '${out}'`, env, cpuFile),
    );
    await rm(out, { force: true });
    const ratio = mbps(small, one.ours.seconds) / mbps(small, theirs.seconds);
    rows.push({
      name: `backup (same run as above), ${sizeName(small)}`,
      stowage: round(mbps(small, one.ours.seconds)),
      anchor: round(mbps(small, theirs.seconds)),
      anchorName: "pigz -6 | openssl enc -aes-256-cbc -pbkdf2",
      unit: "MB/s",
      ratio: round(ratio, 2),
      target: "info (no target)",
      pass: true,
      peakRssMiB: round(one.ours.peakRssMiB),
      note: cpuNote(one.ours, theirs),
    });
  } else {
    rows.push({
      name: `backup vs pigz, ${sizeName(small)}`,
      stowage: round(mbps(small, one.ours.seconds)),
      anchor: Number.NaN,
      anchorName: "pigz -6 | openssl (pigz not installed: skipped)",
      unit: "MB/s",
      ratio: Number.NaN,
      target: "info (no target)",
      pass: true,
    });
  }

  // 3. Restore, 1 GiB (scaled): stowage restore() vs openssl -d | gzip -d, both into nothing.
  {
    const ours = await fastest(repeat, () =>
      runChild(argv, { mode: "restore", root: one.root, job: "small", codec: "gzip", level: 6 }, key),
    );
    const theirs = await fastest(repeat, () =>
      shell(
        `openssl enc -d -aes-256-cbc -pbkdf2 -pass env:STOWAGE_BENCH_PASS < '${one.shellOut}' | gzip -d > /dev/null`,
        env,
        cpuFile,
      ),
    );
    if (ours.plainBytes !== small)
      throw new Error(`restore returned ${ours.plainBytes} bytes, expected ${small}`);
    const ratio = mbps(small, ours.seconds) / mbps(small, theirs.seconds);
    rows.push({
      name: `restore (decrypt, gunzip, 2×SHA-256 checked) -> discard, ${sizeName(small)}`,
      stowage: round(mbps(small, ours.seconds)),
      anchor: round(mbps(small, theirs.seconds)),
      anchorName: "openssl enc -d -aes-256-cbc -pbkdf2 | gzip -d",
      unit: "MB/s",
      ratio: round(ratio, 2),
      target: ">= 1.0",
      pass: ratio >= 1.0,
      peakRssMiB: round(ours.peakRssMiB),
      note: cpuNote(ours, theirs),
    });
  }
  await rm(one.root, { recursive: true, force: true });
  await rm(one.shellOut, { force: true });

  // 4. Backup, 4 GiB (scaled): throughput again, and RSS against the 1 GiB run.
  {
    const four = await backupRow(largeFile, large, "large");
    await rm(four.root, { recursive: true, force: true });
    await rm(four.shellOut, { force: true });
    const ratio = mbps(large, four.ours.seconds) / mbps(large, four.theirs.seconds);
    const growth = four.ours.peakRssMiB / one.ours.peakRssMiB - 1;
    rows.push({
      name: `backup gzip-6 + AES-256-GCM + 2×SHA-256 -> file, ${sizeName(large)}`,
      stowage: round(mbps(large, four.ours.seconds)),
      anchor: round(mbps(large, four.theirs.seconds)),
      anchorName: "gzip -6 | openssl enc -aes-256-cbc -pbkdf2",
      unit: "MB/s",
      ratio: round(ratio, 2),
      target: ">= 1.6; RSS <= 128 MiB and within 10% of the smaller run",
      pass: ratio >= 1.6 && four.ours.peakRssMiB <= 128 && Math.abs(growth) <= 0.1,
      peakRssMiB: round(four.ours.peakRssMiB),
      note: `peak RSS ${round(one.ours.peakRssMiB)} -> ${round(four.ours.peakRssMiB)} MiB (${growth >= 0 ? "+" : ""}${round(growth * 100)}%); ${cpuNote(four.ours, four.theirs)}`,
    });
  }

  // 5. zstd, where this Node has it.
  if (zstdAvailable() && (await hasCommand("zstd"))) {
    const root = join(workDir, "sink-zstd");
    await mkdir(root, { recursive: true });
    const ours = await runChild(
      argv,
      { mode: "backup", file: smallFile, root, job: "zstd", codec: "zstd", level: 3 },
      key,
    );
    const out = join(workDir, "zstd.enc");
    const theirs = await shell(`zstd -3 -T0 -q -c < '${smallFile}' | ${openssl} > '${out}'`, env, cpuFile);
    await rm(root, { recursive: true, force: true });
    await rm(out, { force: true });
    const ratio = mbps(small, ours.seconds) / mbps(small, theirs.seconds);
    rows.push({
      name: `backup zstd-3 + AES-256-GCM + 2×SHA-256 -> file, ${sizeName(small)}`,
      stowage: round(mbps(small, ours.seconds)),
      anchor: round(mbps(small, theirs.seconds)),
      anchorName: "zstd -3 -T0 | openssl enc -aes-256-cbc -pbkdf2",
      unit: "MB/s",
      ratio: round(ratio, 2),
      target: "info (no target)",
      pass: true,
      peakRssMiB: round(ours.peakRssMiB),
      note: `stored ${round(small / ours.storedBytes, 2)}:1; ${cpuNote(ours, theirs)}`,
    });
  } else {
    rows.push({
      name: "backup zstd-3 + AES-256-GCM",
      stowage: Number.NaN,
      anchor: Number.NaN,
      anchorName: "zstd -3 -T0 | openssl",
      unit: "MB/s",
      ratio: Number.NaN,
      target: "info (no target)",
      pass: true,
      note: zstdAvailable()
        ? "skipped: no zstd command"
        : `skipped: Node ${process.version} has no zstd in node:zlib (needs >= 22.15 or >= 23.8)`,
    });
  }

  if (existsSync(smallFile)) await rm(smallFile, { force: true });
  if (existsSync(largeFile)) await rm(largeFile, { force: true });
  return rows;
}
