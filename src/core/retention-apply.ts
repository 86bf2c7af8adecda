import type { z } from "zod";
import type { RetentionDecision, RetentionPlan } from "../policies/retention.js";
import { deleteKeys as deleteBatch } from "./delete-keys.js";
import { isAbortError, StowageError, throwIfAborted, wrapError } from "./errors.js";
import type { Manifest } from "./manifest.js";
import { durationSchema, lazySchema, parseOptions, signalSchema, sinkSchema } from "./options.js";
import { orphansIn } from "./orphans.js";
import type { Agrees, Assert } from "./type-checks.js";
import type { Leftover, ObjectInfo, Sink } from "./types.js";
import { type DeletedWal, type FailedWalDeletion, isBaseBackup, pruneWal } from "./wal-prune.js";

const deleteKeys = (sink: Sink, keys: string[], signal: AbortSignal | undefined) =>
  deleteBatch(sink, keys, signal, "applyRetention");

export { type FindOrphansOptions, findOrphans, type OrphanReport } from "./orphans.js";

/** A backup that {@link applyRetention} deleted (or, with `dryRun`, would delete). */
export interface DeletedBackup {
  /** The backup's id. */
  id: string;
  /** The backup's job. */
  job: string;
  /** The artifact's key. */
  key: string;
  /** The manifest's key. */
  manifestKey: string;
  /** The plan's reasons, joined: `"older than 30d"`. */
  reason: string;
  /** The plan's reasons, one a rule. */
  reasons: string[];
  /** The backup's manifest. */
  manifest: Manifest;
}

/** A backup whose deletion failed. */
export interface FailedDeletion extends DeletedBackup {
  /**
   * `manifest`: nothing was deleted, the backup is intact. `artifact`: the manifest is gone and
   * the artifact is left, an orphan that the next `applyRetention` (or {@link findOrphans}) removes.
   */
  stage: "manifest" | "artifact";
  /** What the sink threw. */
  error: StowageError;
}

/** What {@link applyRetention} did. */
export interface ApplyRetentionResult {
  /** Whether nothing was deleted (a dry run). */
  dryRun: boolean;
  /** The backups deleted. */
  deleted: DeletedBackup[];
  /** The backups whose deletion failed. */
  failed: FailedDeletion[];
  /**
   * Leftovers of earlier interrupted runs that this run removed (with `dryRun`, would remove):
   * the keys of artifacts without a manifest and of what the sink's `leftovers` reported
   * (temporary files, the object keys of open multipart uploads).
   */
  orphans: string[];
  /** Backups the plan keeps. */
  kept: number;
  /**
   * Archived WAL files deleted (with `dryRun`: that would be) because no kept base backup needs
   * them: for each job whose kept backups include a PostgreSQL base backup (see `planWalRetention`).
   */
  wal: DeletedWal[];
  /** WAL files whose deletion failed. */
  walFailed: FailedWalDeletion[];
}

const applyOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      plan: z.custom<RetentionPlan>(
        (v) =>
          Array.isArray((v as RetentionPlan | null)?.decisions) &&
          typeof (v as RetentionPlan).now === "string",
        "expected a plan from planRetention",
      ),
      signal: signalSchema.optional(),
      dryRun: z.boolean().default(false),
      /**
       * Remove leftovers of interrupted runs under the plan's jobs (see {@link findOrphans}): artifacts
       * without a manifest older than this — a younger one may be a backup whose manifest is being
       * written right now — and what the sink's `leftovers` reports; false to skip.
       */
      orphans: z
        .union([z.literal(false), z.object({ olderThan: durationSchema }).strict()])
        .default({ olderThan: "1h" }),
      /** The reference time for orphan ages. @default the plan's `now` */
      now: z.date().optional(),
      /** Keys per `sink.delete` call (S3 DeleteObjects takes 1,000). @default 1000 */
      batchSize: z.number().int().min(1).max(1000).default(1000),
    })
    .strict(),
);
/** Options of {@link applyRetention}. */
export interface ApplyRetentionOptions {
  /** Where the artifact and its manifest are written. */
  sink: Sink;
  /** What to delete: the plan from `planRetention`. */
  plan: RetentionPlan;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /** Report what would be deleted and delete nothing. @default false */
  dryRun?: boolean;
  /**
   * Remove leftovers of interrupted runs under the plan's jobs (see {@link findOrphans}): artifacts
   * without a manifest older than this — a younger one may be a backup whose manifest is being
   * written right now — and what the sink's `leftovers` reports; false to skip.
   * @default { olderThan: "1h" }
   */
  orphans?:
    | false
    | {
        /** A duration: only orphans older than this are removed. */
        olderThan: string;
      };
  /** The reference time for orphan ages. @default the plan's `now` */
  now?: Date;
  /** Keys per `sink.delete` call (S3 DeleteObjects takes 1,000). @default 1000 */
  batchSize?: number;
}
type _ApplyRetentionOptionsAgrees = Assert<Agrees<ApplyRetentionOptions, z.input<typeof applyOptionsSchema>>>;

/**
 * Removes leftovers in one call; if it fails, one by one, so that one that cannot be removed
 * leaves the others removed (it stays for the next run). Returns those removed; aborts are thrown.
 */
async function removeLeftovers(
  sink: Sink,
  leftovers: Leftover[],
  signal: AbortSignal | undefined,
): Promise<Leftover[]> {
  if (leftovers.length === 0 || !sink.removeLeftovers) return [];
  const attempt = async (batch: Leftover[]) => {
    throwIfAborted(signal, "applyRetention");
    try {
      await sink.removeLeftovers!(batch, signal ? { signal } : {});
      return true;
    } catch (error) {
      if (signal?.aborted || isAbortError(error)) {
        throw wrapError(
          error,
          "ABORTED",
          `applyRetention: removing leftovers from ${sink.kind} sink`,
          {},
          signal,
        );
      }
      return false;
    }
  };
  if (await attempt(leftovers)) return leftovers;
  if (leftovers.length === 1) return [];
  const removed: Leftover[] = [];
  for (const leftover of leftovers) if (await attempt([leftover])) removed.push(leftover);
  return removed;
}

const describe = (d: RetentionDecision): DeletedBackup => ({
  id: d.id,
  job: d.job,
  key: d.artifactKey,
  manifestKey: d.manifestKey,
  reason: d.reasons.join(", "),
  reasons: d.reasons,
  manifest: d.manifest,
});

/**
 * Carries out a retention plan on a sink: for each dropped backup, deletes the manifest first and
 * then the artifact, so no manifest ever points at a missing artifact. Kept backups are not
 * touched. Then it removes leftovers of earlier interrupted runs under the plan's jobs — artifacts
 * whose manifest is gone and temp files, older than `orphans.olderThan` (see {@link findOrphans}) —
 * so a run that failed between a manifest and its artifact is finished by the next one.
 *
 * Deletions go in batches (`sink.delete` with up to `batchSize` keys); a batch that fails is
 * retried key by key, so one undeletable object (an S3 Object Lock, a permission) fails only its
 * own backup, reported in `failed`, and the rest go on.
 *
 * For a job whose kept backups include PostgreSQL base backups, it then deletes the archived WAL
 * (`<job>/wal/`) none of them needs: every segment before the oldest kept base backup's start
 * segment, on every timeline; `.history` files stay (see `planWalRetention`). Those are in `wal`.
 *
 * With `dryRun`, nothing is deleted and the result lists what would be.
 *
 * @throws {CONFIG_INVALID} for bad options. {RETENTION_REFUSED} when the plan names backups of
 *   another sink kind than `sink` (a plan made for one sink applied to another).
 *   {ABORTED} when `signal` fires (what was deleted so far is in `details.deleted`; the next run
 *   finishes). {SINK_READ_FAILED} when the orphan sweep cannot list.
 * @example
 * const { manifests, invalid } = await listManifests(sink, { job: "app-db" });
 * const plan = planRetention(manifests, { keepDaily: 7, maxAge: "30d" }, { now: new Date(), invalid });
 * const { deleted, failed } = await applyRetention({ sink, plan, signal });
 */
export function applyRetention(options: ApplyRetentionOptions): Promise<ApplyRetentionResult> {
  return applyRetentionListed(options);
}

/**
 * {@link applyRetention}, given the sink's listing under `prefix` taken just before the plan was
 * made (by `listManifests`): when the plan is of that one prefix's job, the orphan sweep reads it
 * (less what this run deleted) instead of listing the sink again. A job run lists once.
 * @internal
 */
export async function applyRetentionListed(
  options: ApplyRetentionOptions,
  listed?: { prefix: string; objects: readonly ObjectInfo[] },
): Promise<ApplyRetentionResult> {
  const o = parseOptions(applyOptionsSchema, options, "applyRetention");
  const { sink, plan, signal, dryRun } = o;
  const deletedKeys = new Set<string>();
  const drops = plan.decisions.filter((d) => d.action === "drop");
  const foreign = drops.filter((d) => d.manifest?.artifact?.sink !== sink.kind);
  if (foreign.length > 0) {
    throw new StowageError(
      "RETENTION_REFUSED",
      `applyRetention: the plan drops backups of a ${foreign[0]!.manifest?.artifact?.sink} sink, not of this ${sink.kind} sink`,
      { details: { keys: foreign.slice(0, 10).map((d) => d.artifactKey) } },
    );
  }
  const result: ApplyRetentionResult = {
    dryRun,
    deleted: [],
    failed: [],
    orphans: [],
    kept: plan.decisions.length - drops.length,
    wal: [],
    walFailed: [],
  };
  try {
    throwIfAborted(signal, "applyRetention");
    if (dryRun) {
      result.deleted = drops.map(describe);
    } else {
      for (let i = 0; i < drops.length; i += o.batchSize) {
        const batch = drops.slice(i, i + o.batchSize);
        const manifestErrors = await deleteKeys(
          sink,
          batch.map((d) => d.manifestKey),
          signal,
        );
        const gone = batch.filter((d) => !manifestErrors.has(d.manifestKey));
        for (const d of gone) deletedKeys.add(d.manifestKey);
        for (const d of batch) {
          const error = manifestErrors.get(d.manifestKey);
          if (error) result.failed.push({ ...describe(d), stage: "manifest", error });
        }
        // The crash window: manifests gone, artifacts not yet. The orphan sweep below (or the
        // next run's) removes what a failure here leaves.
        const artifactErrors = await deleteKeys(
          sink,
          gone.map((d) => d.artifactKey),
          signal,
        );
        for (const d of gone) {
          const error = artifactErrors.get(d.artifactKey);
          if (error) result.failed.push({ ...describe(d), stage: "artifact", error });
          else {
            result.deleted.push(describe(d));
            deletedKeys.add(d.artifactKey);
          }
        }
      }
    }

    // The WAL after the backups, from what stays: a backup whose manifest could not be deleted
    // is intact and keeps its WAL too.
    const intact = new Set(result.failed.filter((f) => f.stage === "manifest").map((f) => f.manifestKey));
    const staying = plan.decisions
      .filter((d) => (d.action === "keep" || intact.has(d.manifestKey)) && d.manifest)
      .map((d) => d.manifest);
    for (const job of [...new Set(staying.filter(isBaseBackup).map((m) => m.job))].sort()) {
      const kept = staying.filter((m) => m.job === job);
      const wal = await pruneWal({ sink, job, kept, dryRun, batchSize: o.batchSize, signal });
      result.wal.push(...wal.deleted);
      result.walFailed.push(...wal.failed);
    }

    if (o.orphans !== false) {
      const now = o.now ?? new Date(plan.now);
      const jobs = [...new Set(plan.decisions.map((d) => d.job))].sort();
      const keys: string[] = [];
      const leftovers: Leftover[] = [];
      for (const job of jobs) {
        const prefix = `${job}/`;
        const reuse = listed && jobs.length === 1 && listed.prefix === prefix;
        const found = await orphansIn(
          sink,
          { olderThan: o.orphans.olderThan, now, prefix, signal },
          reuse ? listed.objects.filter((info) => !deletedKeys.has(info.key)) : undefined,
        );
        keys.push(...found.artifacts.map((a) => a.key));
        leftovers.push(...found.temporary);
      }
      if (dryRun) {
        result.orphans = [...keys, ...leftovers.map((l) => l.key)];
      } else {
        for (let i = 0; i < keys.length; i += o.batchSize) {
          const batch = keys.slice(i, i + o.batchSize);
          const errors = await deleteKeys(sink, batch, signal);
          result.orphans.push(...batch.filter((k) => !errors.has(k)));
        }
        for (let i = 0; i < leftovers.length; i += o.batchSize) {
          const removed = await removeLeftovers(sink, leftovers.slice(i, i + o.batchSize), signal);
          result.orphans.push(...removed.map((l) => l.key));
        }
      }
    }
  } catch (error) {
    if (error instanceof StowageError && error.code === "ABORTED") {
      error.details.deleted = result.deleted.map((d) => d.key);
    }
    throw error;
  }
  return result;
}
