import { describe, expect, it } from "vitest";
import type { Manifest } from "../../src/core/manifest.js";
import { selectBackup } from "../../src/policies/select.js";

let n = 0;
function manifest(job: string, startedAt: string, minutes = 10): Manifest {
  const start = new Date(startedAt);
  const id = `${start.toISOString().replace(/[-:.]/g, "").replace("Z", "")}Z-${(n++).toString(16).padStart(8, "0")}`;
  return {
    version: 1,
    id,
    job,
    startedAt: start.toISOString(),
    finishedAt: new Date(start.getTime() + minutes * 60_000).toISOString(),
    source: { kind: "postgres", name: job, details: {} },
    artifact: {
      sink: "memory",
      key: `${job}/${id}.sql`,
      location: "memory://x",
      bytes: 1,
      sha256: "0".repeat(64),
    },
    content: { bytes: 1, sha256: "0".repeat(64), contentType: "application/sql" },
    transforms: [],
    labels: {},
    generator: { name: "stowage", version: "0" },
  };
}

describe("selectBackup", () => {
  const a1 = manifest("app", "2026-03-01T01:00:00Z");
  const a2 = manifest("app", "2026-03-01T02:55:00Z", 10); // finishes 03:05
  const a3 = manifest("app", "2026-03-01T04:00:00Z");
  const other = manifest("other", "2026-03-01T05:00:00Z");
  const all = [a3, other, a1, a2]; // any order

  it("picks the latest backup of the job", () => {
    expect(selectBackup(all, { job: "app" })).toBe(a3);
    expect(selectBackup(all, { job: "other" })).toBe(other);
    expect(selectBackup(all, { job: "none" })).toBeUndefined();
    expect(selectBackup([], { job: "app" })).toBeUndefined();
  });

  it("picks the latest at or before a point in time, by start (snapshot) time", () => {
    expect(selectBackup(all, { job: "app", at: "2026-03-01T03:00:00Z" })).toBe(a2);
    expect(selectBackup(all, { job: "app", at: new Date("2026-03-01T04:00:00Z") })).toBe(a3); // at == start
    expect(selectBackup(all, { job: "app", at: "2026-03-01T00:59:59Z" })).toBeUndefined();
  });

  it("by finishedAt picks only backups complete by then", () => {
    expect(selectBackup(all, { job: "app", at: "2026-03-01T03:00:00Z", by: "finishedAt" })).toBe(a1);
    expect(selectBackup(all, { job: "app", at: "2026-03-01T03:05:00Z", by: "finishedAt" })).toBe(a2);
  });

  it("breaks a tie on time with the greater id", () => {
    const b1 = manifest("tie", "2026-03-01T01:00:00Z");
    const b2 = manifest("tie", "2026-03-01T01:00:00Z");
    expect(selectBackup([b2, b1], { job: "tie" })).toBe(b2);
    expect(selectBackup([b1, b2], { job: "tie" })).toBe(b2);
  });

  it("refuses an invalid time", () => {
    expect(() => selectBackup(all, { job: "app", at: "yesterday-ish" })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }),
    );
  });
});
