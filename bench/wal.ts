/**
 * `stowage wal-push` as a real `archive_command` (16 MiB segments through gzip + AES-256-GCM into
 * the filesystem sink) against `archive_command = 'cp %p …'`, in the same run, on the same
 * PostgreSQL 15 under pgbench load (`pgbench -c 2 -j 2`, 60 s × scale per side, scale factor 10).
 * A third side runs the same job with gzip level 1, the knob a WAL archive that must keep up has,
 * and a fourth the gzip 6 job with `--ahead 4` (a push also archives the finished segments after
 * its own, so PostgreSQL's next calls find them archived).
 *
 * Enough WAL for percentiles: between checkpoints pgbench at scale 10 writes about 1.5 MiB/s of
 * WAL here (a segment every ten seconds), so a side would see a handful of pushes. A busy server's
 * WAL is mostly full-page images, written for every page touched first after a checkpoint; the
 * bench makes pgbench's the same with `checkpoint_timeout = 30s` and a CHECKPOINT before each
 * side, so every side starts from the same state and makes some tens of segments.
 *
 * Each push is timed by the shell PostgreSQL runs it in (so Node's start-up and loading the config
 * count: that is what the archiver waits for), wall and CPU (`/usr/bin/time`). Sampled twice a
 * second: the archiver's lag (segments finished but not archived) and when each segment was
 * finished (the mtime of its `archive_status/*.ready`, which the rename to `.done` keeps), so each
 * segment's exposure (finished to archived: the RPO an archive_command gives under this load) is
 * measured too, as an upper bound: the mtimes are whole seconds, so it may be up to 1 s over.
 * Reported: p50 and p99 per push, the MB/s one archiver sustains against the WAL rate pgbench
 * made, the largest lag and the exposure. Target: the lag stays under 2 segments with the setting
 * docs/PITR.md gives a WAL archive (gzip 1); gzip 6's lag is reported beside it.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
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
const CLIENTS = 2;

interface Side {
  /** Wall seconds of each push, start to exit, as the archiver waits for it. */
  times: number[];
  /** CPU seconds (user + system) of each push, which a loaded machine inflates far less than wall time. */
  cpu: number[];
  /** Seconds from a segment's being finished to its push's exit. */
  exposure: number[];
  maxLag: number;
  segments: number;
  /** MB/s of WAL pgbench made while it ran, and its transactions per second. */
  walRate: number;
  tps: number;
}

const percentile = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? Number.NaN;
const round3 = (n: number) => Math.round(n * 1000) / 1000;
const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** A segment's position in the WAL: its log and segment numbers, from its name. */
const segmentNumber = (name: string) =>
  Number.parseInt(name.slice(8, 16), 16) * 256 + Number.parseInt(name.slice(16, 24), 16);
const SEGMENT_NAME = /^[0-9A-F]{24}$/;

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

interface Sample {
  current: string;
  last: string | null;
  status: Array<[string, number]> | null;
}

/**
 * Samples the archiver twice a second until `stop()`: the largest lag, and when each segment was
 * finished (its status file's mtime; `.ready` becomes `.done` by a rename, which keeps it).
 */
async function sampleArchiver(cluster: Cluster) {
  const client = await cluster.client();
  const finished = new Map<string, number>();
  let maxLag = 0;
  let sampling = true;
  const loop = (async () => {
    try {
      while (sampling) {
        const { rows } = await client.query<Sample>(
          `SELECT pg_walfile_name(pg_current_wal_lsn()) AS current, last_archived_wal AS last,
             (SELECT json_agg(json_build_array(name, extract(epoch FROM modification)))
                FROM pg_ls_archive_statusdir()) AS status
           FROM pg_stat_archiver`,
        );
        const row = rows[0]!;
        if (row.last && SEGMENT_NAME.test(row.last)) {
          // The segment being written is not due yet: lag counts the finished ones not archived.
          maxLag = Math.max(maxLag, segmentNumber(row.current) - segmentNumber(row.last) - 1);
        }
        for (const [file, mtime] of row.status ?? []) {
          const name = file.replace(/\.(ready|done)$/, "");
          if (SEGMENT_NAME.test(name) && !finished.has(name)) finished.set(name, Number(mtime));
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    } finally {
      await client.end();
    }
  })();
  return {
    finished,
    async stop() {
      sampling = false;
      await loop;
      return maxLag;
    },
  };
}

const walPosition = async (cluster: Cluster) => {
  const [row] = await cluster.query<{ bytes: string }>(
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS bytes",
  );
  return Number(row!.bytes);
};

/** Waits until every finished segment is archived (a backlog may take a while to drain). */
async function drain(cluster: Cluster) {
  for (let i = 0; i < 1200; i++) {
    const [row] = await cluster.query<{ current: string; last: string | null }>(
      "SELECT pg_walfile_name(pg_current_wal_lsn()) AS current, last_archived_wal AS last FROM pg_stat_archiver",
    );
    if (row?.last && segmentNumber(row.current) - segmentNumber(row.last) <= 1) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error("the archiver did not catch up within 10 minutes");
}

async function measure(cluster: Cluster, command: string, log: string, seconds: number): Promise<Side> {
  await writeFile(log, "");
  await chmod(log, 0o666);
  await writeFile(`${log}.cpu`, "");
  await chmod(`${log}.cpu`, 0o666);
  await cluster.query(`ALTER SYSTEM SET archive_command = '${timed(command, log).replace(/'/g, "''")}'`);
  await cluster.query("SELECT pg_reload_conf()");
  await cluster.switchAndWaitArchived();
  // Each side starts right after a checkpoint: the same full-page images to write.
  await cluster.query("CHECKPOINT");
  await writeFile(log, "");
  await writeFile(`${log}.cpu`, "");
  const sampler = await sampleArchiver(cluster);
  const before = await walPosition(cluster);
  const started = performance.now();
  const { stdout } = await pgbench(cluster, ["-c", String(CLIENTS), "-j", "2", "-T", String(seconds)]);
  const walRate = (await walPosition(cluster)) - before;
  const elapsed = (performance.now() - started) / 1000;
  await drain(cluster);
  const maxLag = await sampler.stop();
  await cluster.switchAndWaitArchived();
  const lines = (await readFile(log, "utf8")).trim().split("\n").filter(Boolean);
  const pushes = lines.map((l) => {
    const [name, start, end] = l.split(" ");
    return { name: name!, start: Number(start) / 1e9, end: Number(end) / 1e9 };
  });
  const cpu = (await readFile(`${log}.cpu`, "utf8"))
    .trim()
    .split("\n")
    .filter((l) => /^[\d.]+ [\d.]+$/.test(l))
    .map((l) => l.split(" ").reduce((a, b) => a + Number(b), 0));
  const exposure = pushes.flatMap((p) => {
    const done = sampler.finished.get(p.name);
    return done === undefined ? [] : [p.end - done];
  });
  return {
    times: pushes.map((p) => p.end - p.start),
    cpu,
    exposure,
    maxLag,
    segments: pushes.length,
    walRate: walRate / 1e6 / elapsed,
    tps: Number(/tps = ([\d.]+)/.exec(stdout)?.[1] ?? Number.NaN),
  };
}

/**
 * The rows comparing one stowage side with `cp`'s. `bar`: this side is the setting docs/PITR.md
 * gives for a WAL archive, so its lag carries the issue's target; another side's is information.
 */
function rows(label: string, stowage: Side, cp: Side, seconds: number, bar: boolean): BenchRow[] {
  const row = (
    name: string,
    unit: "s" | "MB/s" | "segments",
    ours: number,
    theirs: number,
    extra: Partial<BenchRow> = {},
  ): BenchRow => ({
    name: `${name}${label}`,
    stowage: round3(ours),
    anchor: round3(theirs),
    anchorName: "archive_command = cp %p",
    unit,
    ratio: round3(unit === "MB/s" ? ours / theirs : theirs / ours),
    target: "info",
    pass: true,
    ...extra,
  });
  const sustained = (s: Side) => SEGMENT_MB / mean(s.times);
  const made = (s: Side) =>
    `${s.segments} pushes in ${seconds} s of pgbench -c ${CLIENTS} (${Math.round(s.tps)} tps)`;
  const p = (xs: readonly number[], q: number) => percentile(xs, q);
  return [
    row("wal-push p50 per 16 MiB segment, wall", "s", p(stowage.times, 0.5), p(cp.times, 0.5), {
      note: made(stowage),
    }),
    row("wal-push p99 per segment, wall", "s", p(stowage.times, 0.99), p(cp.times, 0.99), { note: made(cp) }),
    row("wal-push CPU per segment, p50 (user + system)", "s", p(stowage.cpu, 0.5), p(cp.cpu, 0.5), {
      note: `${stowage.cpu.length} and ${cp.cpu.length} pushes timed`,
    }),
    row("wal-push CPU per segment, p99", "s", p(stowage.cpu, 0.99), p(cp.cpu, 0.99)),
    row("WAL pgbench made while archiving (LSN advance / time)", "MB/s", stowage.walRate, cp.walRate, {
      note: "each side's own run: the ratio compares the load, not the archivers",
    }),
    row("wal-push sustained (one archiver, 16 MiB / mean push)", "MB/s", sustained(stowage), sustained(cp), {
      target: "> WAL rate",
      pass: sustained(stowage) > stowage.walRate,
    }),
    {
      ...row("archiver lag under pgbench (largest)", "segments", stowage.maxLag, cp.maxLag),
      ratio: Number.NaN,
      target: bar ? "< 2 segments" : "info (the bar is the WAL setting's, gzip 1)",
      pass: !bar || stowage.maxLag < 2,
      note: "segments finished but not archived",
    },
    row("exposure: segment finished -> archived, p50", "s", p(stowage.exposure, 0.5), p(cp.exposure, 0.5), {
      note: `${stowage.exposure.length} and ${cp.exposure.length} segments seen finishing; up to 1 s over`,
    }),
    row(
      "exposure: segment finished -> archived, largest",
      "s",
      Math.max(...stowage.exposure),
      Math.max(...cp.exposure),
      { note: "the RPO beyond filling the segment (archive_timeout bounds that)" },
    ),
  ];
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
  await writeFile(keyFile, randomBytes(32), { mode: 0o600 });
  await chown(keyFile, uid, gid);
  // gzip's default level, and level 1: the same job, a fast level WAL archiving may prefer.
  const config = join(root, "stowage.config.mjs");
  await writeWalConfig(config, "bench", sinkRoot, keyFile);
  const fastConfig = join(root, "stowage-fast.config.mjs");
  await writeWalConfig(fastConfig, "fast", sinkRoot, keyFile, undefined, 1);
  await mkdir(join(sinkRoot, "fast", "wal"), { recursive: true });
  await chmod(join(sinkRoot, "fast", "wal"), 0o777);
  const push = (job: string, file: string, ahead = 0) =>
    `${process.execPath} ${cli} wal-push %p --job ${job} --config ${file}${ahead ? ` --ahead ${ahead}` : ""}`;
  const cluster = await startArchivingCluster(root, bin, push("bench", config));
  const seconds = Math.max(10, Math.round(60 * options.scale));
  try {
    await pgbench(cluster, ["-i", "-s", "10"]);
    await cluster.query("ALTER SYSTEM SET checkpoint_timeout = '30s'");
    const logs = join(root, "logs");
    const stowage = await measure(cluster, push("bench", config), join(logs, "stowage.times"), seconds);
    const fast = await measure(cluster, push("fast", fastConfig), join(logs, "fast.times"), seconds);
    const ahead = await measure(cluster, push("bench", config, 4), join(logs, "ahead.times"), seconds);
    const cp = await measure(cluster, `cp %p ${copies}/%f`, join(logs, "cp.times"), seconds);
    return [
      ...rows(" (gzip 6 + AES -> file)", stowage, cp, seconds, false),
      ...rows(" (gzip 1 + AES -> file)", fast, cp, seconds, true),
      ...rows(" (gzip 6 + AES, --ahead 4)", ahead, cp, seconds, false),
    ];
  } finally {
    await cluster.stop();
  }
}
