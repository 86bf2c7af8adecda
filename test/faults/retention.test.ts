/**
 * Faults of applying retention: a sink whose deletes fail half-way (on manifests or on artifacts),
 * an abort in the middle, a plan that would drop every backup, a plan for another sink, and a
 * manifest that does not parse in the listing. The rule checked after each: no manifest ever
 * points at a missing artifact, every backup reported deleted is gone, every kept backup is whole,
 * and a healthy second run leaves exactly the kept backups.
 */
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe } from "vitest";
import {
  aes256gcm,
  applyRetention,
  backup,
  bytesSource,
  findOrphans,
  gzip,
  isStowageError,
  listManifests,
  type Manifest,
  memorySink,
  planRetention,
  type RetentionPlan,
  type Sink,
  type StowageError,
} from "../../src/index.js";
import { failureOf, fault, listing, listingChange } from "./harness.js";

const hexKey = randomBytes(32).toString("hex");
const MANIFEST = ".manifest.json";
const DAY = 86_400_000;
const now = new Date("2026-03-01T12:00:00Z");

/** A memory sink with `n` backups of job "r", whose manifests say they started one day apart. */
async function sinkWithBackups(n: number) {
  const sink = memorySink();
  const manifests: Manifest[] = [];
  for (let i = 0; i < n; i++) {
    manifests.push(
      await backup({
        job: "r",
        source: bytesSource({ data: `backup ${i}\n`.repeat(100) }),
        transforms: [gzip(), aes256gcm({ key: hexKey })],
        sink,
      }),
    );
  }
  // Backdate each (oldest first), manifest and object time alike, so the plan has ages to work on.
  for (const [i, m] of manifests.entries()) {
    const started = new Date(now.getTime() - (n - i) * DAY);
    m.startedAt = started.toISOString();
    m.finishedAt = started.toISOString();
    sink.objects.set(`${m.artifact.key}${MANIFEST}`, {
      data: Buffer.from(JSON.stringify(m)),
      lastModified: started,
    });
    sink.objects.get(m.artifact.key)!.lastModified = started;
  }
  return { sink, manifests };
}

async function planFor(
  sink: Sink,
  policy: Parameters<typeof planRetention>[1],
  extra: Partial<Parameters<typeof planRetention>[2]> = {},
): Promise<RetentionPlan> {
  const { manifests, invalid } = await listManifests(sink, { job: "r" });
  return planRetention(manifests, policy, { now, invalid, ...extra });
}

/** What breaks the manifest-first rule or the report, as leftover lines. */
async function violations(
  sink: Sink,
  plan: RetentionPlan,
  reported: { deleted: string[]; failedManifest: string[] },
): Promise<string[]> {
  const keys = new Set(await listing(sink));
  const out: string[] = [];
  const { danglingManifests } = await findOrphans(sink, { olderThan: "0ms", now });
  out.push(...danglingManifests.map((k) => `manifest without its artifact: ${k}`));
  for (const key of reported.deleted) {
    if (keys.has(key) || keys.has(key + MANIFEST)) out.push(`reported deleted, still there: ${key}`);
  }
  for (const key of reported.failedManifest) {
    if (!keys.has(key) || !keys.has(key + MANIFEST)) out.push(`reported intact, not whole: ${key}`);
  }
  for (const d of plan.decisions.filter((x) => x.action === "keep")) {
    if (!keys.has(d.artifactKey) || !keys.has(d.manifestKey)) out.push(`a kept backup was touched: ${d.id}`);
  }
  for (const d of plan.decisions.filter((x) => x.action === "drop")) {
    const gone = !keys.has(d.manifestKey) && !keys.has(d.artifactKey);
    if (gone && !reported.deleted.includes(d.artifactKey))
      out.push(`deleted, not reported: ${d.artifactKey}`);
  }
  return out;
}

/** A healthy second run must leave exactly the kept backups. */
async function finishes(sink: Sink, plan: RetentionPlan): Promise<string[]> {
  await applyRetention({ sink, plan, orphans: { olderThan: "0ms" }, now });
  const kept = plan.decisions
    .filter((d) => d.action === "keep")
    .flatMap((d) => [d.artifactKey, d.manifestKey])
    .sort();
  return listingChange(kept, await listing(sink)).map((c) => `after a second run: ${c}`);
}

/**
 * Passes deletes to `inner` until `okKeys` keys went, then fails (for keys `which` selects). A key
 * that is already gone deletes fine, as in every sink (S3, a folder).
 */
function deletesFailAfter(inner: Sink, okKeys: number, which: (key: string) => boolean): Sink {
  let deleted = 0;
  return {
    ...inner,
    async delete(keys, options) {
      for (const key of keys) {
        if ((await inner.stat(key)) === undefined) continue;
        if (which(key) && deleted >= okKeys) {
          throw Object.assign(new Error(`EACCES: permission denied, unlink '${key}'`), { code: "EACCES" });
        }
        await inner.delete([key], options);
        if (which(key)) deleted++;
      }
    },
  };
}

describe("applyRetention", () => {
  for (const [stage, which] of [
    ["manifest", (k: string) => k.endsWith(MANIFEST)],
    ["artifact", (k: string) => !k.endsWith(MANIFEST)],
  ] as const) {
    for (const okKeys of [0, 2]) {
      fault("retention", `${stage} deletes fail after ${okKeys} keys`, async () => {
        const { sink } = await sinkWithBackups(6);
        const plan = await planFor(sink, { keepLast: 2 });
        const result = await applyRetention({
          sink: deletesFailAfter(sink, okKeys, which),
          plan,
          orphans: false,
        });
        const failed = result.failed[0];
        return {
          error: failed?.error,
          code: "SINK_DELETE_FAILED",
          leftovers: [
            ...(result.failed.every((f) => f.stage === stage) ? [] : ["failed at the wrong stage"]),
            ...(await violations(sink, plan, {
              deleted: result.deleted.map((d) => d.key),
              failedManifest: result.failed.filter((f) => f.stage === "manifest").map((f) => f.key),
            })),
            ...(await finishes(sink, plan)),
          ],
          secrets: [hexKey],
        };
      });
    }
  }

  for (const after of [1, 3]) {
    fault("retention", `abort after ${after} delete calls`, async () => {
      const { sink } = await sinkWithBackups(6);
      const plan = await planFor(sink, { keepLast: 1 });
      const controller = new AbortController();
      let calls = 0;
      const aborting: Sink = {
        ...sink,
        async delete(keys, options) {
          // One key a call (batchSize 1), so the abort lands between a manifest and its artifact too.
          await sink.delete(keys, options);
          if (++calls === after) controller.abort();
        },
      };
      const error = await failureOf(
        applyRetention({ sink: aborting, plan, signal: controller.signal, batchSize: 1, orphans: false }),
      );
      const deleted = isStowageError(error) ? ((error as StowageError).details.deleted as string[]) : [];
      return {
        error,
        code: "ABORTED",
        leftovers: [
          ...(Array.isArray(deleted) ? [] : ["details.deleted is missing"]),
          ...(await violations(sink, plan, { deleted: deleted ?? [], failedManifest: [] })),
          ...(await finishes(sink, plan)),
        ],
        secrets: [hexKey],
      };
    });
  }

  fault("retention", "a plan that would drop every backup is refused", async () => {
    const { sink } = await sinkWithBackups(3);
    const before = await listing(sink);
    // No backup passes validation (a label none has), so the newest-valid rule keeps none either.
    const error = await failureOf(
      planFor(sink, { maxAge: "12h" }, { rules: { requiredLabels: { tier: "gold" } } }),
    );
    return { error, code: "RETENTION_REFUSED", leftovers: listingChange(before, await listing(sink)) };
  });

  fault("retention", "a plan made for another sink is refused", async () => {
    const { sink } = await sinkWithBackups(3);
    const plan = await planFor(sink, { keepLast: 1 });
    const other: Sink = { ...sink, kind: "filesystem" };
    const before = await listing(sink);
    const error = await failureOf(applyRetention({ sink: other, plan }));
    return { error, code: "RETENTION_REFUSED", leftovers: listingChange(before, await listing(sink)) };
  });

  fault("retention", "a manifest that does not parse is neither planned nor swept", async () => {
    const { sink, manifests } = await sinkWithBackups(4);
    // The oldest backup's manifest becomes unreadable: its artifact is not an orphan to sweep.
    const broken = manifests[0]!;
    await sink.write(
      `${broken.artifact.key}${MANIFEST}`,
      Readable.from([Buffer.from('{"version": 1, "id": ')]),
    );
    sink.objects.get(`${broken.artifact.key}${MANIFEST}`)!.lastModified = new Date(now.getTime() - 10 * DAY);
    const { invalid } = await listManifests(sink, { job: "r" });
    const plan = await planFor(sink, { keepLast: 1 });
    await applyRetention({ sink, plan, orphans: { olderThan: "1h" }, now });
    const keys = new Set(await listing(sink));
    return {
      error: invalid[0]?.error,
      code: "MANIFEST_INVALID",
      leftovers: [
        ...(keys.has(broken.artifact.key) ? [] : ["the artifact of the unreadable manifest was deleted"]),
        ...(keys.has(`${broken.artifact.key}${MANIFEST}`) ? [] : ["the unreadable manifest was deleted"]),
        ...(await violations(sink, plan, { deleted: [], failedManifest: [] })).filter(
          (v) => !v.startsWith("deleted, not reported"),
        ),
      ],
      secrets: [hexKey],
    };
  });
});
