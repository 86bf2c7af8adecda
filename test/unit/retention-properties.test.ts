/**
 * Properties of planRetention, each checked on 10,000 generated cases: random backups of several
 * jobs and tiers (with identical and future timestamps), random holds and compliance, random
 * policies, several time zones. The same backups made into chains of fulls, differentials and
 * incrementals (some broken) check that kept backups keep what they depend on.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isStowageError } from "../../src/core/errors.js";
import type { Manifest } from "../../src/core/manifest.js";
import { type PlanRetentionOptions, planRetention, type RetentionPolicy } from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const RUNS = 10_000;
/** 10,000 cases take seconds; give a busy 2-core CI machine room. */
const TIMEOUT = 120_000;
const NOW = Date.parse("2026-11-21T12:00:00Z");
const HOUR = 3_600_000;
const HASH = "cdd01ef066bc6cf2";
const rules = { requiredLabels: { constitutional_hash: HASH } };

const durations = ["1h", "6h", "1d", "2d", "7d", "30d", "90d", "1y"] as const;
const count = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 0, max: 6 }) },
  { weight: 1, arbitrary: fc.constant("unlimited" as const) },
);
const policyArb: fc.Arbitrary<RetentionPolicy> = fc.record(
  {
    keepLast: count,
    keepHourly: count,
    keepDaily: count,
    keepWeekly: count,
    keepMonthly: count,
    keepYearly: count,
    keepWithin: fc.constantFrom(...durations),
    maxAge: fc.constantFrom(...durations),
  },
  { requiredKeys: [] },
);

interface BackupSpec {
  job: string;
  sink: string;
  /** Hours before NOW (negative: in the future). A small set of values makes ties common. */
  hoursAgo: number;
  minute: number;
  compliant: boolean;
  hold: boolean;
  retainUntilHours: number | null;
  lockHours: number | null;
}
const backupArb: fc.Arbitrary<BackupSpec> = fc.record({
  job: fc.constantFrom("a", "b", "c"),
  sink: fc.constantFrom("filesystem", "s3"),
  hoursAgo: fc.oneof(
    fc.integer({ min: -48, max: 24 * 800 }),
    fc.constantFrom(0, 1, 24, 24 * 7, 24 * 30, 24 * 365),
  ),
  minute: fc.constantFrom(0, 0, 0, 17, 59),
  compliant: fc.boolean(),
  hold: fc.integer({ min: 0, max: 9 }).map((n) => n < 2),
  retainUntilHours: fc.option(fc.integer({ min: -1000, max: 1000 }), { freq: 4 }),
  lockHours: fc.option(fc.integer({ min: -1000, max: 1000 }), { freq: 6 }),
});

function toManifests(specs: BackupSpec[]): Manifest[] {
  return specs.map((s, index) => {
    const labels: Record<string, string> = {};
    if (s.compliant) labels.constitutional_hash = HASH;
    if (s.hold) labels.hold = "legal";
    if (s.lockHours !== null) labels["object-lock-until"] = new Date(NOW + s.lockHours * HOUR).toISOString();
    return fakeManifest({
      job: s.job,
      sink: s.sink,
      startedAt: new Date(NOW - s.hoursAgo * HOUR + s.minute * 60_000),
      suffix: index,
      labels,
      ...(s.retainUntilHours === null
        ? {}
        : { retainUntil: new Date(NOW + s.retainUntilHours * HOUR).toISOString() }),
    });
  });
}

const zoneArb = fc.constantFrom(
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "Asia/Kolkata",
  "Australia/Lord_Howe",
);
const caseArb = fc.record({
  backups: fc.array(backupArb, { maxLength: 24 }),
  policy: policyArb,
  timeZone: zoneArb,
  useRules: fc.boolean(),
});

const optionsFor = (
  c: { timeZone: string; useRules: boolean },
  extra: Partial<PlanRetentionOptions> = {},
) => ({
  now: new Date(NOW),
  timeZone: c.timeZone,
  ...(c.useRules ? { rules } : {}),
  allowDropAll: true,
  ...extra,
});

const groupOf = (m: Manifest) => `${m.job}/${m.artifact.sink}`;

/** The newest valid backup of each group, computed here independently of the library. */
function newestValid(manifests: Manifest[], useRules: boolean): Map<string, string> {
  const best = new Map<string, Manifest>();
  const newer = (a: Manifest, b: Manifest) => {
    const ta = Date.parse(a.startedAt);
    const tb = Date.parse(b.startedAt);
    const pa = ta <= NOW ? 1 : 0; // not future-dated wins
    const pb = tb <= NOW ? 1 : 0;
    return pa !== pb ? pa > pb : ta !== tb ? ta > tb : a.id > b.id;
  };
  for (const m of manifests) {
    if (useRules && m.labels.constitutional_hash !== HASH) continue;
    const current = best.get(groupOf(m));
    if (!current || newer(m, current)) best.set(groupOf(m), m);
  }
  return new Map([...best].map(([g, m]) => [g, m.id]));
}

const isHeld = (m: Manifest) =>
  m.labels.hold === "legal" ||
  (m.retainUntil !== undefined && Date.parse(m.retainUntil) > NOW) ||
  (m.labels["object-lock-until"] !== undefined && Date.parse(m.labels["object-lock-until"]) > NOW);

describe("planRetention properties", () => {
  it(
    "keeps the newest valid backup of every job and tier",
    () => {
      fc.assert(
        fc.property(caseArb, (c) => {
          const manifests = toManifests(c.backups);
          const plan = planRetention(manifests, c.policy, optionsFor(c));
          const kept = new Set(plan.keep.map((d) => d.id));
          const missing = [...newestValid(manifests, c.useRules)].filter(([, id]) => !kept.has(id));
          expect(missing).toEqual([]);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    "never drops a held backup (hold label, retainUntil or Object Lock in the future)",
    () => {
      fc.assert(
        fc.property(caseArb, (c) => {
          const manifests = toManifests(c.backups);
          const plan = planRetention(manifests, c.policy, optionsFor(c));
          const kept = new Set(plan.keep.map((d) => d.id));
          expect(plan.drop.filter((d) => isHeld(d.manifest)).map((d) => d.id)).toEqual([]);
          expect(manifests.filter((m) => isHeld(m) && !kept.has(m.id)).map((m) => m.id)).toEqual([]);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    "is deterministic: the same plan twice, and whatever order the manifests come in",
    () => {
      fc.assert(
        fc.property(caseArb, fc.integer(), (c, seed) => {
          const manifests = toManifests(c.backups);
          const shuffled = [...manifests];
          let s = seed >>> 0;
          for (let i = shuffled.length - 1; i > 0; i--) {
            s = (Math.imul(s, 1_103_515_245) + 12_345) >>> 0;
            const j = s % (i + 1);
            [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
          }
          const a = planRetention(manifests, c.policy, optionsFor(c));
          const b = planRetention(manifests, c.policy, optionsFor(c));
          const d = planRetention(shuffled, c.policy, optionsFor(c));
          // The plan is JSON; comparing its text compares everything, order included.
          const text = JSON.stringify(a);
          expect(JSON.stringify(b)).toBe(text);
          expect(JSON.stringify(d)).toBe(text);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    "is idempotent: planning what a plan keeps, with the same now, drops nothing more",
    () => {
      fc.assert(
        fc.property(caseArb, (c) => {
          const manifests = toManifests(c.backups);
          const first = planRetention(manifests, c.policy, optionsFor(c));
          const second = planRetention(
            first.keep.map((d) => d.manifest),
            c.policy,
            optionsFor(c),
          );
          expect(second.drop.map((d) => [d.id, d.reasons])).toEqual([]);
          expect(second.keep.map((d) => d.id)).toEqual(first.keep.map((d) => d.id));
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    "refuses exactly the plans that leave a group with nothing, and an empty policy drops nothing",
    () => {
      fc.assert(
        fc.property(caseArb, (c) => {
          const manifests = toManifests(c.backups);
          const allowed = planRetention(manifests, c.policy, optionsFor(c));
          const emptied = allowed.groups.filter((g) => g.keep === 0);
          let refused: unknown;
          try {
            planRetention(manifests, c.policy, optionsFor(c, { allowDropAll: false }));
          } catch (error) {
            refused = error;
          }
          if (emptied.length === 0) {
            expect(refused).toBeUndefined();
          } else {
            expect(isStowageError(refused, "RETENTION_REFUSED")).toBe(true);
            // Without rules every backup is valid, so a group can only empty when rules fail them all.
            expect(c.useRules).toBe(true);
          }
          const empty = planRetention(manifests, {}, optionsFor(c));
          expect(empty.drop).toEqual([]);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );

  it(
    "keeps no more than the counts ask for, plus holds and the newest valid backup",
    () => {
      const countOnly = fc.record(
        {
          keepLast: fc.integer({ min: 0, max: 5 }),
          keepDaily: fc.integer({ min: 0, max: 5 }),
          keepWeekly: fc.integer({ min: 0, max: 5 }),
        },
        { requiredKeys: [] },
      );
      fc.assert(
        fc.property(caseArb, countOnly, (c, policy) => {
          const manifests = toManifests(c.backups);
          const plan = planRetention(manifests, policy, optionsFor(c));
          if (plan.emptyPolicy) return;
          const budget = (policy.keepLast ?? 0) + (policy.keepDaily ?? 0) + (policy.keepWeekly ?? 0);
          const over = plan.groups.filter(
            (g) =>
              plan.keep.filter(
                (d) => d.job === g.job && d.tier === g.tier && !isHeld(d.manifest) && d.id !== g.newestValid,
              ).length > budget,
          );
          expect(over).toEqual([]);
        }),
        { numRuns: RUNS },
      );
    },
    TIMEOUT,
  );
});

/** How each backup of a group links to the ones before it, in time order. */
type LinkSpec = "full" | "incremental" | "differential" | "orphan";
const linkArb = fc.constantFrom<LinkSpec>(
  "full",
  "incremental",
  "incremental",
  "incremental",
  "differential",
  "orphan",
);

/**
 * The same backups as `toManifests`, made into chains within each job and tier: the oldest is a
 * full; an incremental's parent is the backup before it, a differential's the last full; an
 * "orphan" names a parent that is not there (a broken chain).
 */
function toChained(specs: BackupSpec[], links: LinkSpec[]): Manifest[] {
  const manifests = toManifests(specs);
  const order = manifests
    .map((m, i) => ({ m, i }))
    .sort((a, b) => Date.parse(a.m.startedAt) - Date.parse(b.m.startedAt) || a.i - b.i);
  const last = new Map<string, { prev?: Manifest; full?: Manifest }>();
  const index = { member: ".stowage-index.ndjson", entries: 1, sha256: "2".repeat(64) };
  for (const { m, i } of order) {
    const at = last.get(groupOf(m)) ?? {};
    const link = at.prev ? links[i % links.length]! : "full";
    const parentOf = (p: Manifest) => ({ id: p.id, key: p.artifact.key });
    if (link === "full" || (link === "differential" && !at.full)) {
      m.chain = { kind: "full", index };
      at.full = m;
    } else if (link === "differential") {
      m.chain = { kind: "differential", parent: parentOf(at.full!), index };
    } else if (link === "incremental") {
      m.chain = { kind: "incremental", parent: parentOf(at.prev!), index };
    } else {
      m.chain = { kind: "incremental", parent: { id: "20000101T000000000Z-00000000", key: "gone" }, index };
    }
    at.prev = m;
    last.set(groupOf(m), at);
  }
  return manifests;
}

const chainCaseArb = fc.record({
  backups: fc.array(backupArb, { maxLength: 24 }),
  links: fc.array(linkArb, { minLength: 1, maxLength: 24 }),
  policy: policyArb,
  timeZone: zoneArb,
  useRules: fc.boolean(),
});

/** Ids of every backup `m` depends on within `group` (stops where a parent is missing). */
function ancestors(m: Manifest, group: Manifest[]): string[] {
  const byId = new Map(group.map((g) => [g.id, g]));
  const out: string[] = [];
  let at: Manifest | undefined = m;
  while (at?.chain?.parent && byId.has(at.chain.parent.id)) {
    out.push(at.chain.parent.id);
    at = byId.get(at.chain.parent.id);
  }
  return out;
}

describe("planRetention properties over chains", () => {
  it(
    "never drops a backup that a kept backup depends on, and says why it keeps it",
    () => {
      fc.assert(
        fc.property(chainCaseArb, (c) => {
          const manifests = toChained(c.backups, c.links);
          const plan = planRetention(manifests, c.policy, optionsFor(c));
          const dropped = new Set(plan.drop.map((d) => `${d.tier}/${d.id}`));
          for (const d of plan.keep) {
            const group = manifests.filter((m) => groupOf(m) === groupOf(d.manifest));
            const needed = ancestors(d.manifest, group).filter((id) => dropped.has(`${d.tier}/${id}`));
            expect(needed).toEqual([]);
          }
          // Every kept backup says why; "needed by" names kept backups that do depend on it.
          for (const d of plan.keep) {
            expect(d.reasons.length).toBeGreaterThan(0);
            const group = manifests.filter((m) => groupOf(m) === groupOf(d.manifest));
            for (const r of d.reasons.filter((x) => x.startsWith("needed by "))) {
              const id = r.slice("needed by ".length).split(" ")[0];
              const child = plan.keep.find((k) => k.id === id && k.tier === d.tier);
              expect(child && ancestors(child.manifest, group)).toContain(d.id);
            }
          }
        }),
        { numRuns: RUNS / 10 },
      );
    },
    TIMEOUT,
  );

  it(
    "keeps the newest backup whose chain is whole, never one whose chain is broken as newest valid",
    () => {
      fc.assert(
        fc.property(chainCaseArb, (c) => {
          const manifests = toChained(c.backups, c.links);
          const plan = planRetention(manifests, c.policy, optionsFor(c));
          for (const g of plan.groups) {
            const group = manifests.filter((m) => `${m.job}/${m.artifact.sink}` === `${g.job}/${g.tier}`);
            const whole = group.filter((m) => {
              const chain = ancestors(m, group);
              const top = chain.length === 0 ? m : group.find((x) => x.id === chain.at(-1));
              return top?.chain?.kind === "full" && (!c.useRules || m.labels.constitutional_hash === HASH);
            });
            const expected = newestValid(whole, false).get(`${g.job}/${g.tier}`) ?? null;
            expect(g.newestValid).toBe(expected);
            if (expected) expect(plan.keep.some((d) => d.id === expected && d.tier === g.tier)).toBe(true);
          }
        }),
        { numRuns: RUNS / 10 },
      );
    },
    TIMEOUT,
  );

  it(
    "is idempotent over chains and never drops a held backup",
    () => {
      fc.assert(
        fc.property(chainCaseArb, (c) => {
          const manifests = toChained(c.backups, c.links);
          const first = planRetention(manifests, c.policy, optionsFor(c));
          expect(first.drop.filter((d) => isHeld(d.manifest)).map((d) => d.id)).toEqual([]);
          const second = planRetention(
            first.keep.map((d) => d.manifest),
            c.policy,
            optionsFor(c),
          );
          expect(second.drop.map((d) => [d.id, d.reasons])).toEqual([]);
        }),
        { numRuns: RUNS / 10 },
      );
    },
    TIMEOUT,
  );
});
