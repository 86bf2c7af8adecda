/**
 * `restorePostgresToPoint`: a base backup unpacked into a new data directory, set up to replay the
 * archived WAL up to a target, and (optionally) started until it gets there.
 */
import { existsSync } from "node:fs";
import { appendFile, lchown, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import { listManifests } from "../../core/catalog.js";
import { lastLines, runCollecting } from "../../core/child-process.js";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import { extractTar } from "../../core/extract-tar.js";
import { JOB_NAME_PATTERN } from "../../core/keys.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema } from "../../core/options.js";
import { restore } from "../../core/restore.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { DecryptionKey, Sink } from "../../core/types.js";
import { planRecovery, type RecoveryTarget, targetTime } from "./wal-plan.js";
import { listArchivedWal } from "./wal-retention.js";

const targetSchema = lazySchema((z) =>
  z.union([
    z.literal("latest"),
    z.object({ time: z.union([z.date(), z.string().min(1)]) }).strict(),
    z
      .object({ lsn: z.string().regex(/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/, "an LSN like 0/3000060") })
      .strict(),
    z.object({ name: z.string().min(1).max(63) }).strict(),
  ]),
);

const startSchema = lazySchema((z) =>
  z
    .object({
      /** The folder of `pg_ctl` and `postgres`. @default `pg_config --bindir`, else `pg_ctl` on PATH */
      binDirectory: z.string().min(1).optional(),
      /**
       * Run the server as this operating-system user (through `runuser`, and the data directory is
       * handed to it): PostgreSQL refuses to run as root. @default the current user
       */
      osUser: z.string().min(1).optional(),
      /** The server's log file. @default `<dataDirectory>/stowage-recovery.log` */
      logFile: z.string().min(1).optional(),
      /** How long recovery may take to reach the target. @default 600000 */
      timeoutMs: z.number().int().positive().default(600_000),
    })
    .strict(),
);

/** The zod schema of {@link RestorePostgresToPointOptions}, which parses the options at the boundary. */
export const restorePostgresToPointOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      job: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
      /** `{ time }`, `{ lsn }`, `{ name }` (a `pg_create_restore_point`) or `"latest"`. */
      target: targetSchema,
      /** A new (or empty) folder for the cluster. */
      dataDirectory: z.string().min(1),
      /** Keys for an encrypted base backup. The WAL is fetched by `restoreCommand` with its own. @default [] */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).default([]),
      /** The id of the base backup to start from. @default the newest that fits the target */
      backup: z.string().min(1).optional(),
      /**
       * The `restore_command` written into the recovery settings (`%f`, `%p` as PostgreSQL defines).
       * @default `stowage wal-fetch %f %p --job <job>` (with `--config <config>` when given)
       */
      restoreCommand: z.string().min(1).optional(),
      /** The config module the default `restoreCommand` names. */
      config: z.string().min(1).optional(),
      /**
       * "keep": the restored cluster archives (on its new timeline) as the backed-up one did; "off":
       * it never archives (a drill, a copy to inspect). @default "keep"
       */
      archiveMode: z.enum(["keep", "off"]).default("keep"),
      /** More settings for the restored cluster, e.g. `{ port: "5433" }`. @default {} */
      settings: z.record(z.string().regex(/^[a-z_.]+$/, "a setting name"), z.string()).default({}),
      /** Start the server and wait until recovery has reached the target; `false` leaves it ready to start. @default false */
      start: z.union([z.literal(false), startSchema]).default(false),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/**
 * What {@link restorePostgresToPoint} takes: the base backups' sink and the WAL archive, the
 * target (time, LSN or named point), the data directory, and whether to start the server.
 */
export interface RestorePostgresToPointOptions {
  /** The sink that holds the job's base backups and its WAL archive. */
  sink: Sink;
  /** The job whose base backups and WAL are restored: lowercase letters, digits, '.', '_' and '-', at most 128. */
  job: string;
  /** `{ time }`, `{ lsn }`, `{ name }` (a `pg_create_restore_point`) or `"latest"`. */
  target: RecoveryTarget;
  /** A new (or empty) folder for the cluster. */
  dataDirectory: string;
  /** Keys for an encrypted base backup. The WAL is fetched by `restoreCommand` with its own. @default [] */
  keys?: DecryptionKey[];
  /** The id of the base backup to start from. @default the newest that fits the target */
  backup?: string;
  /**
   * The `restore_command` written into the recovery settings (`%f`, `%p` as PostgreSQL defines).
   * @default `stowage wal-fetch %f %p --job <job>` (with `--config <config>` when given)
   */
  restoreCommand?: string;
  /** The config module the default `restoreCommand` names. */
  config?: string;
  /**
   * "keep": the restored cluster archives (on its new timeline) as the backed-up one did; "off":
   * it never archives (a drill, a copy to inspect). @default "keep"
   */
  archiveMode?: "keep" | "off";
  /** More settings for the restored cluster, e.g. `{ port: "5433" }` (names of `[a-z_.]`). @default {} */
  settings?: Record<string, string>;
  /** Start the server and wait until recovery has reached the target; `false` leaves it ready to start. @default false */
  start?: false | RestorePostgresToPointStart;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestorePostgresToPointOptionsAgrees = Assert<
  Agrees<RestorePostgresToPointOptions, z.input<typeof restorePostgresToPointOptionsSchema>>
>;

/** How {@link restorePostgresToPoint} starts the restored server (its `start` option). */
export interface RestorePostgresToPointStart {
  /** The folder of `pg_ctl` and `postgres`. @default `pg_config --bindir`, else `pg_ctl` on PATH */
  binDirectory?: string;
  /**
   * Run the server as this operating-system user (through `runuser`, and the data directory is
   * handed to it): PostgreSQL refuses to run as root. @default the current user
   */
  osUser?: string;
  /** The server's log file. @default `<dataDirectory>/stowage-recovery.log` */
  logFile?: string;
  /** How long recovery may take to reach the target. @default 600000 */
  timeoutMs?: number;
}
type _RestorePostgresToPointStartAgrees = Assert<
  Agrees<RestorePostgresToPointStart, z.input<typeof startSchema>>
>;

/** What {@link restorePostgresToPoint} did: which backup, where, with which recovery settings. */
export interface RestorePostgresToPointResult {
  /** The id of the base backup restored. */
  backup: string;
  /** The data directory the backup was unpacked into, as the option gave it. */
  dataDirectory: string;
  /** The recovery settings written into `postgresql.auto.conf`. */
  settings: Record<string, string>;
  /** The first and last WAL segment replay needs (checked present in the archive). */
  firstSegment: string;
  /** The last one: the target's segment, or for `latest` the newest archived. */
  lastSegment: string;
  /** Whether the server was started (and recovery reached the target and promoted). */
  started: boolean;
}

const quote = (value: string) => `'${value.replace(/'/g, "''")}'`;
const pgTime = (at: Date) => at.toISOString().replace("T", " ").replace("Z", "+00");

/**
 * Restores a cluster to a point in time: picks the base backup (see `planRecovery`), checks that
 * every WAL segment from its start to the target is archived, unpacks it into `dataDirectory`,
 * and writes `recovery.signal` and the recovery settings (`restore_command` through
 * `stowage wal-fetch`, the target, `recovery_target_timeline = 'latest'`, and
 * `recovery_target_action = 'promote'`). A time target stops before the first transaction that
 * committed after it (`recovery_target_inclusive = off`).
 *
 * By default (`start: false`) the directory is left ready to start with `pg_ctl start`: the caller
 * owns the server's lifecycle. With `start: { binDirectory, osUser }` this function starts it,
 * waits until recovery has reached the target and the server has promoted, and leaves it running.
 *
 * Everything that can be checked is checked before a byte is written: a target before the oldest
 * base backup, past the newest archived WAL, or a segment missing in between is NOT_FOUND.
 *
 * @throws {NOT_FOUND} see above; `details.reason` is `no-base-backup`, `before-oldest-backup`,
 *   `after-newest-wal`, `missing-segment` (`details.segment` names it) or `no-such-backup`.
 * @throws {CONFIG_INVALID} bad options; `dataDirectory` exists and is not empty.
 * @throws {DECRYPT_FAILED} {INTEGRITY_MISMATCH} the base backup cannot be read back.
 * @throws {RESTORE_FAILED} the server did not start, or stopped before reaching the target.
 * @example
 * await restorePostgresToPoint({ sink, job: "app-db", target: { time: "2026-12-02T14:54:00Z" },
 *   dataDirectory: "/var/lib/postgresql/15/restored", keys: [{ key }], config: "/etc/stowage.config.mjs" });
 */
export async function restorePostgresToPoint(
  options: RestorePostgresToPointOptions,
): Promise<RestorePostgresToPointResult> {
  const opts = parseOptions(restorePostgresToPointOptionsSchema, options, "restorePostgresToPoint");
  const { sink, job, signal } = opts;
  const target = opts.target as RecoveryTarget;
  const dataDirectory = resolve(opts.dataDirectory);
  const where = `restorePostgresToPoint ${job}`;
  throwIfAborted(signal, where);
  if (existsSync(dataDirectory) && (await readdir(dataDirectory)).length > 0) {
    throw new StowageError("CONFIG_INVALID", `${where}: ${dataDirectory} is not empty`, {
      details: { issues: [{ path: "dataDirectory", problem: "exists and is not empty" }] },
    });
  }

  const { manifests } = await listManifests(sink, { job, ...(signal ? { signal } : {}) });
  const wal = await listArchivedWal(sink, job, signal);
  const plan = planRecovery(job, manifests, wal, target, opts.backup);

  const plain = await restore({
    sink,
    manifest: plan.backup,
    keys: opts.keys,
    ...(signal ? { signal } : {}),
  });
  await extractTar(plain, dataDirectory, signal ? { signal } : {});
  // pg_basebackup leaves pg_wal out with `-X none`; the server needs the folders.
  await mkdir(join(dataDirectory, "pg_wal", "archive_status"), { recursive: true, mode: 0o700 });

  const settings: Record<string, string> = {
    restore_command:
      opts.restoreCommand ??
      `stowage wal-fetch %f %p --job ${job}${opts.config ? ` --config ${shellQuote(opts.config)}` : ""}`,
    recovery_target_timeline: "latest",
  };
  if (target !== "latest") {
    if ("time" in target) {
      settings.recovery_target_time = pgTime(targetTime(target));
      settings.recovery_target_inclusive = "off";
    } else if ("lsn" in target) settings.recovery_target_lsn = target.lsn;
    else settings.recovery_target_name = target.name;
    settings.recovery_target_action = "promote";
  }
  if (opts.archiveMode === "off") settings.archive_mode = "off";
  Object.assign(settings, opts.settings);
  const lines = Object.entries(settings).map(([k, v]) => `${k} = ${quote(v)}`);
  await appendFile(
    join(dataDirectory, "postgresql.auto.conf"),
    `\n# stowage: point-in-time recovery of ${job} from base backup ${plan.backup.id}\n${lines.join("\n")}\n`,
    { mode: 0o600 },
  );
  await writeFile(join(dataDirectory, "recovery.signal"), "", { mode: 0o600 });

  const result: RestorePostgresToPointResult = {
    backup: plan.backup.id,
    dataDirectory,
    settings,
    firstSegment: plan.firstSegment,
    lastSegment: plan.lastSegment,
    started: false,
  };
  if (opts.start === false) return result;
  await startAndWait(dataDirectory, opts.start, where, signal);
  return { ...result, started: true };
}

/** POSIX shell quoting for a path in `restore_command` (PostgreSQL runs it through `sh -c`). */
const shellQuote = (s: string) => (/^[\w./@%+=:,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

type StartOptions = z.output<typeof startSchema>;

/**
 * The cluster state in `global/pg_control`: a 4-byte enum after the 8-byte system identifier and
 * two 4-byte version numbers, the same in every version since 9.0; 6 is DB_IN_PRODUCTION, written
 * once recovery has ended and the server accepts writes. Read without pg_controldata, which the
 * server's own bin directory may lack.
 */
async function inProduction(dataDirectory: string): Promise<boolean> {
  const control = await readFile(join(dataDirectory, "global", "pg_control")).catch(() => undefined);
  return control !== undefined && control.length >= 20 && control.readUInt32LE(16) === 6;
}

/** Starts the server with pg_ctl and waits until recovery has ended and it has promoted. */
async function startAndWait(dataDirectory: string, start: StartOptions, where: string, signal?: AbortSignal) {
  const bin = start.binDirectory ?? (await pgConfigBinDirectory(signal));
  const pgCtl = bin ? join(bin, "pg_ctl") : "pg_ctl";
  const logFile = start.logFile ?? join(dataDirectory, "stowage-recovery.log");
  const ctl = (args: string[]) => {
    const command = start.osUser ? ["runuser", "-u", start.osUser, "--", pgCtl, ...args] : [pgCtl, ...args];
    return runCollecting(command[0]!, command.slice(1), process.env, signal);
  };
  if (start.osUser) await chownTree(dataDirectory, start.osUser);
  const started = await ctl(["-D", dataDirectory, "-l", logFile, "-w", "-t", "120", "start"]);
  const logTail = async () => {
    return lastLines(await readFile(logFile, "utf8").catch(() => ""), 5);
  };
  if (started.error || started.code !== 0) {
    throw new StowageError(
      "RESTORE_FAILED",
      `${where}: pg_ctl start failed: ${started.error?.message ?? lastLines(started.stderr || started.stdout)} ${await logTail()}`,
      { details: { dataDirectory, logFile } },
    );
  }
  const deadline = Date.now() + start.timeoutMs;
  while (existsSync(join(dataDirectory, "recovery.signal")) || !(await inProduction(dataDirectory))) {
    throwIfAborted(signal, where);
    const status = await ctl(["-D", dataDirectory, "status"]);
    if (status.code !== 0) {
      throw new StowageError(
        "RESTORE_FAILED",
        `${where}: the server stopped during recovery: ${await logTail()}`,
        {
          details: { dataDirectory, logFile },
        },
      );
    }
    if (Date.now() > deadline) {
      throw new StowageError(
        "RESTORE_FAILED",
        `${where}: recovery did not reach the target in ${start.timeoutMs} ms`,
        {
          details: { dataDirectory, logFile },
        },
      );
    }
    await sleep(200, undefined, signal ? { signal } : {});
  }
}

/** `pg_config --bindir`, or undefined when there is no pg_config. */
async function pgConfigBinDirectory(signal?: AbortSignal): Promise<string | undefined> {
  const out = await runCollecting("pg_config", ["--bindir"], process.env, signal);
  const dir = out.code === 0 ? out.stdout.trim() : "";
  return dir && (await stat(dir).catch(() => undefined))?.isDirectory() ? dir : undefined;
}

/** Hands a restored tree to the user the server runs as (it refuses a data directory it does not own). */
async function chownTree(root: string, user: string) {
  const id = await runCollecting("id", ["-u", user], process.env, undefined);
  const gid = await runCollecting("id", ["-g", user], process.env, undefined);
  if (id.code !== 0 || gid.code !== 0) {
    throw new StowageError("CONFIG_INVALID", `restorePostgresToPoint: no user ${user}`, {
      details: { issues: [{ path: "start.osUser", problem: "no such user" }] },
    });
  }
  const uid = Number(id.stdout.trim());
  const g = Number(gid.stdout.trim());
  const walk = async (path: string): Promise<void> => {
    await lchown(path, uid, g);
    const info = await stat(path).catch(() => undefined);
    if (!info?.isDirectory()) return;
    for (const entry of await readdir(path, { withFileTypes: true })) {
      const child = join(path, entry.name);
      if (entry.isDirectory()) await walk(child);
      else await lchown(child, uid, g);
    }
  };
  await walk(root);
}
