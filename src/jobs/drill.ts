import { linkSignal } from "../core/abort.js";
import { listManifests } from "../core/catalog.js";
import { isStowageError, StowageError, throwIfAborted } from "../core/errors.js";
import type { Manifest } from "../core/manifest.js";
import { parseOptions } from "../core/options.js";
import { restore, verify } from "../core/restore.js";
import { selectBackup } from "../policies/select.js";
import { type AuditEntryInput, errorCode, manifestFacts } from "./audit.js";
import { clockOf, measureObjectives } from "./drill-objectives.js";
import {
  type DrillCheckContext,
  type DrillReport,
  type DrillStage,
  type RestoreDrillOptions,
  restoreDrillOptionsSchema,
} from "./drill-options.js";
import { resolveTarget } from "./drill-target.js";
import { silentLogger } from "./logger.js";

export {
  type DrillCheck,
  type DrillCheckContext,
  type DrillObjective,
  type DrillReport,
  type DrillStage,
  type RestoreDrillOptions,
  restoreDrillOptionsSchema,
} from "./drill-options.js";
export type { DrillTarget } from "./drill-target.js";

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * A restore drill (the seeds' monthly backup test): takes the latest backup of a job, verifies
 * it (stored bytes, and with keys a trial decryption), restores it into a scratch target, runs
 * your check, measures the restore time (RTO) and the backup's age (RPO), and returns a JSON
 * report. The scratch target (folder, database) is removed whatever happened. A drill never
 * throws for a failed step: the report says which stage failed, by code.
 *
 * @throws {CONFIG_INVALID} for bad options (e.g. a job name without `sink`).
 * @example
 * const report = await restoreDrill({
 *   job: db, target: postgresRestoreTarget({ connection: process.env.DRILL_PG_URL!, query: "SELECT count(*) FROM orders" }),
 *   check: ({ rows }) => Number(rows?.[0]?.count) > 0, rpo: "1h", rto: "30m",
 * });
 * await writeFile("drill-report.json", JSON.stringify(report, null, 2));
 */
export async function restoreDrill(options: RestoreDrillOptions): Promise<DrillReport> {
  const opts = parseOptions(restoreDrillOptionsSchema, options, "restoreDrill");
  const jobName = typeof opts.job === "string" ? opts.job : opts.job.name;
  const sink = opts.sink ?? (typeof opts.job === "string" ? undefined : opts.job.sink);
  if (!sink) {
    throw new StowageError("CONFIG_INVALID", "restoreDrill: give a sink with a job name", {
      details: { issues: [{ path: "sink", problem: "required when job is a name" }] },
    });
  }
  const keys = opts.keys ?? (typeof opts.job === "string" ? [] : [...opts.job.keys]);
  const logger = opts.logger ?? silentLogger;
  const now = clockOf(opts.now);
  const { signal: outer } = opts;
  const target = resolveTarget(opts.target);
  const link = linkSignal(outer);
  const signal = link.signal;

  const started = new Date();
  const report: DrillReport = {
    ok: false,
    job: jobName,
    target: target.kind,
    startedAt: started.toISOString(),
    finishedAt: started.toISOString(),
    rpoMs: null,
    rtoMs: null,
    objectives: {},
    cleanup: { ok: true },
    errors: [],
  };
  const fail = (stage: DrillStage, error: unknown) => {
    const code = isStowageError(error) ? error.code : "UNKNOWN";
    report.errors.push({ stage, code, message: messageOf(error) });
    logger.error({ job: jobName, stage, code }, `drill ${stage} failed`);
  };
  const audit = async (entry: AuditEntryInput) => {
    try {
      await opts.audit?.record(entry);
    } catch (error) {
      fail("audit", error);
    }
  };

  let cleanups: Array<() => Promise<void>> = [];
  let manifest: Manifest | undefined;
  try {
    // Select: the latest backup (or the latest at or before `at`).
    try {
      const { manifests } = await listManifests(sink, { job: jobName, signal });
      manifest = selectBackup(manifests, { job: jobName, ...(opts.at ? { at: opts.at } : {}) });
      if (!manifest) {
        throw new StowageError(
          "NOT_FOUND",
          `restoreDrill: job ${jobName} has no backup in the ${sink.kind} sink`,
          {
            details: { job: jobName },
          },
        );
      }
    } catch (error) {
      fail("select", error);
      return report;
    }
    report.backup = {
      id: manifest.id,
      key: manifest.artifact.key,
      sink: manifest.artifact.sink,
      location: manifest.artifact.location,
      startedAt: manifest.startedAt,
      finishedAt: manifest.finishedAt,
      bytes: manifest.artifact.bytes,
      plainBytes: manifest.content.bytes,
    };
    report.rpoMs = Math.max(0, now().getTime() - Date.parse(manifest.startedAt));

    // Verify: the stored bytes, and a trial decode when the keys allow it.
    const v0 = Date.now();
    try {
      const v = await verify({ sink, manifest, keys, signal });
      report.verify = {
        ok: v.ok,
        durationMs: Date.now() - v0,
        plainChecked: v.plain !== undefined,
        problems: v.problems.map((p) => p.code),
      };
      await audit({
        action: "verify",
        ...manifestFacts(manifest),
        result: v.ok ? "ok" : "failed",
        ...(v.ok ? {} : { error: v.problems[0]?.code ?? "INTEGRITY_MISMATCH" }),
        durationMs: report.verify.durationMs,
      });
      if (!v.ok) {
        report.errors.push({
          stage: "verify",
          code: v.problems[0]?.code ?? "INTEGRITY_MISMATCH",
          message: v.problems[0]?.message ?? "verify failed",
        });
        return report;
      }
    } catch (error) {
      fail("verify", error);
      await audit({
        action: "verify",
        ...manifestFacts(manifest),
        result: "failed",
        error: errorCode(error),
      });
      return report;
    }

    // Restore into the scratch target, then check.
    const r0 = Date.now();
    let context: DrillCheckContext = { manifest, target: target.kind, bytes: 0, signal };
    try {
      throwIfAborted(signal, "restoreDrill");
      const accepted = target.accepts(manifest);
      if (accepted !== true) {
        throw new StowageError(
          "CONFIG_INVALID",
          `restoreDrill: the ${target.kind} target refuses ${manifest.artifact.key}: ${accepted}`,
          {
            details: { issues: [{ path: "target", problem: accepted }] },
          },
        );
      }
      const plain = await restore({ sink, manifest, keys, signal });
      const result = await target.restore(plain, { manifest, signal, onCleanup: (c) => cleanups.push(c) });
      context = { ...result.facts, ...context, bytes: result.bytes };
      report.restore = {
        ok: true,
        durationMs: Date.now() - r0,
        bytes: result.bytes,
        details: result.details,
      };
      await audit({
        action: "restore",
        ...manifestFacts(manifest),
        reason: `drill:${target.kind}`,
        result: "ok",
        durationMs: report.restore.durationMs,
      });
    } catch (error) {
      report.restore = { ok: false, durationMs: Date.now() - r0, bytes: context.bytes, details: {} };
      fail("restore", error);
      await audit({
        action: "restore",
        ...manifestFacts(manifest),
        reason: `drill:${target.kind}`,
        result: "failed",
        error: errorCode(error),
        durationMs: report.restore.durationMs,
      });
      return report;
    }

    const c0 = Date.now();
    if (opts.check) {
      try {
        const outcome = await opts.check(context);
        const result =
          outcome === false
            ? { ok: false }
            : typeof outcome === "object" && outcome !== null && "ok" in outcome
              ? (outcome as { ok: boolean; details?: Record<string, unknown> })
              : { ok: true };
        report.check = {
          ok: result.ok === true,
          durationMs: Date.now() - c0,
          ...(result.details ? { details: result.details } : {}),
        };
        if (!report.check.ok)
          report.errors.push({ stage: "check", code: "RESTORE_FAILED", message: "the drill's check failed" });
      } catch (error) {
        report.check = { ok: false, durationMs: Date.now() - c0 };
        fail("check", error);
      }
    }
    report.rtoMs = Date.now() - r0;
  } finally {
    // Cleanup whatever happened; a failed cleanup fails the drill (a scratch database left behind costs).
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        report.cleanup.ok = false;
        fail("cleanup", error);
      }
    }
    cleanups = [];
    link.dispose();
  }

  measureObjectives(report, {
    ...(opts.rpo ? { rpo: opts.rpo } : {}),
    ...(opts.rto ? { rto: opts.rto } : {}),
    ...(typeof opts.job === "string" || !opts.job.objectives ? {} : { objectives: opts.job.objectives }),
  });
  report.finishedAt = new Date().toISOString();
  report.ok = report.errors.length === 0;
  if (manifest) {
    await audit({
      action: "drill",
      ...manifestFacts(manifest),
      reason: target.kind,
      result: report.ok ? "ok" : "failed",
      ...(report.ok ? {} : { error: report.errors[0]!.code }),
      durationMs: Date.parse(report.finishedAt) - started.getTime(),
    });
  }
  try {
    await opts.audit?.flush();
  } catch (error) {
    fail("audit", error);
    report.ok = false;
  }
  logger[report.ok ? "info" : "error"](
    {
      job: jobName,
      ok: report.ok,
      rpoMs: report.rpoMs,
      rtoMs: report.rtoMs,
      errors: report.errors.map((e) => e.code),
    },
    "restore drill finished",
  );
  return report;
}
