/**
 * Strategy A (examples/tiered-backups.ts), run for eight simulated years.
 *
 * The example's own job builder (`tieredJobs`) is given tiny `bytesSource`s and in-memory sinks
 * standing in for its three tiers (the archive with Glacier's capabilities and a compliance-mode
 * Object Lock) and driven by the library's real `runJobs`/`runJob` (backup, copies, retention,
 * validation, audit), with an injected clock: every backup, retention plan and audit line reads the
 * simulated time. What each tier must hold is computed here, independently, from the calendar: ages
 * in days for "30 days", calendar months for the archive's monthly copies. After every simulated
 * day the test checks that each tier holds exactly that (no more, no fewer), that every deletion is
 * in the audit trail with its reason, that the reasons of each kept backup name the table's row
 * that kept it, and that no RPO is breached; it prints what each tier held at the end of each year.
 *
 * Granularity: eight years of 5- and 15-minute runs are ~900,000 runs, so the years are simulated
 * with one cycle per day (every job runs once a day, at 06:00 UTC); retention of days, weeks,
 * months and years only changes at that grain, and at it the RPO that can be checked is "a valid
 * backup from today's cycle" (1 day). The fine tiers — the real cron schedules (every 5 and 15
 * minutes, hourly, every 4 hours) and their RPOs (15 minutes...) — are simulated on their own for a
 * day across a month boundary, run by run in time order as the scheduler would run them, with the
 * status checked at every run (runs take no simulated time, so a backup's age peaks at its
 * interval).
 *
 * The strategies are two files (this and strategies-disaster-recovery.test.ts) so that the test
 * runner's workers run them side by side; their shared helpers are in test/support/strategies.ts.
 * The eight years must run in well under a minute: bench/strategies.ts measures the library's
 * share, and BENCHMARKS.md ("Strategies") records both.
 */

import { describe, expect, it } from "vitest";
import {
  JOBS as A_JOBS,
  type JobName as AJobName,
  ARCHIVE_LOCK,
  CONSTITUTIONAL_HASH,
  RETENTION,
  tieredJobs,
} from "../../examples/tiered-backups.js";
import { parseDuration } from "../../src/core/options.js";
import { defineConfig, runJob, runJobs } from "../../src/jobs/index.js";
import { summarize } from "../../src/policies/status.js";
import { bytesSource } from "../../src/sources/bytes.js";
import {
  checkDeletions,
  checkReasons,
  cronTimes,
  DAY,
  day,
  fakeClock,
  glacierStandIn,
  holdings,
  iso,
  KEY,
  Made,
  memoryAudit,
  monthOf,
  printTable,
  type Snapshot,
  snapshot,
  standIn,
  YEARS,
} from "../support/strategies.js";

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
