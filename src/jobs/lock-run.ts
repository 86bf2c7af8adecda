/**
 * A job run on a lock: the lease taken before the run, renewed while it goes on, checked as the
 * backup's fence just before commit, and kept a while after the run so that a replica whose tick
 * fires late finds it taken (as ShedLock's `lockAtLeastFor` does) instead of running the tick again.
 */
import { hostname } from "node:os";
import type { z } from "zod";
import { isStowageError, StowageError } from "../core/errors.js";
import { type Fence, type Lease, type Lock, lockSchema } from "../core/lock.js";
import { durationSchema, lazySchema, parseDuration, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Logger } from "./logger.js";

const msOrDuration = lazySchema((z) => z.union([durationSchema, z.number().int().nonnegative()]));

/** The zod schema of a job's `lock` given as options (rather than a ready {@link Lock}). */
export const jobLockOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The engine: `kubernetesLease(…)`, `postgresLock(…)`, `s3Lock(…)` or your own {@link Lock}. */
      lock: lockSchema,
      /**
       * How long a lease lasts unrenewed: a replica that dies (or is paused) mid-run loses it after
       * this, and one paused longer does not commit. It is renewed every third of it. @default "30s"
       */
      ttl: msOrDuration.default("30s"),
      /**
       * How long after its start (the scheduler: after the scheduled time) a run keeps the lease
       * when it finishes sooner, so that a replica whose clock or cron fires later finds it taken.
       * Keep it above your replicas' clock skew plus `jitter`, and below the interval between runs.
       * @default the scheduler: half the interval to the next run, at most 1 minute plus `jitter`;
       *   `runJobs`: 0
       */
      hold: msOrDuration.optional(),
      /** This replica's name in the lease, the audit trail and the manifest. @default "<hostname>-<pid>" */
      replica: z.string().min(1).max(200).optional(),
    })
    .strict(),
);

/** A lock as jobs take it: the engine alone, or with its ttl, hold and this replica's name. */
export const jobLockSchema = lazySchema((z) => z.union([lockSchema, jobLockOptionsSchema]));
/**
 * A job's or a config's `lock`: a lock engine (`kubernetesLease`, `postgresLock`, `s3Lock`), or
 * `{ lock, ttl, hold, replica }` to set how long the lease lasts and is held and who holds it.
 */
export type JobLock = Lock | JobLockOptions;
type _JobLockAgrees = Assert<Agrees<JobLock, z.input<typeof jobLockSchema>>>;

/** A job's `lock` with its lease's ttl, hold and this replica's name. */
export interface JobLockOptions {
  /** The engine: `kubernetesLease(…)`, `postgresLock(…)`, `s3Lock(…)` or your own {@link Lock}. */
  lock: Lock;
  /**
   * How long a lease lasts unrenewed (a duration such as "30s", or milliseconds): a replica that
   * dies (or is paused) mid-run loses it after this, and one paused longer does not commit. It is
   * renewed every third of it. @default "30s"
   */
  ttl?: string | number;
  /**
   * How long after its start (the scheduler: after the scheduled time) a run keeps the lease
   * when it finishes sooner, so that a replica whose clock or cron fires later finds it taken.
   * Keep it above your replicas' clock skew plus `jitter`, and below the interval between runs.
   * A duration such as "1m", or milliseconds.
   * @default the scheduler: half the interval to the next run, at most 1 minute plus `jitter`;
   *   `runJobs`: 0
   */
  hold?: string | number;
  /** This replica's name in the lease, the audit trail and the manifest (1-200 characters). @default "<hostname>-<pid>" */
  replica?: string;
}
type _JobLockOptionsAgrees = Assert<Agrees<JobLockOptions, z.input<typeof jobLockOptionsSchema>>>;

export interface ResolvedJobLock {
  lock: Lock;
  ttlMs: number;
  holdMs?: number;
  replica: string;
}

const toMs = (v: string | number, option: string) => (typeof v === "number" ? v : parseDuration(v, option));

/** @throws {CONFIG_INVALID} naming the bad option (`lock.ttl`, `lock.hold`…). */
export function resolveJobLock(input: JobLock, where: string): ResolvedJobLock {
  const opts = parseOptions(jobLockSchema, input, `${where}: lock`);
  const o = "acquire" in opts ? { lock: opts, ttl: "30s" as const } : opts;
  const ttlMs = toMs(o.ttl, "lock.ttl");
  if (ttlMs < 1000) {
    throw new StowageError("CONFIG_INVALID", `${where}: lock.ttl must be at least 1s`, {
      details: { issues: [{ path: "lock.ttl", problem: "less than 1s" }] },
    });
  }
  return {
    lock: o.lock,
    ttlMs,
    ...("hold" in o && o.hold !== undefined ? { holdMs: toMs(o.hold, "lock.hold") } : {}),
    replica: ("replica" in o ? o.replica : undefined) ?? `${hostname()}-${process.pid}`,
  };
}

/** A lease a job run holds: its fence for the backup, and its release after the hold. */
export interface HeldLease {
  lease: Lease;
  fence: Fence;
  /** Keeps renewing until `holdUntil` (or the signal), then releases. Never throws. */
  release(holdUntil: Date | undefined, signal: AbortSignal): Promise<void>;
}

/**
 * Takes the job's lock and renews it every third of its ttl until released.
 * @returns undefined when another replica holds it.
 * @throws {LOCK_FAILED} when the engine cannot be asked; {ABORTED}.
 */
export async function holdJobLease(
  name: string,
  lock: ResolvedJobLock,
  signal: AbortSignal,
  logger: Logger,
): Promise<HeldLease | undefined> {
  const lease = await lock.lock.acquire(name, { ttlMs: lock.ttlMs, holder: lock.replica, signal });
  if (!lease) return undefined;
  let renewing: Promise<void> = Promise.resolve();
  let lost = false;
  const renew = () => {
    renewing = lease.renew().catch((error: unknown) => {
      // A lost lease stays lost: the fence refuses the commit; a failed call is retried next time.
      if (isStowageError(error, "LOCK_LOST")) {
        lost = true;
        clearInterval(timer);
      }
      logger.warn(
        { job: name, lock: lock.lock.kind, code: isStowageError(error) ? error.code : "UNKNOWN" },
        "lock renewal failed",
      );
    });
  };
  const timer = setInterval(renew, Math.max(250, Math.floor(lock.ttlMs / 3)));
  const fence: Fence = {
    lease: { lock: lock.lock.kind, name, holder: lock.replica, fencingToken: lease.fencingToken },
    // A renewal is the proof: it fails unless the lease is still ours and within its ttl.
    check: async (o) => {
      await renewing;
      if (lost) throw new StowageError("LOCK_LOST", `${lock.lock.kind} lock ${name}: lease lost`);
      await lease.renew(o.signal ? { signal: o.signal } : {});
    },
  };
  return {
    lease,
    fence,
    async release(holdUntil, releaseSignal) {
      try {
        const wait = holdUntil ? holdUntil.getTime() - Date.now() : 0;
        if (wait > 0 && !lost) await sleep(wait, releaseSignal);
      } finally {
        clearInterval(timer);
        await renewing;
        await lease.release();
      }
    },
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
