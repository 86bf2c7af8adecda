/**
 * stowage's retention against restic's own golden vectors (test/fixtures/restic-retention.json,
 * extracted from restic's internal/data/snapshot_policy_test.go, BSD-2-Clause: see
 * test/fixtures/README.md). Where stowage means the same as
 * restic it must keep the same backups for the same reasons; where it deliberately differs, the
 * difference is asserted here so that it cannot drift unnoticed.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { Manifest } from "../../src/core/manifest.js";
import { planRetention, type RetentionPolicy } from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

interface Within {
  spec: string;
  years: number;
  months: number;
  days: number;
  hours: number;
}
interface ResticCase {
  n: number;
  flags: string;
  uses: string[];
  policy: {
    last: number;
    hourly: number;
    daily: number;
    weekly: number;
    monthly: number;
    yearly: number;
    within: Within | null;
    withinHourly: Within | null;
    withinDaily: Within | null;
    withinWeekly: Within | null;
    withinMonthly: Within | null;
    withinYearly: Within | null;
    tags: string[][] | null;
  };
  keep: string[];
  reasons: Record<string, string[]>;
}
interface Vectors {
  snapshots: Array<{ id: string; time: string; tags: string[] }>;
  evaluationOrder: string[];
  cases: ResticCase[];
}

const vectors = JSON.parse(
  readFileSync(fileURLToPath(new URL("../fixtures/restic-retention.json", import.meta.url)), "utf8"),
) as Vectors;

// Ties: restic keeps input order among equal times (the earlier-listed counts as newer); stowage
// orders equal times by id. Ids whose suffix falls with the input index reproduce restic's order.
const bySnapshot = new Map<string, Manifest>();
const byId = new Map<string, string>();
vectors.snapshots.forEach((s, index) => {
  const m = fakeManifest({ job: "restic", startedAt: s.time, suffix: 0xffff_ffff - index });
  bySnapshot.set(s.id, m);
  byId.set(m.id, s.id);
});
const manifests = [...bySnapshot.values()];
const latest = new Date("2016-01-18T12:02:03Z"); // s102, restic's reference for keep-within

const count = (n: number) => (n === -1 ? "unlimited" : n);

/** The restic policy in stowage's terms, or why it has no equivalent. */
function translate(c: ResticCase): RetentionPolicy | string {
  const p = c.policy;
  if (p.tags) return "restic tags: stowage has labels and holds, not keep-tag";
  if (p.withinHourly || p.withinDaily || p.withinWeekly || p.withinMonthly || p.withinYearly) {
    return "restic keep-within-<period>: stowage combines keepWithin/keep<Period> differently";
  }
  const policy: RetentionPolicy = {};
  if (p.last) policy.keepLast = count(p.last);
  if (p.hourly) policy.keepHourly = count(p.hourly);
  if (p.daily) policy.keepDaily = count(p.daily);
  if (p.weekly) policy.keepWeekly = count(p.weekly);
  if (p.monthly) policy.keepMonthly = count(p.monthly);
  if (p.yearly) policy.keepYearly = count(p.yearly);
  if (p.within) {
    if (p.within.years || p.within.months)
      return `restic calendar months/years in keep-within ${p.within.spec}`;
    policy.keepWithin = p.within.hours ? `${p.within.days * 24 + p.within.hours}h` : `${p.within.days}d`;
  }
  return policy;
}

const CLASS_OF: Record<string, string> = {
  "last snapshot": "last",
  "hourly snapshot": "hourly",
  "daily snapshot": "daily",
  "weekly snapshot": "weekly",
  "monthly snapshot": "monthly",
  "yearly snapshot": "yearly",
};
const resticClass = (reason: string) => (reason.startsWith("within ") ? "within" : CLASS_OF[reason]);
const stowageClass = (reason: string) => reason.split(" ")[0];

describe("retention vs restic's golden vectors", () => {
  it("reads 103 snapshots and 40 cases", () => {
    expect(vectors.snapshots).toHaveLength(103);
    expect(vectors.cases).toHaveLength(40);
  });

  const comparable = vectors.cases.filter((c) => c.n !== 0 && typeof translate(c) !== "string");
  const skipped = vectors.cases.filter((c) => c.n !== 0 && typeof translate(c) === "string");

  it("covers every count-only and expressible keep-within case, and says why the rest differ", () => {
    expect(comparable.map((c) => c.n)).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21, 22, 23, 27, 36, 37, 38, 39,
    ]);
    expect(Object.fromEntries(skipped.map((c) => [c.n, translate(c)]))).toMatchObject({
      18: expect.stringContaining("tags"),
      24: expect.stringContaining("months"),
      30: expect.stringContaining("keep-within-<period>"),
    });
  });

  for (const c of comparable) {
    it(`case ${c.n}: ${c.flags}`, () => {
      const plan = planRetention(manifests, translate(c) as RetentionPolicy, { now: latest });
      const kept = new Map(plan.keep.map((d) => [byId.get(d.id)!, d.reasons]));
      // restic's "oldest snapshot" rule is deliberately not stowage's: drop what only it keeps.
      const expected = c.keep.filter((s) => !c.reasons[s]!.every((r) => r.startsWith("oldest ")));
      expect([...kept.keys()].sort()).toEqual([...expected].sort());
      // The same classes keep each backup ("newest valid" is stowage's own safety rule).
      for (const s of expected) {
        const theirs = c.reasons[s]!.filter((r) => !r.startsWith("oldest ")).map(resticClass);
        const ours = kept
          .get(s)!
          .filter((r) => r !== "newest valid")
          .map(stowageClass);
        expect(ours.sort(), `reasons of ${s}`).toEqual(theirs.sort());
      }
      // Plan order is newest first within the group, as restic's evaluation order.
      const order = plan.decisions.map((d) => byId.get(d.id));
      expect(order).toEqual(vectors.evaluationOrder);
    });
  }

  it("differs on purpose: the oldest backup is not kept just for being the oldest (case 16)", () => {
    const c = vectors.cases[16]!;
    expect(c.reasons.s010).toEqual(["oldest yearly snapshot"]);
    const plan = planRetention(manifests, { keepYearly: 10 }, { now: latest });
    expect(plan.keep.map((d) => byId.get(d.id))).toEqual(["s102", "s083", "s039"]);
    expect(plan.drop.find((d) => byId.get(d.id) === "s010")?.reasons).toEqual(["not kept by any rule"]);
  });

  it("differs on purpose: an empty policy keeps everything; restic's ApplyPolicy keeps nothing (case 0)", () => {
    expect(vectors.cases[0]!.keep).toEqual([]);
    const plan = planRetention(manifests, {}, { now: latest });
    expect(plan.emptyPolicy).toBe(true);
    expect(plan.drop).toHaveLength(0);
    expect(plan.keep).toHaveLength(103);
  });

  it("differs on purpose: keepWithin counts from now, restic's keep-within from the newest snapshot (case 23)", () => {
    const c = vectors.cases[23]!; // --keep-within 7d keeps s102, s101, s100
    expect(c.keep).toEqual(["s102", "s101", "s100"]);
    const tenDaysLater = new Date(latest.getTime() + 10 * 86_400_000);
    const plan = planRetention(manifests, { keepWithin: "7d" }, { now: tenDaysLater });
    // Nothing is within 7 days of now; only the safety rule keeps the newest valid backup.
    expect(plan.keep.map((d) => [byId.get(d.id), d.reasons])).toEqual([["s102", ["newest valid"]]]);
  });

  it("differs on purpose: the newest valid backup is kept even when no rule keeps it", () => {
    // restic keep-within 1d relative to the latest keeps s102; relative to a much later now, none.
    const plan = planRetention(manifests, { keepWithin: "1d" }, { now: new Date("2020-01-01T00:00:00Z") });
    expect(plan.keep).toHaveLength(1);
    expect(byId.get(plan.keep[0]!.id)).toBe("s102");
  });
});
