import { Cron } from "croner";
import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import { isChainable } from "../core/incremental.js";
import { listIssues } from "../core/issues.js";
import { JOB_NAME_PATTERN } from "../core/keys.js";
import { labelsSchema } from "../core/manifest.js";
import {
  durationSchema,
  lazySchema,
  parseOptions,
  sinkSchema,
  sourceSchema,
  transformSchema,
} from "../core/options.js";
import { signerFrom } from "../core/signing.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { DecryptionKey, Sink, Source, Transform } from "../core/types.js";
import { COPY_PERIODS } from "../policies/copies.js";
import { type RetentionPolicy, retentionPolicySchema } from "../policies/retention.js";
import { type ValidationRules, validationRulesSchema } from "../policies/validation.js";

const JOB_BRAND = Symbol.for("stowage.job");

/** A cron pattern croner accepts (5 or 6 fields, or a nickname such as "@hourly"). */
export const cronPatternSchema = lazySchema((z) =>
  z.string().refine(
    (pattern) => {
      try {
        new Cron(pattern, { paused: true }).stop();
        return true;
      } catch {
        return false;
      }
    },
    { message: 'expected a cron pattern such as "*/15 * * * *" or "@hourly"' },
  ),
);

/**
 * A schedule per backup kind, for a source that can back up only what changed (a chain:
 * `directorySource`), e.g. `{ full: "0 3 * * 0", incremental: "*\/15 * * * *" }`. When two kinds
 * fall due at the same minute the larger runs (full, then differential, then incremental).
 */
export interface KindSchedules {
  /** Cron pattern of the full backups that start each chain. */
  full?: string;
  /** Cron pattern of differentials (against the last full). */
  differential?: string;
  /** Cron pattern of incrementals (against the last backup of the chain). */
  incremental?: string;
}

/** The zod schema of {@link KindSchedules}: a job's per-kind schedules. */
export const kindSchedulesSchema = lazySchema((z) =>
  z
    .object({
      full: cronPatternSchema.optional(),
      differential: cronPatternSchema.optional(),
      incremental: cronPatternSchema.optional(),
    })
    .strict()
    .refine((s) => Object.values(s).some((v) => v !== undefined), { message: "names no kind" }),
);

/** An IANA time zone Node knows, e.g. "Europe/Berlin". */
export const timeZoneSchema = lazySchema((z) =>
  z.string().refine(
    (zone) => {
      try {
        new Intl.DateTimeFormat("en-US", { timeZone: zone });
        return true;
      } catch {
        return false;
      }
    },
    { message: 'expected an IANA time zone such as "UTC" or "Europe/Berlin"' },
  ),
);

export type { RetentionPolicy, ValidationRules };

/** What a restore drill of this job restores into and checks; see `restoreDrill`. */
export type JobDrill = Record<string, unknown>;

/**
 * Checks one entry of a job's `copies` (sink, retention, storage class, name, period); the
 * fields are documented on {@link JobOptions.copies}.
 */
export const copySchema = lazySchema((z) =>
  z
    .object({
      /** Another sink that receives a copy of every backup (verified while copying). */
      sink: sinkSchema,
      /** Retention on that sink; without it nothing is deleted there. */
      retention: retentionPolicySchema.optional(),
      /** A storage class that sink offers, e.g. "GLACIER" or "DEEP_ARCHIVE". */
      storageClass: z.string().optional(),
      /** A name for reports and metrics. @default the sink's kind */
      name: z.string().min(1).max(64).optional(),
      /**
       * Copy only the first backup of each calendar period (in the job's zone) that this sink does
       * not hold yet: `"monthly"` sends one backup a month to an archive. A copy that fails is
       * retried with the job's next backup of the same period; retention on this sink still runs
       * on every run. Not part of a `fanOut` write. @default every backup is copied
       */
      every: z.enum(COPY_PERIODS).optional(),
    })
    .strict(),
);
/** One of a job's `copies`: another sink that receives a copy of each backup. */
export interface JobCopyOptions {
  /** Another sink that receives a copy of every backup (verified while copying). */
  sink: Sink;
  /** Retention on that sink; without it nothing is deleted there. */
  retention?: RetentionPolicy;
  /** A storage class that sink offers, e.g. "GLACIER" or "DEEP_ARCHIVE". */
  storageClass?: string;
  /** A name for reports and metrics. @default the sink's kind */
  name?: string;
  /**
   * Copy only the first backup of each calendar period (in the job's zone) that this sink does
   * not hold yet: `"monthly"` sends one backup a month to an archive. @default every backup is copied
   */
  every?: "hourly" | "daily" | "weekly" | "monthly" | "yearly";
}
type _JobCopyOptionsAgrees = Assert<Agrees<JobCopyOptions, z.input<typeof copySchema>>>;

/**
 * A job's recovery objectives. `rpo` (recovery point): the longest the job may go without a valid
 * backup — `stowage status` reports a breach and a drill fails on an older backup; `rto` (recovery
 * time): the longest a restore may take — a drill fails a slower one. `rpoClass` / `rtoClass` name
 * the class each comes from ("critical", "standard"…) and are reported beside them.
 */
export const objectivesSchema = lazySchema((z) =>
  z
    .object({
      rpo: durationSchema.optional(),
      rto: durationSchema.optional(),
      rpoClass: z.string().min(1).max(64).optional(),
      rtoClass: z.string().min(1).max(64).optional(),
    })
    .strict(),
);
/** A job's recovery objectives (see {@link objectivesSchema}). */
export interface JobObjectives {
  /** Recovery point: the longest the job may go without a valid backup, e.g. "1h". */
  rpo?: string;
  /** Recovery time: the longest a restore (and its check) may take in a drill, e.g. "30m". */
  rto?: string;
  /** The class `rpo` comes from ("critical", "standard"…), reported beside it. */
  rpoClass?: string;
  /** The class `rto` comes from, reported beside it. */
  rtoClass?: string;
}
type _JobObjectivesAgrees = Assert<Agrees<JobObjectives, z.input<typeof objectivesSchema>>>;

/** The zod schema of {@link JobOptions}, which `defineJob` parses its options with. */
export const jobSchema = lazySchema((z) =>
  z
    .object({
      /** The job name: the first segment of every key. Lowercase letters, digits, `.`, `_`, `-`. */
      name: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
      source: sourceSchema,
      /** Applied in order (compress before you encrypt). @default [] */
      transforms: z.array(transformSchema).default([]),
      /** The primary sink. */
      sink: sinkSchema,
      /**
       * When the scheduler runs the job: a cron pattern (croner syntax), or one per backup kind for
       * a chainable source (see {@link kindSchedulesSchema}). Absent: only on demand.
       */
      schedule: z.union([cronPatternSchema, kindSchedulesSchema]).optional(),
      /** The zone the schedule and calendar retention are read in. @default the scheduler's, else "UTC" */
      timeZone: timeZoneSchema.optional(),
      /** Retention on the primary sink; without it nothing is deleted. */
      retention: retentionPolicySchema.optional(),
      /** Labels written into every manifest, e.g. `{ constitutional_hash: "cdd01ef066bc6cf2" }`. @default {} */
      labels: labelsSchema.default({}),
      /** Other sinks that receive a copy of each backup. @default [] */
      copies: z.array(copySchema).default([]),
      /** Validation rules every new backup is checked against. */
      rules: validationRulesSchema.optional(),
      /**
       * Write to the primary sink and every copy in one read of the source (the bytes are teed),
       * instead of copying after the backup. For sources that are expensive or unrepeatable to read.
       * @default false
       */
      fanOut: z.boolean().default(false),
      /** A storage class the primary sink offers. */
      storageClass: z.string().optional(),
      /** Keys that decrypt this job's backups, for `verify`, restores and drills (never logged). */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).default([]),
      /** Abort a run that takes longer than this, e.g. "2h". */
      timeout: durationSchema.optional(),
      /** Let a sensitive source be stored unencrypted. @default false */
      allowUnencrypted: z.boolean().default(false),
      /**
       * Signs every manifest the job writes (backups, copies, fan-out), from `generateSigningKey()`.
       * Never logged. @default unsigned
       */
      signingKey: z
        .string()
        .refine(isSigningKey, "expected a stowage-sign1:… signing key (from generateSigningKey)")
        .optional(),
      /** Recovery objectives (RPO, RTO and their classes) that status and drills check. */
      objectives: objectivesSchema.optional(),
      /** How `stowage drill` tests this job: `{ target, check? }` as `restoreDrill` takes them. */
      drill: z.record(z.string(), z.unknown()).optional(),
      /** Free text for reports. */
      description: z.string().max(1024).optional(),
    })
    .strict()
    .superRefine((job, ctx) => {
      if (typeof job.schedule === "object" && !isChainable(job.source)) {
        ctx.addIssue({
          code: "custom",
          path: ["schedule"],
          message: "a schedule per kind needs a source that backs up what changed (directorySource)",
        });
      }
      job.copies.forEach((copy, i) => {
        if (copy.sink === job.sink) {
          ctx.addIssue({ code: "custom", path: ["copies", i, "sink"], message: "is the job's own sink" });
        }
        if (job.copies.findIndex((c) => c.sink === copy.sink) !== i) {
          ctx.addIssue({ code: "custom", path: ["copies", i, "sink"], message: "appears twice" });
        }
      });
    }),
);

/**
 * What {@link defineJob} takes: the job's name, its source, transforms and sink, and when and how
 * it runs, is kept, copied, checked and drilled.
 */
export interface JobOptions {
  /** The job name: the first segment of every key. Lowercase letters, digits, `.`, `_`, `-`. */
  name: string;
  /** What to back up: a Source from one of the adapters, or your own. */
  source: Source;
  /** The primary sink. */
  sink: Sink;
  /** Applied in order (compress before you encrypt). @default [] */
  transforms?: Transform[];
  /**
   * When the scheduler runs the job: a cron pattern (croner syntax), or one per backup kind for
   * a chainable source, e.g. `{ full: "0 3 * * 0", incremental: "*\/15 * * * *" }` (when two kinds
   * fall due at the same minute the larger runs). Absent: only on demand.
   */
  schedule?: string | KindSchedules;
  /** The zone the schedule and calendar retention are read in. @default the scheduler's, else "UTC" */
  timeZone?: string;
  /** Retention on the primary sink; without it nothing is deleted. */
  retention?: RetentionPolicy;
  /** Labels written into every manifest, e.g. `{ constitutional_hash: "cdd01ef066bc6cf2" }`. @default {} */
  labels?: Record<string, string>;
  /** Other sinks that receive a copy of each backup. @default [] */
  copies?: JobCopyOptions[];
  /** Validation rules every new backup is checked against. */
  rules?: ValidationRules;
  /**
   * Write to the primary sink and every copy in one read of the source (the bytes are teed),
   * instead of copying after the backup. For sources that are expensive or unrepeatable to read.
   * @default false
   */
  fanOut?: boolean;
  /** A storage class the primary sink offers. */
  storageClass?: string;
  /** Keys that decrypt this job's backups, for `verify`, restores and drills (never logged). @default [] */
  keys?: DecryptionKey[];
  /** Abort a run that takes longer than this, e.g. "2h". */
  timeout?: string;
  /** Let a sensitive source be stored unencrypted. @default false */
  allowUnencrypted?: boolean;
  /**
   * Signs every manifest the job writes (backups, copies, fan-out), from `generateSigningKey()`.
   * Never logged. @default unsigned
   */
  signingKey?: string;
  /** Recovery objectives (RPO, RTO and their classes) that status and drills check. */
  objectives?: JobObjectives;
  /** How `stowage drill` tests this job: `{ target, check? }` as `restoreDrill` takes them. */
  drill?: Record<string, unknown>;
  /** Free text for reports. */
  description?: string;
}
type _JobOptionsAgrees = Assert<Agrees<JobOptions, z.input<typeof jobSchema>>>;
/** One entry of a defined job's `copies`, checked, with its defaults filled in. */
export type CopyTarget = z.output<typeof copySchema>;

/** A validated job, as {@link defineJob} returns it. Frozen; pass it to `runJobs` or `startScheduler`. */
export type Job = Readonly<z.output<typeof jobSchema>> & {
  /** Marks a value {@link defineJob} made, so {@link isJob} recognises it across package copies. */
  readonly [JOB_BRAND]: true;
};

/**
 * Defines a backup job: what to read, how to transform it, where to keep it, when to run it, how
 * long to keep it, where to copy it and what every backup must satisfy. Everything is validated
 * here, when the job is defined, so a bad job fails at start-up rather than at 3 a.m.
 *
 * @throws {CONFIG_INVALID} naming every bad option (`schedule`, `copies.0.sink`, `labels.x`...).
 * @example
 * const db = defineJob({
 *   name: "app-db", schedule: "*\/15 * * * *",
 *   source: pgDumpSource({ connection }), transforms: [gzip(), aes256gcm({ key })],
 *   sink: filesystemSink({ root: "/backups" }), retention: { keepWithin: "30d" },
 *   copies: [{ sink: s3Sink({ client, bucket }), retention: { keepWithin: "90d" } }],
 *   labels: { constitutional_hash: "cdd01ef066bc6cf2" },
 *   rules: { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } },
 * });
 */
export function defineJob(options: JobOptions): Job {
  const job = parseOptions(jobSchema, options, `defineJob${nameOf(options)}`);
  return Object.freeze({ ...job, [JOB_BRAND]: true as const });
}

function nameOf(options: unknown): string {
  const name = (options as { name?: unknown } | null)?.name;
  return typeof name === "string" ? ` ${JSON.stringify(name)}` : "";
}

/** True for a value {@link defineJob} made (also by another copy of the package). */
export function isJob(value: unknown): value is Job {
  return (
    typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[JOB_BRAND] === true
  );
}

/**
 * Checks a list of jobs handed to `runJobs` or the scheduler: each made by `defineJob`, names unique.
 * @throws {CONFIG_INVALID}
 */
export function assertJobs(jobs: readonly unknown[], where: string): asserts jobs is readonly Job[] {
  if (!Array.isArray(jobs)) {
    throw new StowageError("CONFIG_INVALID", `${where}: expected an array of jobs`, {
      details: { issues: [{ path: "jobs", problem: "not an array" }] },
    });
  }
  const seen = new Set<string>();
  const issues: Array<{ path: string; problem: string }> = [];
  jobs.forEach((job, i) => {
    if (!isJob(job)) issues.push({ path: `jobs.${i}`, problem: "not made by defineJob()" });
    else if (seen.has(job.name)) issues.push({ path: `jobs.${i}.name`, problem: `"${job.name}" twice` });
    else seen.add(job.name);
  });
  if (issues.length > 0) {
    const list = listIssues(issues);
    throw new StowageError("CONFIG_INVALID", `${where}: ${list}`, { details: { issues } });
  }
}

/** Whether a string parses as a signing key (checked here so a job fails at definition). */
function isSigningKey(value: string): boolean {
  try {
    signerFrom(value);
    return true;
  } catch {
    return false;
  }
}
