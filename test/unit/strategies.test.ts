/**
 * The two strategies stowage was made for, run for eight simulated years.
 *
 * Each example's own job builder (`tieredJobs`, `drJobs`) is given tiny `bytesSource`s and
 * in-memory sinks and driven by the library's real `runJobs`/`runJob` (backup, copies, retention,
 * validation, audit) and `runDrills`, with an injected clock: every backup, retention plan and
 * audit line reads the simulated time. What each tier must hold is computed here, independently,
 * from the calendar: ages in days for "30 days", calendar months for the archive's monthly copies,
 * ISO weeks and months for grandfather-father-son. After every simulated day the test checks that
 * each sink holds exactly that (no more, no fewer), that every deletion is in the audit trail with
 * its reason, that the reasons of each kept backup name the rule that kept it, and that no RPO is
 * breached.
 *
 * Granularity: eight years of 5- and 15-minute runs are ~900,000 runs, so the years are simulated
 * with one cycle per day (every job runs once a day, at 06:00 UTC); retention of days, weeks,
 * months and years only changes at that grain, and at it the RPO that can be checked is "a valid
 * backup from today's cycle" (1 day). The fine tiers — the real cron schedules (every 5 and 15
 * minutes, hourly, every 4 hours) and their RPOs (15 minutes...) — are simulated on their own for a
 * day across a month boundary, run by run in time order as the scheduler would run them, with the
 * status checked at every run (runs take no simulated time, so a backup's age peaks at its interval).
 */

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Cron } from "croner";
import { describe, expect, it } from "vitest";
import {
  JOBS as B_JOBS,
  type JobName as BJobName,
  drJobs,
  monthlyTest,
} from "../../examples/disaster-recovery.js";
import {
  JOBS as A_JOBS,
  type JobName as AJobName,
  ARCHIVE_LOCK,
  CONSTITUTIONAL_HASH,
  RETENTION,
  tieredJobs,
} from "../../examples/tiered-backups.js";
import { MANIFEST_SUFFIX, type Manifest } from "../../src/core/manifest.js";
import { parseDuration } from "../../src/core/options.js";
import {
  type AuditEntry,
  type AuditTrail,
  auditEntrySchema,
  type CycleResult,
  defineConfig,
  type Job,
  pruneJob,
  runDrills,
  runJob,
  runJobs,
} from "../../src/jobs/index.js";
import { summarize } from "../../src/policies/status.js";
import { GLACIER_STORAGE_CLASSES } from "../../src/sinks/glacier.js";
import { type MemorySink, memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";

const DAY = 86_400_000;
const KEY = "5f".repeat(32);
/** Eight years; STOWAGE_SIM_YEARS shortens a local run (the year-8 assertions then do not apply). */
const YEARS = Number(process.env.STOWAGE_SIM_YEARS ?? 8);

/** The simulated clock every run reads. */
function fakeClock(start: number) {
  const clock = { ms: start, now: () => new Date(clock.ms) };
  return clock;
}

/** An audit trail in memory: every line checked against the real schema, as a file trail would. */
function memoryAudit(): AuditTrail & { entries: AuditEntry[] } {
  const entries: AuditEntry[] = [];
  return {
    entries,
    async record(entry) {
      entries.push(auditEntrySchema.parse({ time: new Date().toISOString(), ...entry }));
    },
    async flush() {},
  };
}

/** A memory sink that calls itself `kind`, so manifests name the tier the way the real sink would. */
function standIn(kind: string): MemorySink {
  return { ...memorySink(), kind };
}

/**
 * The archive's stand-in: a memory sink with the capabilities a Glacier sink declares, and S3
 * Object Lock in compliance mode — every object is locked for `lockFor` from its write (by the
 * simulated clock) and a delete of a locked object fails, as S3 refuses it.
 */
function glacierStandIn(
  clock: { now: () => Date },
  lockFor: string,
): MemorySink & { locks: Map<string, number> } {
  const inner = memorySink({ storageClasses: [...GLACIER_STORAGE_CLASSES] });
  const locks = new Map<string, number>();
  const lockMs = parseDuration(lockFor);
  return {
    ...inner,
    kind: "glacier",
    capabilities: { storageClasses: GLACIER_STORAGE_CLASSES, readLatency: "hours", delete: true },
    locks,
    async write(key, body, options) {
      const written = await inner.write(key, body, options);
      const artifact = key.endsWith(MANIFEST_SUFFIX) ? key.slice(0, -MANIFEST_SUFFIX.length) : key;
      const until = locks.get(artifact) ?? Math.ceil((clock.now().getTime() + lockMs) / 1000) * 1000;
      locks.set(key, until);
      return { ...written, retainUntil: new Date(until) };
    },
    async delete(keys) {
      const locked = keys.filter((k) => (locks.get(k) ?? 0) > clock.now().getTime());
      if (locked.length > 0) throw new Error(`AccessDenied: ${locked[0]} is under Object Lock`);
      for (const k of keys) locks.delete(k);
      await inner.delete(keys);
    },
  };
}

/** What a sink holds, read straight from its objects (each manifest parsed once, as plain JSON). */
const parsed = new WeakMap<MemorySink, Map<string, Manifest>>();
function holdings(sink: MemorySink): Manifest[] {
  const before = parsed.get(sink) ?? new Map<string, Manifest>();
  const cache = new Map<string, Manifest>(); // only what is held now: years of deletions are not kept
  for (const [key, object] of sink.objects) {
    if (!key.endsWith(MANIFEST_SUFFIX)) continue;
    const m = before.get(key) ?? (JSON.parse(object.data.toString("utf8")) as Manifest);
    // A manifest without its artifact would be a broken backup.
    if (!sink.objects.has(m.artifact.key)) throw new Error(`${key} has no artifact beside it`);
    cache.set(key, m);
  }
  parsed.set(sink, cache);
  return [...cache.values()];
}

/** What a sink held at one moment: its manifests, their artifact keys, and start times per job. */
interface Snapshot {
  manifests: Manifest[];
  keys: Set<string>;
  /** Job -> start times (ISO), sorted. */
  byJob: Map<string, string[]>;
}
function snapshot(sink: MemorySink): Snapshot {
  const manifests = holdings(sink);
  const byJob = new Map<string, string[]>();
  for (const m of manifests) {
    const list = byJob.get(m.job) ?? [];
    list.push(m.startedAt);
    byJob.set(m.job, list);
  }
  for (const list of byJob.values()) list.sort();
  return { manifests, keys: new Set(manifests.map((m) => m.artifact.key)), byJob };
}

/**
 * The start of every backup a job made, in order, with its ISO form. The simulation asks for
 * "every backup younger than 30 days" daily; a binary search finds them instead of a scan of years.
 */
class Made {
  readonly ms: number[] = [];
  readonly iso: string[] = [];
  add(ms: number) {
    this.ms.push(ms);
    this.iso.push(iso(ms));
  }
  /** ISO starts of the backups at most `maxAgeMs` old at `now`, oldest first. */
  within(now: number, maxAgeMs: number): string[] {
    let lo = 0;
    let hi = this.ms.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (now - this.ms[mid]! > maxAgeMs) lo = mid + 1;
      else hi = mid;
    }
    return this.iso.slice(lo);
  }
}

const iso = (ms: number) => new Date(ms).toISOString();
const day = (ms: number) => iso(ms).slice(0, 10);

/** ISO week of a UTC date, written here from its definition (the week holding the Thursday). */
function isoWeekOf(ms: number): string {
  const d = new Date(ms);
  const weekday = (d.getUTCDay() + 6) % 7; // Monday 0
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - weekday + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * DAY)) + 1;
  return `${year}-W${String(week).padStart(2, "0")}`;
}
const monthOf = (ms: number) => iso(ms).slice(0, 7);

/**
 * The newest backup in each of the `n` newest buckets that hold one, kept as backups are made (in
 * time order, so a bucket's newest is its last, and buckets arrive oldest first).
 */
class NewestPerBucket {
  private readonly newest = new Map<string, number>();
  constructor(
    private readonly bucket: (ms: number) => string,
    private readonly n: number,
  ) {}
  add(ms: number) {
    const b = this.bucket(ms);
    this.newest.delete(b); // re-inserted last: the map stays in bucket order
    this.newest.set(b, ms);
    // A bucket past the n newest can never come back: later backups fall in later buckets.
    while (this.newest.size > this.n) this.newest.delete(this.newest.keys().next().value!);
  }
  get values(): number[] {
    return [...this.newest.values()];
  }
  get size() {
    return this.newest.size;
  }
}

/** Checks the deletions since the previous day against the audit trail, one line each, with its reason. */
function checkDeletions(
  audit: AuditEntry[],
  from: number,
  before: Map<string, Set<string>>,
  sinks: Record<string, { sink: MemorySink; held: Snapshot }>,
) {
  // Problems are gathered and asserted once: an expect() per backup per simulated day would cost
  // more than the library's own work.
  const problems: string[] = [];
  const deletes = audit.slice(from).filter((e) => e.action === "delete");
  for (const e of deletes) {
    if (e.result !== "ok") problems.push(`delete of ${e.key}: ${e.result}`);
    if (!/^older than \d+[dy]$|^not kept by any rule$/.test(e.reason ?? "")) {
      problems.push(`delete of ${e.key}: reason ${e.reason}`);
    }
  }
  const audited = new Set(deletes.map((e) => `${e.sink}:${e.key}`));
  let gone = 0;
  for (const [name, { sink, held }] of Object.entries(sinks)) {
    const now = held.keys;
    for (const key of before.get(name) ?? []) {
      if (now.has(key)) continue;
      gone++;
      if (!audited.has(`${sink.kind}:${key}`))
        problems.push(`deletion of ${key} from ${name} is not audited`);
    }
    before.set(name, now);
  }
  if (deletes.length !== gone) problems.push(`${deletes.length} deletions audited, ${gone} backups gone`);
  expect(problems).toEqual([]);
}

/** Every retention decision of the cycle: kept backups name their rule, drops say why. */
function checkReasons(cycle: CycleResult, keepRule: (job: string, target: string) => RegExp) {
  const problems: string[] = [];
  for (const job of cycle.jobs) {
    if (job.errors.length > 0) problems.push(`${job.job} errors: ${JSON.stringify(job.errors)}`);
    for (const r of job.retention) {
      const rule = keepRule(job.job, r.target);
      for (const d of r.decisions ?? []) {
        if (d.action === "keep" && !d.reasons.some((reason) => rule.test(reason))) {
          problems.push(`${job.job}@${r.target} ${d.key}: ${d.reasons.join(", ")}`);
        }
      }
    }
  }
  expect(problems).toEqual([]);
}

function printTable(title: string, rows: string[][]) {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "),
  );
  console.log(`\n${title}\n${lines.join("\n")}`);
}

describe("strategy A (examples/tiered-backups.ts): three tiers, each kind with its own retention", () => {
  const START = Date.UTC(2026, 0, 15, 6); // a mid-month start: the first archive copy is that day's

  function setup(clock: { now: () => Date }) {
    const local = standIn("filesystem");
    const offsite = standIn("s3");
    const archive = glacierStandIn(clock, ARCHIVE_LOCK);
    const sources = Object.fromEntries(
      (Object.keys(A_JOBS) as AJobName[]).map((name) => [
        name,
        bytesSource({ name, data: `${name} {"constitutional_hash":"${CONSTITUTIONAL_HASH}"}` }),
      ]),
    ) as Record<AJobName, ReturnType<typeof bytesSource>>;
    const jobs = tieredJobs({ local, offsite, archive, sources, key: KEY });
    return { local, offsite, archive, jobs };
  }

  it(`holds exactly what the table says in every tier on every day for ${YEARS} years`, async () => {
    const clock = fakeClock(START);
    const { local, offsite, archive, jobs } = setup(clock);
    const audit = memoryAudit();
    const before = new Map<string, Set<string>>();
    const table: string[][] = [["end of year", "job", "local", "offsite", "archive", "archive oldest"]];
    const days = Math.round((Date.UTC(2026 + YEARS, 0, 15, 6) - START) / DAY);
    // Per job, from the table: its retention per tier, and every backup made (all of them, and the
    // first of each calendar month: what the archive's monthly copy takes).
    const plan = jobs.map((job) => {
      const tiers: { local: string; offsite: string; archive?: string } =
        RETENTION[A_JOBS[job.name as AJobName].kind];
      return {
        job,
        tiers,
        ageMs: {
          local: parseDuration(tiers.local),
          offsite: parseDuration(tiers.offsite),
          archive: tiers.archive ? parseDuration(tiers.archive) : undefined,
        },
        made: new Made(),
        firstOfMonth: new Made(),
      };
    });
    const rules = { requiredLabels: { constitutional_hash: CONSTITUTIONAL_HASH }, requireEncryption: true };

    for (let d = 0; d < days; d++) {
      clock.ms = START + d * DAY;
      const now = clock.ms;
      const auditFrom = audit.entries.length;
      const cycle = await runJobs(jobs, { now: clock.now, audit });
      expect(cycle.ok, `day ${day(now)}`).toBe(true);
      for (const p of plan) {
        if (p.made.ms.length === 0 || monthOf(p.made.ms.at(-1)!) !== monthOf(now)) p.firstOfMonth.add(now);
        p.made.add(now);
      }
      const held = { local: snapshot(local), offsite: snapshot(offsite), archive: snapshot(archive) };

      // What each tier must hold, from the calendar.
      for (const p of plan) {
        const expected = {
          local: p.made.within(now, p.ageMs.local),
          offsite: p.made.within(now, p.ageMs.offsite),
          archive: p.ageMs.archive === undefined ? [] : p.firstOfMonth.within(now, p.ageMs.archive),
        };
        for (const tier of ["local", "offsite", "archive"] as const) {
          const has = held[tier].byJob.get(p.job.name) ?? [];
          const want = expected[tier];
          if (has.join() !== want.join()) expect(has, `${p.job.name}@${tier} on ${day(now)}`).toEqual(want);
        }
      }
      // The hash on every backup, in every tier; the archive's copies in GLACIER, locked 7 years.
      if (d % 30 === 0) {
        for (const { manifests } of Object.values(held)) {
          const unlabelled = manifests.filter((m) => m.labels.constitutional_hash !== CONSTITUTIONAL_HASH);
          expect(unlabelled.map((m) => m.artifact.key)).toEqual([]);
        }
        for (const m of held.archive.manifests) {
          expect(m.artifact.storageClass).toBe("GLACIER");
          expect(Date.parse(m.retainUntil!)).toBeGreaterThanOrEqual(
            Date.parse(m.startedAt) + parseDuration("7y"),
          );
        }
      }
      // A kept backup names its own job's row of the table for that tier.
      checkReasons(cycle, (job, target) => {
        const tiers = plan.find((p) => p.job.name === job)!.tiers;
        const age = target === "primary" ? tiers.local : target === "offsite" ? tiers.offsite : tiers.archive;
        return new RegExp(`^max age ${age}$`);
      });
      checkDeletions(audit.entries, auditFrom, before, {
        local: { sink: local, held: held.local },
        offsite: { sink: offsite, held: held.offsite },
        archive: { sink: archive, held: held.archive },
      });
      // RPO at this grain: just before tomorrow's cycle, every job has a valid backup from today.
      const status = summarize(held.local.manifests, {
        now: new Date(now + DAY),
        rpo: "1d",
        rules,
        jobs: jobs.map((j) => j.name),
      });
      expect(status.overall.rpoBreached, day(now)).toBe(0);

      const next = new Date(now + DAY);
      if (next.getUTCFullYear() !== new Date(now).getUTCFullYear()) {
        for (const job of jobs) {
          const count = (tier: Snapshot) => tier.byJob.get(job.name) ?? [];
          const inArchive = count(held.archive);
          table.push([
            day(now),
            job.name,
            String(count(held.local).length),
            String(count(held.offsite).length),
            String(inArchive.length),
            inArchive[0]?.slice(0, 10) ?? "-",
          ]);
        }
      }
    }
    printTable(`strategy A: what each tier held at the end of each simulated year`, table);

    // Year 8: the first archive copies have aged out of their 7 years, and their locks let go.
    const archived = holdings(archive).filter((m) => m.job === "postgres");
    expect(archived.length).toBe(84);
    expect(
      audit.entries.some(
        (e) => e.action === "delete" && e.sink === "glacier" && e.reason === "older than 7y",
      ),
    ).toBe(true);
    expect(audit.entries.filter((e) => e.action === "copy" && e.sink === "glacier").length).toBe(
      2 * (YEARS * 12 + 1),
    );
  }, 600_000);

  it("runs on its real schedules across a month boundary: every RPO holds, the archive gets the month's first backup", async () => {
    const from = Date.UTC(2026, 0, 31, 12);
    const to = Date.UTC(2026, 1, 1, 12);
    const clock = fakeClock(from);
    const { local, offsite, archive, jobs } = setup(clock);
    const config = defineConfig({ jobs });
    const audit = memoryAudit();
    const runs = jobs
      .flatMap((job) => cronTimes(job.schedule as string, from, to).map((at) => ({ at, job })))
      .sort((a, b) => a.at - b.at || a.job.name.localeCompare(b.job.name));
    expect(runs.length).toBe(288 + 96 + 24 + 6 + 1);
    const rules = { requiredLabels: { constitutional_hash: CONSTITUTIONAL_HASH }, requireEncryption: true };
    for (const { at, job } of runs) {
      clock.ms = at;
      // RPO: the job's own freshness (`rules.maxAge`, the status RPO of the CLI) before every run.
      const status = summarize(holdings(local), {
        now: clock.now(),
        rpo: Object.fromEntries(config.jobs.map((j) => [j.name, j.rules!.maxAge!])),
        rules,
      });
      const ran = new Set(runs.filter((r) => r.at < at).map((r) => r.job.name));
      for (const s of status.jobs)
        if (ran.has(s.job)) expect(s.rpoBreached, `${s.job} at ${iso(at)}`).toBe(false);
      const result = await runJob(job, { now: clock.now, audit });
      expect(result.errors, `${job.name} at ${iso(at)}`).toEqual([]);
      const archiveCopy = result.copies.find((c) => c.target === "archive");
      if (archiveCopy) {
        const first = !runs.some((r) => r.job === job && r.at < at && monthOf(r.at) === monthOf(at));
        expect(archiveCopy.status, `${job.name} at ${iso(at)}`).toBe(first ? "succeeded" : "skipped");
      }
    }
    // Everything is within 7 days: local and offsite hold every run; the archive one per month.
    for (const job of jobs) {
      const count = runs.filter((r) => r.job === job).length;
      expect(holdings(local).filter((m) => m.job === job.name).length).toBe(count);
      expect(holdings(offsite).filter((m) => m.job === job.name).length).toBe(count);
    }
    expect(
      holdings(archive)
        .map((m) => `${m.job} ${m.startedAt}`)
        .sort(),
    ).toEqual([
      `audit-log ${iso(from)}`,
      `audit-log ${iso(Date.UTC(2026, 1, 1))}`,
      `postgres ${iso(Date.UTC(2026, 0, 31, 12))}`,
      `postgres ${iso(Date.UTC(2026, 1, 1))}`,
    ]);
  }, 60_000);
});

/** The times a cron pattern fires in [from, to), by croner, the scheduler's own parser. */
function cronTimes(pattern: string, from: number, to: number): number[] {
  const cron = new Cron(pattern, { timezone: "UTC", paused: true });
  const out: number[] = [];
  let next = cron.nextRun(new Date(from - 1));
  while (next && next.getTime() < to) {
    out.push(next.getTime());
    next = cron.nextRun(next);
  }
  cron.stop();
  return out;
}

describe("strategy B (examples/disaster-recovery.ts): RPO/RTO classes, GFS, a second region, drills", () => {
  const START = Date.UTC(2026, 0, 1, 6); // every daily cycle at 06:00, when the monthly test runs

  function setup() {
    const primary = standIn("s3");
    const replica = standIn("s3");
    const sources = Object.fromEntries(
      (Object.keys(B_JOBS) as BJobName[]).map((name) => [name, bytesSource({ name, data: `${name} state` })]),
    ) as Record<BJobName, ReturnType<typeof bytesSource>>;
    const stream = { target: { kind: "stream" as const } };
    const jobs = drJobs({
      primary,
      replica,
      sources,
      key: KEY,
      drills: { "application-data": stream, configuration: stream, infrastructure: stream },
    });
    return { primary, replica, jobs };
  }
  /** Deployments every six or seven days: infrastructure is backed up on each. */
  const deploys = (d: number) => d === 0 || (d * 7919) % 13 < 2;

  it(`holds the grandfather-father-son generations in both regions, drills monthly and quarterly, for ${YEARS} years`, async () => {
    const clock = fakeClock(START);
    const { primary, replica, jobs } = setup();
    const config = defineConfig({ jobs });
    const byName = (n: BJobName) => jobs.find((j) => j.name === n)!;
    const audit = memoryAudit();
    const before = new Map<string, Set<string>>();
    const reports = await mkdtemp(join(tmpdir(), "stowage-strategy-b-"));
    const table: string[][] = [["end of year", "job", "primary", "region-2", "daily", "weekly", "monthly"]];
    let monthlyTests = 0;
    let failovers = 0;
    // Every backup made, per job; for application data also its generations, from the calendar.
    const made = new Map(jobs.map((j) => [j.name, new Made()]));
    const gfs = {
      daily: new NewestPerBucket(day, 30),
      weekly: new NewestPerBucket(isoWeekOf, 52),
      monthly: new NewestPerBucket(monthOf, 84),
    };
    const maxAgeMs = { configuration: parseDuration("90d"), infrastructure: parseDuration("1y") };
    try {
      const days = Math.round((Date.UTC(2026 + YEARS, 0, 1, 6) - START) / DAY);
      for (let d = 0; d < days; d++) {
        clock.ms = START + d * DAY;
        const now = clock.ms;
        const today: Job[] = [byName("application-data"), byName("configuration")];
        if (deploys(d)) today.push(byName("infrastructure"));
        const auditFrom = audit.entries.length;
        const cycle = await runJobs(today, { now: clock.now, audit });
        expect(cycle.ok, day(now)).toBe(true);
        // Infrastructure is backed up only when deployed; its retention runs daily all the same
        // (`stowage prune --job infrastructure`), so a year-old backup goes on its day.
        if (!deploys(d)) {
          const pruned = await pruneJob(byName("infrastructure"), { now: clock.now, audit });
          expect(pruned.every((r) => r.status === "succeeded")).toBe(true);
          cycle.jobs.push({ ...cycle.jobs[0]!, job: "infrastructure", retention: pruned, errors: [] });
        }
        for (const job of today) made.get(job.name)!.add(now);
        for (const g of Object.values(gfs)) g.add(now);

        const held = { primary: snapshot(primary), replica: snapshot(replica) };
        for (const job of jobs) {
          const times = made.get(job.name)!;
          let want: string[];
          if (job.name === "application-data") {
            const keep = new Set([...gfs.daily.values, ...gfs.weekly.values, ...gfs.monthly.values]);
            want = [...keep].sort((a, b) => a - b).map(iso);
          } else {
            want = times.within(now, maxAgeMs[job.name as "configuration" | "infrastructure"]);
            // The newest valid backup is never dropped, however old.
            const newest = times.iso.at(-1);
            if (newest !== undefined && want.at(-1) !== newest) want.push(newest);
          }
          for (const [where, snap] of Object.entries(held)) {
            const has = snap.byJob.get(job.name) ?? [];
            if (has.join() !== want.join()) expect(has, `${job.name}@${where} on ${day(now)}`).toEqual(want);
          }
        }
        checkReasons(cycle, (job) =>
          job === "application-data"
            ? /^(daily \d{4}-\d{2}-\d{2}|weekly \d{4}-W\d{2}|monthly \d{4}-\d{2})$/
            : job === "configuration"
              ? /^max age 90d$/
              : /^(max age 1y|newest valid)$/,
        );
        // The GFS reasons are the calendar's own buckets.
        const startOf = new Map(held.primary.manifests.map((m) => [m.artifact.key, Date.parse(m.startedAt)]));
        const wrongBuckets: string[] = [];
        for (const r of cycle.jobs.find((j) => j.job === "application-data")!.retention) {
          for (const dec of r.decisions ?? []) {
            const t = startOf.get(dec.key) ?? Number.NaN;
            if (dec.action !== "keep" || Number.isNaN(t)) continue;
            for (const reason of dec.reasons) {
              const want = reason.startsWith("daily ")
                ? `daily ${day(t)}`
                : reason.startsWith("weekly ")
                  ? `weekly ${isoWeekOf(t)}`
                  : reason.startsWith("monthly ")
                    ? `monthly ${monthOf(t)}`
                    : reason;
              if (reason !== want) wrongBuckets.push(`${dec.key}: ${reason}, not ${want}`);
            }
          }
        }
        expect(wrongBuckets).toEqual([]);
        checkDeletions(audit.entries, auditFrom, before, {
          primary: { sink: primary, held: held.primary },
          replica: { sink: replica, held: held.replica },
        });
        // RPO at this grain (1 day) for the scheduled jobs, just before tomorrow's cycle.
        const status = summarize(held.primary.manifests, {
          now: new Date(now + DAY),
          rpo: { "application-data": "1d", configuration: "1d" },
        });
        expect(status.overall.rpoBreached, day(now)).toBe(0);
        // The status RPOs a real deployment checks come from the jobs' classes.
        expect(config.status?.rpo).toEqual({ "application-data": "15m", configuration: "24h" });

        // The monthly backup test, on the 1st at 06:00 right after the cycle: verify, restore, report.
        const date = new Date(now);
        if (date.getUTCDate() === 1) {
          const test = monthlyTest(reports);
          const report = await runDrills(jobs, {
            name: test.name,
            report: test.report!,
            now: clock.now,
            audit,
          });
          monthlyTests++;
          expect(report.ok, `monthly test ${day(now)}`).toBe(true);
          const written = JSON.parse(await readFile(report.path!, "utf8"));
          expect(report.path).toBe(join(reports, `monthly-backup-test-${monthOf(now)}.json`));
          expect(written.drills.map((r: { job: string }) => r.job)).toEqual(jobs.map((j) => j.name));
          for (const drill of report.drills) {
            expect(drill.verify?.ok).toBe(true);
            expect(drill.objectives.rto).toEqual(
              expect.objectContaining({ met: true, class: B_JOBS[drill.job as BJobName].rtoClass }),
            );
          }
          const appData = report.drills.find((r) => r.job === "application-data")!;
          expect(appData.objectives.rpo).toEqual({ limitMs: 15 * 60_000, met: true, class: "critical" });
          // The quarterly failover drill restores everything from the second region.
          if (date.getUTCMonth() % 3 === 0) {
            const failover = await runDrills(jobs, {
              name: "failover",
              from: "region-2",
              now: clock.now,
              audit,
            });
            failovers++;
            expect(failover.ok).toBe(true);
            expect(failover.from).toBe("region-2");
            expect(failover.drills.length).toBe(3);
          }
        }

        const next = new Date(now + DAY);
        if (next.getUTCFullYear() !== new Date(now).getUTCFullYear()) {
          for (const job of jobs) {
            const isApp = job.name === "application-data";
            table.push([
              day(now),
              job.name,
              String(held.primary.byJob.get(job.name)?.length ?? 0),
              String(held.replica.byJob.get(job.name)?.length ?? 0),
              isApp ? String(gfs.daily.size) : "-",
              isApp ? String(gfs.weekly.size) : "-",
              isApp ? String(gfs.monthly.size) : "-",
            ]);
          }
        }
      }
      printTable("strategy B: what each region held at the end of each simulated year", table);
      expect(monthlyTests).toBe(YEARS * 12);
      expect(failovers).toBe(YEARS * 4);
      // After 8 years the monthlies reach back 7 years: 84 months, no more.
      const appTimes = holdings(primary)
        .filter((m) => m.job === "application-data")
        .map((m) => monthOf(Date.parse(m.startedAt)));
      expect(new Set(appTimes).size).toBe(84);
    } finally {
      await rm(reports, { recursive: true, force: true });
    }
  }, 600_000);

  it("meets the critical 15-minute RPO run by run through a day of 15-minute backups", async () => {
    const from = Date.UTC(2026, 2, 31, 0);
    const to = Date.UTC(2026, 3, 1, 6);
    const clock = fakeClock(from);
    const { primary, replica, jobs } = setup();
    const config = defineConfig({ jobs });
    const scheduled = jobs.filter((j) => j.schedule);
    const runs = scheduled
      .flatMap((job) => cronTimes(job.schedule as string, from, to).map((at) => ({ at, job })))
      .sort((a, b) => a.at - b.at || a.job.name.localeCompare(b.job.name));
    const rpo = config.status!.rpo as Record<string, string>;
    for (const { at, job } of runs) {
      clock.ms = at;
      const status = summarize(holdings(primary), { now: clock.now(), rpo });
      for (const s of status.jobs) {
        if (runs.some((r) => r.job.name === s.job && r.at < at))
          expect(s.rpoBreached, `${s.job} ${iso(at)}`).toBe(false);
      }
      const result = await runJob(job, { now: clock.now });
      expect(result.errors).toEqual([]);
    }
    // GFS within a day and a bit: the newest backup of each day (31 March 23:45, and the newest of
    // 1 April, 05:45), which are also the newest of their ISO weeks and months.
    const held = holdings(primary)
      .filter((m) => m.job === "application-data")
      .map((m) => m.startedAt)
      .sort();
    expect(held).toEqual([iso(Date.UTC(2026, 2, 31, 23, 45)), iso(Date.UTC(2026, 3, 1, 5, 45))]);
    expect(holdings(replica).filter((m) => m.job === "application-data").length).toBe(2);
  }, 60_000);
});
