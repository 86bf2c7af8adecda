/** Retention applied to one sink of a job: by a run's retention stage and by `pruneJob`. */
import { listCatalog, listManifests, type ManifestCache } from "../core/catalog.js";
import { applyRetentionListed } from "../core/retention-apply.js";
import type { Sink } from "../core/types.js";
import { planRetention } from "../policies/retention.js";
import type { AuditTrail } from "./audit.js";
import { manifestFacts } from "./audit.js";
import type { RetentionResult } from "./cycle.js";
import type { Job, RetentionPolicy } from "./job.js";
import { jobError } from "./job-error.js";
import type { Logger } from "./logger.js";

/**
 * Manifests already read, per sink and job, so that a job run lists fresh but reads only new
 * manifests. Per job, not per sink: a listing drops the cache entries of keys it no longer sees,
 * and that sweep then walks one job's entries, not those of every job sharing the sink.
 */
const manifestCaches = new WeakMap<Sink, Map<string, ManifestCache>>();

function cacheOf(sink: Sink, job: string): ManifestCache {
  let bySink = manifestCaches.get(sink);
  if (!bySink) {
    bySink = new Map();
    manifestCaches.set(sink, bySink);
  }
  let cache = bySink.get(job);
  if (!cache) {
    cache = new Map();
    bySink.set(job, cache);
  }
  return cache;
}

export function listManifestsCached(sink: Sink, job: string, signal: AbortSignal) {
  return listManifests(sink, { job, signal, cache: cacheOf(sink, job) });
}

export async function prune(
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
    // One listing serves the plan and the orphan sweep after it.
    const catalog = await listCatalog(sink, {
      job: job.name,
      signal: options.signal,
      cache: cacheOf(sink, job.name),
    });
    const { manifests, invalid } = catalog.listing;
    const plan = planRetention(manifests, policy, {
      now: options.now(),
      timeZone: job.timeZone ?? options.timeZone ?? "UTC",
      invalid,
      ...(job.rules ? { rules: job.rules } : {}),
    });
    const applied = await applyRetentionListed(
      { sink, plan, signal: options.signal, dryRun: options.dryRun ?? false },
      catalog,
    );
    // One audit line per deletion, done or failed (a dry run deletes nothing, so records nothing).
    const outcomes = [
      ...(options.dryRun ? [] : applied.deleted.map((d) => ({ ...d, outcome: { result: "ok" as const } }))),
      ...applied.failed.map((f) => ({ ...f, outcome: { result: "failed" as const, error: f.error.code } })),
    ];
    for (const { manifest, reason, outcome } of outcomes) {
      await options.audit({
        action: "delete",
        ...manifestFacts(manifest),
        sink: sink.kind,
        reason,
        ...outcome,
      });
    }
    // Each WAL file too: a segment gone is a stretch of time that can no longer be recovered.
    const walOutcomes = [
      ...(options.dryRun ? [] : applied.wal.map((w) => ({ ...w, outcome: { result: "ok" as const } }))),
      ...applied.walFailed.map((w) => ({
        ...w,
        outcome: { result: "failed" as const, error: w.error.code },
      })),
    ];
    for (const { job: walJob, key, reason, outcome } of walOutcomes) {
      await options.audit({ action: "delete", job: walJob, key, sink: sink.kind, reason, ...outcome });
    }
    const durationMs = Date.now() - t0;
    const deleted = applied.deleted.map((d) => d.key);
    const walDeleted = applied.wal.map((w) => w.key);
    options.logger.info(
      { job: job.name, target, deleted: deleted.length, kept: applied.kept, walDeleted: walDeleted.length },
      "retention applied",
    );
    const failure = applied.failed[0] ?? applied.walFailed[0];
    return {
      target,
      status: failure ? "failed" : "succeeded",
      kept: applied.kept,
      deleted,
      ...(applied.wal.length + applied.walFailed.length > 0 ? { walDeleted } : {}),
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
