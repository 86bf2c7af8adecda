/**
 * Retention and validation over a chain: a held incremental keeps its parents up to the full,
 * saying so; a chain with a missing link is reported and its backups are never "newest valid".
 */
import { describe, expect, it } from "vitest";
import type { Manifest } from "../../src/core/manifest.js";
import { planRetention, validateBackups } from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const NOW = new Date("2026-11-21T12:00:00Z");
const index = { member: ".stowage-index.ndjson", entries: 1, sha256: "2".repeat(64) };

/** A full at day 10 before NOW, then one incremental a day, each the parent of the next. */
function chain(days: number, labels: (i: number) => Record<string, string> = () => ({})): Manifest[] {
  const out: Manifest[] = [];
  for (let i = 0; i < days; i++) {
    const m = fakeManifest({
      job: "files",
      startedAt: new Date(NOW.getTime() - (10 - i) * 86_400_000),
      suffix: i,
      labels: labels(i),
    });
    const prev = out.at(-1);
    m.chain = prev
      ? { kind: "incremental", parent: { id: prev.id, key: prev.artifact.key }, index }
      : { kind: "full", index };
    out.push(m);
  }
  return out;
}

describe("retention over a chain", () => {
  it("keeps every link a held incremental needs, with the reason, and drops the rest", () => {
    const links = chain(6, (i): Record<string, string> => (i === 3 ? { hold: "legal" } : {}));
    const plan = planRetention(links, { keepLast: 1 }, { now: NOW });
    const action = Object.fromEntries(plan.decisions.map((d) => [d.id, [d.action, d.reasons]]));
    // The newest (kept by keepLast) needs all five before it; the held one needs the first three.
    expect(action[links[5]!.id]).toEqual(["keep", ["newest valid", "last 1"]]);
    expect(action[links[3]!.id]).toEqual(["keep", ["hold legal"]]);
    expect(action[links[4]!.id]).toEqual(["keep", [`needed by ${links[5]!.id}`]]);
    for (const i of [0, 1, 2]) {
      expect(action[links[i]!.id]).toEqual(["keep", [`needed by ${links[5]!.id} and 1 more`]]);
    }
  });

  it("lets a chain go once nothing kept needs it, and a new full starts another", () => {
    const links = chain(6);
    // A new full on the last day: the old chain is needed by nothing kept.
    const fresh = fakeManifest({ job: "files", startedAt: new Date(NOW.getTime() - 3_600_000), suffix: 9 });
    fresh.chain = { kind: "full", index };
    const plan = planRetention([...links, fresh], { keepLast: 1 }, { now: NOW });
    expect(plan.keep.map((d) => d.id)).toEqual([fresh.id]);
    expect(plan.drop).toHaveLength(6);
  });

  it("reports a broken chain in validation, and never picks its links as newest valid", () => {
    const links = chain(4);
    const broken = links.filter((_, i) => i !== 1); // the first incremental is gone
    const report = validateBackups(broken, {}, { now: NOW });
    const flagged = report.jobs[0]!.backups.filter((b) => b.findings.some((f) => f.rule === "chain"));
    expect(flagged.map((b) => b.id).sort()).toEqual([links[2]!.id, links[3]!.id]);
    expect(report.jobs[0]!.valid).toBe(1); // only the full is whole
    const plan = planRetention(broken, { keepLast: 1 }, { now: NOW });
    expect(plan.groups[0]!.newestValid).toBe(links[0]!.id);
  });
});
