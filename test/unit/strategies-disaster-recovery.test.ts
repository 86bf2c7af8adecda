/**
 * Strategy B (examples/disaster-recovery.ts), run for eight simulated years.
 *
 * The example's own job builder (`drJobs`) is given tiny `bytesSource`s and in-memory sinks for its
 * two regions and driven by the library's real `runJobs`/`runJob`/`pruneJob` (backup, copies,
 * retention, validation, audit) and `runDrills` (the monthly backup test, the quarterly failover),
 * with an injected clock. What each region must hold is computed here, independently, from the
 * calendar: ISO weeks and months for grandfather-father-son, ages for the others. After every
 * simulated day the test checks that each region holds exactly that (no more, no fewer), that every
 * deletion is in the audit trail with its reason, that the reasons of each kept backup name the
 * rule and the calendar bucket that kept it, and that no RPO is breached; it prints what each
 * region held at the end of each year.
 *
 * Granularity: eight years of 5- and 15-minute runs are ~900,000 runs, so the years are simulated
 * with one cycle per day (every job runs once a day, at 06:00 UTC); retention of days, weeks,
 * months and years only changes at that grain, and at it the RPO that can be checked is "a valid
 * backup from today's cycle" (1 day). The fine tiers — the real cron schedules (application data
 * every 15 minutes, configuration daily) and their RPOs (15 minutes) — are simulated on their own
 * for a day across a month boundary, run by run in time order as the scheduler would run them, with
 * the status checked at every run (runs take no simulated time, so a backup's age peaks at its
 * interval).
 *
 * The strategies are two files (this and strategies-tiered.test.ts) so that the test runner's
 * workers run them side by side; their shared helpers are in test/support/strategies.ts. The eight
 * years must run in well under a minute: bench/strategies.ts measures the library's share, and
 * BENCHMARKS.md ("Strategies") records both.
 */

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  JOBS as B_JOBS,
  type JobName as BJobName,
  drJobs,
  monthlyTest,
} from "../../examples/disaster-recovery.js";
import { parseDuration } from "../../src/core/options.js";
import { defineConfig, type Job, pruneJob, runDrills, runJob, runJobs } from "../../src/jobs/index.js";
import { summarize } from "../../src/policies/status.js";
import { bytesSource } from "../../src/sources/bytes.js";
import {
  checkDeletions,
  checkReasons,
  cronTimes,
  DAY,
  day,
  fakeClock,
  holdings,
  iso,
  isoWeekOf,
  KEY,
  Made,
  memoryAudit,
  monthOf,
  NewestPerBucket,
  printTable,
  snapshot,
  standIn,
  YEARS,
} from "../support/strategies.js";

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
