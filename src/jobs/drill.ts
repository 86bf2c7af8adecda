import type { z } from "zod";
import { linkSignal } from "../core/abort.js";
import { listManifests } from "../core/catalog.js";
import { directoryRestoreTarget, streamRestoreTarget } from "../core/directory-target.js";
import { isStowageError, StowageError, throwIfAborted } from "../core/errors.js";
import type { Manifest } from "../core/manifest.js";
import { durationSchema, lazySchema, parseOptions, signalSchema, sinkSchema } from "../core/options.js";
import { restore, verify } from "../core/restore.js";
import { type RestoreTarget, restoreTargetSchema } from "../core/restore-target.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { DecryptionKey, Sink } from "../core/types.js";
import { selectBackup } from "../policies/select.js";
import { type AuditEntryInput, type AuditTrail, errorCode, manifestFacts } from "./audit.js";
import { clockOf, measureObjectives } from "./drill-objectives.js";
import { isJob, type Job } from "./job.js";
import { isLogger, type Logger, silentLogger } from "./logger.js";

/**
 * Where a drill restores to: a {@link RestoreTarget}, which the drill's cleanup undoes whatever
 * happened (a scratch folder removed, a scratch database dropped). The adapters' targets come from
 * their subpaths (`postgresRestoreTarget` from `stowage/sources/postgres`, `kubernetesRestoreTarget`
 * — a server-side dry run — from `stowage/sources/kubernetes`, `httpRestoreTarget`). Two plain
 * forms remain, for the core's own targets:
 * - `{ kind: "directory", parent? }`: a temporary folder; a tar is extracted into it, anything else
 *   written as one file (`directoryRestoreTarget({ parent })`);
 * - `{ kind: "stream" }`: the plain bytes are read and checked against the manifest, and thrown
 *   away (`streamRestoreTarget()`).
 */
export type DrillTarget =
  | RestoreTarget
  | {
      /** Restore into a temporary folder, removed after the drill. */
      kind: "directory";
      /** Where the temporary folder is made. @default os.tmpdir() */
      parent?: string;
    }
  | {
      /** Read the plain bytes, check them against the manifest and throw them away. */
      kind: "stream";
    };

const isPlainTarget = (v: unknown): v is { kind: string } =>
  typeof v === "object" && v !== null && typeof (v as { kind?: unknown }).kind === "string";

/** The plain forms as the core's targets; a RestoreTarget as it is. */
function resolveTarget(target: DrillTarget): RestoreTarget {
  if ("restore" in target) return target;
  if (target.kind === "directory") {
    const { parent } = target as { parent?: string };
    return directoryRestoreTarget(parent === undefined ? {} : { parent });
  }
  return streamRestoreTarget();
}

/** What a drill's `check` receives. */
export interface DrillCheckContext {
  /** The manifest of the backup drilled. */
  manifest: Manifest;
  /** The target's kind. */
  target: string;
  /** directory: the folder the backup was restored into. */
  directory?: string;
  /** directory, non-tar content: the file the plain bytes were written to. */
  file?: string;
  /** postgres: the scratch database (on the target's connection). */
  database?: string;
  /** postgres: the rows of the target's `query`. */
  rows?: Array<Record<string, unknown>>;
  /** kubernetes: the dry run's report (`restoreKubernetes`'s, with `counts` by status). */
  kubernetes?: {
    /** Always true in a drill: the objects are checked by the server, never applied. */
    dryRun: boolean;
    /** Objects by outcome ("created", "unchanged", "failed"…). */
    counts: Record<string, number>;
    /** One entry an object: its kind, name and outcome. */
    results: Array<Record<string, unknown>>;
  };
  /** http: the requests sent and the services skipped (`restoreHttp`'s result). */
  http?: Record<string, unknown>;
  /** Plain bytes restored. */
  bytes: number;
  /** Aborted when the drill is; a check that waits should honour it. */
  signal: AbortSignal;
  /** Any other fact a target reports (`RestoreTargetResult.facts`). */
  [fact: string]: unknown;
}

/**
 * A drill's check: throw or return `false` (or `{ ok: false }`) to fail the drill; return
 * `{ ok: true, details }` to put facts (row counts...) in the report.
 */
export type DrillCheck = (context: DrillCheckContext) =>
  | unknown
  | boolean
  | {
      /** Whether the restored copy passed. */
      ok: boolean;
      /** Facts for the report (row counts…). */
      details?: Record<string, unknown>;
    };

/** The zod schema of {@link RestoreDrillOptions}; `restoreDrill` parses its options with it. */
export const restoreDrillOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The job to drill (its sink and keys are the defaults), or a job name with `sink`. */
      job: z.union([z.custom<Job>(isJob, "expected a job from defineJob"), z.string().min(1)]),
      /** Where to take the backup from (a copy's sink, to drill the offsite copy). @default the job's sink */
      sink: sinkSchema.optional(),
      /** Keys that decrypt the backup. @default the job's keys */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).optional(),
      target: z.union([
        restoreTargetSchema,
        z.custom<DrillTarget>(
          (v) => isPlainTarget(v) && (v.kind === "directory" || v.kind === "stream"),
          'expected a RestoreTarget (postgresRestoreTarget(…), kubernetesRestoreTarget(…)…) or { kind: "directory" | "stream" }',
        ),
      ]),
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
    .strict(),
);
/** Options of {@link restoreDrill}. */
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

/** The stage of a drill an error belongs to. */
export type DrillStage = "select" | "verify" | "restore" | "check" | "cleanup" | "objective" | "audit";

/** One objective a drill measured: the limit, whether it was met, and its class if the job names one. */
export interface DrillObjective {
  /** The limit, in milliseconds. */
  limitMs: number;
  /** Whether the measured value was within the limit. */
  met: boolean;
  /** The job's class for the limit (`objectives.rtoClass`…), when it names one. */
  class?: string;
}

/** The drill's JSON report. */
export interface DrillReport {
  /** True when every stage passed and every objective was met. */
  ok: boolean;
  /** The job drilled. */
  job: string;
  /** The target's kind. */
  target: string;
  /** When the drill started (ISO 8601). */
  startedAt: string;
  /** When the drill ended (ISO 8601). */
  finishedAt: string;
  /** The backup drilled. */
  backup?: {
    /** The backup's id. */
    id: string;
    /** Its artifact's key in the sink. */
    key: string;
    /** The sink's kind. */
    sink: string;
    /** The artifact's location URI. */
    location: string;
    /** When the backup started (ISO 8601). */
    startedAt: string;
    /** When the backup finished (ISO 8601). */
    finishedAt: string;
    /** Stored bytes. */
    bytes: number;
    /** Plain bytes. */
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
  objectives: {
    /** The backup's age against the RPO. */
    rpo?: DrillObjective;
    /** The restore and check time against the RTO. */
    rto?: DrillObjective;
  };
  /** The verification of the stored bytes before the restore. */
  verify?: {
    /** Whether it passed. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** Whether the plain bytes were checked too (keys were given). */
    plainChecked: boolean;
    /** What was wrong, when it failed. */
    problems: string[];
  };
  /** The restore into the target. */
  restore?: {
    /** Whether it succeeded. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** Plain bytes restored. */
    bytes: number;
    /** What the target reported. */
    details: Record<string, unknown>;
  };
  /** The user's check, when one was given. */
  check?: {
    /** Whether it passed. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** The facts it returned. */
    details?: Record<string, unknown>;
  };
  /** The removal of the scratch target. */
  cleanup: {
    /** Whether the scratch copy was removed. */
    ok: boolean;
  };
  /** What failed, stage by stage. */
  errors: Array<{
    /** The stage that failed. */
    stage: DrillStage;
    /** The error's code (`INTEGRITY_MISMATCH`…). */
    code: string;
    /** The error's message. */
    message: string;
  }>;
}

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

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
 *   job: db, target: postgresRestoreTarget({ connection: process.env.DRILL_PG_URL!, query: "SELECT count(*) FROM orders" }),
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
      details: { issues: [{ path: "sink", problem: "required when job is a name" }] },
    });
  }
  const keys = opts.keys ?? (typeof opts.job === "string" ? [] : [...opts.job.keys]);
  const logger = opts.logger ?? silentLogger;
  const now = clockOf(opts.now);
  const { signal: outer } = opts;
  const target = resolveTarget(opts.target);
  const link = linkSignal(outer);
  const signal = link.signal;

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
    let context: DrillCheckContext = { manifest, target: target.kind, bytes: 0, signal };
    try {
      throwIfAborted(signal, "restoreDrill");
      const accepted = target.accepts(manifest);
      if (accepted !== true) {
        throw new StowageError(
          "CONFIG_INVALID",
          `restoreDrill: the ${target.kind} target refuses ${manifest.artifact.key}: ${accepted}`,
          {
            details: { issues: [{ path: "target", problem: accepted }] },
          },
        );
      }
      const plain = await restore({ sink, manifest, keys, signal });
      const result = await target.restore(plain, { manifest, signal, onCleanup: (c) => cleanups.push(c) });
      context = { ...result.facts, ...context, bytes: result.bytes };
      report.restore = {
        ok: true,
        durationMs: Date.now() - r0,
        bytes: result.bytes,
        details: result.details,
      };
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
    link.dispose();
  }

  measureObjectives(report, {
    ...(opts.rpo ? { rpo: opts.rpo } : {}),
    ...(opts.rto ? { rto: opts.rto } : {}),
    ...(typeof opts.job === "string" || !opts.job.objectives ? {} : { objectives: opts.job.objectives }),
  });
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
