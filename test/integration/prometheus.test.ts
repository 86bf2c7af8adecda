/**
 * The status metrics as Prometheus reads them: `promtool check metrics` (Prometheus's own linter,
 * from Debian's prometheus package) accepts the exposition text, and a prom-client registry with
 * `statusCollector` exposes the same families and values.
 */
import { execFile } from "node:child_process";
import * as client from "prom-client";
import { describe, expect, it } from "vitest";
import { formatPrometheus, type StatusReport, statusCollector, summarize } from "../../src/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const now = new Date("2026-11-21T12:00:00Z");
const report = (): StatusReport =>
  summarize(
    [
      fakeManifest({ job: "app-db", startedAt: "2026-11-21T11:55:00Z", storedBytes: 1001, plainBytes: 4001 }),
      fakeManifest({ job: "app-db", startedAt: "2026-11-21T11:40:00Z", storedBytes: 1001, plainBytes: 4001 }),
      fakeManifest({ job: "k8s", startedAt: "2026-11-20T04:00:00Z", storedBytes: 10, plainBytes: 20 }),
    ],
    {
      now,
      rpo: { "app-db": "15m", k8s: "6h" },
      jobs: ["audit"],
      // A WAL archive, so the WAL families are checked too.
      wal: {
        "app-db": {
          files: ["000000010000000000000003", "000000010000000000000004"].map((name) => ({
            name,
            keys: [`app-db/wal/00000001/${name}.gz`],
            archivedAt: new Date("2026-11-21T11:59:30Z"),
          })),
          archiver: { currentSegment: "000000010000000000000005", failedCount: 0, lastFailedAt: null },
        },
      },
    },
  );

function promtool(text: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile("promtool", ["check", "metrics"], (error, stdout, stderr) => {
      if (error && typeof error.code !== "number") reject(error);
      else resolve({ code: error ? Number(error.code) : 0, output: stdout + stderr });
    });
    child.stdin!.end(text);
  });
}

/** Samples of an exposition text as "name{labels} value" lines, sorted. */
const samplesOf = (text: string) =>
  text
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .sort();

describe("Prometheus metrics", () => {
  it("promtool check metrics accepts the exposition text, with no lint finding", async () => {
    const result = await promtool(formatPrometheus(report()));
    expect(result.output.trim()).toBe("");
    expect(result.code).toBe(0);
  });

  it("promtool would catch what the old names did wrong (a gauge named _total)", async () => {
    const bad =
      "# HELP stowage_backups_total Backups.\n# TYPE stowage_backups_total gauge\nstowage_backups_total 1\n";
    const result = await promtool(bad);
    expect(result.code).not.toBe(0);
  });

  it("no family uses the label job, which Prometheus sets to the scrape target's job", () => {
    expect(formatPrometheus(report())).not.toMatch(/[{,]job="/);
  });

  it("a prom-client registry with statusCollector exposes the same samples", async () => {
    const registry = new client.Registry();
    let calls = 0;
    statusCollector({
      client,
      registry,
      report: async () => {
        calls += 1;
        return report();
      },
    });
    const text = await registry.metrics();
    expect(samplesOf(text)).toEqual(samplesOf(formatPrometheus(report())));
    expect(calls).toBe(1); // one report per scrape, however many families
    expect((await promtool(text)).code).toBe(0);
  });

  it("statusCollector names a missing client", () => {
    expect(() => statusCollector({ client: {} as never, report: report })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }),
    );
  });
});
