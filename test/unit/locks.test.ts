/**
 * The lease bookkeeping every lock adapter shares (trackedLease), and a job run on a lock: skipped
 * where another replica holds it, never run unguarded when the engine cannot be asked, not
 * committed when the lease is lost before commit, and recorded in the manifest and the audit
 * trail when it is. The engine here is a small in-process Lock (the adapters are tested against
 * real servers in test/integration/locks*.test.ts).
 */
import { describe, expect, it } from "vitest";
import { isStowageError, StowageError } from "../../src/core/errors.js";
import { type Lease, type LeaseEngine, type Lock, trackedLease } from "../../src/core/lock.js";
import { parseManifest } from "../../src/core/manifest.js";
import type { AuditEntryInput, AuditTrail } from "../../src/jobs/audit.js";
import {
  defineConfig,
  defineJob,
  runJob,
  runJobs,
  type SchedulerEvent,
  startScheduler,
} from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";

/** A lock in this process's memory with the contract's semantics: one holder, expiry, tokens. */
function memoryLock(): Lock & { holders: Map<string, { holder: string; until: number; token: number }> } {
  const holders = new Map<string, { holder: string; until: number; token: number }>();
  let tokens = 0;
  return {
    kind: "memory",
    holders,
    async acquire(name, { ttlMs, holder }) {
      const held = holders.get(name);
      if (held && held.until > Date.now()) return undefined;
      const token = ++tokens;
      holders.set(name, { holder, until: Date.now() + ttlMs, token });
      const mine = () => holders.get(name)?.token === token;
      return trackedLease(
        { name, holder, fencingToken: token, ttlMs, kind: "memory" },
        {
          renew: async () => {
            if (!mine()) return false;
            holders.get(name)!.until = Date.now() + ttlMs;
            return true;
          },
          release: async () => {
            if (mine()) holders.delete(name);
          },
        },
        performance.now(),
      );
    },
  };
}

function recordingAudit(): AuditTrail & { lines: AuditEntryInput[] } {
  const lines: AuditEntryInput[] = [];
  return {
    lines,
    async record(entry) {
      lines.push(entry);
    },
    async flush() {},
  };
}

const job = (sink = memorySink(), data: string | (() => AsyncIterable<Buffer>) = "payload") =>
  defineJob({
    name: "db",
    source: bytesSource({ name: "db", data: typeof data === "string" ? data : data }),
    sink,
  });

describe("trackedLease", () => {
  const engine = (renew: LeaseEngine["renew"]): LeaseEngine => ({ renew, release: async () => {} });

  it("refuses a renewal that starts after its ttl ran out, without asking the engine, and stays lost", async () => {
    let asked = 0;
    const lease = trackedLease(
      { name: "n", holder: "h", fencingToken: 7, ttlMs: 1000, kind: "test" },
      engine(async () => {
        asked++;
        return true;
      }),
      performance.now() - 1500, // as if the process had been paused for 1.5 s
    );
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    expect(asked).toBe(0);
    expect(lease.fencingToken).toBe(7);
  });

  it("is lost when the engine says another holder has it; a failed call is LOCK_FAILED and not lost", async () => {
    let answer: boolean | Error = new Error("connection refused");
    const lease = trackedLease(
      { name: "n", holder: "h", fencingToken: 1, ttlMs: 60_000, kind: "test" },
      engine(async () => {
        if (answer instanceof Error) throw answer;
        return answer;
      }),
      performance.now(),
    );
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_FAILED" });
    answer = true;
    await lease.renew();
    answer = false;
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    answer = true;
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
  });

  it("releases once", async () => {
    let released = 0;
    const lease = trackedLease(
      { name: "n", holder: "h", fencingToken: 1, ttlMs: 60_000, kind: "test" },
      {
        renew: async () => true,
        release: async () => {
          released++;
        },
      },
      performance.now(),
    );
    await lease.release();
    await lease.release();
    expect(released).toBe(1);
    await expect(lease.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
  });
});

describe("runJob on a lock", () => {
  it("runs where the lock is free, records the lease in the manifest and the replica in the audit trail", async () => {
    const lock = memoryLock();
    const sink = memorySink();
    const audit = recordingAudit();
    const result = await runJob(job(sink), { lock: { lock, ttl: "5s", replica: "pod-a" }, audit });
    expect(result.status).toBe("succeeded");
    expect(result.replica).toBe("pod-a");
    expect(result.manifest?.lease).toEqual({ lock: "memory", name: "db", holder: "pod-a", fencingToken: 1 });
    const stored = parseManifest(
      sink.objects.get(`${result.manifest!.artifact.key}.manifest.json`)!.data.toString(),
    );
    expect(stored.lease?.fencingToken).toBe(1);
    expect(audit.lines).toContainEqual(
      expect.objectContaining({ action: "backup", result: "ok", replica: "pod-a", fencingToken: 1 }),
    );
    // Released at the end: the next run takes it again, with a larger token.
    expect(lock.holders.size).toBe(0);
    const again = await runJob(job(sink), { lock: { lock, replica: "pod-b" } });
    expect(again.manifest?.lease?.fencingToken).toBe(2);
  });

  it("is skipped, writing and recording nothing, while another replica holds the lock", async () => {
    const lock = memoryLock();
    const other = (await lock.acquire("db", { ttlMs: 60_000, holder: "pod-b" })) as Lease;
    const sink = memorySink();
    const audit = recordingAudit();
    const cycle = await runJobs([job(sink)], { lock: { lock, replica: "pod-a" }, audit });
    expect(cycle.jobs[0]!.status).toBe("skipped");
    expect(cycle).toMatchObject({ ok: true, succeeded: 0, failed: 0, skipped: 1 });
    expect(sink.objects.size).toBe(0);
    expect(audit.lines).toEqual([]);
    await other.release();
  });

  it("does not run unguarded when the engine cannot be asked", async () => {
    const sink = memorySink();
    const broken: Lock = {
      kind: "broken",
      acquire: async () => {
        throw new StowageError("LOCK_FAILED", "unreachable");
      },
    };
    const result = await runJob(job(sink), { lock: broken });
    expect(result.status).toBe("failed");
    expect(result.errors).toEqual([expect.objectContaining({ stage: "lock", code: "LOCK_FAILED" })]);
    expect(sink.objects.size).toBe(0);
  });

  it("commits nothing when the lease is lost before the commit (another holder took it)", async () => {
    const lock = memoryLock();
    const sink = memorySink();
    const audit = recordingAudit();
    // The source takes the lease away from under the run while it streams (as a take-over after
    // an expiry would), then ends normally: the fence must refuse the commit.
    async function* data() {
      yield Buffer.from("first half ");
      lock.holders.set("db", { holder: "pod-b", until: Date.now() + 60_000, token: 99 });
      yield Buffer.from("second half");
    }
    const result = await runJob(job(sink, data), { lock: { lock, replica: "pod-a" }, audit });
    expect(result.status).toBe("failed");
    expect(result.errors).toEqual([expect.objectContaining({ stage: "backup", code: "LOCK_LOST" })]);
    expect(sink.objects.size).toBe(0);
    expect(audit.lines).toContainEqual(
      expect.objectContaining({ action: "backup", result: "failed", error: "LOCK_LOST", replica: "pod-a" }),
    );
    // The other holder's lock is left alone.
    expect(lock.holders.get("db")?.holder).toBe("pod-b");
  });

  it("keeps the lease for `hold` after the run, so a late replica finds it taken", async () => {
    const lock = memoryLock();
    const sink = memorySink();
    const stop = new AbortController();
    const running = runJob(job(sink), { lock: { lock, replica: "pod-a", hold: "1h" }, signal: stop.signal });
    while (sink.objects.size < 2) await new Promise((r) => setTimeout(r, 10));
    expect(await lock.acquire("db", { ttlMs: 5_000, holder: "pod-b" })).toBeUndefined();
    stop.abort(); // stopping the replica ends the hold early and releases
    expect((await running).status).toBe("succeeded");
    expect(await lock.acquire("db", { ttlMs: 5_000, holder: "pod-b" })).toBeDefined();
  });

  it("names a bad lock option", async () => {
    const error = await runJob(job(), { lock: { lock: memoryLock(), ttl: "soon" } }).catch((e: unknown) => e);
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect(JSON.stringify((error as StowageError).details)).toContain("ttl");
    const short = await runJob(job(), { lock: { lock: memoryLock(), ttl: 500 } }).catch((e: unknown) => e);
    expect((short as StowageError).details.issues).toEqual([expect.objectContaining({ path: "lock.ttl" })]);
  });
});

describe("the CLI config's lock", () => {
  it("names a lock that `stowage run` passes to runJobs, and a bad one by its option", () => {
    const lock = memoryLock();
    const config = defineConfig({ jobs: [job()], lock: { lock, ttl: "1m", hold: "2m", replica: "cron-a" } });
    expect(config.lock).toMatchObject({ lock, ttl: "1m", hold: "2m", replica: "cron-a" });
    expect(defineConfig({ jobs: [job()], lock }).lock).toBe(lock);
    const error = (() => {
      try {
        defineConfig({ jobs: [job()], lock: { lock: "postgres" } as never });
      } catch (e) {
        return e;
      }
    })();
    expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
    expect(JSON.stringify((error as StowageError).details)).toContain("lock");
  });
});

describe("startScheduler on a lock", () => {
  it("runs each tick on one of two schedulers; a tick that fires after the hold is skipped as late", async () => {
    const lock = memoryLock();
    const sink = memorySink();
    const events: Array<SchedulerEvent & { replica: string }> = [];
    const every = defineJob({
      name: "db",
      schedule: "* * * * * *",
      source: bytesSource({ name: "db", data: "x" }),
      sink,
    });
    const start = (replica: string, late: boolean) =>
      startScheduler([every], {
        lock: { lock, ttl: "5s", replica },
        onEvent: (e) => events.push({ ...e, replica }),
        // Always at the end of a 900 ms jitter: past the default hold (half the 1 s interval).
        ...(late ? { jitter: 900, random: () => 0.99 } : {}),
      });
    const a = start("pod-a", false);
    const b = start("pod-b", false);
    const c = start("pod-c", true);
    await new Promise((r) => setTimeout(r, 3_500));
    await Promise.all([a.stop(), b.stop(), c.stop()]);
    const ran = events.filter((e) => e.type === "succeeded");
    const ticks = ran.map((e) => e.scheduledFor);
    expect(ticks.length).toBeGreaterThanOrEqual(2);
    expect(new Set(ticks).size).toBe(ticks.length);
    for (const [i, tick] of ticks.entries()) {
      const reasons = events
        .filter((e) => e.scheduledFor === tick && e.type === "skipped")
        .map((e) => (e as { reason: string }).reason)
        .sort();
      // The last tick's late one may still wait out its jitter when the schedulers stop.
      expect(reasons).toEqual(
        i === ticks.length - 1 && reasons.includes("stopped") ? ["locked", "stopped"] : ["late", "locked"],
      );
    }
    expect(ran.some((e) => e.replica === "pod-c")).toBe(false);
    // Each run committed once, under its own lease.
    const manifests = [...sink.objects.keys()].filter((k) => k.endsWith(".manifest.json"));
    expect(manifests).toHaveLength(ran.length);
  }, 20_000);
});
