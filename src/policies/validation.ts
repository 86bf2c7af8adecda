import type { Manifest } from "../core/manifest.js";
import { chainFindings } from "./chain.js";
import { chainFindings as brokenChainFindings } from "./incremental-chains.js";
import { check } from "./validation-check.js";
import {
  compileRules,
  type Finding,
  KIND,
  nowMs,
  type ValidateOptions,
  type ValidationRules,
} from "./validation-rules.js";
import { type WalGapFinding, type WalInput, walGapFindings } from "./wal-report.js";

export { findingsOf, passesValidation, validateManifest } from "./validation-check.js";
export {
  type CompiledRules,
  compileRules,
  type Finding,
  type FindingKind,
  nowMs,
  type RuleId,
  type ValidateOptions,
  type ValidationRules,
  validationRulesSchema,
} from "./validation-rules.js";

/** The validation figures of one job (or of all jobs together). */
export interface ValidationSummary {
  /** Backups seen, counting those whose manifest could not be read. */
  total: number;
  /** Backups with no validity error (schema version, timestamps, size, encryption, compression). */
  valid: number;
  /** Valid backups that also meet every compliance rule (required labels). */
  compliant: number;
  /** valid / total; `null` when there are no backups. */
  validityRate: number | null;
  /** compliant / total; `null` when there are no backups. */
  complianceRate: number | null;
}

/** One backup's findings. */
export interface BackupFindings {
  /** The backup's id. */
  id: string;
  /** Its artifact's key. */
  key: string;
  /** When it started (ISO 8601). */
  startedAt: string;
  /** What the rules found. */
  findings: Finding[];
}

/** One job's validation: its counts, and the backups with findings. */
export interface JobValidation extends ValidationSummary {
  /** The job's name. */
  job: string;
  /** Manifests of this job that could not be read or parsed (by key). */
  invalidManifests: string[];
  /** Only the backups that have findings, newest first. */
  backups: BackupFindings[];
  /** For a job whose WAL was given (`options.wal`): the archived files and the gaps in each timeline. */
  wal?: {
    /** Archived WAL files of the job. */
    files: number;
    /** Holes in each timeline's sequence of segments. */
    gaps: WalGapFinding[];
  };
}

/** What `validateBackups` returns: counts over every job, and each job's. */
export interface ValidationReport extends ValidationSummary {
  /** The report's `now` (ISO 8601). */
  now: string;
  /** One entry a job. */
  jobs: JobValidation[];
}

/** An unreadable manifest, as `listManifests` reports it in `invalid`. */
export interface InvalidManifestEntry {
  /** The manifest's key. */
  key: string;
  /** Why it could not be read: a StowageError, or anything with `code` and `message`. */
  error?: { code?: string; message?: string } | unknown;
}

export interface ValidateBackupsOptions extends ValidateOptions {
  /** `listManifests(...).invalid`: counted as backups that are neither valid nor compliant. */
  invalid?: readonly InvalidManifestEntry[];
  /**
   * The WAL archive of each job that archives WAL (`{ "app-db": { files: await listArchivedWal(sink,
   * "app-db") } }`): its gaps are reported in the job's `wal.gaps`, rule `wal-gap`.
   */
  wal?: Readonly<Record<string, WalInput>>;
}

const rate = (n: number, total: number) => (total === 0 ? null : n / total);

/** @internal The job an invalid manifest's key belongs to (keys start with `<job>/`). */
export function jobOfKey(key: string): string {
  const slash = key.indexOf("/");
  return slash > 0 ? key.slice(0, slash) : "(unknown)";
}

/**
 * Validates every backup and aggregates per job: total, valid, compliant, validity rate and
 * compliance rate — the figures the seeds' validation script prints. Freshness findings
 * (`maxAge`) are listed but do not make a backup invalid or non-compliant. A differential or
 * incremental whose chain cannot be followed to its full among `manifests` gets a `chain`
 * finding (validity, error) naming the missing link. Given a job's WAL archive (`options.wal`),
 * each hole in a timeline's sequence is a `wal-gap` finding in the job's `wal.gaps`, naming the
 * first missing segment (recovery cannot replay past it).
 *
 * @throws {CONFIG_INVALID} for bad rules or an invalid `now`.
 * @example
 * const report = validateBackups(manifests, { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } },
 *   { now: new Date(), invalid: listing.invalid });
 * console.log(`${report.compliant}/${report.total} compliant`);
 */
export function validateBackups(
  manifests: readonly Manifest[],
  rules: ValidationRules,
  options: ValidateBackupsOptions,
): ValidationReport {
  const c = compileRules(rules, "validateBackups");
  const now = nowMs(options?.now, "validateBackups");
  const jobs = new Map<string, JobValidation>();
  const jobFor = (job: string) => {
    let entry = jobs.get(job);
    if (!entry) {
      entry = {
        job,
        total: 0,
        valid: 0,
        compliant: 0,
        validityRate: null,
        complianceRate: null,
        invalidManifests: [],
        backups: [],
      };
      jobs.set(job, entry);
    }
    return entry;
  };
  const chained = c.rules.chain ? chainFindings(manifests) : undefined;
  const brokenChains = brokenChainFindings(manifests);
  for (const manifest of manifests) {
    const entry = jobFor(manifest.job);
    const findings = check(manifest, c, now);
    for (const f of chained?.get(manifest) ?? []) findings.push({ ...f, kind: KIND[f.rule] });
    const broken = brokenChains.get(manifest);
    if (broken) findings.push(broken);
    entry.total++;
    const errors = findings.filter((f) => f.severity === "error");
    const valid = !errors.some((f) => f.kind === "validity");
    if (valid) entry.valid++;
    if (valid && !errors.some((f) => f.kind === "compliance")) entry.compliant++;
    if (findings.length > 0) {
      entry.backups.push({
        id: manifest.id,
        key: manifest.artifact.key,
        startedAt: manifest.startedAt,
        findings,
      });
    }
  }
  for (const bad of options.invalid ?? []) {
    const entry = jobFor(jobOfKey(bad.key));
    entry.total++;
    entry.invalidManifests.push(bad.key);
  }
  for (const [job, wal] of Object.entries(options.wal ?? {})) {
    jobFor(job).wal = { files: wal.files.length, gaps: walGapFindings(wal) };
  }
  const list = [...jobs.values()].sort((a, b) => (a.job < b.job ? -1 : a.job > b.job ? 1 : 0));
  let total = 0;
  let valid = 0;
  let compliant = 0;
  for (const entry of list) {
    entry.validityRate = rate(entry.valid, entry.total);
    entry.complianceRate = rate(entry.compliant, entry.total);
    entry.invalidManifests.sort();
    entry.backups.sort((a, b) => (a.id < b.id ? 1 : a.id > b.id ? -1 : a.key < b.key ? 1 : -1));
    total += entry.total;
    valid += entry.valid;
    compliant += entry.compliant;
  }
  return {
    now: new Date(now).toISOString(),
    total,
    valid,
    compliant,
    validityRate: rate(valid, total),
    complianceRate: rate(compliant, total),
    jobs: list,
  };
}
