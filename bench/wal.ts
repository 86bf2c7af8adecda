/**
 * `stowage wal-push` as a real `archive_command` (16 MiB segments through gzip + AES-256-GCM into
 * the filesystem sink) against `archive_command = 'cp %p …'`, in the same run, on the same
 * PostgreSQL 15 under pgbench load (30 s × scale per side).
 *
 * Each push is timed by the shell PostgreSQL runs it in (so Node's start-up and loading the config
 * count: that is what the archiver waits for); the archiver's lag, in segments between the one the
 * server writes and the newest archived, is sampled twice a second. Reported: p50 and p99 seconds
 * per segment, the segments per second one archiver can sustain (MB/s of 16 MiB segments), and the
 * largest lag seen. Target: stowage keeps up, the lag stays under 2 segments.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  buildCli,
  type Cluster,
  embeddedBinDirectory,
  postgresUser,
  startArchivingCluster,
  writeWalConfig,
} from "../test/support/pitr.js";
import type { BenchOptions, BenchRow } from "./lib.js";

const exec = promisify(execFile);
const SEGMENT_MB = 16 * 1.048576;

interface Side {
  name: string;
  times: number[];
  /** CPU seconds (user + system) of each push, which a loaded machine inflates far less than wall time. */
  cpu: number[];
  maxLag: number;
  segments: number;
}

const percentile = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? Number.NaN;
const round3 = (n: number) => Math.round(n * 1000) / 1000;

/** pgbench (Debian keeps it out of PATH) against the cluster, as postgres. */
function pgbench(cluster: Cluster, args: string[]) {
  const debian = "/usr/lib/postgresql/15/bin/pgbench";
  const tool = existsSync(debian) ? debian : "pgbench";
  return exec(tool, ["-h", "127.0.0.1", "-p", String(cluster.port), "-U", "postgres", ...args, "postgres"], {
    maxBuffer: 16 << 20,
  });
}

/** The timing wrapper: the shell that runs archive_command records each successful push. */
const timed = (command: string, log: string) =>
  `s=$(date +%s%N) && /usr/bin/time -a -o ${log}.cpu -f "%U %S" ${command} && echo "%f $s $(date +%s%N)" >> ${log}`;

async function measure(cluster: Cluster, side: string, command: string, log: string, seconds: number) {
  await writeFile(log, "");
  await chmod(log, 0o666);
  await writeFile(`${log}.cpu`, "");
  await chmod(`${log}.cpu`, 0o666);
  await cluster.query(`ALTER SYSTEM SET archive_command = '${timed(command, log).replace(/'/g, "''")}'`);
  await cluster.query("SELECT pg_reload_conf()");
  await cluster.switchAndWaitArchived();
  await writeFile(log, "");
  await writeFile(`${log}.cpu`, "");
  let maxLag = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const [row] = await cluster.query<{ current: string; last: string | null }>(
        "SELECT pg_walfile_name(pg_current_wal_lsn()) AS current, last_archived_wal AS last FROM pg_stat_archiver",
      );
      if (row?.last && row.last.length === 24) {
        const n = (name: string) =>
          Number.parseInt(name.slice(8, 16), 16) * 256 + Number.parseInt(name.slice(16), 16);
        // The segment being written is not due yet: lag counts the finished ones not archived.
        maxLag = Math.max(maxLag, n(row.current) - n(row.last) - 1);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  await pgbench(cluster, ["-c", "2", "-j", "2", "-T", String(seconds)]);
  sampling = false;
  await sampler;
  await cluster.switchAndWaitArchived();
  const lines = (await readFile(log, "utf8")).trim().split("\n").filter(Boolean);
  const times = lines.map((l) => {
    const [, start, end] = l.split(" ");
    return (Number(end) - Number(start)) / 1e9;
  });
  const cpu = (await readFile(`${log}.cpu`, "utf8"))
    .trim()
    .split("\n")
    .filter((l) => /^[\d.]+ [\d.]+$/.test(l))
    .map((l) => l.split(" ").reduce((a, b) => a + Number(b), 0));
  return { name: side, times, cpu, maxLag, segments: lines.length } satisfies Side;
}

export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const root = options.workDir;
  await chmod(root, 0o755);
  const bin = await embeddedBinDirectory();
  const { cli } = await buildCli(join(root, "bundle"));
  const { uid, gid } = await postgresUser();
  const sinkRoot = join(root, "sink");
  await mkdir(join(sinkRoot, "bench", "wal"), { recursive: true });
  await chmod(join(sinkRoot, "bench", "wal"), 0o777);
  const copies = join(root, "cp");
  await mkdir(copies);
  await chown(copies, uid, gid);
  const keyFile = join(root, "wal.key");
  await writeFile(keyFile, (await import("node:crypto")).randomBytes(32), { mode: 0o600 });
  await chown(keyFile, uid, gid);
  const config = join(root, "stowage.config.mjs");
  await writeWalConfig(config, "bench", sinkRoot, keyFile);
  const push = `${process.execPath} ${cli} wal-push %p --job bench --config ${config}`;
  const cluster = await startArchivingCluster(root, bin, push);
  const seconds = Math.max(5, Math.round(30 * options.scale));
  try {
    await pgbench(cluster, ["-i", "-s", "10"]);
    const stowage = await measure(cluster, "stowage", push, join(root, "logs", "stowage.times"), seconds);
    const cp = await measure(cluster, "cp", `cp %p ${copies}/%f`, join(root, "logs", "cp.times"), seconds);
    const rate = (s: Side) => SEGMENT_MB / (s.times.reduce((a, b) => a + b, 0) / s.times.length);
    const note = (s: Side) => `${s.segments} segments in ${seconds} s of pgbench -c 2`;
    const row = (
      name: string,
      unit: "s" | "MB/s",
      ours: number,
      theirs: number,
      extra: Partial<BenchRow> = {},
    ) => ({
      name,
      stowage: round3(ours),
      anchor: round3(theirs),
      anchorName: "archive_command = cp %p",
      unit,
      ratio: round3(unit === "s" ? theirs / ours : ours / theirs),
      target: "info",
      pass: true,
      ...extra,
    });
    const p = (s: Side, q: number) => percentile(s.times, q);
    return [
      row("wal-push p50 per 16 MiB segment (gzip + AES -> file)", "s", p(stowage, 0.5), p(cp, 0.5), {
        note: note(stowage),
      }),
      row("wal-push p99 per segment", "s", p(stowage, 0.99), p(cp, 0.99)),
      row(
        "wal-push CPU per segment, p50 (user + system)",
        "s",
        percentile(stowage.cpu, 0.5),
        percentile(cp.cpu, 0.5),
        { note: `${stowage.cpu.length} pushes timed` },
      ),
      row("wal-push sustained (one archiver, 16 MiB / mean push time)", "MB/s", rate(stowage), rate(cp), {
        note: note(cp),
      }),
      {
        name: "archiver lag under pgbench (largest, segments)",
        stowage: stowage.maxLag,
        anchor: cp.maxLag,
        anchorName: "archive_command = cp %p",
        unit: "s",
        ratio: Number.NaN,
        target: "< 2 segments",
        pass: stowage.maxLag < 2,
        note: "unit: segments, not seconds",
      },
    ];
  } finally {
    await cluster.stop();
  }
}
