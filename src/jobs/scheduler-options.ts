import type { z } from "zod";
import { lazySchema, signalSchema } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { BackupProgress } from "../core/types.js";
import type { AuditTrail } from "./audit.js";
import { type JobResult, type RunJobOptions, runJob } from "./cycle.js";
import type { DrillRunReport } from "./drill-run.js";
import { cronPatternSchema, timeZoneSchema } from "./job.js";
import { type JobLock, jobLockSchema } from "./lock-run.js";
import { isLogger, type Logger } from "./logger.js";

/** What the scheduler reports, to `onEvent` and the logger. */
export type SchedulerEvent =
  | {
      /** What happened. */
      type: "started";
      /** The job's name. */
      job: string;
      /** When it happened (ISO 8601). */
      at: string;
      /** The tick it belongs to (ISO 8601). */
      scheduledFor: string;
    }
  | {
      /** What happened. */
      type: "succeeded" | "failed";
      /** The job's name. */
      job: string;
      /** When it happened (ISO 8601). */
      at: string;
      /** The tick it belongs to (ISO 8601). */
      scheduledFor: string;
      /** How long the run took. */
      durationMs: number;
      /** Bytes moved by the run. */
      bytes: JobResult["bytes"];
      /** Codes of what failed (empty on success). */
      errors: string[];
      /** The run's whole result. */
      result: JobResult;
    }
  | {
      /** What happened. */
      type: "skipped";
      /** The job's name. */
      job: string;
      /** When it happened (ISO 8601). */
      at: string;
      /** The tick it belongs to (ISO 8601). */
      scheduledFor: string;
      /**
       * "overlap": the previous run of the job was still going; "stopped": the scheduler stopped
       * first; "locked": another replica holds the job's lock (it runs this tick there); "late":
       * this replica's tick fired after the lock's hold, when another replica may have run it.
       */
      reason: "overlap" | "stopped" | "locked" | "late";
    };

/** A scheduled drill set (`drills`) finished, or was skipped because its last run still went on. */
export interface DrillEvent {
  /** The drill set's name. */
  drill: string;
  /** When it finished or was skipped (ISO 8601). */
  at: string;
  /** The tick it belongs to (ISO 8601). */
  scheduledFor: string;
  /** Whether every drill of the set passed. */
  status: "succeeded" | "failed" | "skipped";
  /** How long the set took. */
  durationMs: number;
  /** Absent when skipped. */
  report?: DrillRunReport;
}

/** The zod schema of {@link ScheduledDrill}: a scheduled drill. */
export const scheduledDrillSchema = lazySchema((z) =>
  z
    .object({
      /** The set's name, e.g. "monthly-backup-test". */
      name: z.string().min(1).max(128),
      /** When it runs: a cron pattern, e.g. "0 6 1 * *" (06:00 on the 1st of each month). */
      schedule: cronPatternSchema,
      /** Only these jobs (by name). @default every job that has a `drill` */
      jobs: z.array(z.string().min(1)).min(1).optional(),
      /** Drill a copy's backups instead of the primary's (see `runDrills`). */
      from: z.string().min(1).optional(),
      /** Where the JSON report goes: a path or a function of the start time (see `runDrills`). */
      report: z
        .union([z.string().min(1), z.custom<(at: Date) => string>((v) => typeof v === "function")])
        .optional(),
    })
    .strict(),
);
/** A set of drills the scheduler runs on a schedule (`drills`). */
export interface ScheduledDrill {
  /** The set's name, e.g. "monthly-backup-test". */
  name: string;
  /** When it runs: a cron pattern, e.g. "0 6 1 * *" (06:00 on the 1st of each month). */
  schedule: string;
  /** Only these jobs (by name). @default every job that has a `drill` */
  jobs?: string[];
  /** Drill a copy's backups instead of the primary's (see `runDrills`). */
  from?: string;
  /** Where the JSON report goes: a path or a function of the start time (see `runDrills`). */
  report?: string | ((at: Date) => string);
}
type _ScheduledDrillAgrees = Assert<Agrees<ScheduledDrill, z.input<typeof scheduledDrillSchema>>>;

/** The zod schema of {@link StartSchedulerOptions}, which parses the options at the boundary. */
export const startSchedulerOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The zone cron patterns are read in, unless a job has its own. @default "UTC" */
      timeZone: timeZoneSchema.default("UTC"),
      /** Called for every event; an exception it throws is logged and ignored. */
      onEvent: z.custom<(event: SchedulerEvent) => void>((v) => typeof v === "function").optional(),
      /** pino-compatible. @default silent */
      logger: z.custom<Logger>(isLogger, "expected a logger with debug/info/warn/error").optional(),
      /** Delay each run by a random time up to this ("30s", "5m"), so many hosts do not start at once. */
      jitter: z.union([z.string(), z.number().int().nonnegative()]).optional(),
      /** Where every backup, copy and deletion is recorded; flushed after each run. */
      audit: z.custom<AuditTrail>((v) => typeof v === "object" && v !== null && "record" in v).optional(),
      /** Firing it stops the scheduler and aborts running jobs, like `stop({ signal })`. */
      signal: signalSchema.optional(),
      /** Progress of each backup's bytes. */
      onProgress: z
        .custom<NonNullable<RunJobOptions["onProgress"]>>((v) => typeof v === "function")
        .optional(),
      /**
       * Restore drills on their own schedules (the monthly backup test): each runs `runDrills` over
       * the scheduler's jobs and writes its report; a set never overlaps itself. @default []
       */
      drills: z.array(scheduledDrillSchema).default([]),
      /** Called when a scheduled drill set finishes or is skipped; an exception it throws is logged. */
      onDrill: z.custom<(event: DrillEvent) => void>((v) => typeof v === "function").optional(),
      /**
       * Replicas of one service share the schedule: each scheduled run of a job happens on the one
       * replica that takes its lock (`kubernetesLease`, `postgresLock`, `s3Lock` from
       * `stowage/locks/*`); the others report `skipped` with reason `locked`. See {@link runJob}'s
       * `lock`; its `hold` defaults to half the interval to the job's next run, at most 1 minute
       * plus `jitter`.
       */
      lock: jobLockSchema.optional(),
      /** For tests: the random source for jitter. @default Math.random */
      random: z.custom<() => number>((v) => typeof v === "function").optional(),
    })
    .strict(),
);
/** Options of {@link startScheduler}. */
export interface StartSchedulerOptions {
  /** The zone cron patterns are read in, unless a job has its own. @default "UTC" */
  timeZone?: string;
  /** Called for every event; an exception it throws is logged and ignored. */
  onEvent?: (event: SchedulerEvent) => void;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Delay each run by a random time up to this ("30s", "5m"), so many hosts do not start at once. */
  jitter?: string | number;
  /** Where every backup, copy and deletion is recorded; flushed after each run. */
  audit?: AuditTrail;
  /** Firing it stops the scheduler and aborts running jobs, like `stop({ signal })`. */
  signal?: AbortSignal;
  /** Progress of each backup's bytes. */
  onProgress?: (job: string, progress: BackupProgress) => void;
  /**
   * Restore drills on their own schedules (the monthly backup test): each runs `runDrills` over
   * the scheduler's jobs and writes its report; a set never overlaps itself. @default []
   */
  drills?: ScheduledDrill[];
  /** Called when a scheduled drill set finishes or is skipped; an exception it throws is logged. */
  onDrill?: (event: DrillEvent) => void;
  /**
   * Replicas of one service share the schedule: each scheduled run of a job happens on the one
   * replica that takes its lock (`kubernetesLease`, `postgresLock`, `s3Lock` from
   * `stowage/locks/*`); the others report `skipped` with reason `locked`. See {@link runJob}'s
   * `lock`; its `hold` defaults to half the interval to the job's next run, at most 1 minute
   * plus `jitter`.
   */
  lock?: JobLock;
  /** For tests: the random source for jitter. @default Math.random */
  random?: () => number;
}
type _StartSchedulerOptionsAgrees = Assert<
  Agrees<StartSchedulerOptions, z.input<typeof startSchedulerOptionsSchema>>
>;

/** A running scheduler, as {@link startScheduler} returns it. */
export interface Scheduler {
  /**
   * Starts no more runs, then waits for the running ones to finish. If `signal` fires (or has
   * fired), running jobs are aborted instead (they finish as failed with `ABORTED`) and their
   * partial writes are removed by the core. Resolves when nothing is running.
   */
  stop(options?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Runs a job now, outside its schedule, with the same overlap rule.
   * @returns its result, or undefined when it was skipped.
   * @throws {CONFIG_INVALID} for a job name the scheduler does not have.
   */
  trigger(job: string): Promise<JobResult | undefined>;
  /** Names of the jobs running now. */
  running(): string[];
  /** When each scheduled job (and drill set, as `drill:<name>`) runs next (null once stopped). */
  nextRuns(): Array<{
    /** The job's name, or `drill:<name>`. */
    job: string;
    /** Its next run; null once stopped. */
    at: Date | null;
  }>;
}
