import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../core/manifest.js";
import {
  durationSchema,
  lazySchema,
  parseDuration,
  parseOptions,
  parseOptionsOnce,
} from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { assertTimeZone, bucketOf, type CalendarPeriod, type LocalTime, localTime } from "./calendar.js";
import { chainFindings, keepChainParents } from "./incremental-chains.js";
import { epochOf } from "./instant.js";
import {
  compileRules,
  findingsOf,
  type InvalidManifestEntry,
  jobOfKey,
  passesValidation,
  type ValidationRules,
} from "./validation.js";

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

const planOptionsSchema = lazySchema((z) =>
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

const PERIODS: ReadonlyArray<[keyof ParsedRetentionPolicy, CalendarPeriod]> = [
  ["keepHourly", "hourly"],
  ["keepDaily", "daily"],
  ["keepWeekly", "weekly"],
  ["keepMonthly", "monthly"],
  ["keepYearly", "yearly"],
];

/** Labels an S3 Object Lock date may be recorded under (ISO time); see {@link lockedUntil}. */
export const OBJECT_LOCK_LABELS = ["object-lock-until", "objectLockRetainUntil"] as const;

/**
 * The S3 Object Lock retain-until date of a backup, if its manifest records one. The S3 sink
 * reports its lock date to `backup()`, which records it as the manifest's `retainUntil` (a hold
 * planRetention honours anyway); this also reads it where other tools put it: a label
 * `object-lock-until` or `objectLockRetainUntil`, or a field `objectLock.retainUntil` /
 * `artifact.objectLock.retainUntil` / `artifact.objectLockRetainUntil` (ISO time).
 * An unreadable date is returned as NaN, which retention treats as locked.
 */
export function lockedUntil(manifest: Manifest):
  | {
      /** The date as recorded (ISO 8601). */
      text: string;
      /** The date in epoch milliseconds. */
      ms: number;
    }
  | undefined {
  const loose = manifest as unknown as {
    objectLock?: { retainUntil?: unknown };
    artifact?: { objectLock?: { retainUntil?: unknown }; objectLockRetainUntil?: unknown };
  };
  const candidates: unknown[] = [
    ...OBJECT_LOCK_LABELS.map((l) => manifest.labels?.[l]),
    loose.objectLock?.retainUntil,
    loose.artifact?.objectLock?.retainUntil,
    loose.artifact?.objectLockRetainUntil,
  ];
  let best: { text: string; ms: number } | undefined;
  for (const value of candidates) {
    if (value === undefined || value === null || value === "") continue;
    const text = value instanceof Date ? value.toISOString() : String(value);
    const ms = value instanceof Date ? value.getTime() : Date.parse(text);
    if (Number.isNaN(ms)) return { text, ms: Number.NaN };
    if (!best || ms > best.ms) best = { text, ms };
  }
  return best;
}

/** The holds that keep a backup at `now`, as reasons. */
function holdsOf(manifest: Manifest, holdLabel: string, now: number): string[] {
  const reasons: string[] = [];
  const label = manifest.labels?.[holdLabel];
  if (typeof label === "string" && label !== "") reasons.push(label === holdLabel ? "hold" : `hold ${label}`);
  if (manifest.retainUntil !== undefined) {
    const until = Date.parse(manifest.retainUntil);
    // An unreadable date keeps the backup: when in doubt, do not delete.
    if (Number.isNaN(until) || until > now) reasons.push(`hold until ${manifest.retainUntil}`);
  }
  const lock = lockedUntil(manifest);
  if (lock && (Number.isNaN(lock.ms) || lock.ms > now)) reasons.push(`object lock until ${lock.text}`);
  return reasons;
}

/** Why a manifest cannot be planned, or undefined when it has what planning needs. */
function malformed(m: unknown): string | undefined {
  const x = m as Partial<Manifest> | null;
  if (typeof x !== "object" || x === null) return "not an object";
  if (typeof x.job !== "string" || x.job === "") return "job";
  if (typeof x.id !== "string" || x.id === "") return "id";
  if (typeof x.startedAt !== "string" || Number.isNaN(epochOf(x.startedAt))) return "startedAt";
  if (typeof x.artifact !== "object" || x.artifact === null) return "artifact";
  if (typeof x.artifact.key !== "string" || x.artifact.key === "") return "artifact.key";
  if (typeof x.artifact.sink !== "string" || x.artifact.sink === "") return "artifact.sink";
  if (typeof x.labels !== "object" || x.labels === null) return "labels";
  if (!Array.isArray(x.transforms)) return "transforms";
  if (typeof x.content !== "object" || x.content === null) return "content";
  return undefined;
}

interface Entry {
  manifest: Manifest;
  time: number;
  /** Wall-clock time in the plan's zone, computed on first use. */
  local?: LocalTime;
  tier: string;
  reasons: string[];
  protect: boolean;
  keptByRule: boolean;
  valid: boolean;
}

const cmpNewestFirst = (a: Entry, b: Entry) =>
  b.time - a.time ||
  (a.manifest.id < b.manifest.id ? 1 : a.manifest.id > b.manifest.id ? -1 : 0) ||
  (a.manifest.artifact.key < b.manifest.artifact.key
    ? 1
    : a.manifest.artifact.key > b.manifest.artifact.key
      ? -1
      : 0);

const countOf = (n: number | "unlimited" | undefined) =>
  n === "unlimited" ? Number.POSITIVE_INFINITY : (n ?? 0);

/**
 * Decides, for every backup, keep or drop, and says why. Pure: no I/O, no clock; the same
 * manifests, policy and `now` give the same plan whatever order the manifests come in.
 *
 * Backups are planned per group — one job in one tier (the sink kind, and the `tier` label when
 * present) — never across jobs or tiers. Within a group they are ordered by start time, newest
 * first (ties broken by id, then key). Calendar buckets are computed in `timeZone` (IANA, default
 * UTC) with ISO weeks. See {@link retentionPolicySchema} for how rules combine.
 *
 * Safety rules no policy overrides:
 * - the newest backup that passes validation (`rules`, freshness aside) and did not start after
 *   `now` is never dropped (if every valid backup is future-dated, the newest of them);
 * - an empty policy (no keep rule, no `maxAge`) drops nothing;
 * - held backups (label, `retainUntil`, Object Lock) are never dropped;
 * - a manifest that is malformed, or listed in `invalid`, is reported in `plan.invalid`, never dropped;
 * - a plan that would drop every backup of a group throws `RETENTION_REFUSED` unless `allowDropAll`.
 *
 * Where this differs from restic's `forget` (tested against restic's own golden vectors):
 * - restic also keeps the oldest backup of the whole list in any count class that has count left
 *   ("oldest yearly snapshot"); stowage does not: a class keeps at most one backup per bucket,
 *   the newest, so `keepYearly: 10` means at most ten backups;
 * - restic's `--keep-within` counts back from the newest snapshot; stowage's `keepWithin` counts
 *   from `now`, so a job that stopped backing up ages out of it (the newest valid rule still holds);
 *   like restic, a backup exactly `keepWithin` old is outside it (`now - start < keepWithin`);
 * - an empty policy keeps everything (restic's ApplyPolicy keeps nothing; its CLI refuses);
 * - restic's durations know calendar months and years; stowage's `"1y"` is 365.25 days;
 * - restic buckets each snapshot by its own stored offset; stowage converts to `timeZone`;
 * - ties: restic keeps input order among equal times; stowage orders by id, so the result does
 *   not depend on listing order.
 *
 * @throws {CONFIG_INVALID} for a bad policy, option or time zone, naming it.
 * @throws {RETENTION_REFUSED} when a group would lose every backup and `allowDropAll` is not set;
 *   `details.groups` names them.
 * @example
 * const { manifests, invalid } = await listManifests(sink, { job: "app-db" });
 * const plan = planRetention(manifests, { keepDaily: 7, keepWeekly: 4, keepMonthly: 12, maxAge: "1y" },
 *   { now: new Date(), timeZone: "Europe/Berlin", invalid,
 *     rules: { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } } });
 * for (const d of plan.decisions) console.log(d.action, d.id, d.reasons.join(", "));
 */
export function planRetention(
  manifests: readonly Manifest[],
  policy: RetentionPolicy,
  options: PlanRetentionOptions,
): RetentionPlan {
  // A job plans with the same policy on every run: parsed once per distinct policy.
  const p = parseOptionsOnce(retentionPolicySchema, policy ?? {}, "planRetention");
  const o = parseOptions(planOptionsSchema, options, "planRetention");
  const timeZone = assertTimeZone(o.timeZone);
  const now = o.now.getTime();
  const rules = compileRules(o.rules as ValidationRules | undefined, "planRetention", "rules");
  const maxAgeMs = p.maxAge === undefined ? undefined : parseDuration(p.maxAge, "maxAge");
  const withinMs = p.keepWithin === undefined ? undefined : parseDuration(p.keepWithin, "keepWithin");
  const counts = {
    last: countOf(p.keepLast),
    periods: PERIODS.map(([field, period]) => [period, countOf(p[field] as number | "unlimited")] as const),
  };
  const hasKeepRule = counts.last > 0 || counts.periods.some(([, n]) => n > 0) || withinMs !== undefined;
  const emptyPolicy = !hasKeepRule && maxAgeMs === undefined;

  const invalid: RetentionInvalid[] = (o.invalid ?? []).map((bad) => {
    const error = (bad as { error?: { code?: unknown; message?: unknown } }).error;
    return {
      key: bad.key,
      job: jobOfKey(bad.key),
      code: typeof error?.code === "string" ? error.code : "MANIFEST_INVALID",
      message: typeof error?.message === "string" ? error.message : "manifest could not be read",
    };
  });

  const brokenChains = chainFindings(manifests.filter((m) => !malformed(m)));
  const groups = new Map<string, Entry[]>();
  for (const manifest of manifests) {
    const problem = malformed(manifest);
    if (problem) {
      const key = (manifest as { artifact?: { key?: unknown } } | null)?.artifact?.key;
      const name = typeof key === "string" && key ? key + MANIFEST_SUFFIX : "(unknown)";
      invalid.push({
        key: name,
        job: typeof manifest?.job === "string" && manifest.job ? manifest.job : jobOfKey(name),
        code: "MANIFEST_INVALID",
        message: `manifest cannot be planned: ${problem} is missing or malformed`,
      });
      continue;
    }
    const tierLabel = manifest.labels[o.tierLabel];
    const tier = tierLabel ? `${manifest.artifact.sink}/${tierLabel}` : manifest.artifact.sink;
    const groupKey = `${manifest.job}\u0000${tier}`;
    let group = groups.get(groupKey);
    if (!group) {
      group = [];
      groups.set(groupKey, group);
    }
    group.push({
      manifest,
      time: epochOf(manifest.startedAt),
      tier,
      reasons: [],
      protect: false,
      keptByRule: false,
      valid: passesValidation(findingsOf(manifest, rules, now)) && !brokenChains.has(manifest),
    });
  }

  const planGroups: RetentionGroup[] = [];
  const decisions: RetentionDecision[] = [];
  const refused: Array<{ job: string; tier: string; backups: number }> = [];
  const groupKeys = [...groups.keys()].sort();

  for (const groupKey of groupKeys) {
    const sorted = groups.get(groupKey)!.sort(cmpNewestFirst);
    // The same artifact listed twice is one backup.
    const entries = sorted.filter(
      (e, i) =>
        i === 0 ||
        e.manifest.artifact.key !== sorted[i - 1]!.manifest.artifact.key ||
        e.time !== sorted[i - 1]!.time,
    );
    const byRule = new Map<Entry, string[]>(entries.map((e) => [e, []]));

    for (const e of entries) {
      const holds = holdsOf(e.manifest, p.holdLabel, now);
      if (holds.length > 0) {
        e.reasons.push(...holds);
        e.protect = true;
      }
    }
    const newestValid = entries.find((e) => e.valid && e.time <= now) ?? entries.find((e) => e.valid);
    if (newestValid) {
      newestValid.reasons.push("newest valid");
      newestValid.protect = true;
    }

    if (emptyPolicy) {
      for (const e of entries) byRule.get(e)!.push("empty policy");
    }
    if (counts.last > 0) {
      entries.slice(0, Math.min(entries.length, counts.last)).forEach((e) => {
        byRule.get(e)!.push(`last ${p.keepLast}`);
      });
    }
    for (const [period, n] of counts.periods) {
      if (n <= 0) continue;
      let left = n;
      const seen = new Set<string>();
      for (const e of entries) {
        if (left <= 0) break;
        e.local ??= localTime(e.time, timeZone);
        const bucket = bucketOf(e.local, period);
        if (seen.has(bucket)) continue;
        seen.add(bucket);
        byRule.get(e)!.push(`${period} ${bucket}`);
        left--;
      }
    }
    if (withinMs !== undefined) {
      for (const e of entries) if (now - e.time < withinMs) byRule.get(e)!.push(`within ${p.keepWithin}`);
    }
    if (!hasKeepRule && maxAgeMs !== undefined) {
      for (const e of entries) if (now - e.time <= maxAgeMs) byRule.get(e)!.push(`max age ${p.maxAge}`);
    }

    const groupDecisions: RetentionDecision[] = [];
    for (const e of entries) {
      const ruled = byRule.get(e)!;
      const tooOld = maxAgeMs !== undefined && now - e.time > maxAgeMs;
      let action: "keep" | "drop";
      if (e.protect) {
        action = "keep";
        e.reasons.push(...(tooOld ? [] : ruled));
      } else if (ruled.length > 0 && !tooOld) {
        action = "keep";
        e.reasons.push(...ruled);
      } else {
        action = "drop";
        e.reasons.push(tooOld ? `older than ${p.maxAge}` : "not kept by any rule");
      }
      groupDecisions.push({
        action,
        reasons: e.reasons,
        job: e.manifest.job,
        tier: e.tier,
        id: e.manifest.id,
        startedAt: e.manifest.startedAt,
        artifactKey: e.manifest.artifact.key,
        manifestKey: e.manifest.artifact.key + MANIFEST_SUFFIX,
        valid: e.valid,
        manifest: e.manifest,
      });
    }
    // A kept incremental needs its parents, whatever the rules said of them.
    keepChainParents(groupDecisions);
    decisions.push(...groupDecisions);
    const keep = groupDecisions.filter((d) => d.action === "keep").length;
    const first = entries[0]!;
    planGroups.push({
      job: first.manifest.job,
      tier: first.tier,
      total: entries.length,
      keep,
      drop: entries.length - keep,
      newestValid: newestValid?.manifest.id ?? null,
    });
    if (keep === 0) refused.push({ job: first.manifest.job, tier: first.tier, backups: entries.length });
  }

  if (refused.length > 0 && !o.allowDropAll) {
    const names = refused.map((r) => `${r.job} (${r.tier}, ${r.backups} backups)`).join(", ");
    throw new StowageError(
      "RETENTION_REFUSED",
      `planRetention: the plan would drop every backup of ${names}; none passes validation and the policy keeps none. Pass allowDropAll to confirm`,
      { details: { groups: refused } },
    );
  }

  invalid.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return {
    now: new Date(now).toISOString(),
    timeZone,
    policy: { ...p },
    emptyPolicy,
    groups: planGroups,
    decisions,
    keep: decisions.filter((d) => d.action === "keep"),
    drop: decisions.filter((d) => d.action === "drop"),
    invalid,
  };
}
