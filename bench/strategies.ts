/**
 * What one simulated day of each strategy costs the library: the jobs of examples/tiered-backups.ts
 * (strategy A) and examples/disaster-recovery.ts (strategy B) over memory sinks, run by the real
 * `runJobs` once a simulated day (backup, copies, retention, validation, audit), with none of the
 * checks test/unit/strategies-*.test.ts makes after each day. Prints the process's CPU seconds per
 * strategy and per simulated year, so a change to the per-run work can be measured on its own.
 *
 *   npx tsx bench/strategies.ts [days=730] [a|b|ab]
 *   node --cpu-prof --import tsx bench/strategies.ts 1095 a
 */
import { JOBS as B_JOBS, type JobName as BJobName, drJobs } from "../examples/disaster-recovery.js";
import {
  JOBS as A_JOBS,
  type JobName as AJobName,
  CONSTITUTIONAL_HASH,
  tieredJobs,
} from "../examples/tiered-backups.js";
import { type AuditTrail, type Job, pruneJob, runJobs } from "../src/jobs/index.js";
import { GLACIER_STORAGE_CLASSES } from "../src/sinks/glacier.js";
import { type MemorySink, memorySink } from "../src/sinks/memory.js";
import { bytesSource } from "../src/sources/bytes.js";

const DAY = 86_400_000;
const KEY = "5f".repeat(32);
const START = Date.UTC(2026, 0, 15, 6);
const days = Number(process.argv[2] ?? 730);
const which = process.argv[3] ?? "ab";

const clock = { ms: START, now: () => new Date(clock.ms) };
/** Counts the audit lines, as a trail that writes them would be handed them. */
const audit: AuditTrail & { lines: number } = {
  lines: 0,
  async record() {
    audit.lines++;
  },
  async flush() {},
};
const tier = (kind: string, storageClasses: string[] = []): MemorySink => ({
  ...memorySink({ storageClasses }),
  kind,
});

function cpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

async function simulate(name: string, day: (d: number) => Promise<void>): Promise<void> {
  clock.ms = START;
  const cpu = cpuSeconds();
  const wall = performance.now();
  for (let d = 0; d < days; d++) {
    clock.ms = START + d * DAY;
    await day(d);
  }
  const used = cpuSeconds() - cpu;
  const heap = process.memoryUsage().heapUsed / 2 ** 20;
  console.log(
    `${name}: ${days} days, ${used.toFixed(1)} s CPU (${((used * 365) / days).toFixed(1)} s a simulated year), ` +
      `${((performance.now() - wall) / 1000).toFixed(1)} s wall, heap ${heap.toFixed(0)} MiB`,
  );
}

function ok(cycle: { ok: boolean }, d: number): void {
  if (!cycle.ok) throw new Error(`day ${d}: the cycle failed`);
}

if (which.includes("a")) {
  const sources = Object.fromEntries(
    (Object.keys(A_JOBS) as AJobName[]).map((name) => [
      name,
      bytesSource({ name, data: `${name} {"constitutional_hash":"${CONSTITUTIONAL_HASH}"}` }),
    ]),
  ) as Record<AJobName, ReturnType<typeof bytesSource>>;
  const jobs = tieredJobs({
    local: tier("filesystem"),
    offsite: tier("s3"),
    archive: tier("glacier", [...GLACIER_STORAGE_CLASSES]),
    sources,
    key: KEY,
  });
  await simulate("strategy A", async (d) => ok(await runJobs(jobs, { now: clock.now, audit }), d));
}

if (which.includes("b")) {
  const stream = { target: { kind: "stream" as const } };
  const jobs = drJobs({
    primary: tier("s3"),
    replica: tier("s3"),
    sources: Object.fromEntries(
      (Object.keys(B_JOBS) as BJobName[]).map((name) => [name, bytesSource({ name, data: `${name} state` })]),
    ) as Record<BJobName, ReturnType<typeof bytesSource>>,
    key: KEY,
    drills: { "application-data": stream, configuration: stream, infrastructure: stream },
  });
  const byName = (n: BJobName): Job => jobs.find((j) => j.name === n)!;
  // As the test: infrastructure is backed up on deployment days and pruned on the others.
  const deploys = (d: number) => d === 0 || (d * 7919) % 13 < 2;
  await simulate("strategy B", async (d) => {
    const today = [byName("application-data"), byName("configuration")];
    if (deploys(d)) today.push(byName("infrastructure"));
    ok(await runJobs(today, { now: clock.now, audit }), d);
    if (!deploys(d)) await pruneJob(byName("infrastructure"), { now: clock.now, audit });
  });
}
console.log(`audit lines: ${audit.lines}`);
