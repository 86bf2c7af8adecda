import { linkSignal } from "../core/abort.js";
import { eachConcurrently } from "../core/each-concurrently.js";
import { StowageError } from "../core/errors.js";
import type { BackupKind } from "../core/incremental.js";
import type { Manifest } from "../core/manifest.js";
import { parseDuration } from "../core/options.js";
import type { BackupProgress } from "../core/types.js";
import type { Finding } from "../policies/validation.js";
import { type AuditTrail, errorCode } from "./audit.js";
import { assertJobs, type Job } from "./job.js";
import { jobError } from "./job-error.js";
import { type HeldLease, type JobLock, resolveJobLock } from "./lock-run.js";
import { type Logger, silentLogger } from "./logger.js";
import { prune } from "./prune.js";
import {
  backupStage,
  clock,
  copiesStage,
  finishJobRun,
  lockStage,
  newJobRun,
  retentionStage,
  timed,
  validationStage,
} from "./stages.js";

/** The stage of a job run an error came from. */
export type JobStage = "lock" | "backup" | "copy" | "retention" | "validation" | "audit";

/** One failure in a job run: the stage, a stable code, a message for people (no secrets). */
export interface JobError {
  /** The stage that failed. */
  stage: JobStage;
  /** The error's code (`SINK_WRITE_FAILED`…). */
  code: string;
  /** The error's message. */
  message: string;
  /** The copy or sink it concerns, for copy and retention errors. */
  target?: string;
}

/** What happened to one copy of a job's backup. */
export interface CopyResult {
  /** The copy's name (its `name` option, else the sink's kind). */
  target: string;
  /** Whether the copy was made. */
  status: "succeeded" | "failed" | "skipped";
  /**
   * Why a copy was skipped: `"backup failed"`, or for a periodic copy (`every`) the period its
   * sink already holds a backup of, `"monthly 2026-11 held"`.
   */
  reason?: string;
  /** The manifest the copy's sink now holds. */
  manifest?: Manifest;
  /** How long the copy took. */
  durationMs: number;
  /** Stored bytes copied. */
  bytes: number;
  /** Why it failed. */
  error?: JobError;
}

/** What retention did in one sink of a job. */
export interface RetentionResult {
  /** "primary" or a copy's name. */
  target: string;
  /** Whether retention ran and finished. */
  status: "succeeded" | "failed" | "skipped";
  /** Backups kept after this run. */
  kept: number;
  /** Artifact keys deleted (with their manifests). */
  deleted: string[];
  /**
   * Archived WAL files deleted (their artifact keys) because no kept base backup needs them;
   * present for jobs whose backups are PostgreSQL base backups.
   */
  walDeleted?: string[];
  /**
   * The plan's verdict on every backup of the job in this sink, with the rules that kept or
   * dropped it (`"max age 30d"`, `"monthly 2026-11"`, `"object lock until …"`, `"older than 30d"`).
   */
  decisions?: Array<{
    /** The backup's artifact key. */
    key: string;
    /** What the plan decided. */
    action: "keep" | "drop";
    /** The rules behind the decision. */
    reasons: string[];
  }>;
  /** How long retention took. */
  durationMs: number;
  /** Why it failed. */
  error?: JobError;
}

/** What one run of a job did. */
export interface JobResult {
  /** The job's name. */
  job: string;
  /**
   * "succeeded" when every stage did; "failed" when any stage failed (see `errors`); "skipped"
   * when the job runs on a `lock` and another replica holds it (nothing ran here).
   */
  status: "succeeded" | "failed" | "skipped";
  /** The replica that ran it, when the job runs on a `lock`. */
  replica?: string;
  /** The primary backup's manifest, when the backup succeeded. */
  manifest?: Manifest;
  /** When the run started (ISO 8601). */
  startedAt: string;
  /** When the run ended (ISO 8601). */
  finishedAt: string;
  /** Time spent in each stage. */
  durations: {
    /** The whole run. */
    totalMs: number;
    /** The primary backup. */
    backupMs: number;
    /** All copies. */
    copiesMs: number;
    /** Retention in every sink. */
    retentionMs: number;
    /** Validation of the new backup. */
    validationMs: number;
  };
  /** Bytes moved. */
  bytes: {
    /** Plain bytes read from the source. */
    plain: number;
    /** Stored bytes written to the primary sink. */
    stored: number;
    /** Stored bytes written to copies. */
    copied: number;
  };
  /** One entry a copy. */
  copies: CopyResult[];
  /** One entry a sink with a retention policy. */
  retention: RetentionResult[];
  /** What validation found on the new backup (warnings too). */
  findings: Finding[];
  /** Every failure of the run. */
  errors: JobError[];
}

/** What one run of several jobs did (`runJobs`). */
export interface CycleResult {
  /** True when no job failed (a job run elsewhere on its lock is skipped) and the audit trail was written. */
  ok: boolean;
  /** When the cycle started (ISO 8601). */
  startedAt: string;
  /** When the cycle ended (ISO 8601). */
  finishedAt: string;
  /** How long the cycle took. */
  durationMs: number;
  /** Jobs that succeeded. */
  succeeded: number;
  /** Jobs that failed. */
  failed: number;
  /** Jobs whose lock another replica held (see `lock`). */
  skipped: number;
  /** One result a job. */
  jobs: JobResult[];
  /** Failures of the cycle itself, outside any job (flushing the audit trail). */
  errors: JobError[];
}

/** Options of {@link runJob}. */
export interface RunJobOptions {
  /** Aborts the run; the result then names `ABORTED`. */
  signal?: AbortSignal;
  /**
   * The clock the run reads: the backup's start and finish times, retention, validation,
   * periodic copies and audit times (durations are always timed on the real clock). A fake clock
   * here simulates years of runs. @default () => new Date()
   */
  now?: Date | (() => Date);
  /** Where every backup, copy and deletion is recorded. */
  audit?: AuditTrail;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Progress of the backup's bytes (a few times a second and once at the end). */
  onProgress?: (job: string, progress: BackupProgress) => void;
  /** Skip retention entirely (e.g. `stowage run --no-prune`). @default true */
  retention?: boolean;
  /** Time zone for calendar retention when the job has none. @default "UTC" */
  timeZone?: string;
  /**
   * Run each job only where its lock is taken (one replica of several): a job whose lock another
   * replica holds is `skipped`. The lease is renewed while the job runs, checked just before the
   * backup commits (a replica that lost it commits nothing: LOCK_LOST) and recorded in the
   * manifest (`lease`); audit lines name the `replica`.
   */
  lock?: JobLock;
  /**
   * Keep the lease until then when the run ends sooner (the scheduler sets it from the scheduled
   * time); else `lock.hold` after the run's start.
   */
  lockHoldUntil?: Date;
  /**
   * For a chainable source: the kind of this run; the base is picked from the primary sink's
   * listing (see `sourceForRun`). @default "incremental" for a job with a schedule per kind, else
   * an ordinary (unchained) backup
   */
  kind?: BackupKind;
}

/** Options of {@link runJobs}. */
export interface RunJobsOptions extends RunJobOptions {
  /** Jobs run at once. @default 1 */
  concurrency?: number;
}

/**
 * Runs one job once: the backup (to every copy at once when `fanOut`), then the copies (each
 * verified while it is copied), then retention on each sink that has a policy, then validation of
 * the new backup. It never throws for a failure of the job itself: the result says what failed,
 * by stage and code. Retention is skipped on a sink whose newest write failed, so a failing job
 * never thins out the backups that still exist.
 *
 * @throws {CONFIG_INVALID} when `job` was not made by `defineJob`.
 * @example const result = await runJob(job, { audit }); if (result.status === "failed") alert(result.errors);
 */
export async function runJob(job: Job, options: RunJobOptions = {}): Promise<JobResult> {
  assertJobs([job], "runJob");
  const lock = options.lock === undefined ? undefined : resolveJobLock(options.lock, "runJob");
  const started = Date.now();
  const link = linkSignal(options.signal, {
    ...(job.timeout === undefined ? {} : { timeoutMs: parseDuration(job.timeout, "timeout") }),
    timeoutReason: () =>
      new StowageError("ABORTED", `job ${job.name}: timed out after ${job.timeout}`, {
        details: { job: job.name, timeout: job.timeout },
      }),
  });
  const run = newJobRun(job, options, link.signal, lock?.replica);
  let held: HeldLease | undefined;
  try {
    if (lock) {
      held = await lockStage(run, lock);
      if (!held) return finishJobRun(run, started, run.errors.length === 0 ? "skipped" : undefined);
      run.fence = held.fence;
    }
    run.durations.backupMs = await timed(() => backupStage(run));
    run.durations.copiesMs = await timed(() => copiesStage(run));
    run.durations.retentionMs = await timed(() => retentionStage(run));
    run.durations.validationMs = await timed(() => validationStage(run));
    return finishJobRun(run, started);
  } finally {
    link.dispose();
    const holdUntil = options.lockHoldUntil ?? (lock?.holdMs ? new Date(started + lock.holdMs) : undefined);
    await held?.release(holdUntil, options.signal ?? new AbortController().signal);
  }
}

/** Options of {@link pruneJob}. */
export interface PruneJobOptions {
  /** Aborts the pruning between deletions. */
  signal?: AbortSignal;
  /** @default () => new Date() */
  now?: Date | (() => Date);
  /** Where every deletion is recorded. */
  audit?: AuditTrail;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Report what would be deleted, delete nothing. @default false */
  dryRun?: boolean;
  /** For calendar retention when the job has no zone. @default "UTC" */
  timeZone?: string;
}

/**
 * Applies a job's retention on its own, outside a run (`stowage prune`): on the primary sink and
 * on every copy that has a policy. Deletions are audited (not in a dry run).
 *
 * @returns one result per sink with a policy; failures are in them, not thrown.
 * @example const results = await pruneJob(job, { dryRun: true });
 */
export async function pruneJob(job: Job, options: PruneJobOptions = {}): Promise<RetentionResult[]> {
  assertJobs([job], "pruneJob");
  const logger = options.logger ?? silentLogger;
  const now = clock(options.now);
  const audit = async (entry: Parameters<AuditTrail["record"]>[0]) => {
    await options.audit?.record({ time: now().toISOString(), ...entry }).catch((error: unknown) => {
      logger.error({ job: job.name, code: errorCode(error) }, "audit log write failed");
    });
  };
  const signal = options.signal ?? new AbortController().signal;
  const targets = [
    { target: "primary", sink: job.sink, policy: job.retention },
    ...job.copies.map((c, i) => ({
      target: c.name ?? job.copies[i]!.sink.kind,
      sink: c.sink,
      policy: c.retention,
    })),
  ];
  const results: RetentionResult[] = [];
  for (const t of targets) {
    if (!t.policy) continue;
    results.push(
      await prune(job, t.sink, t.target, t.policy, {
        signal,
        now,
        audit,
        logger,
        ...(options.timeZone ? { timeZone: options.timeZone } : {}),
        dryRun: options.dryRun ?? false,
      }),
    );
  }
  return results;
}

/**
 * Runs jobs once each — the orchestrator's cycle, typed. Jobs run `concurrency` at a time; one
 * job's failure is recorded in its result and the others go on. Aborting `signal` stops running
 * jobs (they fail with `ABORTED`) and starts no more. The audit trail is flushed at the end.
 *
 * @throws {CONFIG_INVALID} for jobs not made by `defineJob`, duplicate names, or bad options.
 * @example
 * const cycle = await runJobs([db, files], { concurrency: 2, audit: auditLog({ path: "audit.jsonl" }) });
 * process.exitCode = cycle.ok ? 0 : 1;
 */
export async function runJobs(jobs: readonly Job[], options: RunJobsOptions = {}): Promise<CycleResult> {
  assertJobs(jobs, "runJobs");
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new StowageError("CONFIG_INVALID", "runJobs: concurrency must be a positive integer", {
      details: { issues: [{ path: "concurrency", problem: "not a positive integer" }] },
    });
  }
  const started = Date.now();
  const results: JobResult[] = new Array(jobs.length);
  await eachConcurrently(jobs, concurrency, async (job, i) => {
    results[i] = await runJob(job, options);
  });
  const errors: JobError[] = [];
  if (options.audit) {
    try {
      await options.audit.flush(options.signal ? { signal: options.signal } : {});
    } catch (error) {
      // A sink trail keeps its lines for the next flush; the cycle still says it failed.
      errors.push(jobError("audit", error));
    }
  }
  const finished = Date.now();
  const succeeded = results.filter((r) => r.status === "succeeded").length;
  const failed = results.filter((r) => r.status === "failed").length;
  return {
    ok: failed === 0 && errors.length === 0,
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date(finished).toISOString(),
    durationMs: finished - started,
    succeeded,
    failed,
    skipped: results.length - succeeded - failed,
    jobs: results,
    errors,
  };
}
