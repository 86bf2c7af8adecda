import { describe, expect, it } from "vitest";
import type { Manifest } from "../../src/core/manifest.js";
import {
  bucketOf,
  isoWeek,
  localTime,
  planRetention,
  type RetentionPlan,
  type RetentionPolicy,
} from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const at = (iso: string, extra: Partial<Parameters<typeof fakeManifest>[0]> = {}) =>
  fakeManifest({ startedAt: iso, ...extra });

/** `{ startedAt: reasons }` for kept and dropped backups. */
function verdicts(plan: RetentionPlan) {
  const out: { keep: Record<string, string[]>; drop: Record<string, string[]> } = { keep: {}, drop: {} };
  for (const d of plan.decisions) out[d.action][d.startedAt] = d.reasons;
  return out;
}

function plan(
  manifests: Manifest[],
  policy: RetentionPolicy,
  now: string,
  extra: Record<string, unknown> = {},
) {
  return planRetention(manifests, policy, { now: new Date(now), ...extra });
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return { code: (error as { code?: string }).code, details: (error as { details?: unknown }).details };
  }
  return undefined;
};

describe("planRetention: rules and reasons", () => {
  const days = ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20"].flatMap((d) => [
    at(`${d}T03:00:00.000Z`),
    at(`${d}T15:00:00.000Z`),
  ]);

  it("keepLast keeps the n newest", () => {
    const p = plan(days, { keepLast: 3 }, "2026-11-21T00:00:00Z");
    expect(Object.keys(verdicts(p).keep)).toEqual([
      "2026-11-20T15:00:00.000Z",
      "2026-11-20T03:00:00.000Z",
      "2026-11-19T15:00:00.000Z",
    ]);
    expect(p.keep[0]!.reasons).toEqual(["newest valid", "last 3"]);
    expect(p.keep[1]!.reasons).toEqual(["last 3"]);
    expect(p.drop[0]!.reasons).toEqual(["not kept by any rule"]);
  });

  it("keepDaily keeps the newest backup of each of the n newest days, and names the day", () => {
    const p = plan(days, { keepDaily: 2 }, "2026-11-21T00:00:00Z");
    expect(verdicts(p).keep).toEqual({
      "2026-11-20T15:00:00.000Z": ["newest valid", "daily 2026-11-20"],
      "2026-11-19T15:00:00.000Z": ["daily 2026-11-19"],
    });
  });

  it("calendar classes overlap: one backup counts as daily, weekly, monthly and yearly", () => {
    const p = plan(
      days,
      { keepDaily: 1, keepWeekly: 1, keepMonthly: 1, keepYearly: 1 },
      "2026-11-21T00:00:00Z",
    );
    expect(p.keep).toHaveLength(1);
    expect(p.keep[0]!.reasons).toEqual([
      "newest valid",
      "daily 2026-11-20",
      "weekly 2026-W47",
      "monthly 2026-11",
      "yearly 2026",
    ]);
  });

  it("keepWithin is measured from now, and a backup exactly that old is outside it", () => {
    const p = plan(days, { keepWithin: "2d" }, "2026-11-21T03:00:00Z");
    expect(Object.keys(verdicts(p).keep)).toEqual([
      "2026-11-20T15:00:00.000Z",
      "2026-11-20T03:00:00.000Z",
      "2026-11-19T15:00:00.000Z",
    ]);
    expect(verdicts(p).drop["2026-11-19T03:00:00.000Z"]).toEqual(["not kept by any rule"]);
    expect(p.keep[2]!.reasons).toEqual(["within 2d"]);
  });

  it("maxAge alone keeps everything up to that age (inclusive) and drops the rest as 'older than'", () => {
    const p = plan(days, { maxAge: "2d" }, "2026-11-21T03:00:00Z");
    expect(Object.keys(verdicts(p).keep)).toHaveLength(4);
    expect(verdicts(p).keep["2026-11-19T03:00:00.000Z"]).toEqual(["max age 2d"]);
    expect(verdicts(p).drop["2026-11-18T15:00:00.000Z"]).toEqual(["older than 2d"]);
  });

  it("maxAge caps keep rules: a monthly backup older than maxAge is dropped", () => {
    const monthly = ["2026-08-31", "2026-09-30", "2026-10-31", "2026-11-20"].map((d) => at(`${d}T12:00:00Z`));
    const p = plan(monthly, { keepMonthly: 12, maxAge: "60d" }, "2026-11-21T00:00:00Z");
    expect(verdicts(p)).toEqual({
      keep: {
        "2026-11-20T12:00:00.000Z": ["newest valid", "monthly 2026-11"],
        "2026-10-31T12:00:00.000Z": ["monthly 2026-10"],
        "2026-09-30T12:00:00.000Z": ["monthly 2026-09"],
      },
      drop: { "2026-08-31T12:00:00.000Z": ["older than 60d"] },
    });
  });

  it("'unlimited' counts keep every bucket", () => {
    const p = plan(days, { keepDaily: "unlimited" }, "2026-11-21T00:00:00Z");
    expect(p.keep).toHaveLength(5);
    expect(p.drop).toHaveLength(5);
  });

  it("an empty policy drops nothing", () => {
    for (const empty of [{}, { keepLast: 0, keepDaily: 0 }, { holdLabel: "keep" }] as RetentionPolicy[]) {
      const p = plan(days, empty, "2030-01-01T00:00:00Z");
      expect(p.emptyPolicy).toBe(true);
      expect(p.drop).toEqual([]);
      expect(p.keep.every((d) => d.reasons.includes("empty policy"))).toBe(true);
    }
  });

  it("the plan is JSON: serialising it loses nothing", () => {
    const p = plan(days, { keepDaily: 2, maxAge: "3d" }, "2026-11-21T00:00:00Z");
    expect(JSON.parse(JSON.stringify(p))).toEqual(p);
    expect(p.now).toBe("2026-11-21T00:00:00.000Z");
    expect(p.policy).toMatchObject({ keepDaily: 2, maxAge: "3d", holdLabel: "hold" });
  });
});

describe("planRetention: holds", () => {
  const now = "2026-11-21T00:00:00Z";
  const old = (labels: Record<string, string>, extra: Partial<Parameters<typeof fakeManifest>[0]> = {}) =>
    at("2025-01-01T00:00:00Z", { labels, ...extra });
  const newest = at("2026-11-20T00:00:00Z");

  it.each([
    ["a hold label", old({ hold: "legal" }), ["hold legal"]],
    [
      "a hold label named by the policy",
      old({ "legal-hold": "case-42" }),
      ["hold case-42"],
      { holdLabel: "legal-hold" },
    ],
    [
      "retainUntil in the future",
      old({}, { retainUntil: "2027-01-01T00:00:00Z" }),
      ["hold until 2027-01-01T00:00:00Z"],
    ],
    [
      "an S3 Object Lock label",
      old({ "object-lock-until": "2030-01-01T00:00:00Z" }),
      ["object lock until 2030-01-01T00:00:00Z"],
    ],
    [
      "an objectLockRetainUntil label",
      old({ objectLockRetainUntil: "2030-01-01T00:00:00.000Z" }),
      ["object lock until 2030-01-01T00:00:00.000Z"],
    ],
    [
      "an unreadable Object Lock date (when in doubt, keep)",
      old({ "object-lock-until": "soon" }),
      ["object lock until soon"],
    ],
  ] as Array<[string, Manifest, string[], RetentionPolicy?]>)(
    "%s keeps a backup older than maxAge",
    (_, held, reasons, extra) => {
      const p = plan([newest, held], { maxAge: "30d", ...extra }, now);
      expect(p.drop).toEqual([]);
      expect(p.keep.find((d) => d.id === held.id)!.reasons).toEqual(reasons);
    },
  );

  it.each([
    ["retainUntil in the past", old({}, { retainUntil: "2026-01-01T00:00:00Z" })],
    ["an expired Object Lock", old({ "object-lock-until": "2026-01-01T00:00:00Z" })],
    ["an empty hold label", old({ hold: "" })],
    ["a hold label the policy does not name", old({ hold: "legal" }), { holdLabel: "legal-hold" }],
  ] as Array<[string, Manifest, RetentionPolicy?]>)("%s does not hold", (_, manifest, extra) => {
    const p = plan([newest, manifest], { maxAge: "30d", ...extra }, now);
    expect(p.drop.map((d) => d.id)).toEqual([manifest.id]);
  });
});

describe("planRetention: groups", () => {
  const now = "2026-11-21T00:00:00Z";

  it("plans each job apart: keepLast 1 keeps one backup per job", () => {
    const ms = [
      at("2026-11-20T00:00:00Z", { job: "a" }),
      at("2026-11-19T00:00:00Z", { job: "a" }),
      at("2026-11-10T00:00:00Z", { job: "b" }),
      at("2026-11-09T00:00:00Z", { job: "b" }),
    ];
    const p = plan(ms, { keepLast: 1 }, now);
    expect(p.keep.map((d) => [d.job, d.startedAt])).toEqual([
      ["a", "2026-11-20T00:00:00.000Z"],
      ["b", "2026-11-10T00:00:00.000Z"],
    ]);
    expect(p.groups).toEqual([
      { job: "a", tier: "filesystem", total: 2, keep: 1, drop: 1, newestValid: ms[0]!.id },
      { job: "b", tier: "filesystem", total: 2, keep: 1, drop: 1, newestValid: ms[2]!.id },
    ]);
  });

  it("plans each sink kind and each tier label apart", () => {
    const ms = [
      at("2026-11-20T00:00:00Z", { sink: "filesystem" }),
      at("2026-11-19T00:00:00Z", { sink: "s3" }),
      at("2026-11-18T00:00:00Z", { sink: "s3", labels: { tier: "offsite" } }),
      at("2026-11-17T00:00:00Z", { sink: "s3", labels: { tier: "offsite" } }),
    ];
    const p = plan(ms, { keepLast: 1 }, now);
    expect(p.groups.map((g) => [g.tier, g.keep, g.drop])).toEqual([
      ["filesystem", 1, 0],
      ["s3", 1, 0],
      ["s3/offsite", 1, 1],
    ]);
    const other = plan(ms, { keepLast: 1 }, now, { tierLabel: "none" });
    expect(other.groups.map((g) => [g.tier, g.total])).toEqual([
      ["filesystem", 1],
      ["s3", 3],
    ]);
  });
});

describe("planRetention: safety rules", () => {
  const now = "2026-11-21T00:00:00Z";
  const labelled = { constitutional_hash: "cdd01ef066bc6cf2" };
  const rules = { requiredLabels: labelled };

  it("the newest backup that passes validation is kept even when no rule keeps it", () => {
    const ms = [
      at("2026-11-20T00:00:00Z"), // newest, but not compliant
      at("2026-11-19T00:00:00Z", { labels: labelled }),
      at("2026-11-18T00:00:00Z", { labels: labelled }),
    ];
    const p = plan(ms, { keepLast: 1 }, now, { rules });
    expect(verdicts(p).keep).toEqual({
      "2026-11-20T00:00:00.000Z": ["last 1"],
      "2026-11-19T00:00:00.000Z": ["newest valid"],
    });
    expect(p.decisions.map((d) => d.valid)).toEqual([false, true, true]);
    expect(p.groups[0]!.newestValid).toBe(ms[1]!.id);
  });

  it("freshness does not make a backup invalid: the newest stays protected when the job has stopped", () => {
    const ms = [at("2025-01-02T00:00:00Z"), at("2025-01-01T00:00:00Z")];
    const p = plan(ms, { maxAge: "30d" }, now, { rules: { maxAge: "15m" } });
    expect(verdicts(p).keep).toEqual({ "2025-01-02T00:00:00.000Z": ["newest valid"] });
  });

  it("refuses a plan that drops every backup of a group, naming it, unless allowDropAll", () => {
    // No app-db backup is compliant and all are too old; "fine" is not compliant either, but young.
    const ms = [
      at("2025-01-02T00:00:00Z"),
      at("2025-01-01T00:00:00Z"),
      at("2026-11-20T00:00:00Z", { job: "fine" }),
    ];
    const refused = codeOf(() => plan(ms, { maxAge: "30d" }, now, { rules }));
    expect(refused).toEqual({
      code: "RETENTION_REFUSED",
      details: { groups: [{ job: "app-db", tier: "filesystem", backups: 2 }] },
    });
    const p = plan(ms, { maxAge: "30d" }, now, { rules, allowDropAll: true });
    expect(p.drop.map((d) => d.job)).toEqual(["app-db", "app-db"]);
    expect(p.keep.map((d) => [d.job, d.reasons])).toEqual([["fine", ["max age 30d"]]]);
  });

  it("reports invalid manifests and never plans them", () => {
    const good = at("2026-11-20T00:00:00Z");
    const broken = { ...at("2026-11-01T00:00:00Z"), startedAt: "yesterday" } as Manifest;
    const p = plan([good, broken], { keepLast: 1 }, now, {
      invalid: [
        {
          key: "app-db/2026/11/02/x.manifest.json",
          error: { code: "MANIFEST_INVALID", message: "version: bad" },
        },
      ],
    });
    expect(p.decisions.map((d) => d.id)).toEqual([good.id]);
    expect(p.invalid).toEqual([
      {
        key: `${broken.artifact.key}.manifest.json`,
        job: "app-db",
        code: "MANIFEST_INVALID",
        message: expect.stringContaining("startedAt"),
      },
      {
        key: "app-db/2026/11/02/x.manifest.json",
        job: "app-db",
        code: "MANIFEST_INVALID",
        message: "version: bad",
      },
    ]);
  });

  it("names a bad option: policy, time zone, now", () => {
    const ms = [at("2026-11-20T00:00:00Z")];
    const issues = (fn: () => unknown) =>
      (codeOf(fn)?.details as { issues?: Array<{ path: string }> } | undefined)?.issues?.map((i) => i.path);
    expect(codeOf(() => plan(ms, { keepDaily: -1 }, now))?.code).toBe("CONFIG_INVALID");
    expect(issues(() => plan(ms, { keepDaily: -1, maxAge: "30 days" } as RetentionPolicy, now))).toEqual([
      "maxAge",
      "keepDaily",
    ]);
    expect(issues(() => plan(ms, { keepDialy: 3 } as RetentionPolicy, now))).toEqual(["(options)"]);
    expect(issues(() => plan(ms, {}, now, { timeZone: "Mars/Olympus" }))).toEqual(["timeZone"]);
    expect(issues(() => planRetention(ms, {}, { now: new Date("nope") }))).toEqual(["now"]);
    expect(issues(() => planRetention(ms, {}, {} as never))).toEqual(["now"]);
  });
});

describe("planRetention: calendar edge cases", () => {
  it("buckets days in the given zone: Berlin's 25-hour day at the end of DST", () => {
    // 2026-10-25 in Berlin runs from 2026-10-24T22:00Z to 2026-10-25T23:00Z.
    const ms = [
      at("2026-10-25T21:30:00Z"), // Berlin 2026-10-25 22:30 CET
      at("2026-10-24T22:30:00Z"), // Berlin 2026-10-25 00:30 CEST
      at("2026-10-24T21:30:00Z"), // Berlin 2026-10-24 23:30 CEST
    ];
    const berlin = plan(ms, { keepDaily: 2 }, "2026-10-26T00:00:00Z", { timeZone: "Europe/Berlin" });
    expect(verdicts(berlin).keep).toEqual({
      "2026-10-25T21:30:00.000Z": ["newest valid", "daily 2026-10-25"],
      "2026-10-24T21:30:00.000Z": ["daily 2026-10-24"],
    });
    const utc = plan(ms, { keepDaily: 2 }, "2026-10-26T00:00:00Z");
    expect(Object.keys(verdicts(utc).keep)).toEqual(["2026-10-25T21:30:00.000Z", "2026-10-24T22:30:00.000Z"]);
  });

  it("the hour a DST change repeats is two hourly buckets (Berlin and New York)", () => {
    const berlin = [at("2026-10-25T01:30:00Z"), at("2026-10-25T00:30:00Z")]; // 02:30 CET, 02:30 CEST
    const p = plan(berlin, { keepHourly: 2 }, "2026-10-25T03:00:00Z", { timeZone: "Europe/Berlin" });
    expect(p.keep.map((d) => d.reasons.at(-1))).toEqual([
      "hourly 2026-10-25T02:00+01:00",
      "hourly 2026-10-25T02:00+02:00",
    ]);
    const ny = [at("2026-11-01T06:30:00Z"), at("2026-11-01T05:30:00Z")]; // 01:30 EST, 01:30 EDT
    const q = plan(ny, { keepHourly: 2 }, "2026-11-01T08:00:00Z", { timeZone: "America/New_York" });
    expect(q.keep.map((d) => d.reasons.at(-1))).toEqual([
      "hourly 2026-11-01T01:00-05:00",
      "hourly 2026-11-01T01:00-04:00",
    ]);
  });

  it("the 23-hour day at the start of DST is one daily bucket; the skipped hour does not exist", () => {
    const ms = [
      at("2026-03-29T21:30:00Z"),
      at("2026-03-29T01:00:00Z"),
      at("2026-03-29T00:59:00Z"),
      at("2026-03-28T23:30:00Z"),
    ];
    const p = plan(ms, { keepDaily: 1 }, "2026-03-30T00:00:00Z", { timeZone: "Europe/Berlin" });
    expect(p.keep.map((d) => d.startedAt)).toEqual(["2026-03-29T21:30:00.000Z"]);
    expect(bucketOf(Date.parse("2026-03-29T00:59:00Z"), "hourly", "Europe/Berlin")).toBe(
      "2026-03-29T01:00+01:00",
    );
    expect(bucketOf(Date.parse("2026-03-29T01:00:00Z"), "hourly", "Europe/Berlin")).toBe(
      "2026-03-29T03:00+02:00",
    );
    expect(bucketOf(Date.parse("2026-03-08T07:00:00Z"), "hourly", "America/New_York")).toBe(
      "2026-03-08T03:00-04:00",
    );
  });

  it("ISO week 53: 2020-W53 spans the new year; weekly buckets follow ISO weeks, yearly ones calendar years", () => {
    const ms = ["2021-01-04", "2021-01-03", "2020-12-31", "2020-12-28", "2020-12-27"].map((d) =>
      at(`${d}T12:00:00Z`),
    );
    const p = plan(ms, { keepWeekly: 3 }, "2021-01-05T00:00:00Z");
    expect(verdicts(p).keep).toEqual({
      "2021-01-04T12:00:00.000Z": ["newest valid", "weekly 2021-W01"],
      "2021-01-03T12:00:00.000Z": ["weekly 2020-W53"],
      "2020-12-27T12:00:00.000Z": ["weekly 2020-W52"],
    });
    const y = plan(ms, { keepYearly: 2 }, "2021-01-05T00:00:00Z");
    expect(verdicts(y).keep).toEqual({
      "2021-01-04T12:00:00.000Z": ["newest valid", "yearly 2021"],
      "2020-12-31T12:00:00.000Z": ["yearly 2020"],
    });
  });

  it("ISO week 53 of 2026, and a zone that moves a backup into the next ISO week", () => {
    expect(isoWeek(2026, 12, 28)).toEqual({ year: 2026, week: 53 });
    expect(isoWeek(2027, 1, 3)).toEqual({ year: 2026, week: 53 });
    expect(isoWeek(2027, 1, 4)).toEqual({ year: 2027, week: 1 });
    expect(isoWeek(2021, 1, 1)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2024, 12, 30)).toEqual({ year: 2025, week: 1 });
    expect(isoWeek(2025, 12, 29)).toEqual({ year: 2026, week: 1 });
    const late = Date.parse("2027-01-03T23:30:00Z");
    expect(bucketOf(late, "weekly")).toBe("2026-W53");
    expect(bucketOf(late, "weekly", "Europe/Berlin")).toBe("2027-W01");
    expect(bucketOf(late, "weekly", "America/New_York")).toBe("2026-W53");
  });

  it("leap days: 2024-02-29 is its own day, in February, and 1y is 365.25 days", () => {
    const ms = ["2024-03-01", "2024-02-29", "2024-02-28"].map((d) => at(`${d}T00:00:00Z`));
    const p = plan(ms, { keepDaily: 3, keepMonthly: 2 }, "2024-03-02T00:00:00Z");
    expect(verdicts(p).keep).toEqual({
      "2024-03-01T00:00:00.000Z": ["newest valid", "daily 2024-03-01", "monthly 2024-03"],
      "2024-02-29T00:00:00.000Z": ["daily 2024-02-29", "monthly 2024-02"],
      "2024-02-28T00:00:00.000Z": ["daily 2024-02-28"],
    });
    // 2025-02-28T00:00Z minus 365.25 days is 2024-02-28T18:00Z (2024 has a Feb 29).
    const w = plan(ms, { keepWithin: "1y" }, "2025-02-28T00:00:00Z");
    expect(Object.keys(verdicts(w).keep)).toEqual(["2024-03-01T00:00:00.000Z", "2024-02-29T00:00:00.000Z"]);
    expect(bucketOf(Date.parse("2024-02-29T23:30:00Z"), "daily", "Asia/Tokyo")).toBe("2024-03-01");
  });

  it("identical timestamps: one bucket, ordered by id, whatever the input order", () => {
    const same = [0x10, 0xff, 0x80].map((suffix) => at("2026-11-20T00:00:00Z", { suffix }));
    const p = plan(same, { keepLast: 1 }, "2026-11-21T00:00:00Z");
    const q = plan([...same].reverse(), { keepLast: 1 }, "2026-11-21T00:00:00Z");
    expect(p).toEqual(q);
    expect(p.keep.map((d) => d.id)).toEqual([same[1]!.id]);
    const daily = plan(same, { keepDaily: 5 }, "2026-11-21T00:00:00Z");
    expect(daily.keep.map((d) => d.id)).toEqual([same[1]!.id]);
    // The same manifest listed twice is one backup.
    expect(plan([same[0]!, same[0]!], {}, "2026-11-21T00:00:00Z").decisions).toHaveLength(1);
  });

  it("future-dated backups: never too old, counted as newest, and the newest valid one up to now is kept too", () => {
    const ms = [at("2027-06-01T00:00:00Z"), at("2026-11-20T00:00:00Z"), at("2026-11-19T00:00:00Z")];
    const p = plan(ms, { keepLast: 1, maxAge: "30d" }, "2026-11-21T00:00:00Z");
    expect(verdicts(p)).toEqual({
      keep: {
        "2027-06-01T00:00:00.000Z": ["last 1"],
        "2026-11-20T00:00:00.000Z": ["newest valid"],
      },
      drop: { "2026-11-19T00:00:00.000Z": ["not kept by any rule"] },
    });
    const w = plan(ms, { keepWithin: "1h" }, "2026-11-21T00:00:00Z");
    expect(w.keep.map((d) => d.reasons)).toEqual([["within 1h"], ["newest valid"]]);
    // Only future-dated backups: the newest of them is the newest valid.
    const onlyFuture = plan([ms[0]!], { maxAge: "1d" }, "2026-11-21T00:00:00Z");
    expect(onlyFuture.keep[0]!.reasons).toEqual(["newest valid", "max age 1d"]);
  });
});

describe("src/policies is pure", () => {
  it("imports only zod, node-free core helpers and itself; reads no clock and no environment", async () => {
    const { readdir, readFile } = await import("node:fs/promises");
    const dir = new URL("../../src/policies/", import.meta.url);
    const files = (await readdir(dir)).filter((f) => f.endsWith(".ts"));
    // Every file in the folder is held to the rule, not only these.
    expect(files).toEqual(
      expect.arrayContaining(["calendar.ts", "index.ts", "retention.ts", "status.ts", "validation.ts"]),
    );
    // signing.js brings node:crypto for pure computations (SHA-256, Ed25519 verification of a
    // manifest's signature and chain): no I/O, no clock, the same answer for the same input.
    // core/incremental.ts is pure too: chain resolution over manifests, with type-only imports.
    const allowed = new Set([
      "zod",
      "../core/errors.js",
      "../core/incremental.js",
      "../core/manifest.js",
      "../core/options.js",
      "../core/signing.js",
      "../core/type-checks.js",
    ]);
    for (const file of files) {
      const text = await readFile(new URL(file, dir), "utf8");
      const imports = [...text.matchAll(/from\s+"([^"]+)"/g)].map((m) => m[1]!);
      expect(
        imports.filter((i) => !allowed.has(i) && !/^\.\/[a-z-]+\.js$/.test(i)),
        file,
      ).toEqual([]);
      const code = text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""); // comments may mention them
      expect(code, file).not.toMatch(/Date\.now\(|new Date\(\s*\)|process\.|performance\.|Math\.random/);
    }
  });

  it("names a bad rule by its path inside the options", () => {
    const error = codeOf(() =>
      plan([at("2026-11-20T00:00:00Z")], {}, "2026-11-21T00:00:00Z", { rules: { maxAge: "soon" } }),
    );
    expect(error).toEqual({
      code: "CONFIG_INVALID",
      details: { issues: [{ path: "rules.maxAge", problem: expect.any(String) }] },
    });
  });
});

describe("localTime", () => {
  it("agrees with Intl's formatToParts across zones, DST changes and centuries", () => {
    const zones = [
      "UTC",
      "Europe/Berlin",
      "America/New_York",
      "Asia/Kolkata",
      "Australia/Lord_Howe",
      "Pacific/Chatham",
    ];
    const start = Date.parse("1970-01-01T00:00:00Z");
    const end = Date.parse("2100-01-01T00:00:00Z");
    for (const timeZone of zones) {
      const reference = new Intl.DateTimeFormat("en-GB", {
        timeZone,
        hourCycle: "h23",
        year: "numeric",
        month: "numeric",
        day: "numeric",
        hour: "numeric",
        minute: "numeric",
      });
      for (let i = 0; i < 400; i++) {
        // A fixed, well-spread sequence of instants (no randomness: failures reproduce).
        const ms = start + Math.floor((((i * 2_654_435_761) % 1_000_003) / 1_000_003) * (end - start));
        const parts = Object.fromEntries(reference.formatToParts(ms).map((p) => [p.type, Number(p.value)]));
        const t = localTime(ms, timeZone);
        expect(
          [t.year, t.month, t.day, t.hour, t.minute],
          `${timeZone} ${new Date(ms).toISOString()}`,
        ).toEqual([parts.year, parts.month, parts.day, parts.hour, parts.minute]);
        // The offset turns the wall clock back into the instant (to the minute).
        const wall = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute);
        expect(wall - t.offsetMinutes * 60_000).toBe(Math.floor(ms / 60_000) * 60_000);
      }
    }
  });
});
