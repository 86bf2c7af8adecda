/**
 * Point-in-time recovery against a real PostgreSQL 15: `archive_command` runs the built CLI
 * (`stowage wal-push`) as the server's user, base backups come from pg_basebackup, and restores
 * start a real server on the restored data directory with `stowage wal-fetch` as its
 * `restore_command`. The archive is gzip + AES-256-GCM throughout.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, mkdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  filesystemSink,
  gzip,
  isStowageError,
  listManifests,
  type Sink,
} from "../../src/index.js";
import { auditLog, defineJob, pruneJob, readAuditLog } from "../../src/jobs/index.js";
import {
  archiveWal,
  fetchWal,
  pgBaseBackupSource,
  restorePostgresToPoint,
} from "../../src/sources/postgres.js";
import {
  buildCli,
  type Cluster,
  clusterAt,
  embeddedBinDirectory,
  openTempDir,
  postgresUser,
  startArchivingCluster,
  writeWalConfig,
} from "../support/pitr.js";
import { freePort } from "../support/postgres.js";

const run = promisify(execFile);
const JOB = "db";
const key = randomBytes(32);
const transforms = [gzip(), aes256gcm({ key })];

let root: string;
let bin: string;
let cli: string;
let config: string;
let sinkRoot: string;
let sink: Sink;
let primary: Cluster;
const started: Cluster[] = [];
/** The server's clock when the first 200 rows were committed and the next not yet. */
let moment: string;

const writeConfig = (path: string, keyFile: string) => writeWalConfig(path, JOB, sinkRoot, keyFile);

/** Runs the built CLI; resolves to its exit code and output, whatever the code. */
async function stowage(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [cli, ...args]).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
}

/** The name of an archived segment of timeline 1. */
async function archivedSegment(): Promise<string> {
  for await (const info of sink.list(`${JOB}/wal/00000001/`)) {
    const m = /\/([0-9A-F]{24})\.wal\.json$/.exec(info.key);
    if (m) return m[1]!;
  }
  throw new Error("no archived segment");
}

async function ids(cluster: Cluster): Promise<number[]> {
  const rows = await cluster.query<{ id: number }>("SELECT id FROM t ORDER BY id");
  return rows.map((r) => r.id);
}
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Restores into a new folder and starts a server there; the cluster is stopped in afterAll. */
async function restoreAndStart(
  name: string,
  target: Parameters<typeof restorePostgresToPoint>[0]["target"],
  archiveMode: "keep" | "off" = "off",
): Promise<Cluster> {
  const port = await freePort();
  const dataDirectory = join(root, name);
  const socket = join(root, "socket");
  await restorePostgresToPoint({
    sink,
    job: JOB,
    target,
    dataDirectory,
    keys: [{ key }],
    restoreCommand: `${process.execPath} ${cli} wal-fetch %f %p --job ${JOB} --config ${config}`,
    archiveMode,
    settings: { port: String(port), unix_socket_directories: socket },
    start: { binDirectory: bin, osUser: "postgres", logFile: join(root, "logs", `${name}.log`) },
  });
  const cluster = clusterAt(bin, dataDirectory, port, socket);
  started.push(cluster);
  return cluster;
}

beforeAll(async () => {
  root = await openTempDir("stowage-pitr-");
  bin = await embeddedBinDirectory();
  ({ cli } = await buildCli(join(root, "bundle")));
  // The sink: the archiver (user postgres) creates the timeline folders under db/wal.
  sinkRoot = join(root, "sink");
  await mkdir(join(sinkRoot, JOB, "wal"), { recursive: true });
  await chmod(join(sinkRoot, JOB, "wal"), 0o777);
  sink = filesystemSink({ root: sinkRoot });
  const { uid, gid } = await postgresUser();
  const keyFile = join(root, "wal.key");
  await writeFile(keyFile, key, { mode: 0o600 });
  await chown(keyFile, uid, gid);
  config = join(root, "stowage.config.mjs");
  await writeConfig(config, keyFile);
  primary = await startArchivingCluster(
    root,
    bin,
    `${process.execPath} ${cli} wal-push %p --job ${JOB} --config ${config}`,
  );
  started.push(primary);

  await primary.query("CREATE TABLE t (id int PRIMARY KEY, note text)");
  await primary.query("INSERT INTO t SELECT g, 'before the base backup' FROM generate_series(1, 100) g");
  await primary.switchAndWaitArchived();
  await backup({
    job: JOB,
    source: pgBaseBackupSource({ connection: { host: "127.0.0.1", port: primary.port, user: "postgres" } }),
    transforms,
    sink,
  });
  await primary.query("INSERT INTO t SELECT g, 'before T' FROM generate_series(101, 200) g");
  // T is taken to the millisecond, at least 20 ms after the last commit before it and before the first after.
  await primary.query("SELECT pg_sleep(0.02)");
  const [now] = await primary.query<{ at: string }>(
    `SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at`,
  );
  moment = now!.at;
  await primary.query("SELECT pg_sleep(0.05)");
  await primary.query("INSERT INTO t SELECT g, 'after T' FROM generate_series(201, 300) g");
  await primary.query("SELECT pg_create_restore_point('after-300')");
  await primary.query("INSERT INTO t SELECT g, 'after the restore point' FROM generate_series(301, 400) g");
  await primary.switchAndWaitArchived();
}, 300_000);

afterAll(async () => {
  for (const cluster of started) await cluster.stop();
  if (root) await rm(root, { recursive: true, force: true });
}, 120_000);

describe("point-in-time recovery (PostgreSQL 15, archive_command = stowage wal-push)", () => {
  it("archived every segment encrypted and compressed, with its record", async () => {
    const keys: string[] = [];
    for await (const info of sink.list(`${JOB}/wal/`)) keys.push(info.key);
    const segments = keys.filter((k) => /\/[0-9A-F]{24}\.gz\.enc$/.test(k));
    expect(segments.length).toBeGreaterThanOrEqual(3);
    for (const k of segments) expect(keys).toContain(`${k.replace(/\.gz\.enc$/, "")}.wal.json`);
    expect(keys.some((k) => /\.backup\.gz\.enc$/.test(k))).toBe(true);
    // Stored bytes are neither the plain segment nor readable without the key.
    const raw = await readFile(join(sinkRoot, segments[0]!));
    expect(raw.length).toBeLessThan(16 * 1024 * 1024);
  });

  it("restores to a moment T: exactly the rows committed before T", async () => {
    const restored = await restoreAndStart("at-moment", { time: new Date(moment) }, "keep");
    expect(await ids(restored)).toEqual(range(1, 200));
    const [row] = await restored.query<{ recovery: boolean }>("SELECT pg_is_in_recovery() AS recovery");
    expect(row!.recovery).toBe(false);
  });

  it("restores to a named restore point", async () => {
    const restored = await restoreAndStart("at-name", { name: "after-300" });
    expect(await ids(restored)).toEqual(range(1, 300));
    await restored.stop();
  });

  it("follows the new timeline of a first recovery in a second one", async () => {
    // The cluster restored to T promoted onto timeline 2 and archives there.
    const first = started.find((c) => c.dataDirectory.endsWith("at-moment"))!;
    await first.query("INSERT INTO t SELECT g, 'timeline 2' FROM generate_series(1001, 1010) g");
    await first.switchAndWaitArchived();
    await first.stop();
    const history = await sink.stat(`${JOB}/wal/00000002/00000002.history.gz.enc`);
    expect(history).toBeDefined();
    const second = await restoreAndStart("latest-timeline-2", "latest");
    expect(await ids(second)).toEqual([...range(1, 200), ...range(1001, 1010)]);
    // Recovered along timeline 2, it promoted onto timeline 3.
    const [tl] = await second.query<{ tli: string }>(
      "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli",
    );
    expect(tl!.tli).toBe("00000003");
    await second.stop();
  });

  it("refuses a target before the oldest base backup or past the newest WAL, writing nothing", async () => {
    for (const [time, reason] of [
      ["2000-01-01T00:00:00Z", "before-oldest-backup"],
      ["2999-01-01T00:00:00Z", "after-newest-wal"],
    ] as const) {
      const dataDirectory = join(root, `refused-${reason}`);
      const error = await restorePostgresToPoint({
        sink,
        job: JOB,
        target: { time },
        dataDirectory,
        keys: [{ key }],
      }).catch((e: unknown) => e);
      expect(isStowageError(error, "NOT_FOUND")).toBe(true);
      expect((error as { details: { reason: string } }).details.reason).toBe(reason);
      expect(existsSync(dataDirectory)).toBe(false);
    }
  });

  it("wal-fetch: a missing file exits 1 quietly; a wrong key exits above 125 (recovery aborts)", async () => {
    const dest = join(root, "fetched");
    const fetch = (name: string, to: string, cfg: string) =>
      stowage(["wal-fetch", name, to, "--job", JOB, "--config", cfg]);
    const missing = await fetch("0000000100000000000000FF", dest, config);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe("");
    expect(existsSync(dest)).toBe(false);

    const name = await archivedSegment();
    expect((await fetch(name, dest, config)).code).toBe(0);
    expect((await readFile(dest)).length).toBe(16 * 1024 * 1024);

    const wrongKeyFile = join(root, "wrong.key");
    await writeFile(wrongKeyFile, randomBytes(32), { mode: 0o600 });
    const wrongConfig = join(root, "wrong.config.mjs");
    await writeConfig(wrongConfig, wrongKeyFile);
    const wrong = await fetch(name, join(root, "fetched-wrong"), wrongConfig);
    expect(wrong.code).toBeGreaterThan(125);
    expect(wrong.stderr).toContain("DECRYPT_FAILED");
    expect(existsSync(join(root, "fetched-wrong"))).toBe(false);
    const library = await fetchWal({
      sink,
      job: JOB,
      name,
      dest: join(root, "fetched-wrong"),
      keys: [{ key: randomBytes(32) }],
    }).catch((e: unknown) => e);
    expect(isStowageError(library, "DECRYPT_FAILED")).toBe(true);
  });

  it("wal-push: an identical re-push succeeds, different content fails loudly", async () => {
    const name = await archivedSegment();
    const folder = join(root, "push");
    await mkdir(folder);
    const path = join(folder, name);
    await fetchWal({ sink, job: JOB, name, dest: path, keys: [{ key }] });
    const push = () => stowage(["wal-push", path, "--job", JOB, "--config", config, "--json"]);
    const again = await push();
    expect(again.code).toBe(0);
    expect((JSON.parse(again.stdout) as { status: string }).status).toBe("already-archived");

    const bytes = await readFile(path);
    bytes[1000] = bytes[1000]! ^ 0xff;
    await writeFile(path, bytes);
    const failed = await push();
    expect(failed.code).not.toBe(0);
    expect((JSON.parse(failed.stdout) as { error: { code: string } }).error.code).toBe("INTEGRITY_MISMATCH");
    const direct = await archiveWal({ sink, job: JOB, path, transforms }).catch((e: unknown) => e);
    expect(isStowageError(direct, "INTEGRITY_MISMATCH")).toBe(true);

    // A bad --ahead is a usage error (exit 2), before anything is read.
    for (const ahead of ["0", "17", "two"]) {
      const bad = await stowage([
        "wal-push",
        path,
        "--job",
        JOB,
        "--config",
        config,
        "--ahead",
        ahead,
        "--json",
      ]);
      expect(bad.code, `--ahead ${ahead}`).toBe(2);
      expect((JSON.parse(bad.stdout) as { error: { code: string } }).error.code).toBe("USAGE");
    }
  });

  it("wal-push --ahead: the first push of a backlog archives the next ones, which PostgreSQL then finds archived", async () => {
    const log = join(root, "logs", "ahead.log");
    await writeFile(log, "");
    await chmod(log, 0o666);
    const normal = `${process.execPath} ${cli} wal-push %p --job ${JOB} --config ${config}`;
    const archiveWith = async (command: string) => {
      await primary.query(`ALTER SYSTEM SET archive_command = '${command.replace(/'/g, "''")}'`);
      await primary.query("SELECT pg_reload_conf(), pg_sleep(1)");
    };
    // The archiver fails for a while, so finished segments wait as archive_status/*.ready.
    await primary.query("CREATE TABLE ahead_backlog (i int)");
    await archiveWith("false");
    const backlog: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        await primary.query(`INSERT INTO ahead_backlog SELECT generate_series(1, 100)`);
        const [row] = await primary.query<{ name: string }>(
          "SELECT pg_walfile_name(pg_switch_wal()) AS name",
        );
        backlog.push(row!.name);
      }
      await archiveWith(`${normal} --ahead 4 --json >> ${log}`);
      await primary.switchAndWaitArchived();
    } finally {
      await archiveWith(normal);
    }
    type Push = { name: string; status: string; ahead: string[] };
    const pushes = (await readFile(log, "utf8"))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Push);
    // The first push through the new command took the rest of the backlog with it...
    const first = pushes[0]!;
    expect(backlog).toContain(first.name);
    const rest = backlog.slice(backlog.indexOf(first.name) + 1);
    expect(rest.length).toBeGreaterThan(0);
    expect(first.ahead).toEqual(expect.arrayContaining(rest));
    // ...so PostgreSQL's own push of each found it archived, with the same content.
    for (const name of rest) {
      expect(pushes.find((p) => p.name === name)?.status).toBe("already-archived");
    }
    await mkdir(join(root, "ahead-fetched"));
    for (const name of backlog) {
      await fetchWal({ sink, job: JOB, name, dest: join(root, "ahead-fetched", name), keys: [{ key }] });
    }
  });

  it("names a missing segment before writing anything", async () => {
    // The base backup's start segment: every restore from it needs it, and it has no other timeline.
    const { manifests } = await listManifests(sink, { job: JOB });
    const victim = String(
      manifests.find((m) => m.source.kind === "postgres-basebackup")!.source.details.startSegment,
    );
    const keys: string[] = [];
    for await (const info of sink.list(`${JOB}/wal/00000001/`)) keys.push(info.key);
    const gone = keys.filter((k) => k.endsWith(`/${victim}.gz.enc`) || k.endsWith(`/${victim}.wal.json`));
    expect(gone.length).toBe(2);
    await sink.delete(gone);
    const dataDirectory = join(root, "missing-segment");
    const error = await restorePostgresToPoint({
      sink,
      job: JOB,
      target: "latest",
      dataDirectory,
      keys: [{ key }],
    }).catch((e: unknown) => e);
    expect(isStowageError(error, "NOT_FOUND")).toBe(true);
    expect((error as { details: { segment: string } }).details.segment).toBe(victim);
    expect(existsSync(dataDirectory)).toBe(false);
  });

  it("prune removes the WAL only dropped base backups needed, audited, after a dry run that removes nothing", async () => {
    // A second base backup; keeping only it frees the WAL before its start, on every timeline.
    await primary.query(
      "INSERT INTO t SELECT g, 'before the second base backup' FROM generate_series(2001, 2010) g",
    );
    await primary.switchAndWaitArchived();
    const source = pgBaseBackupSource({
      connection: { host: "127.0.0.1", port: primary.port, user: "postgres" },
    });
    const second = await backup({ job: JOB, source, transforms, sink });
    // Some WAL after the backup's label, so the switch archives a segment (not only the label).
    await primary.query("INSERT INTO t VALUES (2011, 'after the second base backup')");
    await primary.switchAndWaitArchived();
    const start = String(second.source.details.startSegment);
    const archived = async () => {
      const names: string[] = [];
      for await (const info of sink.list(`${JOB}/wal/`)) {
        const m = /\/([0-9A-F.a-z]+)\.wal\.json$/.exec(info.key);
        if (m) names.push(m[1]!);
      }
      return names.sort();
    };
    const before = await archived();
    const segments = (names: string[]) => names.filter((n) => /^[0-9A-F]{24}$/.test(n));
    const older = segments(before).filter((n) => n.slice(8) < start.slice(8));
    // Timeline 1's older segments and timeline 2's (it branched at T, before the second backup).
    expect(older.some((n) => n.startsWith("00000001"))).toBe(true);
    expect(older.some((n) => n.startsWith("00000002"))).toBe(true);

    const job = defineJob({ name: JOB, source, transforms, sink, retention: { keepLast: 1 } });
    const auditPath = join(root, "audit.jsonl");
    const audit = auditLog({ path: auditPath });
    const [dry] = await pruneJob(job, { dryRun: true, audit });
    expect(dry!.status).toBe("succeeded");
    const freed = before.filter((n) => !n.endsWith(".history") && n.slice(8, 24) < start.slice(8));
    expect(dry!.walDeleted!.length).toBe(freed.length);
    expect(await archived()).toEqual(before);

    const [done] = await pruneJob(job, { audit });
    await audit.flush();
    expect(done!.status).toBe("succeeded");
    expect(done!.deleted.length).toBe(1);
    const after = await archived();
    // Exactly the older ones went; from the kept backup's start segment on, and every history file, stay.
    expect(segments(after)).toEqual(segments(before).filter((n) => !older.includes(n)));
    expect(segments(after)).toContain(start);
    expect(after.filter((n) => n.endsWith(".history"))).toEqual(before.filter((n) => n.endsWith(".history")));
    for (const n of older) expect(await sink.stat(`${JOB}/wal/${n.slice(0, 8)}/${n}.gz.enc`)).toBeUndefined();
    // The kept start segment still fetches whole.
    await fetchWal({ sink, job: JOB, name: start, dest: join(root, "kept-start"), keys: [{ key }] });
    expect((await readFile(join(root, "kept-start"))).length).toBe(16 * 1024 * 1024);
    // One audit line per removed WAL file, beside the base backup's.
    const lines = (await readAuditLog({ path: auditPath })).filter((e) => e.action === "delete");
    const walLines = lines.filter((e) => e.key?.includes("/wal/"));
    expect(walLines.map((e) => e.key).sort()).toEqual([...done!.walDeleted!].sort());
    expect(walLines.every((e) => e.result === "ok" && e.reason === `before ${start}`)).toBe(true);
    expect(lines.length).toBe(walLines.length + 1);

    // stowage status: the archive's RPO, and the lag as the server's pg_stat_archiver shows it.
    // The bundle imports pg as an installed package would: from a node_modules above it.
    await symlink(fileURLToPath(new URL("../../node_modules", import.meta.url)), join(root, "node_modules"));
    const statusConfig = join(root, "status.config.mjs");
    await writeWalConfig(statusConfig, JOB, sinkRoot, join(root, "wal.key"), primary.port);
    const status = await stowage(["status", "--json", "--config", statusConfig]);
    const entry = (
      JSON.parse(status.stdout) as { jobs: Array<{ job: string; wal?: Record<string, unknown> }> }
    ).jobs[0]!;
    expect(entry.job).toBe(JOB);
    expect(entry.wal).toMatchObject({ failing: false, gaps: [] });
    const [server] = await primary.query<{ current: string }>(
      "SELECT pg_walfile_name(pg_current_wal_lsn()) AS current",
    );
    const newest = String(entry.wal!.newestSegment);
    expect(newest.slice(0, 8)).toBe("00000001");
    // At a segment boundary the server names the segment just finished (0); WAL written since
    // the status was taken can only raise what the server shows now.
    const lag = entry.wal!.lagSegments as number;
    expect(lag).toBeGreaterThanOrEqual(0);
    expect(lag).toBeLessThanOrEqual(
      Number.parseInt(server!.current.slice(16), 16) - Number.parseInt(newest.slice(16), 16),
    );
    expect(entry.wal!.rpoSeconds).toBeGreaterThanOrEqual(0);
    const metrics = await stowage(["status", "--prometheus", "--config", statusConfig]);
    expect(metrics.stdout).toContain(`stowage_wal_archiver_lag_segments{backup_job="${JOB}"}`);
  });
});
