import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { listManifests } from "../../src/core/catalog.js";
import { defineJob, type Job, type SchedulerEvent, startScheduler } from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";

const START = new Date("2026-01-05T10:00:30Z");
/** Lets real I/O callbacks (streams, setImmediate) run without moving the fake clock. */
const settle = async (rounds = 40) => {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
};

beforeEach(() => {
  vi.useFakeTimers({
    now: START,
    toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date"],
  });
});
afterEach(() => {
  vi.useRealTimers();
});

/** A job whose source waits until `release()` is called (each run after that passes at once). */
function gatedJob(name: string, schedule = "* * * * *") {
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  const sink = memorySink();
  let opens = 0;
  const job = defineJob({
    name,
    schedule,
    sink,
    source: bytesSource({
      data: () =>
        (async function* () {
          opens++;
          await gate;
          yield Buffer.from(`${name} state`);
        })(),
    }),
  });
  return { job, sink, release: () => release(), opens: () => opens };
}

function recorder() {
  const events: SchedulerEvent[] = [];
  return {
    events,
    onEvent: (e: SchedulerEvent) => events.push(e),
    types: () => events.map((e) => `${e.job}:${e.type}`),
  };
}

describe("startScheduler", () => {
  it("runs jobs on their cron schedule and reports started/succeeded with durations and bytes", async () => {
    const { job, sink, release } = gatedJob("state");
    release();
    const rec = recorder();
    const scheduler = startScheduler([job], { onEvent: rec.onEvent });
    await vi.advanceTimersByTimeAsync(29_000);
    expect(rec.events).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000); // 10:01:00
    await settle();
    expect(rec.types()).toEqual(["state:started", "state:succeeded"]);
    const done = rec.events[1] as Extract<SchedulerEvent, { durationMs: number }>;
    expect(done.scheduledFor).toBe("2026-01-05T10:01:00.000Z");
    expect(done.bytes.plain).toBe("state state".length);
    expect(done.durationMs).toBeGreaterThanOrEqual(0);
    expect(done.result.manifest?.job).toBe("state");
    await vi.advanceTimersByTimeAsync(60_000);
    await settle();
    expect(rec.types()).toHaveLength(4);
    expect((await listManifests(sink)).manifests).toHaveLength(2);
    await scheduler.stop();
  });

  it("never overlaps a job with itself: the overlapping tick is skipped and reported", async () => {
    const slow = gatedJob("slow");
    const fast = gatedJob("fast");
    fast.release();
    const rec = recorder();
    const scheduler = startScheduler([slow.job, fast.job], { onEvent: rec.onEvent });
    await vi.advanceTimersByTimeAsync(30_000); // 10:01 — both start
    await settle();
    expect(scheduler.running()).toEqual(["slow"]);
    await vi.advanceTimersByTimeAsync(60_000); // 10:02 — slow is still running
    await settle();
    const skipped = rec.events.filter((e) => e.type === "skipped");
    expect(skipped).toEqual([
      expect.objectContaining({ job: "slow", reason: "overlap", scheduledFor: "2026-01-05T10:02:00.000Z" }),
    ]);
    expect(slow.opens()).toBe(1);
    // Other jobs are not held back by a slow one.
    expect(rec.events.filter((e) => e.job === "fast" && e.type === "succeeded")).toHaveLength(2);
    slow.release();
    await settle();
    expect(rec.events.filter((e) => e.job === "slow").map((e) => e.type)).toEqual([
      "started",
      "skipped",
      "succeeded",
    ]);
    await vi.advanceTimersByTimeAsync(60_000); // 10:03 — free again
    await settle();
    expect(slow.opens()).toBe(2);
    await scheduler.stop();
  });

  it("stop() waits for running backups, then starts no more", async () => {
    const { job, sink, release } = gatedJob("db");
    const rec = recorder();
    const scheduler = startScheduler([job], { onEvent: rec.onEvent });
    await vi.advanceTimersByTimeAsync(30_000);
    await settle();
    let stopped = false;
    const stopping = scheduler.stop().then(() => {
      stopped = true;
    });
    await settle();
    expect(stopped).toBe(false);
    release();
    await stopping;
    expect(rec.types()).toEqual(["db:started", "db:succeeded"]);
    expect((await listManifests(sink)).manifests).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(10 * 60_000);
    await settle();
    expect(rec.types()).toHaveLength(2);
    expect(scheduler.nextRuns()).toEqual([{ job: "db", at: null }]);
  });

  it("stop({ signal }) aborts running backups when the signal fires, leaving no partial backup", async () => {
    const { job, sink } = gatedJob("db");
    const rec = recorder();
    const scheduler = startScheduler([job], { onEvent: rec.onEvent });
    await vi.advanceTimersByTimeAsync(30_000);
    await settle();
    const controller = new AbortController();
    const stopping = scheduler.stop({ signal: controller.signal });
    await settle();
    controller.abort();
    await stopping;
    const failed = rec.events.at(-1) as Extract<SchedulerEvent, { durationMs: number }>;
    expect(failed.type).toBe("failed");
    expect(failed.errors).toEqual(["ABORTED"]);
    expect(sink.objects.size).toBe(0);
  });

  it("delays each run by a random jitter, and a run still waiting it out is cancelled by stop()", async () => {
    const { job, release } = gatedJob("j");
    release();
    const rec = recorder();
    const scheduler = startScheduler([job], { onEvent: rec.onEvent, jitter: "20s", random: () => 0.5 });
    await vi.advanceTimersByTimeAsync(30_000); // tick at 10:01:00
    await settle();
    expect(rec.events).toEqual([]);
    expect(scheduler.running()).toEqual(["j"]);
    await vi.advanceTimersByTimeAsync(10_000); // 10 s of jitter
    await settle();
    expect(rec.types()).toEqual(["j:started", "j:succeeded"]);
    await vi.advanceTimersByTimeAsync(50_000); // next tick at 10:02:00, jitter pending
    await settle();
    await scheduler.stop();
    expect(rec.events.at(-1)).toMatchObject({ type: "skipped", reason: "stopped" });
    expect(rec.types()).toHaveLength(3);
  });

  it("reads cron patterns in the time zone given (a job's own zone wins)", () => {
    const a = gatedJob("ny", "0 3 * * *").job;
    const b = defineJob({ ...pick(gatedJob("tokyo", "0 3 * * *").job), timeZone: "Asia/Tokyo" });
    const scheduler = startScheduler([a, b], { timeZone: "America/New_York" });
    const next = Object.fromEntries(scheduler.nextRuns().map((r) => [r.job, r.at?.toISOString()]));
    expect(next).toEqual({ ny: "2026-01-06T08:00:00.000Z", tokyo: "2026-01-05T18:00:00.000Z" });
    return scheduler.stop();
  });

  it("is embeddable: no process handlers, a throwing onEvent is logged and ignored, trigger() runs now", async () => {
    const listeners = ["SIGTERM", "SIGINT", "uncaughtException", "unhandledRejection", "exit"].map((e) =>
      process.listenerCount(e),
    );
    const exit = vi.spyOn(process, "exit");
    const { job, release } = gatedJob("svc", "@daily");
    release();
    const logged: string[] = [];
    const logger = {
      debug: () => undefined,
      info: (_f: object, m?: string) => logged.push(`info ${m}`),
      warn: (_f: object, m?: string) => logged.push(`warn ${m}`),
      error: (_f: object, m?: string) => logged.push(`error ${m}`),
    };
    const scheduler = startScheduler([job], {
      logger,
      onEvent: () => {
        throw new Error("listener bug");
      },
    });
    const result = await scheduler.trigger("svc");
    expect(result?.status).toBe("succeeded");
    expect(logged).toEqual(
      expect.arrayContaining(["info job svc started", "info job svc succeeded", "error onEvent threw"]),
    );
    expect(() => scheduler.trigger("nope")).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
    await scheduler.stop();
    expect(
      ["SIGTERM", "SIGINT", "uncaughtException", "unhandledRejection", "exit"].map((e) =>
        process.listenerCount(e),
      ),
    ).toEqual(listeners);
    expect(exit).not.toHaveBeenCalled();
  });

  it("refuses bad options and a job list with nothing scheduled", () => {
    const job = defineJob({ name: "manual", source: bytesSource({ data: "x" }), sink: memorySink() });
    expect(() => startScheduler([job])).toThrow(expect.objectContaining({ code: "CONFIG_INVALID" }));
    const { job: scheduled } = gatedJob("s");
    expect(() => startScheduler([scheduled], { timeZone: "Nowhere/Land" })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }),
    );
  });
});

/** A job's options without its brand, to define a variant. */
function pick(job: Job) {
  const { name, source, sink, schedule } = job;
  return { name, source, sink, schedule };
}
