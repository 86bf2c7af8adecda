/**
 * Jobs: defineJob, the backup cycle (runJobs), the scheduler, the audit trail and restore drills.
 * Exported from the root entry and from `stowage/jobs`.
 */
export {
  AUDIT_ACTIONS,
  type AuditAction,
  type AuditEntry,
  type AuditEntryInput,
  type AuditLogOptions,
  type AuditTrail,
  auditEntrySchema,
  auditLog,
  type FileAuditOptions,
  readAuditLog,
  redactLocation,
  type SinkAuditOptions,
} from "./audit.js";
export {
  hasKindSchedules,
  KIND_ORDER,
  largerKindDue,
  pickBase,
  schedulesOf,
  sourceForRun,
} from "./chain-plan.js";
export { defineConfig, type StowageConfig, type StowageConfigInput, stowageConfigSchema } from "./config.js";
export {
  type CopyResult,
  type CycleResult,
  type JobError,
  type JobResult,
  type JobStage,
  type PruneJobOptions,
  pruneJob,
  type RetentionResult,
  type RunJobOptions,
  type RunJobsOptions,
  runJob,
  runJobs,
} from "./cycle.js";
export {
  type DrillCheck,
  type DrillCheckContext,
  type DrillObjective,
  type DrillReport,
  type DrillStage,
  type DrillTarget,
  type RestoreDrillOptions,
  restoreDrill,
  restoreDrillOptionsSchema,
} from "./drill.js";
export {
  type DrillRunReport,
  type RunDrillsOptions,
  runDrills,
  runDrillsOptionsSchema,
} from "./drill-run.js";
export { type FanOutSink, type FanOutTarget, fanOutSink } from "./fan-out.js";
export {
  type CopyTarget,
  cronPatternSchema,
  defineJob,
  isJob,
  type Job,
  type JobCopyOptions,
  type JobObjectives,
  type JobOptions,
  jobSchema,
  kindSchedulesSchema,
  objectivesSchema,
  type RetentionPolicy,
  timeZoneSchema,
  type ValidationRules,
} from "./job.js";
export { type JobLock, type JobLockOptions, jobLockOptionsSchema, jobLockSchema } from "./lock-run.js";
export { isLogger, type Logger, silentLogger } from "./logger.js";
export { type PromClientLike, type StatusCollectorOptions, statusCollector } from "./metrics.js";
export {
  type DrillEvent,
  type ScheduledDrill,
  type Scheduler,
  type SchedulerEvent,
  type StartSchedulerOptions,
  scheduledDrillSchema,
  startScheduler,
  startSchedulerOptionsSchema,
} from "./scheduler.js";
