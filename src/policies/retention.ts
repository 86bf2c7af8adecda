import { StowageError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../core/manifest.js";
import { parseDuration, parseOptions, parseOptionsOnce } from "../core/options.js";
import { assertTimeZone, bucketOf, type CalendarPeriod, type LocalTime, localTime } from "./calendar.js";
import { chainFindings, keepChainParents } from "./incremental-chains.js";
import { epochOf } from "./instant.js";
import { holdsOf } from "./retention-holds.js";
import {
  type ParsedRetentionPolicy,
  type PlanRetentionOptions,
  planOptionsSchema,
  type RetentionDecision,
  type RetentionGroup,
  type RetentionInvalid,
  type RetentionPlan,
  type RetentionPolicy,
  retentionPolicySchema,
} from "./retention-policy.js";
import { compileRules, findingsOf, jobOfKey, passesValidation, type ValidationRules } from "./validation.js";

export { lockedUntil, OBJECT_LOCK_LABELS } from "./retention-holds.js";
export {
  type ParsedRetentionPolicy,
  type PlanRetentionOptions,
  type RetentionDecision,
  type RetentionGroup,
  type RetentionInvalid,
  type RetentionPlan,
  type RetentionPolicy,
  retentionPolicySchema,
} from "./retention-policy.js";

const PERIODS: ReadonlyArray<[keyof ParsedRetentionPolicy, CalendarPeriod]> = [
  ["keepHourly", "hourly"],
  ["keepDaily", "daily"],
  ["keepWeekly", "weekly"],
  ["keepMonthly", "monthly"],
  ["keepYearly", "yearly"],
];

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
  /** What the keep rules said of it, before the safety rules and `maxAge` have their say. */
  ruled: string[];
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

  const wellFormed: Manifest[] = [];
  // Job, then tier: a key made of the two would be a new string to hash for every backup.
  const groups = new Map<string, Map<string, Entry[]>>();
  for (const manifest of manifests) {
    const problem = malformed(manifest);
    if (!problem) {
      wellFormed.push(manifest);
      continue;
    }
    const key = (manifest as { artifact?: { key?: unknown } } | null)?.artifact?.key;
    const name = typeof key === "string" && key ? key + MANIFEST_SUFFIX : "(unknown)";
    invalid.push({
      key: name,
      job: typeof manifest?.job === "string" && manifest.job ? manifest.job : jobOfKey(name),
      code: "MANIFEST_INVALID",
      message: `manifest cannot be planned: ${problem} is missing or malformed`,
    });
  }
  const brokenChains = chainFindings(wellFormed);
  for (const manifest of wellFormed) {
    const tierLabel = manifest.labels[o.tierLabel];
    const tier = tierLabel ? `${manifest.artifact.sink}/${tierLabel}` : manifest.artifact.sink;
    let tiers = groups.get(manifest.job);
    if (!tiers) {
      tiers = new Map();
      groups.set(manifest.job, tiers);
    }
    let group = tiers.get(tier);
    if (!group) {
      group = [];
      tiers.set(tier, group);
    }
    group.push({
      manifest,
      time: epochOf(manifest.startedAt),
      tier,
      reasons: [],
      ruled: [],
      protect: false,
      keptByRule: false,
      valid: passesValidation(findingsOf(manifest, rules, now)) && !brokenChains.has(manifest),
    });
  }

  const planGroups: RetentionGroup[] = [];
  const decisions: RetentionDecision[] = [];
  const refused: Array<{ job: string; tier: string; backups: number }> = [];
  const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const ordered = [...groups.keys()]
    .sort(byName)
    .flatMap((job) => [...groups.get(job)!.keys()].sort(byName).map((tier) => groups.get(job)!.get(tier)!));
  // Rules' reasons are the same string for every backup they keep.
  const maxAgeReason = `max age ${p.maxAge}`;
  const withinReason = `within ${p.keepWithin}`;

  for (const group of ordered) {
    const sorted = group.sort(cmpNewestFirst);
    // The same artifact listed twice is one backup.
    const entries = sorted.filter(
      (e, i) =>
        i === 0 ||
        e.manifest.artifact.key !== sorted[i - 1]!.manifest.artifact.key ||
        e.time !== sorted[i - 1]!.time,
    );

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
      for (const e of entries) e.ruled.push("empty policy");
    }
    if (counts.last > 0) {
      entries.slice(0, Math.min(entries.length, counts.last)).forEach((e) => {
        e.ruled.push(`last ${p.keepLast}`);
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
        e.ruled.push(`${period} ${bucket}`);
        left--;
      }
    }
    if (withinMs !== undefined) {
      for (const e of entries) if (now - e.time < withinMs) e.ruled.push(withinReason);
    }
    if (!hasKeepRule && maxAgeMs !== undefined) {
      for (const e of entries) if (now - e.time <= maxAgeMs) e.ruled.push(maxAgeReason);
    }

    const groupDecisions: RetentionDecision[] = [];
    for (const e of entries) {
      const ruled = e.ruled;
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
