/**
 * The state one job run shares across its stages, and the step helper each stage times, logs and
 * audits its work with.
 */
import type { Fence } from "../core/lock.js";
import type { Manifest } from "../core/manifest.js";
import type { Finding } from "../policies/validation.js";
import { type AuditTrail, errorCode } from "./audit.js";
import type { CopyResult, JobError, JobResult, RetentionResult, RunJobOptions } from "./cycle.js";
import type { FanOutSink } from "./fan-out.js";
import type { Job } from "./job.js";
import { jobError } from "./job-error.js";
import { type Logger, silentLogger } from "./logger.js";

export const clock = (now: RunJobOptions["now"]): (() => Date) =>
  now === undefined ? () => new Date() : typeof now === "function" ? now : () => now;

/** What the stages of one job run share: its options, clock and signal, and what they found. */
export interface JobRun {
  job: Job;
  options: RunJobOptions;
  logger: Logger;
  now: () => Date;
  signal: AbortSignal;
  timeZone: string;
  errors: JobError[];
  durations: JobResult["durations"];
  bytes: JobResult["bytes"];
  copies: CopyResult[];
  retention: RetentionResult[];
  findings: Finding[];
  manifest?: Manifest;
  /** The fan-out that wrote the copies in the backup's pass, when the job asks for one. */
  fan?: FanOutSink;
  /** Copies that are not due this run (`every`): retention still runs on their sinks. */
  notDue: Set<number>;
  /** This replica's name, when the job runs on a lock: audit lines carry it. */
  replica?: string;
  /** The lease the backup must still hold when it commits. */
  fence?: Fence;
  /** Records an entry; a failure to record is an `audit` error of the run, never thrown. */
  audit(entry: AuditRecord): Promise<void>;
}

export type AuditRecord = Parameters<AuditTrail["record"]>[0];

export function newJobRun(job: Job, options: RunJobOptions, signal: AbortSignal, replica?: string): JobRun {
  const logger = options.logger ?? silentLogger;
  const now = clock(options.now);
  const errors: JobError[] = [];
  return {
    job,
    options,
    logger,
    now,
    signal,
    timeZone: job.timeZone ?? options.timeZone ?? "UTC",
    errors,
    durations: { totalMs: 0, backupMs: 0, copiesMs: 0, retentionMs: 0, validationMs: 0 },
    bytes: { plain: 0, stored: 0, copied: 0 },
    copies: [],
    retention: [],
    findings: [],
    notDue: new Set(),
    ...(replica === undefined ? {} : { replica }),
    async audit(entry) {
      if (!options.audit) return;
      try {
        await options.audit.record({
          time: now().toISOString(),
          ...(replica === undefined ? {} : { replica }),
          ...entry,
        });
      } catch (error) {
        errors.push(jobError("audit", error));
        logger.error({ job: job.name, code: errorCode(error) }, "audit log write failed");
      }
    },
  };
}

export function finishJobRun(run: JobRun, started: number, skipped?: "skipped"): JobResult {
  const { job, errors, durations, manifest } = run;
  const finished = Date.now();
  durations.totalMs = finished - started;
  const status = skipped ?? (errors.length === 0 ? "succeeded" : "failed");
  run.logger[status === "failed" ? "error" : "info"](
    { job: job.name, status, durationMs: durations.totalMs, errors: errors.map((e) => e.code) },
    `job ${status}`,
  );
  return {
    job: job.name,
    status,
    ...(run.replica === undefined ? {} : { replica: run.replica }),
    ...(manifest ? { manifest } : {}),
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date(finished).toISOString(),
    durations,
    bytes: run.bytes,
    copies: run.copies,
    retention: run.retention,
    findings: run.findings,
    errors,
  };
}

/** How long `work` took, on the real clock. */
export async function timed(work: () => Promise<void>): Promise<number> {
  const t0 = Date.now();
  await work();
  return Date.now() - t0;
}

/** What a step says when it is over: a log line and, when there is one, an audit entry. */
export interface StepReport {
  log: Record<string, unknown>;
  message: string;
  audit?: AuditRecord;
}

/**
 * One unit of work of a stage (the backup, one copy), timed, logged and audited the same way
 * each time: `succeeded` or `failed` says what to log and record, given the time it took.
 * @returns the work's value, or undefined when it failed (the failure is in `failed`'s hands).
 */
export async function step<T>(
  run: JobRun,
  work: () => Promise<T>,
  report: {
    succeeded(value: T, durationMs: number): StepReport;
    failed(error: unknown, durationMs: number): StepReport;
  },
): Promise<T | undefined> {
  const t0 = Date.now();
  let value: T;
  try {
    value = await work();
  } catch (error) {
    const said = report.failed(error, Date.now() - t0);
    run.logger.error(said.log, said.message);
    if (said.audit) await run.audit(said.audit);
    return undefined;
  }
  const said = report.succeeded(value, Date.now() - t0);
  run.logger.info(said.log, said.message);
  if (said.audit) await run.audit(said.audit);
  return value;
}
