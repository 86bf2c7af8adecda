/**
 * The stages of one job run (backup, copies, retention, validation), each a function of the run's
 * shared state, and the one helper that times, logs and audits a unit of work. `runJob` strings
 * them together; `pruneJob` reuses the retention step on its own.
 */
import { backup } from "../core/backup.js";
import { copyBackup } from "../core/copy.js";
import { wrapError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../core/manifest.js";
import { signerFrom } from "../core/signing.js";
import type { BackupProgress, Sink } from "../core/types.js";
import { type CopyPeriod, copyDue, startOfBackupKey } from "../policies/copies.js";
import { passesValidation, validateManifest } from "../policies/validation.js";
import { errorCode, manifestFacts } from "./audit.js";
import { sourceForRun } from "./chain-plan.js";
import { fanOutSink } from "./fan-out.js";
import type { Job, RetentionPolicy } from "./job.js";
import { jobError } from "./job-error.js";
import { type HeldLease, holdJobLease, type ResolvedJobLock } from "./lock-run.js";
import { listManifestsCached, prune } from "./prune.js";
import { type JobRun, step } from "./stages-run.js";

export { type AuditRecord, clock, finishJobRun, type JobRun, newJobRun, timed } from "./stages-run.js";

/**
 * 0. The lock, when the job runs on one: the lease, or undefined when another replica holds it
 * (or the engine could not be asked: a `lock` error, and the job does not run unguarded).
 */
export async function lockStage(run: JobRun, lock: ResolvedJobLock): Promise<HeldLease | undefined> {
  const { job, logger } = run;
  try {
    const held = await holdJobLease(job.name, lock, run.signal, logger);
    logger.info(
      { job: job.name, lock: lock.lock.kind, replica: lock.replica, held: held !== undefined },
      held ? "lock taken" : "lock held by another replica",
    );
    return held;
  } catch (error) {
    run.errors.push(jobError("lock", error));
    logger.error({ job: job.name, lock: lock.lock.kind, code: errorCode(error) }, "lock failed");
    return undefined;
  }
}

/** 1. The backup (fanned out to the copies when asked). */
export async function backupStage(run: JobRun): Promise<void> {
  const { job, options, logger, bytes } = run;
  logger.info({ job: job.name, source: `${job.source.kind}:${job.source.name}` }, "backup started");
  // A periodic copy (`every`) is decided after the backup, so it is never part of the fan-out.
  const fanned = job.copies.filter((c) => c.every === undefined);
  if (job.fanOut && fanned.length > 0) {
    // The job's schema has checked the signing key, so this parse does not throw.
    const signer = job.signingKey === undefined ? undefined : signerFrom(job.signingKey, "signingKey");
    run.fan = fanOutSink(job.sink, fanned, signer ? { signer } : {});
  }
  run.manifest = await step(
    run,
    async () =>
      backup({
        job: job.name,
        source: await sourceForRun(job, options.kind, () =>
          listManifestsCached(job.sink, job.name, run.signal),
        ),
        transforms: [...job.transforms],
        sink: run.fan ?? job.sink,
        labels: { ...job.labels },
        allowUnencrypted: job.allowUnencrypted,
        ...(job.signingKey === undefined ? {} : { signingKey: job.signingKey }),
        signal: run.signal,
        now: run.now,
        ...(run.fence ? { fence: run.fence } : {}),
        ...(job.storageClass === undefined ? {} : { storageClass: job.storageClass }),
        ...(options.onProgress
          ? { onProgress: (p: BackupProgress) => options.onProgress?.(job.name, p) }
          : {}),
      }),
    {
      succeeded: (manifest, durationMs) => {
        bytes.plain = manifest.content.bytes;
        bytes.stored = manifest.artifact.bytes;
        return {
          log: { job: job.name, key: manifest.artifact.key, bytes: bytes.stored, durationMs },
          message: "backup succeeded",
          audit: { action: "backup", ...manifestFacts(manifest), result: "ok", durationMs },
        };
      },
      failed: (error, durationMs) => {
        run.errors.push(jobError("backup", error));
        return {
          log: { job: job.name, code: errorCode(error), durationMs },
          message: "backup failed",
          audit: {
            action: "backup",
            job: job.name,
            sink: job.sink.kind,
            result: "failed",
            error: errorCode(error),
            durationMs,
          },
        };
      },
    },
  );
}

const copyName = (job: Job, i: number) => job.copies[i]!.name ?? job.copies[i]!.sink.kind;

/** 2. The copies: written in the same pass by the fan-out, or copied now, verified while copied. */
export async function copiesStage(run: JobRun): Promise<void> {
  const { job, manifest, copies, errors, logger } = run;
  for (const [i, copy] of job.copies.entries()) {
    const target = copyName(job, i);
    if (!manifest) {
      copies.push({ target, status: "skipped", reason: "backup failed", durationMs: 0, bytes: 0 });
      continue;
    }
    const c0 = Date.now();
    if (copy.every !== undefined) {
      try {
        const due = await periodicCopyDue(job, copy.sink, copy.every, manifest, run.timeZone, run.signal);
        if (!due.due) {
          run.notDue.add(i);
          copies.push({
            target,
            status: "skipped",
            reason: `${due.period} held`,
            durationMs: Date.now() - c0,
            bytes: 0,
          });
          continue;
        }
      } catch (error) {
        const e = jobError("copy", error, target);
        errors.push(e);
        copies.push({ target, status: "failed", durationMs: Date.now() - c0, bytes: 0, error: e });
        logger.error({ job: job.name, target, code: e.code }, "copy failed: its sink cannot be listed");
        continue;
      }
    }
    if (run.fan && copy.every === undefined) {
      const copied = run.fan.manifestsFor(manifest.artifact.key).find((m) => m.sink === copy.sink)?.manifest;
      if (copied) {
        copies.push({
          target,
          status: "succeeded",
          manifest: copied,
          durationMs: 0,
          bytes: copied.artifact.bytes,
        });
        run.bytes.copied += copied.artifact.bytes;
        await run.audit({ action: "copy", ...manifestFacts(copied), from: job.sink.kind, result: "ok" });
      }
      continue;
    }
    await step(
      run,
      () =>
        copyBackup({
          manifest,
          from: job.sink,
          to: copy.sink,
          signal: run.signal,
          ...(job.signingKey === undefined ? {} : { signingKey: job.signingKey }),
          ...(copy.storageClass === undefined ? {} : { storageClass: copy.storageClass }),
        }),
      {
        succeeded: (copied, durationMs) => {
          copies.push({
            target,
            status: "succeeded",
            manifest: copied,
            durationMs,
            bytes: copied.artifact.bytes,
          });
          run.bytes.copied += copied.artifact.bytes;
          return {
            log: { job: job.name, target, key: copied.artifact.key, durationMs },
            message: "copy succeeded",
            audit: {
              action: "copy",
              ...manifestFacts(copied),
              from: job.sink.kind,
              result: "ok",
              durationMs,
            },
          };
        },
        failed: (error, durationMs) => {
          const e = jobError("copy", error, target);
          errors.push(e);
          copies.push({ target, status: "failed", durationMs, bytes: 0, error: e });
          return {
            log: { job: job.name, target, code: e.code, durationMs },
            message: "copy failed",
            audit: {
              action: "copy",
              ...manifestFacts(manifest),
              sink: copy.sink.kind,
              from: job.sink.kind,
              result: "failed",
              error: e.code,
              durationMs,
            },
          };
        },
      },
    );
  }
}

/** 3. Retention, per sink, only where this run's write succeeded. */
export async function retentionStage(run: JobRun): Promise<void> {
  const { job, options, retention } = run;
  if (options.retention === false) return;
  const plans: Array<{
    target: string;
    sink: Sink;
    policy: RetentionPolicy | undefined;
    wrote: boolean;
  }> = [
    { target: "primary", sink: job.sink, policy: job.retention, wrote: run.manifest !== undefined },
    ...job.copies.map((copy, i) => ({
      target: copyName(job, i),
      sink: copy.sink,
      policy: copy.retention,
      wrote: run.copies[i]?.status === "succeeded" || run.notDue.has(i),
    })),
  ];
  for (const plan of plans) {
    if (!plan.policy) continue;
    if (!plan.wrote) {
      retention.push({ target: plan.target, status: "skipped", kept: 0, deleted: [], durationMs: 0 });
      continue;
    }
    retention.push(
      await prune(job, plan.sink, plan.target, plan.policy, {
        ...options,
        signal: run.signal,
        now: run.now,
        audit: run.audit,
        logger: run.logger,
      }),
    );
  }
  for (const r of retention) if (r.error) run.errors.push(r.error);
}

/** 4. Validation of the new backup. */
export async function validationStage(run: JobRun): Promise<void> {
  const { job, manifest, errors } = run;
  if (!manifest || !job.rules) return;
  try {
    run.findings = validateManifest(manifest, job.rules, { now: run.now() });
    if (!passesValidation(run.findings)) {
      const failedRules = run.findings.filter((f) => f.severity === "error").map((f) => f.rule);
      errors.push({
        stage: "validation",
        code: "SOURCE_VALIDATION_FAILED",
        message: `backup ${manifest.artifact.key} fails ${failedRules.join(", ")}`,
      });
      run.logger.error(
        { job: job.name, key: manifest.artifact.key, rules: failedRules },
        "validation failed",
      );
    }
  } catch (error) {
    errors.push(jobError("validation", error));
  }
}

/**
 * Whether this run's backup is due for a periodic copy: lists the copy's sink under the job
 * (keys only, no reads: an artifact's name carries its start time) and asks {@link copyDue}.
 * Only artifacts whose manifest is beside them count, so a half-made copy never stands for a period.
 */
async function periodicCopyDue(
  job: Job,
  sink: Sink,
  every: CopyPeriod,
  manifest: Manifest,
  timeZone: string,
  signal: AbortSignal,
) {
  const prefix = `${job.name}/`;
  const keys = new Set<string>();
  try {
    for await (const info of sink.list(prefix, { signal })) keys.add(info.key);
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `listing the ${sink.kind} sink under "${prefix}"`,
      { prefix },
      signal,
    );
  }
  const held: number[] = [];
  for (const key of keys) {
    if (!key.endsWith(MANIFEST_SUFFIX) || !keys.has(key.slice(0, -MANIFEST_SUFFIX.length))) continue;
    const t = startOfBackupKey(key.slice(0, -MANIFEST_SUFFIX.length));
    if (t !== undefined) held.push(t);
  }
  return copyDue(manifest.startedAt, held, { every, timeZone });
}
