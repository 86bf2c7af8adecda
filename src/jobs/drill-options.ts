import type { z } from "zod";
import type { Manifest } from "../core/manifest.js";
import { durationSchema, lazySchema, signalSchema, sinkSchema } from "../core/options.js";
import { restoreTargetSchema } from "../core/restore-target.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { DecryptionKey, Sink } from "../core/types.js";
import type { AuditTrail } from "./audit.js";
import { type DrillTarget, isPlainTarget } from "./drill-target.js";
import { isJob, type Job } from "./job.js";
import { isLogger, type Logger } from "./logger.js";

/** What a drill's `check` receives. */
export interface DrillCheckContext {
  /** The manifest of the backup drilled. */
  manifest: Manifest;
  /** The target's kind. */
  target: string;
  /** directory: the folder the backup was restored into. */
  directory?: string;
  /** directory, non-tar content: the file the plain bytes were written to. */
  file?: string;
  /** postgres: the scratch database (on the target's connection). */
  database?: string;
  /** postgres: the rows of the target's `query`. */
  rows?: Array<Record<string, unknown>>;
  /** kubernetes: the dry run's report (`restoreKubernetes`'s, with `counts` by status). */
  kubernetes?: {
    /** Always true in a drill: the objects are checked by the server, never applied. */
    dryRun: boolean;
    /** Objects by outcome ("created", "unchanged", "failed"…). */
    counts: Record<string, number>;
    /** One entry an object: its kind, name and outcome. */
    results: Array<Record<string, unknown>>;
  };
  /** http: the requests sent and the services skipped (`restoreHttp`'s result). */
  http?: Record<string, unknown>;
  /** Plain bytes restored. */
  bytes: number;
  /** Aborted when the drill is; a check that waits should honour it. */
  signal: AbortSignal;
  /** Any other fact a target reports (`RestoreTargetResult.facts`). */
  [fact: string]: unknown;
}

/**
 * A drill's check: throw or return `false` (or `{ ok: false }`) to fail the drill; return
 * `{ ok: true, details }` to put facts (row counts...) in the report.
 */
export type DrillCheck = (context: DrillCheckContext) =>
  | unknown
  | boolean
  | {
      /** Whether the restored copy passed. */
      ok: boolean;
      /** Facts for the report (row counts…). */
      details?: Record<string, unknown>;
    };

/** The zod schema of {@link RestoreDrillOptions}; `restoreDrill` parses its options with it. */
export const restoreDrillOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The job to drill (its sink and keys are the defaults), or a job name with `sink`. */
      job: z.union([z.custom<Job>(isJob, "expected a job from defineJob"), z.string().min(1)]),
      /** Where to take the backup from (a copy's sink, to drill the offsite copy). @default the job's sink */
      sink: sinkSchema.optional(),
      /** Keys that decrypt the backup. @default the job's keys */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).optional(),
      target: z.union([
        restoreTargetSchema,
        z.custom<DrillTarget>(
          (v) => isPlainTarget(v) && (v.kind === "directory" || v.kind === "stream"),
          'expected a RestoreTarget (postgresRestoreTarget(…), kubernetesRestoreTarget(…)…) or { kind: "directory" | "stream" }',
        ),
      ]),
      check: z.custom<DrillCheck>((v) => typeof v === "function", "expected a function").optional(),
      /** The clock RPO is measured against. @default () => new Date() */
      now: z.union([z.date(), z.custom<() => Date>((v) => typeof v === "function")]).optional(),
      /** Drill the latest backup at or before this time instead of the latest. */
      at: z.union([z.date(), z.string()]).optional(),
      /**
       * The recovery point objective: the drill fails when the backup is older than this.
       * @default the job's `objectives.rpo`
       */
      rpo: durationSchema.optional(),
      /**
       * The recovery time objective: the drill fails when restore and check take longer.
       * @default the job's `objectives.rto`
       */
      rto: durationSchema.optional(),
      audit: z.custom<AuditTrail>((v) => typeof v === "object" && v !== null && "record" in v).optional(),
      logger: z.custom<Logger>(isLogger, "expected a logger").optional(),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** Options of {@link restoreDrill}. */
export interface RestoreDrillOptions {
  /** The job to drill (its sink and keys are the defaults), or a job name with `sink`. */
  job: string | Job;
  /** Where to restore for the drill: a scratch database, folder, namespace or endpoint. */
  target: DrillTarget;
  /** Where to take the backup from (a copy's sink, to drill the offsite copy). @default the job's sink */
  sink?: Sink;
  /** Keys that decrypt the backup. @default the job's keys */
  keys?: DecryptionKey[];
  /** Runs after the restore; a throw or `false` fails the drill (row counts, a health query…). */
  check?: DrillCheck;
  /** The clock RPO is measured against. @default () => new Date() */
  now?: Date | (() => Date);
  /** Drill the latest backup at or before this time instead of the latest. */
  at?: string | Date;
  /**
   * The recovery point objective: the drill fails when the backup is older than this.
   * @default the job's `objectives.rpo`
   */
  rpo?: string;
  /**
   * The recovery time objective: the drill fails when restore and check take longer.
   * @default the job's `objectives.rto`
   */
  rto?: string;
  /** Where the drill is recorded. */
  audit?: AuditTrail;
  /** pino-compatible. @default silent */
  logger?: Logger;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestoreDrillOptionsAgrees = Assert<
  Agrees<RestoreDrillOptions, z.input<typeof restoreDrillOptionsSchema>>
>;

/** The stage of a drill an error belongs to. */
export type DrillStage = "select" | "verify" | "restore" | "check" | "cleanup" | "objective" | "audit";

/** One objective a drill measured: the limit, whether it was met, and its class if the job names one. */
export interface DrillObjective {
  /** The limit, in milliseconds. */
  limitMs: number;
  /** Whether the measured value was within the limit. */
  met: boolean;
  /** The job's class for the limit (`objectives.rtoClass`…), when it names one. */
  class?: string;
}

/** The drill's JSON report. */
export interface DrillReport {
  /** True when every stage passed and every objective was met. */
  ok: boolean;
  /** The job drilled. */
  job: string;
  /** The target's kind. */
  target: string;
  /** When the drill started (ISO 8601). */
  startedAt: string;
  /** When the drill ended (ISO 8601). */
  finishedAt: string;
  /** The backup drilled. */
  backup?: {
    /** The backup's id. */
    id: string;
    /** Its artifact's key in the sink. */
    key: string;
    /** The sink's kind. */
    sink: string;
    /** The artifact's location URI. */
    location: string;
    /** When the backup started (ISO 8601). */
    startedAt: string;
    /** When the backup finished (ISO 8601). */
    finishedAt: string;
    /** Stored bytes. */
    bytes: number;
    /** Plain bytes. */
    plainBytes: number;
  };
  /** Age of the backup's snapshot (its start) at the drill's `now`: the data a restore would lose. */
  rpoMs: number | null;
  /** Time from the start of the restore to a checked, usable copy (restore + check). */
  rtoMs: number | null;
  /**
   * The measured RPO and RTO against the limits (the options', else the job's `objectives`), with
   * the class a limit comes from when the job names one (`objectives.rtoClass`: "critical"...).
   */
  objectives: {
    /** The backup's age against the RPO. */
    rpo?: DrillObjective;
    /** The restore and check time against the RTO. */
    rto?: DrillObjective;
  };
  /** The verification of the stored bytes before the restore. */
  verify?: {
    /** Whether it passed. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** Whether the plain bytes were checked too (keys were given). */
    plainChecked: boolean;
    /** What was wrong, when it failed. */
    problems: string[];
  };
  /** The restore into the target. */
  restore?: {
    /** Whether it succeeded. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** Plain bytes restored. */
    bytes: number;
    /** What the target reported. */
    details: Record<string, unknown>;
  };
  /** The user's check, when one was given. */
  check?: {
    /** Whether it passed. */
    ok: boolean;
    /** How long it took. */
    durationMs: number;
    /** The facts it returned. */
    details?: Record<string, unknown>;
  };
  /** The removal of the scratch target. */
  cleanup: {
    /** Whether the scratch copy was removed. */
    ok: boolean;
  };
  /** What failed, stage by stage. */
  errors: Array<{
    /** The stage that failed. */
    stage: DrillStage;
    /** The error's code (`INTEGRITY_MISMATCH`…). */
    code: string;
    /** The error's message. */
    message: string;
  }>;
}
