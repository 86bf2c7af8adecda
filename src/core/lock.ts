/**
 * The `Lock` contract: one run of a job across the replicas of a service, on a lease from an
 * engine the user already runs (a Kubernetes Lease, a PostgreSQL advisory lock, an S3 object
 * written with conditional PUTs). The adapters live on their own subpaths (`stowage/locks/*`);
 * the core knows only this contract and the lease bookkeeping they share.
 */
import type { z } from "zod";
import { StowageError } from "./errors.js";
import { lazySchema } from "./options.js";
import type { Agrees, Assert } from "./type-checks.js";

/** A lease on a named lock, held until it is released, lost, or its ttl runs out unrenewed. */
export interface Lease {
  /** The lock's name, as given to `acquire`. */
  readonly name: string;
  /** Who holds it (the replica's identity). */
  readonly holder: string;
  /**
   * A number that grows every time the lock changes hands, so that a write stamped with an older
   * token can be told from a newer holder's. Recorded in the manifest of what the holder commits.
   */
  readonly fencingToken: number;
  /**
   * Extends the lease by its ttl, proving at the same time that it is still held.
   * @throws {LOCK_LOST} when the ttl ran out before this renewal (the process was paused, the
   *   network cut), or another holder took the lock; the lease stays lost.
   * @throws {LOCK_FAILED} when the engine could not be asked (the lease may still be held).
   */
  renew(options?: { signal?: AbortSignal }): Promise<void>;
  /** Gives the lock up (once; later calls do nothing). Never throws: an unreleased lease expires. */
  release(options?: { signal?: AbortSignal }): Promise<void>;
}

/** Options of {@link Lock.acquire}. */
export interface AcquireOptions {
  /** How long the lease lasts unrenewed; a holder that dies loses it after this. */
  ttlMs: number;
  /** Who asks: the replica's identity, recorded by the engine and in the manifest. */
  holder: string;
  /** Aborts the attempt. */
  signal?: AbortSignal;
}

/** A lock engine: Kubernetes Lease, PostgreSQL advisory lock, S3 conditional writes, or yours. */
export interface Lock {
  /** "kubernetes" | "postgres" | "s3" | … — recorded in the manifest. */
  readonly kind: string;
  /**
   * Takes the lock when no one holds it (or its holder's lease expired), without waiting.
   * @returns the lease, or undefined when another holder has it.
   * @throws {LOCK_FAILED} when the engine cannot be asked; {ABORTED} when `signal` fires.
   */
  acquire(name: string, options: AcquireOptions): Promise<Lease | undefined>;
}

export const isLock = (v: unknown): v is Lock =>
  typeof v === "object" &&
  v !== null &&
  typeof (v as Lock).kind === "string" &&
  typeof (v as Lock).acquire === "function";

/** The zod schema of {@link Lock}: a lock (checked by shape). */
export const lockSchema = lazySchema((z) =>
  z.custom<Lock>(isLock, "expected a Lock (kubernetesLease, postgresLock, s3Lock…)"),
);

/** What the manifest records of the lease its backup was committed under. */
export const leaseRecordSchema = lazySchema((z) =>
  z.object({
    /** The lock's kind: "kubernetes", "postgres", "s3"… */
    lock: z.string().min(1).max(64),
    /** The lock's name (the job's, for a job's lock). */
    name: z.string().min(1).max(256),
    /** Who holds it: the replica's identity. */
    holder: z.string().min(1).max(256),
    /** Grows with every new holder; a write carrying an older token is refused. */
    fencingToken: z.number().int().nonnegative(),
  }),
);
/** A lease as a manifest records it (`lease`): which lock, who held it, with which fencing token. */
export interface LeaseRecord {
  /** The lock's kind: "kubernetes", "postgres", "s3"… */
  lock: string;
  /** The lock's name (the job's, for a job's lock). */
  name: string;
  /** Who held it: the replica's identity. */
  holder: string;
  /** Grows with every new holder; a write carrying an older token is refused. */
  fencingToken: number;
}
type _LeaseRecordAgrees = Assert<Agrees<LeaseRecord, z.output<typeof leaseRecordSchema>>>;

/**
 * The fence `backup()` checks just before it commits the artifact: `check` throws (LOCK_LOST)
 * when the lease was lost, and nothing is committed; `lease` goes into the manifest.
 */
export interface Fence {
  /** The lease the write is made under. */
  lease: LeaseRecord;
  /** Resolves while the lease still holds; rejects with LOCK_LOST once it does not. */
  check(options: { signal?: AbortSignal }): Promise<void>;
}

export const fenceSchema = lazySchema((z) =>
  z.custom<Fence>(
    (v) =>
      typeof v === "object" &&
      v !== null &&
      typeof (v as Fence).check === "function" &&
      leaseRecordSchema.safeParse((v as Fence).lease).success,
    "expected { lease: { lock, name, holder, fencingToken }, check }",
  ),
);

/** What an adapter does against its engine for one lease; {@link trackedLease} does the rest. */
export interface LeaseEngine {
  /** Extends the lease remotely. @returns false when the lock is no longer this holder's. */
  renew(signal?: AbortSignal): Promise<boolean>;
  /** Gives the lease up; the lock is free at once. */
  release(signal?: AbortSignal): Promise<void>;
}

/**
 * A lease whose expiry is also kept on this process's monotonic clock: a renewal that starts after
 * the ttl ran out fails as LOCK_LOST without asking the engine, so a holder that was paused
 * (SIGSTOP, a long GC, a frozen VM) past its ttl never takes its lease back, even when no other
 * replica has taken it yet. The clock starts before the engine was asked, so it errs early.
 */
export function trackedLease(
  fields: { name: string; holder: string; fencingToken: number; ttlMs: number; kind: string },
  engine: LeaseEngine,
  startedAt: number,
): Lease {
  let validFrom = startedAt;
  let lost = false;
  let released = false;
  const lostError = (why: string) =>
    new StowageError("LOCK_LOST", `${fields.kind} lock ${fields.name}: lease lost (${why})`, {
      details: { lock: fields.kind, name: fields.name, fencingToken: fields.fencingToken },
    });
  return {
    name: fields.name,
    holder: fields.holder,
    fencingToken: fields.fencingToken,
    async renew(options = {}) {
      if (released) throw lostError("released");
      if (lost) throw lostError("lost before");
      const start = performance.now();
      if (start - validFrom >= fields.ttlMs) {
        lost = true;
        throw lostError("ttl ran out before renewal");
      }
      let held: boolean;
      try {
        held = await engine.renew(options.signal);
      } catch (error) {
        throw lockFailed(fields.kind, fields.name, "renewing", error);
      }
      if (!held) {
        lost = true;
        throw lostError("taken by another holder");
      }
      // The engine extended from some time after `start`; counting from `start` errs early.
      if (performance.now() - validFrom >= fields.ttlMs) {
        lost = true;
        throw lostError("ttl ran out during renewal");
      }
      validFrom = start;
    },
    async release(options = {}) {
      if (released) return;
      released = true;
      // Even when lost: the engine's release is conditional on still holding, and ends what the
      // lease kept open (a PostgreSQL session).
      await engine.release(options.signal).catch(() => undefined);
    },
  };
}

/** An engine call that failed (unreachable, refused): LOCK_FAILED naming the lock, with the cause. */
export function lockFailed(kind: string, name: string, doing: string, error: unknown): StowageError {
  if (error instanceof StowageError) return error;
  const aborted = (error as { name?: string } | null)?.name === "AbortError";
  const message = error instanceof Error ? error.message : String(error);
  return new StowageError(
    aborted ? "ABORTED" : "LOCK_FAILED",
    `${kind} lock ${name}: ${doing} failed: ${message}`,
    { cause: error, details: { lock: kind, name } },
  );
}

/** Checks acquire's options the same way in every adapter. @throws {CONFIG_INVALID} */
export function checkAcquire(kind: string, name: string, options: AcquireOptions): void {
  const issues: Array<{ path: string; problem: string }> = [];
  if (typeof name !== "string" || name.length === 0 || name.length > 200)
    issues.push({ path: "name", problem: "1 to 200 characters" });
  if (!Number.isInteger(options?.ttlMs) || options.ttlMs < 1000)
    issues.push({ path: "ttlMs", problem: "an integer of at least 1000" });
  if (typeof options?.holder !== "string" || options.holder.length === 0 || options.holder.length > 200)
    issues.push({ path: "holder", problem: "1 to 200 characters" });
  if (issues.length > 0) {
    throw new StowageError(
      "CONFIG_INVALID",
      `${kind} lock: bad acquire options (${issues.map((i) => i.path).join(", ")})`,
      {
        details: { issues },
      },
    );
  }
}
