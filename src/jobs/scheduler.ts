import { Cron } from "croner";
import { StowageError } from "../core/errors.js";
import type { BackupKind } from "../core/incremental.js";
import { parseDuration, parseOptions } from "../core/options.js";
import { largerKindDue, schedulesOf } from "./chain-plan.js";
import { type JobResult, runJob } from "./cycle.js";
import { runDrills } from "./drill-run.js";
import { assertJobs, type Job } from "./job.js";
import { resolveJobLock } from "./lock-run.js";
import { silentLogger } from "./logger.js";
import {
  type DrillEvent,
  type Scheduler,
  type SchedulerEvent,
  type StartSchedulerOptions,
  startSchedulerOptionsSchema,
} from "./scheduler-options.js";

export {
  type DrillEvent,
  type ScheduledDrill,
  type Scheduler,
  type SchedulerEvent,
  type StartSchedulerOptions,
  scheduledDrillSchema,
  startSchedulerOptionsSchema,
} from "./scheduler-options.js";

interface Running {
  controller: AbortController;
  /** False while the run waits out its jitter. */
  started: boolean;
  done: Promise<JobResult | undefined>;
}

/**
 * Runs jobs on their cron schedules (parsed by croner), inside your process: no
 * `process.exit`, no signal handlers, no global state, so it embeds in an existing service.
 *
 * A job never overlaps itself: a tick that comes while the previous run is still going (or
 * waiting out its jitter) is skipped and reported as a `skipped` event with reason `overlap`.
 * Different jobs do run at the same time. Each run is a full {@link runJob}: backup, copies,
 * retention, validation; the audit trail is flushed after it.
 *
 * @throws {CONFIG_INVALID} for bad options, jobs not made by `defineJob`, or no job with a schedule.
 * @example
 * const scheduler = startScheduler(jobs, { timeZone: "Europe/Berlin", logger: pino(), jitter: "30s",
 *   onEvent: (e) => metrics.observe(e) });
 * process.once("SIGTERM", () => scheduler.stop({ signal: AbortSignal.timeout(60_000) }));
 */
export function startScheduler(jobs: readonly Job[], options: StartSchedulerOptions = {}): Scheduler {
  assertJobs(jobs, "startScheduler");
  const opts = parseOptions(startSchedulerOptionsSchema, options, "startScheduler");
  const jitterMs =
    opts.jitter === undefined
      ? 0
      : typeof opts.jitter === "number"
        ? opts.jitter
        : parseDuration(opts.jitter, "jitter");
  const logger = opts.logger ?? silentLogger;
  const random = opts.random ?? Math.random;
  const lock = opts.lock === undefined ? undefined : resolveJobLock(opts.lock, "startScheduler");
  const scheduled = jobs.filter((j) => j.schedule !== undefined);
  const drillSets = opts.drills.map((d) => {
    const selected = d.jobs ? jobs.filter((j) => d.jobs!.includes(j.name)) : jobs.filter((j) => j.drill);
    const unknown = (d.jobs ?? []).filter((n) => !jobs.some((j) => j.name === n));
    if (unknown.length > 0 || selected.length === 0 || !selected.every((j) => j.drill)) {
      throw new StowageError(
        "CONFIG_INVALID",
        `startScheduler: drill ${d.name} has no job with a drill to run`,
        {
          details: {
            issues: [{ path: "drills", problem: `${d.name}: unknown job or job without a drill` }],
          },
        },
      );
    }
    return { ...d, selected };
  });
  if (scheduled.length === 0 && drillSets.length === 0) {
    throw new StowageError("CONFIG_INVALID", "startScheduler: no job has a schedule", {
      details: { issues: [{ path: "jobs", problem: "no job has a schedule" }] },
    });
  }

  const running = new Map<string, Running>();
  const drillsRunning = new Map<string, { controller: AbortController; done: Promise<unknown> }>();
  const crons = new Map<string, Cron>();
  let stopped = false;

  const emit = (event: SchedulerEvent) => {
    const { result: _result, ...fields } = event as SchedulerEvent & { result?: unknown };
    const level = event.type === "failed" ? "error" : event.type === "skipped" ? "warn" : "info";
    logger[level](fields, `job ${event.job} ${event.type}`);
    try {
      opts.onEvent?.(event);
    } catch (error) {
      logger.error({ job: event.job, event: event.type, error: String(error) }, "onEvent threw");
    }
  };

  const sleep = (ms: number, signal: AbortSignal) =>
    new Promise<boolean>((resolve) => {
      if (signal.aborted) return resolve(false);
      const onAbort = () => {
        clearTimeout(timer);
        resolve(false);
      };
      const timer = setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve(true);
      }, ms);
      signal.addEventListener("abort", onAbort, { once: true });
    });

  /**
   * Until when a replica that ran a tick keeps the lease, so that a later replica's same tick finds
   * it taken; a tick that fires after it is `late` and skipped (undefined: a manual trigger).
   */
  const holdUntil = (job: Job, scheduledFor: Date, manual: boolean): Date | undefined => {
    if (!lock || manual) return undefined;
    let holdMs = lock.holdMs;
    if (holdMs === undefined) {
      const next = crons.get(job.name)?.nextRun(scheduledFor);
      const gap = next ? next.getTime() - scheduledFor.getTime() : Number.POSITIVE_INFINITY;
      holdMs = Math.min(gap / 2, 60_000 + jitterMs);
    }
    return new Date(scheduledFor.getTime() + holdMs);
  };

  function launch(
    job: Job,
    scheduledFor: Date,
    manual = false,
    kind?: BackupKind,
  ): Promise<JobResult | undefined> {
    const at = () => new Date().toISOString();
    const when = scheduledFor.toISOString();
    if (stopped) {
      emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "stopped" });
      return Promise.resolve(undefined);
    }
    if (running.has(job.name)) {
      emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "overlap" });
      return Promise.resolve(undefined);
    }
    const controller = new AbortController();
    const entry: Running = { controller, started: false, done: Promise.resolve(undefined) };
    running.set(job.name, entry);
    entry.done = (async (): Promise<JobResult | undefined> => {
      try {
        if (jitterMs > 0 && !(await sleep(Math.floor(random() * jitterMs), controller.signal))) {
          emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "stopped" });
          return undefined;
        }
        if (stopped && !controller.signal.aborted) {
          emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "stopped" });
          return undefined;
        }
        const hold = holdUntil(job, scheduledFor, manual);
        if (hold && Date.now() > hold.getTime()) {
          emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "late" });
          return undefined;
        }
        entry.started = true;
        emit({ type: "started", job: job.name, at: at(), scheduledFor: when });
        const result = await runJob(job, {
          ...(lock
            ? {
                lock: { lock: lock.lock, ttl: lock.ttlMs, replica: lock.replica },
                ...(hold ? { lockHoldUntil: hold } : {}),
              }
            : {}),
          signal: controller.signal,
          logger,
          ...(opts.audit ? { audit: opts.audit } : {}),
          ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
          timeZone: job.timeZone ?? opts.timeZone,
          ...(kind ? { kind } : {}),
        });
        if (result.status === "skipped") {
          emit({ type: "skipped", job: job.name, at: at(), scheduledFor: when, reason: "locked" });
          return result;
        }
        if (opts.audit) {
          try {
            await opts.audit.flush();
          } catch (error) {
            result.errors.push({
              stage: "audit",
              code: (error as { code?: string }).code ?? "UNKNOWN",
              message: String((error as Error).message ?? error),
            });
            result.status = "failed";
          }
        }
        emit({
          type: result.status,
          job: job.name,
          at: at(),
          scheduledFor: when,
          durationMs: result.durations.totalMs,
          bytes: result.bytes,
          errors: result.errors.map((e) => e.code),
          result,
        });
        return result;
      } catch (error) {
        // runJob reports failures in its result; reaching here is a bug, not a job failure.
        logger.error({ job: job.name, error: String(error) }, "scheduler: run crashed");
        return undefined;
      } finally {
        running.delete(job.name);
      }
    })();
    return entry.done;
  }

  for (const job of scheduled) {
    // A schedule per kind (chains) is one cron a kind, named `<job>:<kind>` in nextRuns().
    for (const [kind, pattern] of schedulesOf(job)) {
      const timezone = job.timeZone ?? opts.timeZone;
      const cron = new Cron(pattern, { name: undefined, timezone, catch: true }, (self: Cron) => {
        const at = self.currentRun() ?? new Date();
        if (kind && largerKindDue(job, kind, at, timezone)) return;
        void launch(job, at, false, kind);
      });
      crons.set(kind ? `${job.name}:${kind}` : job.name, cron);
    }
  }

  function launchDrill(set: (typeof drillSets)[number], scheduledFor: Date): void {
    const when = scheduledFor.toISOString();
    const emitDrill = (event: Omit<DrillEvent, "drill" | "scheduledFor" | "at">) => {
      const full: DrillEvent = {
        drill: set.name,
        at: new Date().toISOString(),
        scheduledFor: when,
        ...event,
      };
      const level = event.status === "failed" ? "error" : event.status === "skipped" ? "warn" : "info";
      logger[level](
        { drill: set.name, status: event.status, scheduledFor: when, durationMs: event.durationMs },
        `drill ${set.name} ${event.status}`,
      );
      try {
        opts.onDrill?.(full);
      } catch (error) {
        logger.error({ drill: set.name, error: String(error) }, "onDrill threw");
      }
    };
    if (stopped) return;
    if (drillsRunning.has(set.name)) {
      emitDrill({ status: "skipped", durationMs: 0 });
      return;
    }
    const controller = new AbortController();
    const t0 = Date.now();
    const done = runDrills(set.selected, {
      name: set.name,
      ...(set.from ? { from: set.from } : {}),
      ...(set.report ? { report: set.report } : {}),
      ...(opts.audit ? { audit: opts.audit } : {}),
      logger,
      signal: controller.signal,
    })
      .then((report) => {
        emitDrill({ status: report.ok ? "succeeded" : "failed", durationMs: Date.now() - t0, report });
      })
      .catch((error: unknown) => {
        logger.error({ drill: set.name, error: String(error) }, "scheduler: drill crashed");
      })
      .finally(() => drillsRunning.delete(set.name));
    drillsRunning.set(set.name, { controller, done });
  }

  for (const set of drillSets) {
    const cron = new Cron(
      set.schedule,
      { name: undefined, timezone: opts.timeZone, catch: true },
      (self: Cron) => launchDrill(set, self.currentRun() ?? new Date()),
    );
    crons.set(`drill:${set.name}`, cron);
  }

  const scheduler: Scheduler = {
    stop(stopOptions = {}) {
      stopped = true;
      for (const cron of crons.values()) cron.stop();
      const abortAll = () => {
        for (const r of running.values()) r.controller.abort(stopOptions.signal?.reason);
        for (const d of drillsRunning.values()) d.controller.abort(stopOptions.signal?.reason);
      };
      // A run still waiting out its jitter has not started: cancel it rather than wait for it.
      for (const r of running.values()) if (!r.started) r.controller.abort();
      if (stopOptions.signal?.aborted) abortAll();
      else stopOptions.signal?.addEventListener("abort", abortAll, { once: true });
      return (async () => {
        while (running.size > 0 || drillsRunning.size > 0) {
          await Promise.all([...running.values(), ...drillsRunning.values()].map((r) => r.done));
        }
      })().finally(() => stopOptions.signal?.removeEventListener("abort", abortAll));
    },
    trigger(name) {
      const job = jobs.find((j) => j.name === name);
      if (!job) {
        throw new StowageError("CONFIG_INVALID", `scheduler: no job named "${name}"`, {
          details: { issues: [{ path: "job", problem: "unknown job" }] },
        });
      }
      return launch(job, new Date(), true);
    },
    running: () => [...running.keys()],
    nextRuns: () => [...crons.entries()].map(([job, cron]) => ({ job, at: stopped ? null : cron.nextRun() })),
  };

  if (opts.signal) {
    if (opts.signal.aborted) void scheduler.stop({ signal: opts.signal });
    else
      opts.signal.addEventListener("abort", () => void scheduler.stop({ signal: opts.signal }), {
        once: true,
      });
  }
  return scheduler;
}
