/**
 * A job run's retention sweeps what interrupted runs left (artifacts without a manifest) from the
 * same listing it planned from: what this run deleted is not swept again, what it failed to delete
 * is, and a young orphan (a backup whose manifest may be on its way) is left alone.
 */
import { describe, expect, it } from "vitest";
import { MANIFEST_SUFFIX } from "../../src/core/manifest.js";
import type { Sink } from "../../src/core/types.js";
import { defineJob, runJob } from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";

const HOUR = 3_600_000;

describe("retention's orphan sweep in a job run", () => {
  it("removes old orphans and an artifact whose delete failed, once each, and keeps young ones", async () => {
    const inner = memorySink();
    const deletes: string[][] = [];
    const failOnce = new Set<string>();
    const sink: Sink = {
      ...inner,
      async delete(keys, options) {
        deletes.push([...keys]);
        const failing = keys.find((k) => failOnce.delete(k));
        if (failing) throw new Error(`SlowDown: ${failing}`);
        return inner.delete(keys, options);
      },
    };
    const job = defineJob({
      name: "sweep",
      source: bytesSource({ data: "state" }),
      sink,
      retention: { keepLast: 1 },
    });
    const base = Date.now();
    const at = (ms: number) => () => new Date(ms);
    const artifacts = () => [...inner.objects.keys()].filter((k) => !k.endsWith(MANIFEST_SUFFIX)).sort();

    const first = await runJob(job, { now: at(base) });
    expect(first.status).toBe("succeeded");
    const a1 = first.manifest!.artifact.key;
    // What interrupted runs left: one long ago, one just now (by the clock of run 2).
    const oldOrphan = "sweep/20200101T000000000Z-0badf00d.bin";
    const youngOrphan = "sweep/20200101T000000001Z-0badf00d.bin";
    inner.objects.set(oldOrphan, { data: Buffer.from("x"), lastModified: new Date(base - 48 * HOUR) });
    inner.objects.set(youngOrphan, { data: Buffer.from("y"), lastModified: new Date(base + 3 * HOUR) });

    // Run 2 drops run 1's backup: its manifest goes, its artifact's delete fails once.
    failOnce.add(a1);
    deletes.length = 0;
    const second = await runJob(job, { now: at(base + 3 * HOUR) });
    expect(second.errors.map((e) => [e.stage, e.code])).toEqual([["retention", "SINK_DELETE_FAILED"]]);
    const a2 = second.manifest!.artifact.key;
    expect(deletes).toEqual([[`${a1}${MANIFEST_SUFFIX}`], [a1], [a1, oldOrphan].sort()]);
    expect(artifacts()).toEqual([a2, youngOrphan].sort());

    // Run 3 drops run 2's backup cleanly: each key is deleted once, and the young orphan is now old.
    deletes.length = 0;
    const third = await runJob(job, { now: at(base + 6 * HOUR) });
    expect(third.status).toBe("succeeded");
    expect(deletes).toEqual([[`${a2}${MANIFEST_SUFFIX}`], [a2], [youngOrphan]]);
    expect(artifacts()).toEqual([third.manifest!.artifact.key]);
  });
});
