import type { z } from "zod";
import { durationSchema, lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { ValidationRules } from "../policies/validation.js";
import { validationRulesSchema } from "../policies/validation.js";
import type { AuditTrail } from "./audit.js";
import { assertJobs, isJob, type Job, timeZoneSchema } from "./job.js";
import { type JobLock, jobLockSchema } from "./lock-run.js";
import { isLogger, type Logger } from "./logger.js";

/** The zod schema of {@link StowageConfig}: the configuration file. */
export const stowageConfigSchema = lazySchema((z) =>
  z
    .object({
      /** The jobs, each from `defineJob`. */
      jobs: z.array(z.custom<Job>(isJob, "expected a job from defineJob()")).min(1, "at least one job"),
      /** Where every backup, copy, verify, restore and deletion is recorded. */
      audit: z
        .custom<AuditTrail>((v) => typeof v === "object" && v !== null && "record" in v && "flush" in v)
        .optional(),
      /** Jobs run at once by `stowage run`. @default 1 */
      concurrency: z.number().int().min(1).max(64).default(1),
      /** The zone cron patterns and calendar retention are read in, unless a job has its own. @default "UTC" */
      timeZone: timeZoneSchema.default("UTC"),
      /**
       * For `stowage status`: rules for the compliance figures and the RPO (for all jobs or per job).
       * A job's own `objectives.rpo` fills in for a job this map does not name.
       */
      status: z
        .object({
          /** The rules the compliance figures count against. */
          rules: validationRulesSchema.optional(),
          /** The RPO: one duration for every job, or one per job name. */
          rpo: z.union([durationSchema, z.record(z.string(), durationSchema)]).optional(),
        })
        .strict()
        .optional(),
      /**
       * A lock several hosts or CronJobs share, so that each job of `stowage run` runs on one of them:
       * `kubernetesLease(…)`, `postgresLock(…)` or `s3Lock(…)` from `stowage/locks/*`, alone or as
       * `{ lock, ttl, hold, replica }`. Give `hold` above the spread of your hosts' start times.
       */
      lock: jobLockSchema.optional(),
      /** pino-compatible; the CLI logs nothing by default. */
      logger: z.custom<Logger>(isLogger, "expected a logger with debug/info/warn/error").optional(),
    })
    .strict(),
);

/**
 * What a `stowage.config.(ts|mjs|js)` module exports (see {@link defineConfig}): the jobs and
 * what they share — audit trail, concurrency, time zone, status rules, lock, logger.
 */
export interface StowageConfigInput {
  /** The jobs, each from `defineJob`. */
  jobs: Job[];
  /** Where every backup, copy, verify, restore and deletion is recorded. */
  audit?: AuditTrail;
  /** Jobs run at once by `stowage run`. @default 1 */
  concurrency?: number;
  /** The zone cron patterns and calendar retention are read in, unless a job has its own. @default "UTC" */
  timeZone?: string;
  /**
   * For `stowage status`: rules for the compliance figures and the RPO (for all jobs or per job).
   * A job's own `objectives.rpo` fills in for a job this map does not name.
   */
  status?: {
    /** The rules the compliance figures count against. */
    rules?: ValidationRules;
    /** The RPO: one duration for every job, or one per job name. */
    rpo?: string | Record<string, string>;
  };
  /**
   * A lock several hosts or CronJobs share, so that each job of `stowage run` runs on one of them:
   * `kubernetesLease(…)`, `postgresLock(…)` or `s3Lock(…)` from `stowage/locks/*`, alone or as
   * `{ lock, ttl, hold, replica }`. Give `hold` above the spread of your hosts' start times.
   */
  lock?: JobLock;
  /** pino-compatible; the CLI logs nothing by default. */
  logger?: Logger;
}
type _StowageConfigInputAgrees = Assert<Agrees<StowageConfigInput, z.input<typeof stowageConfigSchema>>>;
/** A config as {@link defineConfig} returns it: checked, with every default filled in. */
export type StowageConfig = z.output<typeof stowageConfigSchema>;

/**
 * The shape of a `stowage.config.(ts|mjs|js)` module's default export, checked when the config
 * is loaded (and here, so a config fails where it is written).
 *
 * @throws {CONFIG_INVALID} naming each bad option; duplicate job names.
 * @example
 * // stowage.config.ts
 * export default defineConfig({ jobs: [db, files], audit: auditLog({ path: "/var/log/stowage.jsonl" }) });
 */
export function defineConfig(config: StowageConfigInput): StowageConfig {
  const parsed = parseOptions(stowageConfigSchema, config, "stowage config");
  assertJobs(parsed.jobs, "stowage config");
  // Each job's own RPO (its `objectives`) is what status checks, unless the config names one.
  const own = Object.fromEntries(
    parsed.jobs.flatMap((j) => (j.objectives?.rpo ? [[j.name, j.objectives.rpo] as const] : [])),
  );
  const configured = parsed.status?.rpo;
  if (Object.keys(own).length > 0 && typeof configured !== "string") {
    parsed.status = { ...parsed.status, rpo: { ...own, ...configured } };
  }
  return parsed;
}
