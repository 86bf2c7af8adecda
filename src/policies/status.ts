import type { Manifest } from "../core/manifest.js";
import { durationSchema, lazySchema, parseDuration, parseOptions } from "../core/options.js";
import { epochOf } from "./instant.js";
import { formatDuration } from "./status-text.js";
import {
  compileRules,
  type Finding,
  findingsOf,
  type InvalidManifestEntry,
  jobOfKey,
  passesValidation,
  type ValidationRules,
} from "./validation.js";
import { type JobWalStatus, type WalInput, walJobStatus } from "./wal-report.js";

export { formatBytes, formatDuration, formatStatusText } from "./status-text.js";

const summarizeOptionsSchema = lazySchema((z) =>
  z
    .object({
      now: z.date({ error: "expected a valid Date" }),
      rules: z.record(z.string(), z.unknown()).optional(),
      rpo: z.union([durationSchema, z.record(z.string(), durationSchema)]).optional(),
      invalid: z.array(z.looseObject({ key: z.string() })).optional(),
      jobs: z.array(z.string().min(1)).optional(),
      wal: z
        .record(
          z.string(),
          z.custom<WalInput>(
            (v) => Array.isArray((v as WalInput | null)?.files),
            "expected { files, archiver? }",
          ),
        )
        .optional(),
    })
    .strict(),
);

/** Options for {@link summarize}. */
export interface SummarizeOptions {
  /** The reference time for ages. Policies never read the clock. */
  now: Date;
  /** Validation rules for the compliance figures (see {@link validateManifest}). */
  rules?: ValidationRules;
  /**
   * Recovery point objective: the longest a job may go without a valid backup ("15m", "6h"),
   * for all jobs or per job (`{ "app-db": "15m", "k8s": "6h" }`). Falls back to `rules.maxAge`.
   * A job without an RPO is never "breached".
   */
  rpo?: string | Record<string, string>;
  /** `listManifests(...).invalid`: counted per job (by key prefix) and reported. */
  invalid?: readonly InvalidManifestEntry[];
  /** Jobs that should exist: a job listed here with no backup at all is reported (and breaches its RPO). */
  jobs?: readonly string[];
  /**
   * The WAL archive of each job that archives WAL (`listArchivedWal`, and the server's
   * `pg_stat_archiver` where it can be asked): its RPO, the archiver's lag and gaps go into the
   * job's `wal`; a gap fails the job, a lagging or failing archiver warns.
   */
  wal?: Readonly<Record<string, WalInput>>;
}

/** The newest backup of a job, as the status report shows it. */
export interface BackupBrief {
  /** The backup's id. */
  id: string;
  /** When it started (ISO 8601). */
  startedAt: string;
  /** When it finished (ISO 8601). */
  finishedAt: string;
  /** Its artifact's key. */
  key: string;
  /** Its artifact's location URI. */
  location: string;
  /** Stored bytes. */
  storedBytes: number;
  /** Plain bytes. */
  plainBytes: number;
  /** How long the backup took. */
  durationMs: number;
}

/** A job's or the whole report's health. */
export type HealthStatus = "ok" | "warning" | "failing";

/** One job's status. */
export interface JobStatus {
  /** The job's name. */
  job: string;
  /** ok: fresh and compliant; warning: something to look at; failing: RPO breached or no valid backup. */
  status: HealthStatus;
  /** Backups with a readable manifest. */
  count: number;
  /** Manifests of this job that could not be read or parsed. */
  invalidManifests: number;
  /** The newest backup (by start time), valid or not. */
  last: BackupBrief | null;
  /** The newest backup that passes validation: what a restore would use, and what RPO is measured on. */
  lastValid: BackupBrief | null;
  /** Seconds from the newest backup's start to `now` (negative for a future-dated backup). */
  ageSeconds: number | null;
  /** Stored bytes of all its backups. */
  storedBytes: number;
  /** Plain bytes of all its backups. */
  plainBytes: number;
  /** Backups that pass validation. */
  valid: number;
  /** Valid backups with no failed compliance rule. */
  compliant: number;
  /** compliant / (count + invalidManifests); null without backups. */
  complianceRate: number | null;
  /** The job's RPO as given ("24h"), or null. */
  rpo: string | null;
  /** The RPO in seconds, or null. */
  rpoSeconds: number | null;
  /** null when the job has no RPO. */
  rpoBreached: boolean | null;
  /** What a person should look at, one sentence each. */
  problems: string[];
  /** The job's WAL archive (only for jobs whose WAL was given): RPO, archiver lag, gaps. */
  wal?: JobWalStatus;
}

/** The status of every job, serialisable as JSON (`JSON.stringify(report)` is the JSON renderer). */
export interface StatusReport {
  /** The report's `now` (ISO 8601). */
  generatedAt: string;
  /** Totals over every job. */
  overall: {
    /** The worst job's health. */
    status: HealthStatus;
    /** Jobs in the report. */
    jobs: number;
    /** Backups with a readable manifest. */
    backups: number;
    /** Manifests that could not be read or parsed. */
    invalidManifests: number;
    /** Stored bytes of every backup. */
    storedBytes: number;
    /** Plain bytes of every backup. */
    plainBytes: number;
    /** Backups that pass validation. */
    valid: number;
    /** Valid backups with no failed compliance rule. */
    compliant: number;
    /** compliant / (backups + invalidManifests); null without backups. */
    complianceRate: number | null;
    /** Jobs whose RPO is breached. */
    rpoBreached: number;
  };
  /** One entry a job. */
  jobs: JobStatus[];
}

const brief = (m: Manifest): BackupBrief => ({
  id: m.id,
  startedAt: m.startedAt,
  finishedAt: m.finishedAt,
  key: m.artifact.key,
  location: m.artifact.location,
  storedBytes: m.artifact.bytes,
  plainBytes: m.content.bytes,
  durationMs: epochOf(m.finishedAt) - epochOf(m.startedAt),
});

const worst = (a: HealthStatus, b: HealthStatus): HealthStatus =>
  a === "failing" || b === "failing" ? "failing" : a === "warning" || b === "warning" ? "warning" : "ok";

/**
 * Summarises backups per job: newest backup and its age, count, stored and plain bytes,
 * validity and compliance, and whether the RPO is met — plus an overall verdict. Pure.
 *
 * The RPO is measured from the start of the newest backup that passes validation (a backup
 * that is not encrypted when encryption is required does not reset the clock).
 *
 * @throws {CONFIG_INVALID} for a bad option, rule or duration, naming it.
 * @example
 * const { manifests, invalid } = await listManifests(sink);
 * const report = summarize(manifests, { now: new Date(), rpo: { "app-db": "15m" }, invalid,
 *   rules: { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } } });
 * process.stdout.write(formatStatusText(report));
 */
export function summarize(manifests: readonly Manifest[], options: SummarizeOptions): StatusReport {
  const o = parseOptions(summarizeOptionsSchema, options, "summarize");
  const now = o.now.getTime();
  const rules = compileRules(o.rules as ValidationRules | undefined, "summarize", "rules");
  const rpoFor = (job: string): string | undefined =>
    typeof o.rpo === "string" ? o.rpo : (o.rpo?.[job] ?? rules.rules.maxAge);

  const byJob = new Map<string, { manifests: Manifest[]; invalid: number }>();
  const jobEntry = (job: string) => {
    let entry = byJob.get(job);
    if (!entry) {
      entry = { manifests: [], invalid: 0 };
      byJob.set(job, entry);
    }
    return entry;
  };
  for (const job of o.jobs ?? []) jobEntry(job);
  for (const job of Object.keys(o.wal ?? {})) jobEntry(job);
  if (o.rpo && typeof o.rpo === "object") for (const job of Object.keys(o.rpo)) jobEntry(job);
  for (const m of manifests) jobEntry(m.job).manifests.push(m);
  for (const bad of o.invalid ?? []) jobEntry(jobOfKey(bad.key)).invalid++;

  const jobs: JobStatus[] = [];
  for (const job of [...byJob.keys()].sort()) {
    const entry = byJob.get(job)!;
    const sorted = entry.manifests
      .map((m) => ({ m, time: epochOf(m.startedAt), findings: findingsOf(m, rules, now) }))
      .sort((a, b) => b.time - a.time || (a.m.id < b.m.id ? 1 : a.m.id > b.m.id ? -1 : 0));
    let storedBytes = 0;
    let plainBytes = 0;
    let valid = 0;
    let compliant = 0;
    for (const { m, findings } of sorted) {
      storedBytes += m.artifact.bytes;
      plainBytes += m.content.bytes;
      const errors = findings.filter((f: Finding) => f.severity === "error");
      const isValid = !errors.some((f) => f.kind === "validity");
      if (isValid) valid++;
      if (isValid && !errors.some((f) => f.kind === "compliance")) compliant++;
    }
    const newest = sorted[0];
    const newestValid =
      sorted.find((s) => passesValidation(s.findings) && s.time <= now) ??
      sorted.find((s) => passesValidation(s.findings));
    const rpo = rpoFor(job) ?? null;
    const rpoMs = rpo === null ? null : parseDuration(rpo, "rpo");
    const problems: string[] = [];
    let status: HealthStatus = "ok";
    const total = sorted.length + entry.invalid;

    let rpoBreached: boolean | null = null;
    if (rpoMs !== null) {
      rpoBreached = !newestValid || now - newestValid.time > rpoMs;
      if (rpoBreached) {
        status = "failing";
        problems.push(
          newestValid
            ? `RPO ${rpo} breached: the newest valid backup started ${formatDuration(now - newestValid.time)} ago`
            : `RPO ${rpo} breached: no valid backup`,
        );
      }
    }
    if (sorted.length === 0) {
      status = "failing";
      if (rpoMs === null) problems.push("no backup");
    } else if (!newestValid) {
      status = "failing";
      if (rpoMs === null) problems.push("no backup passes validation");
    } else if (newest && !passesValidation(newest.findings)) {
      status = worst(status, "warning");
      const failed = [...new Set(newest.findings.filter((f) => f.severity === "error").map((f) => f.rule))];
      problems.push(`the newest backup ${newest.m.id} does not pass validation (${failed.join(", ")})`);
    }
    if (total > 0 && compliant < total) {
      status = worst(status, "warning");
      problems.push(`${total - compliant} of ${total} backups not compliant`);
    }
    if (entry.invalid > 0) {
      status = worst(status, "warning");
      problems.push(`${entry.invalid} manifest${entry.invalid === 1 ? "" : "s"} cannot be read`);
    }
    const future = sorted.filter((s) => s.findings.some((f) => f.rule === "future-dated")).length;
    if (future > 0) {
      status = worst(status, "warning");
      problems.push(`${future} backup${future === 1 ? "" : "s"} dated in the future (clock skew?)`);
    }

    const wal = o.wal?.[job] ? walJobStatus(o.wal[job], o.now) : undefined;
    if (wal) {
      problems.push(...wal.problems);
      if (wal.status.gaps.length > 0) status = "failing";
      else if (wal.problems.length > 0) status = worst(status, "warning");
    }

    jobs.push({
      job,
      status,
      count: sorted.length,
      invalidManifests: entry.invalid,
      last: newest ? brief(newest.m) : null,
      lastValid: newestValid ? brief(newestValid.m) : null,
      ageSeconds: newest ? (now - newest.time) / 1000 : null,
      storedBytes,
      plainBytes,
      valid,
      compliant,
      complianceRate: total === 0 ? null : compliant / total,
      rpo,
      rpoSeconds: rpoMs === null ? null : rpoMs / 1000,
      rpoBreached,
      problems,
      ...(wal ? { wal: wal.status } : {}),
    });
  }

  const sum = (pick: (j: JobStatus) => number) => jobs.reduce((n, j) => n + pick(j), 0);
  const backups = sum((j) => j.count);
  const invalidManifests = sum((j) => j.invalidManifests);
  const compliant = sum((j) => j.compliant);
  return {
    generatedAt: new Date(now).toISOString(),
    overall: {
      status: jobs.reduce<HealthStatus>((s, j) => worst(s, j.status), "ok"),
      jobs: jobs.length,
      backups,
      invalidManifests,
      storedBytes: sum((j) => j.storedBytes),
      plainBytes: sum((j) => j.plainBytes),
      valid: sum((j) => j.valid),
      compliant,
      complianceRate: backups + invalidManifests === 0 ? null : compliant / (backups + invalidManifests),
      rpoBreached: jobs.filter((j) => j.rpoBreached === true).length,
    },
    jobs,
  };
}
