/**
 * What the two strategy simulations (strategies-tiered.test.ts, strategies-disaster-recovery.test.ts)
 * share: the fake clock, the in-memory audit trail and sink stand-ins, what a sink holds, and the
 * calendar written here from its definitions (ISO weeks, months, the newest backup per bucket), so
 * that what each tier must hold is computed independently of the library. Two files, so that the
 * test runner's workers run the strategies side by side.
 */
import { Cron } from "croner";
import { expect } from "vitest";
import { MANIFEST_SUFFIX, type Manifest } from "../../src/core/manifest.js";
import { parseDuration } from "../../src/core/options.js";
import {
  type AuditEntry,
  type AuditTrail,
  auditEntrySchema,
  type CycleResult,
} from "../../src/jobs/index.js";
import { GLACIER_STORAGE_CLASSES } from "../../src/sinks/glacier.js";
import { type MemorySink, memorySink } from "../../src/sinks/memory.js";

export const DAY = 86_400_000;
export const KEY = "5f".repeat(32);
/** Eight years; STOWAGE_SIM_YEARS shortens a local run (the year-8 assertions then do not apply). */
export const YEARS = Number(process.env.STOWAGE_SIM_YEARS ?? 8);

/** The simulated clock every run reads. */
export function fakeClock(start: number) {
  const clock = { ms: start, now: () => new Date(clock.ms) };
  return clock;
}

/** An audit trail in memory: every line checked against the real schema, as a file trail would. */
export function memoryAudit(): AuditTrail & { entries: AuditEntry[] } {
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
export function standIn(kind: string): MemorySink {
  return { ...memorySink(), kind };
}

/**
 * The archive's stand-in: a memory sink with the capabilities a Glacier sink declares, and S3
 * Object Lock in compliance mode — every object is locked for `lockFor` from its write (by the
 * simulated clock) and a delete of a locked object fails, as S3 refuses it.
 */
export function glacierStandIn(
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
export function holdings(sink: MemorySink): Manifest[] {
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
export interface Snapshot {
  manifests: Manifest[];
  keys: Set<string>;
  /** Job -> start times (ISO), sorted. */
  byJob: Map<string, string[]>;
}
export function snapshot(sink: MemorySink): Snapshot {
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
export class Made {
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

export const iso = (ms: number) => new Date(ms).toISOString();
export const day = (ms: number) => iso(ms).slice(0, 10);

/** ISO week of a UTC date, written here from its definition (the week holding the Thursday). */
export function isoWeekOf(ms: number): string {
  const d = new Date(ms);
  const weekday = (d.getUTCDay() + 6) % 7; // Monday 0
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - weekday + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = Math.floor((thursday - Date.UTC(year, 0, 1)) / (7 * DAY)) + 1;
  return `${year}-W${String(week).padStart(2, "0")}`;
}
export const monthOf = (ms: number) => iso(ms).slice(0, 7);

/**
 * The newest backup in each of the `n` newest buckets that hold one, kept as backups are made (in
 * time order, so a bucket's newest is its last, and buckets arrive oldest first).
 */
export class NewestPerBucket {
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
export function checkDeletions(
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
export function checkReasons(cycle: CycleResult, keepRule: (job: string, target: string) => RegExp) {
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

export function printTable(title: string, rows: string[][]) {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "),
  );
  console.log(`\n${title}\n${lines.join("\n")}`);
}

/** The times a cron pattern fires in [from, to), by croner, the scheduler's own parser. */
export function cronTimes(pattern: string, from: number, to: number): number[] {
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
