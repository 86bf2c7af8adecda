import type { z } from "zod";
import type { Manifest } from "../core/manifest.js";
import { durationSchema, lazySchema } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { InvalidManifestEntry, ValidationRules } from "./validation.js";

const countSchema = lazySchema((z) => z.union([z.number().int().nonnegative(), z.literal("unlimited")]));

/**
 * A retention policy. Every field is optional and they combine:
 *
 * - **Keep rules** (`keepLast`, `keepHourly` … `keepYearly`, `keepWithin`) each pick backups to
 *   keep; a backup is kept when ANY rule picks it, and its reasons list every rule that did.
 *   Calendar classes overlap as in restic: the newest backup of today can be at once the daily,
 *   the weekly and the monthly one, and it uses up one count of each. (The alternative —
 *   each backup counts for one class only — keeps more backups than asked for and surprises
 *   anyone coming from restic, Borg or Proxmox, which all overlap.)
 * - **`maxAge`** is a ceiling: a backup older than it is dropped even if a keep rule picked it
 *   (holds and the newest valid backup still win). With no keep rule, `maxAge` alone keeps
 *   every backup up to that age — the seeds' "30 days local, 90 days offsite, 7 years archive".
 * - **Holds** keep a backup whatever the policy says: a non-empty label named `holdLabel`
 *   (`hold=legal`), a `retainUntil` in the future, or an S3 Object Lock date in the future.
 * - **Chains**: a backup that a kept differential or incremental depends on (its parent, up to
 *   the full) is kept too, with the reason `needed by <id>`; a backup whose chain is broken is not
 *   valid (it cannot be the newest valid one). See `keepChainParents`.
 *
 * Counts are non-negative integers or `"unlimited"`; 0 turns a class off.
 */
export const retentionPolicySchema = lazySchema((z) =>
  z
    .object({
      /** Drop backups older than this ("30d", "90d", "7y"); see above. */
      maxAge: durationSchema.optional(),
      /** Keep the n newest backups. */
      keepLast: countSchema.optional(),
      /** Keep the newest backup of each of the n newest hours that have one (offset-aware, see `bucketOf`). */
      keepHourly: countSchema.optional(),
      /** Keep the newest backup of each of the n newest days that have one, in `timeZone`. */
      keepDaily: countSchema.optional(),
      /** Keep the newest backup of each of the n newest ISO weeks (Monday to Sunday) that have one. */
      keepWeekly: countSchema.optional(),
      /** Keep the newest backup of each of the n newest calendar months that have one. */
      keepMonthly: countSchema.optional(),
      /** Keep the newest backup of each of the n newest calendar years that have one. */
      keepYearly: countSchema.optional(),
      /** Keep every backup that started less than this long before `now` (not before the newest backup, as restic does). */
      keepWithin: durationSchema.optional(),
      /** The label that puts a backup on hold when it has any non-empty value. @default "hold" */
      holdLabel: z.string().min(1).default("hold"),
    })
    .strict(),
);
/** A retention policy (`planRetention`, a job's `retention`): the rules that keep backups; what no rule keeps is dropped. */
export interface RetentionPolicy {
  /** Drop backups older than this ("30d", "90d", "7y"); see above. */
  maxAge?: string;
  /** Keep the n newest backups. */
  keepLast?: number | "unlimited";
  /** Keep the newest backup of each of the n newest hours that have one (offset-aware, see `bucketOf`). */
  keepHourly?: number | "unlimited";
  /** Keep the newest backup of each of the n newest days that have one, in `timeZone`. */
  keepDaily?: number | "unlimited";
  /** Keep the newest backup of each of the n newest ISO weeks (Monday to Sunday) that have one. */
  keepWeekly?: number | "unlimited";
  /** Keep the newest backup of each of the n newest calendar months that have one. */
  keepMonthly?: number | "unlimited";
  /** Keep the newest backup of each of the n newest calendar years that have one. */
  keepYearly?: number | "unlimited";
  /** Keep every backup that started less than this long before `now` (not before the newest backup, as restic does). */
  keepWithin?: string;
  /** The label that puts a backup on hold when it has any non-empty value. @default "hold" */
  holdLabel?: string;
}
type _RetentionPolicyAgrees = Assert<Agrees<RetentionPolicy, z.input<typeof retentionPolicySchema>>>;
/** A retention policy after parsing: defaults filled in. */
export type ParsedRetentionPolicy = z.output<typeof retentionPolicySchema>;

export const planOptionsSchema = lazySchema((z) =>
  z
    .object({
      now: z.date({ error: "expected a valid Date" }),
      timeZone: z.string().min(1).default("UTC"),
      rules: z.record(z.string(), z.unknown()).optional(),
      invalid: z.array(z.looseObject({ key: z.string() })).optional(),
      allowDropAll: z.boolean().default(false),
      tierLabel: z.string().min(1).default("tier"),
    })
    .strict(),
);

/** Options for {@link planRetention}. */
export interface PlanRetentionOptions {
  /** The reference time for ages, `keepWithin`, `maxAge` and holds. Policies never read the clock. */
  now: Date;
  /** IANA zone the calendar buckets are computed in. @default "UTC" */
  timeZone?: string;
  /**
   * What "valid" means for the newest-valid rule (see {@link validateManifest}); without rules
   * every well-formed manifest is valid. Freshness (`maxAge`) is ignored here.
   */
  rules?: ValidationRules;
  /** `listManifests(...).invalid`: reported in the plan, never dropped. */
  invalid?: readonly InvalidManifestEntry[];
  /** Allow a plan that drops every backup of a group. @default false */
  allowDropAll?: boolean;
  /** A label that splits a job's backups into tiers planned apart (beside the sink kind). @default "tier" */
  tierLabel?: string;
}

/** The verdict on one backup. */
export interface RetentionDecision {
  /** Whether the backup is kept or dropped. */
  action: "keep" | "drop";
  /**
   * Why, most decisive first: `"hold legal"`, `"hold until …"`, `"object lock until …"`,
   * `"newest valid"`, `"empty policy"`, `"last 3"`, `"hourly 2026-10-25T02:00+02:00"`,
   * `"daily 2026-11-20"`, `"weekly 2026-W47"`, `"monthly 2026-11"`, `"yearly 2026"`,
   * `"within 30d"`, `"max age 30d"`; for drops `"older than 30d"` or `"not kept by any rule"`.
   */
  reasons: string[];
  /** The backup's job. */
  job: string;
  /** The sink kind, plus `/<tier label>` when the manifest has one. */
  tier: string;
  /** The backup's id. */
  id: string;
  /** When the backup started (ISO 8601). */
  startedAt: string;
  /** The artifact's key, deleted with the manifest on a drop. */
  artifactKey: string;
  /** The manifest's key. */
  manifestKey: string;
  /** Whether the backup passed validation (the rules in the options). */
  valid: boolean;
  /** The backup's manifest. */
  manifest: Manifest;
}

/** One group's totals: backups of one job in one tier. */
export interface RetentionGroup {
  /** The group's job. */
  job: string;
  /** The sink kind, plus `/<tier label>` when the manifests have one. */
  tier: string;
  /** Backups in the group. */
  total: number;
  /** Backups kept. */
  keep: number;
  /** Backups dropped. */
  drop: number;
  /** The id of the newest valid backup, which no policy drops; null if none is valid. */
  newestValid: string | null;
}

/** A manifest that could not be planned: reported, never dropped. */
export interface RetentionInvalid {
  /** The manifest's key. */
  key: string;
  /** The job its key belongs to. */
  job: string;
  /** The error's code (`MANIFEST_INVALID`…). */
  code: string;
  /** The error's message. */
  message: string;
}

/** What {@link planRetention} returns: serialisable as JSON. */
export interface RetentionPlan {
  /** The plan's `now` (ISO 8601). */
  now: string;
  /** The time zone calendar rules were applied in. */
  timeZone: string;
  /** The policy, parsed. */
  policy: ParsedRetentionPolicy;
  /** True when the policy has no keep rule and no `maxAge`: it keeps everything. */
  emptyPolicy: boolean;
  /** One entry a (job, tier) group. */
  groups: RetentionGroup[];
  /** Every backup, grouped (job, tier), newest first within a group. */
  decisions: RetentionDecision[];
  /** The decisions that keep, in the same order (the same objects as in `decisions`). */
  keep: RetentionDecision[];
  /** The decisions that drop, in the same order (the same objects as in `decisions`). */
  drop: RetentionDecision[];
  /** Manifests that could not be read. */
  invalid: RetentionInvalid[];
}
