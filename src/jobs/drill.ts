import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { z } from "zod";
import { listManifests } from "../core/catalog.js";
import { isStowageError, StowageError, throwIfAborted } from "../core/errors.js";
import { extractTar } from "../core/extract-tar.js";
import type { Manifest } from "../core/manifest.js";
import { durationSchema, parseDuration, parseOptions, signalSchema } from "../core/options.js";
import { restore, verify } from "../core/restore.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { DecryptionKey, Sink } from "../core/types.js";
import { selectBackup } from "../policies/select.js";
import type { KubeConfigLike, KubernetesRestoreReport } from "../sources/kubernetes.js";
import type { PgConnection } from "../sources/postgres.js";
import { type AuditEntryInput, type AuditTrail, errorCode, manifestFacts } from "./audit.js";
import { assertJobs, isJob, type Job } from "./job.js";
import { isLogger, type Logger, silentLogger } from "./logger.js";

/**
 * Where a drill restores to. Each is a scratch place the drill creates and removes:
 * - `directory`: a temporary folder; a tar is extracted into it, anything else written as one file;
 * - `postgres`: a scratch database created on the server (dropped afterwards), restored with
 *   `restorePostgres` (plain dumps through psql, custom ones through pg_restore);
 * - `kubernetes`: a server-side dry run (`dryRun=All`) of the restore: every object is checked by
 *   the API server and nothing is stored;
 * - `stream`: the plain bytes are read and checked against the manifest, and thrown away.
 */
export type DrillTarget =
  | {
      kind: "directory";
      /** Where the temporary folder is made. @default os.tmpdir() */
      parent?: string;
    }
  | {
      kind: "postgres";
      /** A connection whose user may CREATE and DROP databases. */
      connection: PgConnection;
      /** The scratch database's name. @default "stowage_drill_<job>_<random>" */
      database?: string;
      /** A query run on the restored database; its rows reach `check` as `rows`. */
      query?: string;
      /** More arguments for psql / pg_restore, e.g. ["--no-owner"]. */
      extraArgs?: string[];
    }
  | {
      kind: "kubernetes";
      kubeConfig: KubeConfigLike;
      /** Only these namespaces (as named in the backup). */
      namespaces?: string[];
      /** Check the objects as if restored into other namespaces: `{ shop: "shop-drill" }`. */
      namespaceMapping?: Record<string, string>;
    }
  | { kind: "stream" };

/** What a drill's `check` receives. */
export interface DrillCheckContext {
  manifest: Manifest;
  target: DrillTarget["kind"];
  /** directory: the folder the backup was restored into. */
  directory?: string;
  /** directory, non-tar content: the file the plain bytes were written to. */
  file?: string;
  /** postgres: the scratch database (on the target's connection). */
  database?: string;
  /** postgres: the rows of the target's `query`. */
  rows?: Array<Record<string, unknown>>;
  /** kubernetes: the dry run's report. */
  kubernetes?: KubernetesRestoreReport;
  /** Plain bytes restored. */
  bytes: number;
  signal: AbortSignal;
}

/**
 * A drill's check: throw or return `false` (or `{ ok: false }`) to fail the drill; return
 * `{ ok: true, details }` to put facts (row counts...) in the report.
 */
export type DrillCheck = (
  context: DrillCheckContext,
) => unknown | boolean | { ok: boolean; details?: Record<string, unknown> };

export const restoreDrillOptionsSchema = z
  .object({
    /** The job to drill (its sink and keys are the defaults), or a job name with `sink`. */
    job: z.union([z.custom<Job>(isJob, "expected a job from defineJob"), z.string().min(1)]),
    /** Where to take the backup from (a copy's sink, to drill the offsite copy). @default the job's sink */
    sink: z
      .custom<Sink>((v) => typeof v === "object" && v !== null && typeof (v as Sink).read === "function")
      .optional(),
    /** Keys that decrypt the backup. @default the job's keys */
    keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).optional(),
    target: z.custom<DrillTarget>(
      (v) =>
        typeof v === "object" &&
        v !== null &&
        ["directory", "postgres", "kubernetes", "stream"].includes((v as { kind?: string }).kind ?? ""),
      'expected a target with kind "directory", "postgres", "kubernetes" or "stream"',
    ),
    check: z.custom<DrillCheck>((v) => typeof v === "function", "expected a function").optional(),
    /** The clock RPO is measured against. @default () => new Date() */
    now: z.union([z.date(), z.custom<() => Date>((v) => typeof v === "function")]).optional(),
    /** Drill the latest backup at or before this time instead of the latest. */
    at: z.union([z.date(), z.string()]).optional(),
    /**
     * The recovery point objective: the drill fails when the backup is older than this.
     * @default the job's `objectives.rpo`
     */
    rpo: durationSchema.optional(),
    /**
     * The recovery time objective: the drill fails when restore and check take longer.
     * @default the job's `objectives.rto`
     */
    rto: durationSchema.optional(),
    audit: z.custom<AuditTrail>((v) => typeof v === "object" && v !== null && "record" in v).optional(),
    logger: z.custom<Logger>(isLogger, "expected a logger").optional(),
    signal: signalSchema.optional(),
  })
  .strict();
export interface RestoreDrillOptions {
  /** The job to drill (its sink and keys are the defaults), or a job name with `sink`. */
  job: string | Job;
  /** Where to restore for the drill: a scratch database, folder, namespace or endpoint. */
  target: DrillTarget;
  /** Where to take the backup from (a copy's sink, to drill the offsite copy). @default the job's sink */
  sink?: Sink;
  /** Keys that decrypt the backup. @default the job's keys */
  keys?: DecryptionKey[];
  /** Runs after the restore; a throw or `false` fails the drill (row counts, a health query…). */
  check?: DrillCheck;
  /** The clock RPO is measured against. @default () => new Date() */
  now?: Date | (() => Date);
  /** Drill the latest backup at or before this time instead of the latest. */
  at?: string | Date;
  /**
   * The recovery point objective: the drill fails when the backup is older than this.
   * @default the job's `objectives.rpo`
   */
  rpo?: string;
  /**
   * The recovery time objective: the drill fails when restore and check take longer.
   * @default the job's `objectives.rto`
   */
  rto?: string;
  /** Where the drill is recorded. */
  audit?: AuditTrail;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestoreDrillOptionsAgrees = Assert<
  Agrees<RestoreDrillOptions, z.input<typeof restoreDrillOptionsSchema>>
>;

export type DrillStage = "select" | "verify" | "restore" | "check" | "cleanup" | "objective" | "audit";

/** One objective a drill measured: the limit, whether it was met, and its class if the job names one. */
export interface DrillObjective {
  limitMs: number;
  met: boolean;
  class?: string;
}

/** The drill's JSON report. */
export interface DrillReport {
  ok: boolean;
  job: string;
  target: DrillTarget["kind"];
  startedAt: string;
  finishedAt: string;
  /** The backup drilled. */
  backup?: {
    id: string;
    key: string;
    sink: string;
    location: string;
    startedAt: string;
    finishedAt: string;
    bytes: number;
    plainBytes: number;
  };
  /** Age of the backup's snapshot (its start) at the drill's `now`: the data a restore would lose. */
  rpoMs: number | null;
  /** Time from the start of the restore to a checked, usable copy (restore + check). */
  rtoMs: number | null;
  /**
   * The measured RPO and RTO against the limits (the options', else the job's `objectives`), with
   * the class a limit comes from when the job names one (`objectives.rtoClass`: "critical"...).
   */
  objectives: { rpo?: DrillObjective; rto?: DrillObjective };
  verify?: { ok: boolean; durationMs: number; plainChecked: boolean; problems: string[] };
  restore?: { ok: boolean; durationMs: number; bytes: number; details: Record<string, unknown> };
  check?: { ok: boolean; durationMs: number; details?: Record<string, unknown> };
  cleanup: { ok: boolean };
  errors: Array<{ stage: DrillStage; code: string; message: string }>;
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** A scratch database name: lowercase, `stowage_drill_<job>_<random>`, at most 63 bytes. */
function scratchDatabase(job: string): string {
  const safe = job.replace(/[^a-z0-9_]/g, "_").slice(0, 30);
  return `stowage_drill_${safe}_${randomBytes(4).toString("hex")}`;
}

class Counter extends Writable {
  bytes = 0;
  override _write(chunk: Buffer, _e: BufferEncoding, cb: (error?: Error | null) => void): void {
    this.bytes += chunk.length;
    cb();
  }
}

/**
 * A restore drill (the seeds' monthly backup test): takes the latest backup of a job, verifies
 * it (stored bytes, and with keys a trial decryption), restores it into a scratch target, runs
 * your check, measures the restore time (RTO) and the backup's age (RPO), and returns a JSON
 * report. The scratch target (folder, database) is removed whatever happened. A drill never
 * throws for a failed step: the report says which stage failed, by code.
 *
 * @throws {CONFIG_INVALID} for bad options (e.g. a job name without `sink`).
 * @example
 * const report = await restoreDrill({
 *   job: db, target: { kind: "postgres", connection: process.env.DRILL_PG_URL!, query: "SELECT count(*) FROM orders" },
 *   check: ({ rows }) => Number(rows?.[0]?.count) > 0, rpo: "1h", rto: "30m",
 * });
 * await writeFile("drill-report.json", JSON.stringify(report, null, 2));
 */
export async function restoreDrill(options: RestoreDrillOptions): Promise<DrillReport> {
  const opts = parseOptions(restoreDrillOptionsSchema, options, "restoreDrill");
  const jobName = typeof opts.job === "string" ? opts.job : opts.job.name;
  const sink = opts.sink ?? (typeof opts.job === "string" ? undefined : opts.job.sink);
  if (!sink) {
    throw new StowageError("CONFIG_INVALID", "restoreDrill: give a sink with a job name", {
      details: { issues: [{ option: "sink", problem: "required when job is a name" }] },
    });
  }
  const keys = opts.keys ?? (typeof opts.job === "string" ? [] : [...opts.job.keys]);
  const logger = opts.logger ?? silentLogger;
  const now =
    opts.now === undefined
      ? () => new Date()
      : typeof opts.now === "function"
        ? opts.now
        : () => opts.now as Date;
  const { target, signal: outer } = opts;
  const controller = new AbortController();
  const forward = () => controller.abort(outer?.reason);
  outer?.addEventListener("abort", forward, { once: true });
  const signal = controller.signal;

  const started = new Date();
  const report: DrillReport = {
    ok: false,
    job: jobName,
    target: target.kind,
    startedAt: started.toISOString(),
    finishedAt: started.toISOString(),
    rpoMs: null,
    rtoMs: null,
    objectives: {},
    cleanup: { ok: true },
    errors: [],
  };
  const fail = (stage: DrillStage, error: unknown) => {
    const code = isStowageError(error) ? error.code : "UNKNOWN";
    report.errors.push({ stage, code, message: messageOf(error) });
    logger.error({ job: jobName, stage, code }, `drill ${stage} failed`);
  };
  const audit = async (entry: AuditEntryInput) => {
    try {
      await opts.audit?.record(entry);
    } catch (error) {
      fail("audit", error);
    }
  };

  let cleanups: Array<() => Promise<void>> = [];
  let manifest: Manifest | undefined;
  try {
    // Select: the latest backup (or the latest at or before `at`).
    try {
      const { manifests } = await listManifests(sink, { job: jobName, signal });
      manifest = selectBackup(manifests, { job: jobName, ...(opts.at ? { at: opts.at } : {}) });
      if (!manifest) {
        throw new StowageError(
          "NOT_FOUND",
          `restoreDrill: job ${jobName} has no backup in the ${sink.kind} sink`,
          {
            details: { job: jobName },
          },
        );
      }
    } catch (error) {
      fail("select", error);
      return report;
    }
    report.backup = {
      id: manifest.id,
      key: manifest.artifact.key,
      sink: manifest.artifact.sink,
      location: manifest.artifact.location,
      startedAt: manifest.startedAt,
      finishedAt: manifest.finishedAt,
      bytes: manifest.artifact.bytes,
      plainBytes: manifest.content.bytes,
    };
    report.rpoMs = Math.max(0, now().getTime() - Date.parse(manifest.startedAt));

    // Verify: the stored bytes, and a trial decode when the keys allow it.
    const v0 = Date.now();
    try {
      const v = await verify({ sink, manifest, keys, signal });
      report.verify = {
        ok: v.ok,
        durationMs: Date.now() - v0,
        plainChecked: v.plain !== undefined,
        problems: v.problems.map((p) => p.code),
      };
      await audit({
        action: "verify",
        ...manifestFacts(manifest),
        result: v.ok ? "ok" : "failed",
        ...(v.ok ? {} : { error: v.problems[0]?.code ?? "INTEGRITY_MISMATCH" }),
        durationMs: report.verify.durationMs,
      });
      if (!v.ok) {
        report.errors.push({
          stage: "verify",
          code: v.problems[0]?.code ?? "INTEGRITY_MISMATCH",
          message: v.problems[0]?.message ?? "verify failed",
        });
        return report;
      }
    } catch (error) {
      fail("verify", error);
      await audit({
        action: "verify",
        ...manifestFacts(manifest),
        result: "failed",
        error: errorCode(error),
      });
      return report;
    }

    // Restore into the scratch target, then check.
    const r0 = Date.now();
    const context: DrillCheckContext = { manifest, target: target.kind, bytes: 0, signal };
    try {
      throwIfAborted(signal, "restoreDrill");
      const plain = await restore({ sink, manifest, keys, signal });
      const result = await restoreInto(target, plain, manifest, context, (c) => cleanups.push(c), signal);
      report.restore = { ok: true, durationMs: Date.now() - r0, bytes: context.bytes, details: result };
      await audit({
        action: "restore",
        ...manifestFacts(manifest),
        reason: `drill:${target.kind}`,
        result: "ok",
        durationMs: report.restore.durationMs,
      });
    } catch (error) {
      report.restore = { ok: false, durationMs: Date.now() - r0, bytes: context.bytes, details: {} };
      fail("restore", error);
      await audit({
        action: "restore",
        ...manifestFacts(manifest),
        reason: `drill:${target.kind}`,
        result: "failed",
        error: errorCode(error),
        durationMs: report.restore.durationMs,
      });
      return report;
    }

    const c0 = Date.now();
    if (opts.check) {
      try {
        const outcome = await opts.check(context);
        const result =
          outcome === false
            ? { ok: false }
            : typeof outcome === "object" && outcome !== null && "ok" in outcome
              ? (outcome as { ok: boolean; details?: Record<string, unknown> })
              : { ok: true };
        report.check = {
          ok: result.ok === true,
          durationMs: Date.now() - c0,
          ...(result.details ? { details: result.details } : {}),
        };
        if (!report.check.ok)
          report.errors.push({ stage: "check", code: "RESTORE_FAILED", message: "the drill's check failed" });
      } catch (error) {
        report.check = { ok: false, durationMs: Date.now() - c0 };
        fail("check", error);
      }
    }
    report.rtoMs = Date.now() - r0;
  } finally {
    // Cleanup whatever happened; a failed cleanup fails the drill (a scratch database left behind costs).
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        report.cleanup.ok = false;
        fail("cleanup", error);
      }
    }
    cleanups = [];
    outer?.removeEventListener("abort", forward);
  }

  const objectives = typeof opts.job === "string" ? undefined : opts.job.objectives;
  const rpo = opts.rpo ?? objectives?.rpo;
  const rto = opts.rto ?? objectives?.rto;
  // The class is reported only for the job's own limit, not for one the options override.
  const rpoClass = opts.rpo === undefined ? objectives?.rpoClass : undefined;
  const rtoClass = opts.rto === undefined ? objectives?.rtoClass : undefined;
  if (rpo && report.rpoMs !== null) {
    const limitMs = parseDuration(rpo, "rpo");
    report.objectives.rpo = {
      limitMs,
      met: report.rpoMs <= limitMs,
      ...(rpoClass ? { class: rpoClass } : {}),
    };
    if (!report.objectives.rpo.met) {
      report.errors.push({
        stage: "objective",
        code: "RPO_BREACHED",
        message: `the backup is older than the RPO of ${rpo}${rpoClass ? ` (${rpoClass})` : ""}`,
      });
    }
  }
  if (rto && report.rtoMs !== null) {
    const limitMs = parseDuration(rto, "rto");
    report.objectives.rto = {
      limitMs,
      met: report.rtoMs <= limitMs,
      ...(rtoClass ? { class: rtoClass } : {}),
    };
    if (!report.objectives.rto.met) {
      report.errors.push({
        stage: "objective",
        code: "RTO_BREACHED",
        message: `restore and check took longer than the RTO of ${rto}${rtoClass ? ` (${rtoClass})` : ""}`,
      });
    }
  }
  report.finishedAt = new Date().toISOString();
  report.ok = report.errors.length === 0;
  if (manifest) {
    await audit({
      action: "drill",
      ...manifestFacts(manifest),
      reason: target.kind,
      result: report.ok ? "ok" : "failed",
      ...(report.ok ? {} : { error: report.errors[0]!.code }),
      durationMs: Date.parse(report.finishedAt) - started.getTime(),
    });
  }
  try {
    await opts.audit?.flush();
  } catch (error) {
    fail("audit", error);
    report.ok = false;
  }
  logger[report.ok ? "info" : "error"](
    {
      job: jobName,
      ok: report.ok,
      rpoMs: report.rpoMs,
      rtoMs: report.rtoMs,
      errors: report.errors.map((e) => e.code),
    },
    "restore drill finished",
  );
  return report;
}

export const runDrillsOptionsSchema = z
  .object({
    /** A name for the set, e.g. "monthly-backup-test"; recorded in the report. */
    name: z.string().min(1).max(128).optional(),
    /**
     * Drill the backups a copy holds (its `name`, else its sink's kind) instead of the primary
     * sink's: a failover drill restores from the second region. "primary" is the primary.
     */
    from: z.string().min(1).optional(),
    /**
     * Where to write the JSON report: a path, or a function of the drill's start time (by `now`)
     * that returns one, so a monthly test keeps one report a month. Written whole (temp + rename).
     */
    report: z
      .union([z.string().min(1), z.custom<(at: Date) => string>((v) => typeof v === "function")])
      .optional(),
    /** The clock the drills' RPO and the report's times are read from. @default () => new Date() */
    now: z.union([z.date(), z.custom<() => Date>((v) => typeof v === "function")]).optional(),
    audit: z.custom<AuditTrail>((v) => typeof v === "object" && v !== null && "record" in v).optional(),
    logger: z.custom<Logger>(isLogger, "expected a logger").optional(),
    signal: signalSchema.optional(),
  })
  .strict();
export interface RunDrillsOptions {
  /** A name for the set, e.g. "monthly-backup-test"; recorded in the report. */
  name?: string;
  /**
   * Drill the backups a copy holds (its `name`, else its sink's kind) instead of the primary
   * sink's: a failover drill restores from the second region. "primary" is the primary.
   */
  from?: string;
  /**
   * Where to write the JSON report: a path, or a function of the drill's start time (by `now`)
   * that returns one, so a monthly test keeps one report a month. Written whole (temp + rename).
   */
  report?: string | ((at: Date) => string);
  /** The clock the drills' RPO and the report's times are read from. @default () => new Date() */
  now?: Date | (() => Date);
  /** Where the drill is recorded. */
  audit?: AuditTrail;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RunDrillsOptionsAgrees = Assert<Agrees<RunDrillsOptions, z.input<typeof runDrillsOptionsSchema>>>;

/** What {@link runDrills} returns and writes: one report for a set of drills. */
export interface DrillRunReport {
  kind: "stowage-drill-report";
  name?: string;
  /** The copy drilled, when not the primary sink. */
  from?: string;
  startedAt: string;
  finishedAt: string;
  /** True when every drill passed and the report was written. */
  ok: boolean;
  drills: DrillReport[];
  /** Where the report was written. */
  path?: string;
  /** Failures outside any drill (writing the report). */
  errors: Array<{ code: string; message: string }>;
}

/**
 * Runs the restore drill of every job that has one (`job.drill`: its target and check; its RPO and
 * RTO come from the job's `objectives` unless the drill names its own) one after another, and
 * writes one JSON report: the seeds' monthly backup test, or with `from` the quarterly failover
 * drill from the second region. The scheduler runs it on a schedule (`startScheduler`'s `drills`).
 * Never throws for a failed drill: the report says which failed, and why, by code.
 *
 * @throws {CONFIG_INVALID} for bad options, no job with a drill, or a job without the copy `from` names.
 * @example
 * const report = await runDrills(config.jobs, { name: "monthly-backup-test",
 *   report: (at) => `/var/lib/stowage/drills/${at.toISOString().slice(0, 7)}.json` });
 * if (!report.ok) alert(report);
 */
export async function runDrills(
  jobs: readonly Job[],
  options: RunDrillsOptions = {},
): Promise<DrillRunReport> {
  assertJobs(jobs, "runDrills");
  const opts = parseOptions(runDrillsOptionsSchema, options, "runDrills");
  const now =
    opts.now === undefined
      ? () => new Date()
      : typeof opts.now === "function"
        ? opts.now
        : () => opts.now as Date;
  const drilled = jobs.filter((j) => j.drill !== undefined);
  if (drilled.length === 0) {
    throw new StowageError("CONFIG_INVALID", "runDrills: no job has a drill (`drill: { target, check? }`)", {
      details: { issues: [{ option: "jobs", problem: "no job has a drill" }] },
    });
  }
  const sinkFor = (job: Job): Sink => {
    if (opts.from === undefined || opts.from === "primary") return job.sink;
    const copy = job.copies.find((c) => (c.name ?? c.sink.kind) === opts.from);
    if (!copy) {
      throw new StowageError("CONFIG_INVALID", `runDrills: job ${job.name} has no copy named ${opts.from}`, {
        details: { issues: [{ option: "from", problem: `no copy of ${job.name} has that name` }] },
      });
    }
    return copy.sink;
  };
  const sinks = drilled.map(sinkFor); // every sink is found before anything runs
  const startedAt = now();
  const report: DrillRunReport = {
    kind: "stowage-drill-report",
    ...(opts.name ? { name: opts.name } : {}),
    ...(opts.from && opts.from !== "primary" ? { from: opts.from } : {}),
    startedAt: startedAt.toISOString(),
    finishedAt: startedAt.toISOString(),
    ok: false,
    drills: [],
    errors: [],
  };
  for (const [i, job] of drilled.entries()) {
    report.drills.push(
      await restoreDrill({
        ...(job.drill as Record<string, unknown>),
        job,
        sink: sinks[i],
        now,
        ...(opts.audit ? { audit: opts.audit } : {}),
        ...(opts.logger ? { logger: opts.logger } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      } as RestoreDrillOptions),
    );
  }
  report.finishedAt = now().toISOString();
  report.ok = report.drills.every((d) => d.ok);
  if (opts.report !== undefined) {
    const path = resolve(typeof opts.report === "function" ? opts.report(startedAt) : opts.report);
    report.path = path;
    const temp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await mkdir(dirname(path), { recursive: true });
      const written = { ...report, ok: report.ok };
      await writeFile(temp, `${JSON.stringify(written, null, 2)}\n`, { mode: 0o600 });
      await rename(temp, path);
    } catch (error) {
      await rm(temp, { force: true }).catch(() => undefined);
      report.ok = false;
      report.errors.push({
        code: "SINK_WRITE_FAILED",
        message: `runDrills: writing the report ${path} failed: ${messageOf(error)}`,
      });
    }
  }
  return report;
}

const EXTENSIONS: Record<string, string> = {
  "application/sql": ".sql",
  "application/json": ".json",
  "application/x-ndjson": ".jsonl",
  "text/csv": ".csv",
  "text/plain": ".txt",
  "application/x-postgresql-custom": ".dump",
};

async function restoreInto(
  target: DrillTarget,
  plain: Readable,
  manifest: Manifest,
  context: DrillCheckContext,
  onCleanup: (cleanup: () => Promise<void>) => void,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  switch (target.kind) {
    case "stream": {
      const counter = new Counter();
      await pipeline(plain, counter, { signal });
      context.bytes = counter.bytes;
      return { bytes: counter.bytes };
    }
    case "directory": {
      const scratch = await mkdtemp(join(target.parent ?? tmpdir(), "stowage-drill-"));
      onCleanup(() => rm(scratch, { recursive: true, force: true }));
      if (manifest.content.contentType === "application/x-tar") {
        const directory = join(scratch, "restored");
        const result = await extractTar(plain, directory, { signal });
        context.directory = directory;
        context.bytes = manifest.content.bytes;
        return { files: result.files, directories: result.directories, fileBytes: result.bytes };
      }
      const file = join(scratch, `restored${EXTENSIONS[manifest.content.contentType] ?? ".bin"}`);
      const counter = new Counter();
      await pipeline(
        plain,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            counter.bytes += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(file, { mode: 0o600 }),
        { signal },
      );
      context.directory = scratch;
      context.file = file;
      context.bytes = counter.bytes;
      return { file: "restored", bytes: counter.bytes };
    }
    case "postgres": {
      const { restorePostgres } = await import("../sources/postgres.js");
      const format =
        manifest.content.contentType === "application/x-postgresql-custom"
          ? "custom"
          : manifest.content.contentType === "application/sql"
            ? "plain"
            : undefined;
      if (!format) {
        plain.destroy();
        throw new StowageError(
          "CONFIG_INVALID",
          `restoreDrill: ${manifest.artifact.key} is not a PostgreSQL dump (${manifest.content.contentType})`,
          {
            details: { issues: [{ option: "target", problem: "not a pg_dump backup" }] },
          },
        );
      }
      const database = target.database ?? scratchDatabase(manifest.job);
      // Registered before the restore: restorePostgres drops what it created on failure, and
      // DROP … IF EXISTS makes a second drop harmless.
      onCleanup(() => dropDatabase(target.connection, database));
      const result = await restorePostgres({
        stream: plain,
        format,
        connection: target.connection,
        database,
        createDatabase: true,
        clean: true,
        ...(target.query ? { check: target.query } : {}),
        ...(target.extraArgs ? { extraArgs: target.extraArgs } : {}),
        signal,
      });
      context.database = database;
      context.bytes = manifest.content.bytes; // restore() errors the stream unless every byte matched
      if (result.check) context.rows = result.check;
      return { database, format, ...(result.check ? { rows: result.check.length } : {}) };
    }
    case "kubernetes": {
      const { restoreKubernetes } = await import("../sources/kubernetes.js");
      const result = await restoreKubernetes({
        stream: plain,
        kubeConfig: target.kubeConfig,
        dryRun: true,
        ...(target.namespaces ? { namespaces: target.namespaces } : {}),
        ...(target.namespaceMapping ? { namespaceMapping: target.namespaceMapping } : {}),
        signal,
      });
      context.kubernetes = result;
      context.bytes = manifest.content.bytes;
      if (result.counts.failed > 0) {
        const first = result.results.find((r) => r.status === "failed");
        throw new StowageError(
          "RESTORE_FAILED",
          `restoreDrill: the server refused ${result.counts.failed} object(s) in the dry run${first ? `, first ${first.kind} ${first.namespace ? `${first.namespace}/` : ""}${first.name}: ${first.reason ?? ""}` : ""}`,
          { details: { counts: result.counts } },
        );
      }
      return { dryRun: true, counts: result.counts };
    }
  }
}

/** Drops a scratch database with `pg` (an optional peer, loaded here only). */
async function dropDatabase(connection: PgConnection, database: string): Promise<void> {
  const pg = await import("pg");
  const Client = pg.default?.Client ?? (pg as unknown as { Client: typeof pg.default.Client }).Client;
  const config =
    typeof connection === "string"
      ? { connectionString: connection }
      : {
          host: connection.host ?? "localhost",
          port: connection.port ?? 5432,
          ...(connection.user ? { user: connection.user } : {}),
          ...(connection.password !== undefined ? { password: connection.password } : {}),
          database: connection.database ?? "postgres",
        };
  const client = new Client({ ...config, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    await client.query(`DROP DATABASE IF EXISTS "${database.replace(/"/g, '""')}" WITH (FORCE)`);
  } catch (error) {
    throw new StowageError(
      "RESTORE_FAILED",
      `restoreDrill: dropping the scratch database ${database} failed`,
      {
        cause: error,
        details: { database },
      },
    );
  } finally {
    await client.end().catch(() => undefined);
  }
}
