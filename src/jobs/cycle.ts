import { backup } from "../core/backup.js";
import { listManifests, type ManifestCache } from "../core/catalog.js";
import type { BackupKind } from "../core/chain.js";
import { copyBackup } from "../core/copy.js";
import { isAbortError, isStowageError, StowageError, wrapError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../core/manifest.js";
import { parseDuration } from "../core/options.js";
import { applyRetention } from "../core/retention-apply.js";
import type { BackupProgress, Sink } from "../core/types.js";
import { type CopyPeriod, copyDue, startOfBackupKey } from "../policies/copies.js";
import { planRetention } from "../policies/retention.js";
import { type Finding, passesValidation, validateManifest } from "../policies/validation.js";
import { type AuditTrail, errorCode, manifestFacts } from "./audit.js";
import { sourceForRun } from "./chain-plan.js";
import { fanOutSink } from "./fan-out.js";
import { assertJobs, type Job, type RetentionPolicy } from "./job.js";
import { type Logger, silentLogger } from "./logger.js";

/** The stage of a job run an error came from. */
export type JobStage = "backup" | "copy" | "retention" | "validation" | "audit";

/** One failure in a job run: the stage, a stable code, a message for people (no secrets). */
export interface JobError {
  stage: JobStage;
  code: string;
  message: string;
  /** The copy or sink it concerns, for copy and retention errors. */
  target?: string;
}

export interface CopyResult {
  /** The copy's name (its `name` option, else the sink's kind). */
  target: string;
  status: "succeeded" | "failed" | "skipped";
  /**
   * Why a copy was skipped: `"backup failed"`, or for a periodic copy (`every`) the period its
   * sink already holds a backup of, `"monthly 2026-11 held"`.
   */
  reason?: string;
  /** The manifest the copy's sink now holds. */
  manifest?: Manifest;
  durationMs: number;
  bytes: number;
  error?: JobError;
}

export interface RetentionResult {
  /** "primary" or a copy's name. */
  target: string;
  status: "succeeded" | "failed" | "skipped";
  /** Backups kept after this run. */
  kept: number;
  /** Artifact keys deleted (with their manifests). */
  deleted: string[];
  /**
   * The plan's verdict on every backup of the job in this sink, with the rules that kept or
   * dropped it (`"max age 30d"`, `"monthly 2026-11"`, `"object lock until …"`, `"older than 30d"`).
   */
  decisions?: Array<{ key: string; action: "keep" | "drop"; reasons: string[] }>;
  durationMs: number;
  error?: JobError;
}

export interface JobResult {
  job: string;
  /** "succeeded" when every stage did; "failed" when any stage failed (see `errors`). */
  status: "succeeded" | "failed";
  /** The primary backup's manifest, when the backup succeeded. */
  manifest?: Manifest;
  startedAt: string;
  finishedAt: string;
  durations: {
    totalMs: number;
    backupMs: number;
    copiesMs: number;
    retentionMs: number;
    validationMs: number;
  };
  bytes: { plain: number; stored: number; copied: number };
  copies: CopyResult[];
  retention: RetentionResult[];
  /** What validation found on the new backup (warnings too). */
  findings: Finding[];
  errors: JobError[];
}

export interface CycleResult {
  /** True when every job succeeded and the audit trail was written. */
  ok: boolean;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  succeeded: number;
  failed: number;
  jobs: JobResult[];
  /** Failures of the cycle itself, outside any job (flushing the audit trail). */
  errors: JobError[];
}

export interface RunJobOptions {
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
   * For a chainable source: the kind of this run; the base is picked from the primary sink's
   * listing (see `sourceForRun`). @default "incremental" for a job with a schedule per kind, else
   * an ordinary (unchained) backup
   */
  kind?: BackupKind;
}

export interface RunJobsOptions extends RunJobOptions {
  /** Jobs run at once. @default 1 */
  concurrency?: number;
}

const clock = (now: RunJobOptions["now"]): (() => Date) =>
  now === undefined ? () => new Date() : typeof now === "function" ? now : () => now;

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

function jobError(stage: JobStage, error: unknown, target?: string): JobError {
  return {
    stage,
    code: isStowageError(error) ? error.code : isAbortError(error) ? "ABORTED" : "UNKNOWN",
    message: messageOf(error),
    ...(target === undefined ? {} : { target }),
  };
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
  const logger = options.logger ?? silentLogger;
  const now = clock(options.now);
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const errors: JobError[] = [];
  const durations = { totalMs: 0, backupMs: 0, copiesMs: 0, retentionMs: 0, validationMs: 0 };
  const bytes = { plain: 0, stored: 0, copied: 0 };
  const copies: CopyResult[] = [];
  const retention: RetentionResult[] = [];
  let findings: Finding[] = [];
  let manifest: Manifest | undefined;

  const controller = new AbortController();
  const forward = () => controller.abort(options.signal?.reason);
  if (options.signal?.aborted) forward();
  else options.signal?.addEventListener("abort", forward, { once: true });
  const timer =
    job.timeout === undefined
      ? undefined
      : setTimeout(
          () =>
            controller.abort(
              new StowageError("ABORTED", `job ${job.name}: timed out after ${job.timeout}`, {
                details: { job: job.name, timeout: job.timeout },
              }),
            ),
          parseDuration(job.timeout, "timeout"),
        );
  const signal = controller.signal;

  const audit = async (entry: Parameters<AuditTrail["record"]>[0]) => {
    if (!options.audit) return;
    try {
      await options.audit.record({ time: now().toISOString(), ...entry });
    } catch (error) {
      errors.push(jobError("audit", error));
      logger.error({ job: job.name, code: errorCode(error) }, "audit log write failed");
    }
  };
  const copyName = (i: number) => job.copies[i]!.name ?? job.copies[i]!.sink.kind;
  const timeZone = job.timeZone ?? options.timeZone ?? "UTC";
  /** Copies that are not due this run (`every`): retention still runs on their sinks. */
  const notDue = new Set<number>();

  try {
    // 1. The backup (fanned out to the copies when asked).
    logger.info({ job: job.name, source: `${job.source.kind}:${job.source.name}` }, "backup started");
    // A periodic copy (`every`) is decided after the backup, so it is never part of the fan-out.
    const fanned = job.copies.filter((c) => c.every === undefined);
    const fan = job.fanOut && fanned.length > 0 ? fanOutSink(job.sink, fanned) : undefined;
    const t0 = Date.now();
    try {
      manifest = await backup({
        job: job.name,
        source: await sourceForRun(job, options.kind, () => listManifestsCached(job.sink, job.name, signal)),
        transforms: [...job.transforms],
        sink: fan ?? job.sink,
        labels: { ...job.labels },
        allowUnencrypted: job.allowUnencrypted,
        signal,
        now,
        ...(job.storageClass === undefined ? {} : { storageClass: job.storageClass }),
        ...(options.onProgress
          ? { onProgress: (p: BackupProgress) => options.onProgress?.(job.name, p) }
          : {}),
      });
      durations.backupMs = Date.now() - t0;
      bytes.plain = manifest.content.bytes;
      bytes.stored = manifest.artifact.bytes;
      logger.info(
        { job: job.name, key: manifest.artifact.key, bytes: bytes.stored, durationMs: durations.backupMs },
        "backup succeeded",
      );
      await audit({
        action: "backup",
        ...manifestFacts(manifest),
        result: "ok",
        durationMs: durations.backupMs,
      });
    } catch (error) {
      durations.backupMs = Date.now() - t0;
      errors.push(jobError("backup", error));
      logger.error(
        { job: job.name, code: errorCode(error), durationMs: durations.backupMs },
        "backup failed",
      );
      await audit({
        action: "backup",
        job: job.name,
        sink: job.sink.kind,
        result: "failed",
        error: errorCode(error),
        durationMs: durations.backupMs,
      });
    }

    // 2. The copies: written in the same pass by the fan-out, or copied now, verified while copied.
    const t1 = Date.now();
    for (const [i, copy] of job.copies.entries()) {
      const target = copyName(i);
      if (!manifest) {
        copies.push({ target, status: "skipped", reason: "backup failed", durationMs: 0, bytes: 0 });
        continue;
      }
      const c0 = Date.now();
      if (copy.every !== undefined) {
        try {
          const due = await periodicCopyDue(job, copy.sink, copy.every, manifest, timeZone, signal);
          if (!due.due) {
            notDue.add(i);
            copies.push({
              target,
              status: "skipped",
              reason: `${due.period} held`,
              durationMs: Date.now() - c0,
              bytes: 0,
            });
            continue;
          }
        } catch (error) {
          const e = jobError("copy", error, target);
          errors.push(e);
          copies.push({ target, status: "failed", durationMs: Date.now() - c0, bytes: 0, error: e });
          logger.error({ job: job.name, target, code: e.code }, "copy failed: its sink cannot be listed");
          continue;
        }
      }
      if (fan && copy.every === undefined) {
        const copied = fan.manifestsFor(manifest.artifact.key).find((m) => m.sink === copy.sink)?.manifest;
        if (copied) {
          copies.push({
            target,
            status: "succeeded",
            manifest: copied,
            durationMs: 0,
            bytes: copied.artifact.bytes,
          });
          bytes.copied += copied.artifact.bytes;
          await audit({ action: "copy", ...manifestFacts(copied), from: job.sink.kind, result: "ok" });
        }
        continue;
      }
      try {
        const copied = await copyBackup({
          manifest,
          from: job.sink,
          to: copy.sink,
          signal,
          ...(copy.storageClass === undefined ? {} : { storageClass: copy.storageClass }),
        });
        const durationMs = Date.now() - c0;
        copies.push({
          target,
          status: "succeeded",
          manifest: copied,
          durationMs,
          bytes: copied.artifact.bytes,
        });
        bytes.copied += copied.artifact.bytes;
        logger.info({ job: job.name, target, key: copied.artifact.key, durationMs }, "copy succeeded");
        await audit({
          action: "copy",
          ...manifestFacts(copied),
          from: job.sink.kind,
          result: "ok",
          durationMs,
        });
      } catch (error) {
        const durationMs = Date.now() - c0;
        const e = jobError("copy", error, target);
        errors.push(e);
        copies.push({ target, status: "failed", durationMs, bytes: 0, error: e });
        logger.error({ job: job.name, target, code: e.code, durationMs }, "copy failed");
        await audit({
          action: "copy",
          ...manifestFacts(manifest),
          sink: copy.sink.kind,
          from: job.sink.kind,
          result: "failed",
          error: e.code,
          durationMs,
        });
      }
    }
    durations.copiesMs = Date.now() - t1;

    // 3. Retention, per sink, only where this run's write succeeded.
    const t2 = Date.now();
    if (options.retention !== false) {
      const plans: Array<{
        target: string;
        sink: Sink;
        policy: RetentionPolicy | undefined;
        wrote: boolean;
      }> = [
        { target: "primary", sink: job.sink, policy: job.retention, wrote: manifest !== undefined },
        ...job.copies.map((copy, i) => ({
          target: copyName(i),
          sink: copy.sink,
          policy: copy.retention,
          wrote: copies[i]?.status === "succeeded" || notDue.has(i),
        })),
      ];
      for (const plan of plans) {
        if (!plan.policy) continue;
        if (!plan.wrote) {
          retention.push({ target: plan.target, status: "skipped", kept: 0, deleted: [], durationMs: 0 });
          continue;
        }
        retention.push(
          await prune(job, plan.sink, plan.target, plan.policy, { ...options, signal, now, audit, logger }),
        );
      }
      for (const r of retention) if (r.error) errors.push(r.error);
    }
    durations.retentionMs = Date.now() - t2;

    // 4. Validation of the new backup.
    const t3 = Date.now();
    if (manifest && job.rules) {
      try {
        findings = validateManifest(manifest, job.rules, { now: now() });
        if (!passesValidation(findings)) {
          const failedRules = findings.filter((f) => f.severity === "error").map((f) => f.rule);
          errors.push({
            stage: "validation",
            code: "SOURCE_VALIDATION_FAILED",
            message: `backup ${manifest.artifact.key} fails ${failedRules.join(", ")}`,
          });
          logger.error(
            { job: job.name, key: manifest.artifact.key, rules: failedRules },
            "validation failed",
          );
        }
      } catch (error) {
        errors.push(jobError("validation", error));
      }
    }
    durations.validationMs = Date.now() - t3;
  } finally {
    if (timer) clearTimeout(timer);
    options.signal?.removeEventListener("abort", forward);
  }

  const finished = Date.now();
  durations.totalMs = finished - started;
  const status = errors.length === 0 ? "succeeded" : "failed";
  logger[status === "succeeded" ? "info" : "error"](
    { job: job.name, status, durationMs: durations.totalMs, errors: errors.map((e) => e.code) },
    `job ${status}`,
  );
  return {
    job: job.name,
    status,
    ...(manifest ? { manifest } : {}),
    startedAt,
    finishedAt: new Date(finished).toISOString(),
    durations,
    bytes,
    copies,
    retention,
    findings,
    errors,
  };
}

/**
 * Whether this run's backup is due for a periodic copy: lists the copy's sink under the job
 * (keys only, no reads: an artifact's name carries its start time) and asks {@link copyDue}.
 * Only artifacts whose manifest is beside them count, so a half-made copy never stands for a period.
 */
async function periodicCopyDue(
  job: Job,
  sink: Sink,
  every: CopyPeriod,
  manifest: Manifest,
  timeZone: string,
  signal: AbortSignal,
) {
  const prefix = `${job.name}/`;
  const keys = new Set<string>();
  try {
    for await (const info of sink.list(prefix, { signal })) keys.add(info.key);
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `listing the ${sink.kind} sink under "${prefix}"`,
      { prefix },
      signal,
    );
  }
  const held: number[] = [];
  for (const key of keys) {
    if (!key.endsWith(MANIFEST_SUFFIX) || !keys.has(key.slice(0, -MANIFEST_SUFFIX.length))) continue;
    const t = startOfBackupKey(key.slice(0, -MANIFEST_SUFFIX.length));
    if (t !== undefined) held.push(t);
  }
  return copyDue(manifest.startedAt, held, { every, timeZone });
}

/** Manifests already read, per sink, so that a job run lists fresh but reads only new manifests. */
const manifestCaches = new WeakMap<Sink, ManifestCache>();

function listManifestsCached(sink: Sink, job: string, signal: AbortSignal) {
  let cache = manifestCaches.get(sink);
  if (!cache) {
    cache = new Map();
    manifestCaches.set(sink, cache);
  }
  return listManifests(sink, { job, signal, cache });
}

async function prune(
  job: Job,
  sink: Sink,
  target: string,
  policy: RetentionPolicy,
  options: {
    signal: AbortSignal;
    now: () => Date;
    audit: (entry: Parameters<AuditTrail["record"]>[0]) => Promise<void>;
    logger: Logger;
    timeZone?: string;
    dryRun?: boolean;
  },
): Promise<RetentionResult> {
  const t0 = Date.now();
  try {
    const { manifests, invalid } = await listManifestsCached(sink, job.name, options.signal);
    const plan = planRetention(manifests, policy, {
      now: options.now(),
      timeZone: job.timeZone ?? options.timeZone ?? "UTC",
      invalid,
      ...(job.rules ? { rules: job.rules } : {}),
    });
    const applied = await applyRetention({
      sink,
      plan,
      signal: options.signal,
      dryRun: options.dryRun ?? false,
    });
    for (const d of options.dryRun ? [] : applied.deleted) {
      await options.audit({
        action: "delete",
        ...manifestFacts(d.manifest),
        sink: sink.kind,
        reason: d.reason,
        result: "ok",
      });
    }
    for (const f of applied.failed) {
      await options.audit({
        action: "delete",
        ...manifestFacts(f.manifest),
        sink: sink.kind,
        reason: f.reason,
        result: "failed",
        error: f.error.code,
      });
    }
    const durationMs = Date.now() - t0;
    const deleted = applied.deleted.map((d) => d.key);
    options.logger.info(
      { job: job.name, target, deleted: deleted.length, kept: applied.kept },
      "retention applied",
    );
    const failure = applied.failed[0];
    return {
      target,
      status: failure ? "failed" : "succeeded",
      kept: applied.kept,
      deleted,
      decisions: plan.decisions.map((d) => ({ key: d.artifactKey, action: d.action, reasons: d.reasons })),
      durationMs,
      ...(failure ? { error: jobError("retention", failure.error, target) } : {}),
    };
  } catch (error) {
    const e = jobError("retention", error, target);
    options.logger.error({ job: job.name, target, code: e.code }, "retention failed");
    return { target, status: "failed", kept: 0, deleted: [], durationMs: Date.now() - t0, error: e };
  }
}

export interface PruneJobOptions {
  signal?: AbortSignal;
  /** @default () => new Date() */
  now?: Date | (() => Date);
  audit?: AuditTrail;
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
      details: { issues: [{ option: "concurrency", problem: "not a positive integer" }] },
    });
  }
  const started = Date.now();
  const results: JobResult[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await runJob(jobs[i]!, options);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(1, jobs.length)) }, worker));
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
  return {
    ok: succeeded === results.length && errors.length === 0,
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date(finished).toISOString(),
    durationMs: finished - started,
    succeeded,
    failed: results.length - succeeded,
    jobs: results,
    errors,
  };
}
