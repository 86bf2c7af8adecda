/**
 * What a long-running job reuses from one run to the next, and what it must not: a listing cache
 * skips manifests whose object is unchanged (same key, size and time) — and a manifest that changed
 * on the sink is read and checked again, through `listManifests` and through a job's retention,
 * whose cache is kept per sink and job.
 */
import { describe, expect, it } from "vitest";
import { MANIFEST_SUFFIX } from "../../src/core/manifest.js";
import {
  aes256gcm,
  backup,
  bytesSource,
  defineJob,
  generateSigningKey,
  gzip,
  listManifests,
  type ManifestCache,
  memorySink,
  pruneJob,
  runJob,
} from "../../src/index.js";
import type { MemorySink } from "../../src/sinks/memory.js";

const KEY = "5f".repeat(32);

/** Replaces a manifest object on the sink with `text`, as a rewrite would: new bytes, new time. */
function rewrite(sink: MemorySink, key: string, text: string, at = Date.now() + 1000) {
  sink.objects.set(key, { data: Buffer.from(text, "utf8"), lastModified: new Date(at) });
}
const textOf = (sink: MemorySink, key: string) => sink.objects.get(key)!.data.toString("utf8");

async function signedBackup(sink: MemorySink, job: string, data: string) {
  return backup({
    job,
    source: bytesSource({ name: job, data }),
    transforms: [gzip(), aes256gcm({ key: KEY })],
    sink,
    labels: { constitutional_hash: "cdd01ef066bc6cf2", team: "core" },
    signingKey: generateSigningKey().signingKey,
  });
}

describe("listManifests with a cache", () => {
  it("re-reads a manifest that changed on the sink, reports one that became invalid, forgets one deleted", async () => {
    const sink = memorySink();
    const first = await signedBackup(sink, "app", "first");
    const second = await signedBackup(sink, "app", "second");
    const key = first.artifact.key + MANIFEST_SUFFIX;
    const cache: ManifestCache = new Map();

    let listing = await listManifests(sink, { job: "app", cache });
    expect(listing.manifests.map((m) => m.id)).toEqual([first.id, second.id]);
    expect([...cache.keys()].sort()).toEqual([key, second.artifact.key + MANIFEST_SUFFIX].sort());

    // Changed to another valid manifest (as an attacker or another tool would): read again.
    const relabelled = textOf(sink, key).replace('"cdd01ef066bc6cf2"', '"0000000000000000"');
    rewrite(sink, key, relabelled);
    listing = await listManifests(sink, { job: "app", cache });
    expect(listing.manifests.find((m) => m.id === first.id)?.labels.constitutional_hash).toBe(
      "0000000000000000",
    );

    // The same size and a new time still counts as changed.
    const sameSize = textOf(sink, key).replace('"core"', '"mine"');
    expect(sameSize.length).toBe(relabelled.length);
    rewrite(sink, key, sameSize, Date.now() + 2000);
    listing = await listManifests(sink, { job: "app", cache });
    expect(listing.manifests.find((m) => m.id === first.id)?.labels.team).toBe("mine");

    // Broken: reported in `invalid`, never served from the cache.
    rewrite(
      sink,
      key,
      textOf(sink, key).replace(/"sha256": "[0-9a-f]{64}"/, '"sha256": "nope"'),
      Date.now() + 3000,
    );
    listing = await listManifests(sink, { job: "app", cache });
    expect(listing.manifests.map((m) => m.id)).toEqual([second.id]);
    expect(listing.invalid.map((i) => [i.key, i.error.code])).toEqual([[key, "MANIFEST_INVALID"]]);
    expect(cache.has(key)).toBe(false);

    await sink.delete([key]);
    listing = await listManifests(sink, { job: "app", cache });
    expect(listing.invalid).toEqual([]);
    expect([...cache.keys()]).toEqual([second.artifact.key + MANIFEST_SUFFIX]);
  });
});

describe("a job's retention across runs", () => {
  it("sees a manifest changed on the sink between runs, and validates it again", async () => {
    const sink = memorySink();
    const rules = { requiredLabels: { constitutional_hash: "cdd01ef066bc6cf2" } };
    let clock = Date.UTC(2026, 0, 1, 6);
    const now = () => new Date(clock);
    const job = defineJob({
      name: "app",
      source: bytesSource({ name: "app", data: "state" }),
      sink,
      transforms: [aes256gcm({ key: KEY })],
      labels: { constitutional_hash: "cdd01ef066bc6cf2" },
      rules,
      retention: { maxAge: "1d" },
    });
    const older = await runJob(job, { now });
    clock += 3_600_000;
    const newer = await runJob(job, { now });
    expect(older.errors).toEqual([]);
    expect(newer.errors).toEqual([]);
    const newerKey = newer.manifest!.artifact.key;
    const reasonsOf = (r: Awaited<ReturnType<typeof pruneJob>>, key: string) =>
      r[0]!.decisions!.find((d) => d.key === key)!.reasons;
    expect(reasonsOf(await pruneJob(job, { now }), newerKey)).toContain("newest valid");

    // The newest backup's manifest loses its required label on the sink: it is no longer valid,
    // so "newest valid" moves to the older one — which only a fresh read can show.
    const manifestKey = newerKey + MANIFEST_SUFFIX;
    rewrite(sink, manifestKey, textOf(sink, manifestKey).replace('"cdd01ef066bc6cf2"', '"tampered"'));
    const after = await pruneJob(job, { now });
    expect(reasonsOf(after, newerKey)).not.toContain("newest valid");
    expect(reasonsOf(after, older.manifest!.artifact.key)).toContain("newest valid");
  });
});
