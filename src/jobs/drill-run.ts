import { randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import { lazySchema, parseOptions, signalSchema } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Sink } from "../core/types.js";
import type { AuditTrail } from "./audit.js";
import { type DrillReport, type RestoreDrillOptions, restoreDrill } from "./drill.js";
import { clockOf } from "./drill-objectives.js";
import { assertJobs, type Job } from "./job.js";
import { isLogger, type Logger } from "./logger.js";

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

/** The zod schema of {@link RunDrillsOptions}, which parses the options at the boundary. */
export const runDrillsOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/** Options of {@link runDrills}. */
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
  /** Marks the JSON as a drill report. */
  kind: "stowage-drill-report";
  /** The set's name, when given. */
  name?: string;
  /** The copy drilled, when not the primary sink. */
  from?: string;
  /** When the set started (ISO 8601). */
  startedAt: string;
  /** When the set ended (ISO 8601). */
  finishedAt: string;
  /** True when every drill passed and the report was written. */
  ok: boolean;
  /** One report a job drilled. */
  drills: DrillReport[];
  /** Where the report was written. */
  path?: string;
  /** Failures outside any drill (writing the report). */
  errors: Array<{
    /** The error's code. */
    code: string;
    /** The error's message. */
    message: string;
  }>;
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
  const now = clockOf(opts.now);
  const drilled = jobs.filter((j) => j.drill !== undefined);
  if (drilled.length === 0) {
    throw new StowageError("CONFIG_INVALID", "runDrills: no job has a drill (`drill: { target, check? }`)", {
      details: { issues: [{ path: "jobs", problem: "no job has a drill" }] },
    });
  }
  const sinkFor = (job: Job): Sink => {
    if (opts.from === undefined || opts.from === "primary") return job.sink;
    const copy = job.copies.find((c) => (c.name ?? c.sink.kind) === opts.from);
    if (!copy) {
      throw new StowageError("CONFIG_INVALID", `runDrills: job ${job.name} has no copy named ${opts.from}`, {
        details: { issues: [{ path: "from", problem: `no copy of ${job.name} has that name` }] },
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
