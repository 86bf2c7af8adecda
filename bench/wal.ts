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
} from "../test/support/pitr.js";
import type { BenchOptions, BenchRow } from "./lib.js";

const exec = promisify(execFile);
const SEGMENT_MB = 16 * 1.048576;

interface Side {
  name: string;
  times: number[];
  maxLag: number;
  segments: number;
}

const percentile = (xs: readonly number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? Number.NaN;
const round3 = (n: number) => Math.round(n * 1000) / 1000;

function pgbenchPath(): string {
  const debian = "/usr/lib/postgresql/15/bin/pgbench";
  return existsSync(debian) ? debian : "pgbench";
}

/** The timing wrapper: the shell that runs archive_command records each successful push. */
const timed = (command: string, log: string) =>
  `s=$(date +%s%N) && ${command} && echo "%f $s $(date +%s%N)" >> ${log}`;

async function measure(cluster: Cluster, side: string, command: string, log: string, seconds: number) {
  await writeFile(log, "");
  await chmod(log, 0o666);
  await cluster.query(`ALTER SYSTEM SET archive_command = '${timed(command, log).replace(/'/g, "''")}'`);
  await cluster.query("SELECT pg_reload_conf()");
  await cluster.switchAndWaitArchived();
  await writeFile(log, "");
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
  await exec(
    pgbenchPath(),
    [
      "-h",
      "127.0.0.1",
      "-p",
      String(cluster.port),
      "-U",
      "postgres",
      "-c",
      "2",
      "-j",
      "2",
      "-T",
      String(seconds),
      "postgres",
    ],
    { maxBuffer: 16 << 20 },
  );
  sampling = false;
  await sampler;
  await cluster.switchAndWaitArchived();
  const lines = (await readFile(log, "utf8")).trim().split("\n").filter(Boolean);
  const times = lines.map((l) => {
    const [, start, end] = l.split(" ");
    return (Number(end) - Number(start)) / 1e9;
  });
  return { name: side, times, maxLag, segments: lines.length } satisfies Side;
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
  await writeFile(
    config,
    `import { readFileSync } from "node:fs";
import { aes256gcm, defineJob, filesystemSink, gzip } from "./bundle/index.mjs";
import { pgBaseBackupSource } from "./bundle/postgres.mjs";
const key = readFileSync(${JSON.stringify(keyFile)});
export default [defineJob({
  name: "bench",
  source: pgBaseBackupSource({ connection: { host: "127.0.0.1", user: "postgres" } }),
  sink: filesystemSink({ root: ${JSON.stringify(sinkRoot)} }),
  transforms: [gzip(), aes256gcm({ key })],
  keys: [{ key }],
})];
`,
    { mode: 0o600 },
  );
  await chown(config, uid, gid);
  const push = `${process.execPath} ${cli} wal-push %p --job bench --config ${config}`;
  const cluster = await startArchivingCluster(root, bin, push);
  const seconds = Math.max(5, Math.round(30 * options.scale));
  try {
    await exec(pgbenchPath(), [
      "-h",
      "127.0.0.1",
      "-p",
      String(cluster.port),
      "-U",
      "postgres",
      "-i",
      "-s",
      "10",
      "postgres",
    ]);
    const stowage = await measure(cluster, "stowage", push, join(root, "logs", "stowage.times"), seconds);
    const cp = await measure(cluster, "cp", `cp %p ${copies}/%f`, join(root, "logs", "cp.times"), seconds);
    const rate = (s: Side) => round3(SEGMENT_MB / (s.times.reduce((a, b) => a + b, 0) / s.times.length));
    const note = (s: Side) => `${s.segments} segments in ${seconds} s of pgbench -c 2`;
    return [
      {
        name: "wal-push p50 per 16 MiB segment (gzip + AES -> file)",
        stowage: round3(percentile(stowage.times, 0.5)),
        anchor: round3(percentile(cp.times, 0.5)),
        anchorName: "archive_command = cp %p",
        unit: "s",
        ratio: round3(percentile(cp.times, 0.5) / percentile(stowage.times, 0.5)),
        target: "info",
        pass: true,
        note: note(stowage),
      },
      {
        name: "wal-push p99 per segment",
        stowage: round3(percentile(stowage.times, 0.99)),
        anchor: round3(percentile(cp.times, 0.99)),
        anchorName: "archive_command = cp %p",
        unit: "s",
        ratio: round3(percentile(cp.times, 0.99) / percentile(stowage.times, 0.99)),
        target: "info",
        pass: true,
      },
      {
        name: "wal-push sustained (one archiver, 16 MiB / mean push time)",
        stowage: rate(stowage),
        anchor: rate(cp),
        anchorName: "archive_command = cp %p",
        unit: "MB/s",
        ratio: round3(rate(stowage) / rate(cp)),
        target: "info",
        pass: true,
        note: note(cp),
      },
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
