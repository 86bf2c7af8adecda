/**
 * Pure policies over manifests: retention, validation and status. No I/O, no clock, no
 * environment — `now` and the manifests are arguments.
 */
export {
  assertTimeZone,
  bucketOf,
  type CalendarPeriod,
  isoWeek,
  type LocalTime,
  localTime,
} from "./calendar.js";
export { COPY_PERIODS, type CopyDue, type CopyPeriod, copyDue, startOfBackupKey } from "./copies.js";
export { chainFindings, keepChainParents } from "./incremental-chains.js";
export {
  escapeLabelValue,
  formatPrometheus,
  JOB_LABEL,
  type MetricFamily,
  type MetricSample,
  statusMetrics,
} from "./prometheus.js";
export {
  lockedUntil,
  OBJECT_LOCK_LABELS,
  type ParsedRetentionPolicy,
  type PlanRetentionOptions,
  planRetention,
  type RetentionDecision,
  type RetentionGroup,
  type RetentionInvalid,
  type RetentionPlan,
  type RetentionPolicy,
  retentionPolicySchema,
} from "./retention.js";
export { type SelectBackupOptions, selectBackup } from "./select.js";
export {
  type BackupBrief,
  formatBytes,
  formatDuration,
  formatStatusText,
  type HealthStatus,
  type JobStatus,
  type StatusReport,
  type SummarizeOptions,
  summarize,
} from "./status.js";
export {
  type BackupFindings,
  type Finding,
  type FindingKind,
  type InvalidManifestEntry,
  type JobValidation,
  passesValidation,
  type RuleId,
  type ValidateBackupsOptions,
  type ValidateOptions,
  type ValidationReport,
  type ValidationRules,
  type ValidationSummary,
  validateBackups,
  validateManifest,
  validationRulesSchema,
} from "./validation.js";
// PostgreSQL WAL archives (point-in-time recovery).
export {
  findWalGaps,
  planWalRetention,
  type WalArchiveStatus,
  type WalDecision,
  type WalFile,
  type WalGap,
  type WalRetentionPlan,
  walArchiveStatus,
} from "./wal.js";
export {
  type ArchiverStats,
  type JobWalStatus,
  type WalGapFinding,
  type WalInput,
  walGapFindings,
  walJobStatus,
} from "./wal-report.js";
