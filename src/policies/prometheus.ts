/**
 * The status report as Prometheus metrics: one list of families (pure, from the report), written
 * as the text exposition format by {@link formatPrometheus} and handed to prom-client by
 * `statusCollector` (src/jobs/metrics.ts), so both show the same names, help and labels.
 *
 * Names follow Prometheus's conventions (`promtool check metrics` passes): base units in the name
 * (`_seconds`, `_bytes`), `_total` only on counters (all of these are gauges: they describe what
 * is stored now, which can go down), and the backup job's name in the label `backup_job`, because
 * `job` is the label Prometheus itself sets to the scrape target's job and would rename ours to
 * `exported_job`.
 */
import type { JobStatus, StatusReport } from "./status.js";

/** One sample: its labels and value. */
export interface MetricSample {
  /** Label name to value; the names are the family's `labelNames`. */
  labels: Record<string, string>;
  /** The sample's value, in the family's unit (seconds, bytes or a count, as its name says). */
  value: number;
}

/** One metric family: every sample shares its name, help, type and label names. */
export interface MetricFamily {
  /** The metric name, `stowage_…`, ending in its unit where it has one (`_seconds`, `_bytes`). */
  name: string;
  /** The `# HELP` text. */
  help: string;
  /** The `# TYPE`: every family is a gauge, read from the latest report. */
  type: "gauge";
  /** The names of the labels each sample carries (`backup_job`, `kind`…). */
  labelNames: readonly string[];
  /** One sample per label combination (per job, or per job and kind). */
  samples: MetricSample[];
}

/** The label that carries the backup job's name (not `job`: see the module's comment). */
export const JOB_LABEL = "backup_job";

type Value = number | null | undefined;
type Kind = "stored" | "plain";

/** A family's name, help and labels, and how its value is read from the report. */
export interface MetricFamilySpec {
  name: string;
  help: string;
  labelNames: readonly string[];
  samples(report: StatusReport): Array<[Record<string, string>, Value]>;
}

const perJob = (name: string, help: string, pick: (j: JobStatus) => Value): MetricFamilySpec => ({
  name,
  help,
  labelNames: [JOB_LABEL],
  samples: (report) => report.jobs.map((j) => [{ [JOB_LABEL]: j.job }, pick(j)]),
});

const perKind = (
  name: string,
  help: string,
  pick: (j: JobStatus, kind: Kind) => Value,
): MetricFamilySpec => ({
  name,
  help,
  labelNames: [JOB_LABEL, "kind"],
  samples: (report) =>
    report.jobs.flatMap((j) =>
      (["stored", "plain"] as const).map((kind): [Record<string, string>, Value] => [
        { [JOB_LABEL]: j.job, kind },
        pick(j, kind),
      ]),
    ),
});

const seconds = (iso: string | undefined) => (iso === undefined ? null : Date.parse(iso) / 1000);

/** Every family, in the order they are written. */
export const STATUS_FAMILIES: readonly MetricFamilySpec[] = [
  perJob(
    "stowage_last_backup_timestamp_seconds",
    "Start time of the newest backup of the job, in seconds since the Unix epoch.",
    (j) => seconds(j.last?.startedAt),
  ),
  perJob(
    "stowage_last_valid_backup_timestamp_seconds",
    "Start time of the newest backup of the job that passes validation, in seconds since the Unix epoch.",
    (j) => seconds(j.lastValid?.startedAt),
  ),
  perJob(
    "stowage_last_backup_age_seconds",
    "Seconds from the start of the newest backup of the job to the report time.",
    (j) => j.ageSeconds,
  ),
  perKind(
    "stowage_last_backup_size_bytes",
    "Size of the newest backup of the job: stored (after compression and encryption) or plain.",
    (j, kind) => (j.last ? (kind === "stored" ? j.last.storedBytes : j.last.plainBytes) : null),
  ),
  perJob(
    "stowage_backups",
    "Backups of the job currently stored (with a readable manifest).",
    (j) => j.count,
  ),
  perKind(
    "stowage_backup_bytes",
    "Bytes of all stored backups of the job: stored (after compression and encryption) or plain.",
    (j, kind) => (kind === "stored" ? j.storedBytes : j.plainBytes),
  ),
  perJob("stowage_backups_valid", "Backups of the job that pass the validity rules.", (j) => j.valid),
  perJob(
    "stowage_backups_compliant",
    "Valid backups of the job that also meet the compliance rules.",
    (j) => j.compliant,
  ),
  perJob(
    "stowage_invalid_manifests",
    "Manifests of the job that cannot be read or parsed.",
    (j) => j.invalidManifests,
  ),
  perJob(
    "stowage_compliance_ratio",
    "Compliant backups of the job divided by all its backups.",
    (j) => j.complianceRate,
  ),
  perJob("stowage_rpo_seconds", "The recovery point objective of the job, in seconds.", (j) => j.rpoSeconds),
  perJob(
    "stowage_rpo_breached",
    "1 when the newest valid backup of the job is older than its RPO (or there is none), else 0.",
    (j) => (j.rpoBreached === null ? null : j.rpoBreached ? 1 : 0),
  ),
  perJob("stowage_job_healthy", "1 when the job's status is ok, else 0.", (j) => (j.status === "ok" ? 1 : 0)),
  perJob(
    "stowage_wal_last_archived_timestamp_seconds",
    "When the newest WAL segment of the job was archived, in seconds since the Unix epoch.",
    (j) => seconds(j.wal?.newestArchivedAt ?? undefined),
  ),
  perJob(
    "stowage_wal_archive_age_seconds",
    "Seconds since the newest WAL segment of the job was archived: the archive's recovery point.",
    (j) => j.wal?.rpoSeconds,
  ),
  perJob(
    "stowage_wal_archiver_lag_segments",
    "WAL segments from the newest archived one to the one the server writes (1 is normal).",
    (j) => j.wal?.lagSegments,
  ),
  perJob(
    "stowage_wal_archiver_failing",
    "1 when the server's WAL archiver failed after its last success (pg_stat_archiver), else 0.",
    (j) => (j.wal?.failing == null ? null : j.wal.failing ? 1 : 0),
  ),
  perJob(
    "stowage_wal_gaps",
    "Holes in the job's archived WAL sequences, all timelines.",
    (j) => j.wal?.gaps.length,
  ),
  {
    name: "stowage_status_timestamp_seconds",
    help: "When this report was computed, in seconds since the Unix epoch.",
    labelNames: [],
    samples: (report) => [[{}, Date.parse(report.generatedAt) / 1000]],
  },
];

/**
 * The families for a report, in a stable order. A job with no backup has no `last_*` samples
 * (absent, not 0, so `time() - x` alerts stay honest); a family with no sample at all is left out.
 *
 * - `stowage_last_backup_timestamp_seconds{backup_job}` start of the newest backup (Unix seconds)
 * - `stowage_last_valid_backup_timestamp_seconds{backup_job}` start of the newest valid backup
 * - `stowage_last_backup_age_seconds{backup_job}`
 * - `stowage_last_backup_size_bytes{backup_job,kind="stored"|"plain"}`
 * - `stowage_backups{backup_job}` backups stored now
 * - `stowage_backup_bytes{backup_job,kind="stored"|"plain"}` bytes of all stored backups
 * - `stowage_backups_valid`, `stowage_backups_compliant`, `stowage_invalid_manifests` (per job)
 * - `stowage_compliance_ratio{backup_job}` compliant / all (absent for a job without backups)
 * - `stowage_rpo_seconds`, `stowage_rpo_breached` (0/1; only for jobs with an RPO)
 * - `stowage_job_healthy{backup_job}` 1 for ok, else 0; `stowage_status_timestamp_seconds`
 * - for jobs whose WAL archive was given: `stowage_wal_last_archived_timestamp_seconds`,
 *   `stowage_wal_archive_age_seconds` (the archive's RPO), `stowage_wal_archiver_lag_segments`
 *   and `stowage_wal_archiver_failing` (when the server was asked), `stowage_wal_gaps`
 */
export function statusMetrics(report: StatusReport): MetricFamily[] {
  return STATUS_FAMILIES.flatMap((spec) => {
    const samples = spec
      .samples(report)
      .flatMap(([labels, value]) => (value === null || value === undefined ? [] : [{ labels, value }]));
    return samples.length > 0
      ? [{ name: spec.name, help: spec.help, type: "gauge" as const, labelNames: spec.labelNames, samples }]
      : [];
  });
}

/** Escapes a label value for the Prometheus text format: backslash, double quote, newline. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

const escapeHelp = (text: string) => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function sampleValue(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Number.POSITIVE_INFINITY) return "+Inf";
  if (n === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(n);
}

/**
 * The report in the Prometheus text exposition format (version 0.0.4), for a textfile
 * collector or a `/metrics` handler. Every family has `# HELP` and `# TYPE` lines; label values
 * are escaped. The families are those of {@link statusMetrics}. If you already run prom-client,
 * `statusCollector` registers the same metrics in your registry instead.
 *
 * @example res.setHeader("content-type", "text/plain; version=0.0.4"); res.end(formatPrometheus(report));
 */
export function formatPrometheus(report: StatusReport): string {
  const out: string[] = [];
  for (const family of statusMetrics(report)) {
    out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
    for (const { labels, value } of family.samples) {
      const text = Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
        .join(",");
      out.push(`${family.name}${text ? `{${text}}` : ""} ${sampleValue(value)}`);
    }
  }
  return `${out.join("\n")}\n`;
}
