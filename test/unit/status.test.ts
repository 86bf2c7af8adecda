import { describe, expect, it } from "vitest";
import {
  escapeLabelValue,
  formatBytes,
  formatDuration,
  formatPrometheus,
  formatStatusText,
  type StatusReport,
  summarize,
} from "../../src/policies/index.js";
import { fakeManifest } from "../support/retention-fixtures.js";

const now = new Date("2026-11-21T12:00:00Z");
const HASH = { constitutional_hash: "cdd01ef066bc6cf2" };
const rules = { requiredLabels: HASH, requireEncryption: true };

const manifests = [
  // app-db: every 15 minutes, fresh
  ...[5, 20, 35].map((minutesAgo, i) =>
    fakeManifest({
      job: "app-db",
      startedAt: new Date(now.getTime() - minutesAgo * 60_000),
      labels: HASH,
      storedBytes: 1000 + i,
      plainBytes: 4000 + i,
      suffix: i,
    }),
  ),
  // k8s: last valid 8 hours ago; a newer one is not encrypted
  fakeManifest({
    job: "k8s",
    startedAt: "2026-11-21T04:00:00Z",
    labels: HASH,
    storedBytes: 2048,
    plainBytes: 8192,
  }),
  fakeManifest({
    job: "k8s",
    startedAt: "2026-11-21T10:00:00Z",
    labels: HASH,
    encrypted: false,
    storedBytes: 100,
    plainBytes: 100,
  }),
  // logs: no constitutional hash, dated in the future by a skewed clock
  fakeManifest({ job: "logs", startedAt: "2026-11-21T13:00:00Z", storedBytes: 10, plainBytes: 20 }),
];

function report(): StatusReport {
  return summarize(manifests, {
    now,
    rules,
    rpo: { "app-db": "15m", k8s: "6h", audit: "5m" },
    invalid: [{ key: "app-db/2026/11/21/broken.manifest.json" }],
  });
}

describe("summarize", () => {
  it("reports each job: newest backup, age, count, bytes, compliance and the RPO", () => {
    const r = report();
    expect(r.generatedAt).toBe("2026-11-21T12:00:00.000Z");
    expect(r.jobs.map((j) => j.job)).toEqual(["app-db", "audit", "k8s", "logs"]);
    const [appDb, audit, k8s, logs] = r.jobs;
    expect(appDb).toMatchObject({
      status: "warning", // one unreadable manifest
      count: 3,
      invalidManifests: 1,
      ageSeconds: 300,
      storedBytes: 3003,
      plainBytes: 12003,
      valid: 3,
      compliant: 3,
      complianceRate: 3 / 4,
      rpo: "15m",
      rpoSeconds: 900,
      rpoBreached: false,
    });
    expect(appDb!.last).toMatchObject({
      startedAt: "2026-11-21T11:55:00.000Z",
      storedBytes: 1000,
      plainBytes: 4000,
      durationMs: 1000,
    });
    expect(appDb!.problems).toEqual(["1 of 4 backups not compliant", "1 manifest cannot be read"]);

    // A job named by the RPO map that has never run is failing.
    expect(audit).toMatchObject({
      status: "failing",
      count: 0,
      last: null,
      ageSeconds: null,
      rpoBreached: true,
      complianceRate: null,
    });
    expect(audit!.problems).toEqual(["RPO 5m breached: no valid backup"]);

    // The RPO is measured from the newest VALID backup: the unencrypted one does not reset it.
    expect(k8s).toMatchObject({ status: "failing", count: 2, ageSeconds: 7200, rpoBreached: true, valid: 1 });
    expect(k8s!.lastValid!.startedAt).toBe("2026-11-21T04:00:00.000Z");
    expect(k8s!.problems[0]).toBe("RPO 6h breached: the newest valid backup started 8h ago");
    expect(k8s!.problems[1]).toMatch(/^the newest backup .* does not pass validation \(encryption\)$/);

    // No backup of logs carries the constitutional hash, so none passes validation: failing.
    expect(logs).toMatchObject({
      status: "failing",
      ageSeconds: -3600,
      rpo: null,
      rpoBreached: null,
      valid: 1,
      compliant: 0,
    });
    expect(logs!.lastValid).toBeNull();
    expect(logs!.problems).toEqual([
      "no backup passes validation",
      "1 of 1 backups not compliant",
      "1 backup dated in the future (clock skew?)",
    ]);

    expect(r.overall).toEqual({
      status: "failing",
      jobs: 4,
      backups: 6,
      invalidManifests: 1,
      storedBytes: 3003 + 2048 + 100 + 10,
      plainBytes: 12003 + 8192 + 100 + 20,
      valid: 5,
      compliant: 4,
      complianceRate: 4 / 7,
      rpoBreached: 2,
    });
  });

  it("one RPO for all jobs, or rules.maxAge as the RPO; ok when all is well", () => {
    const fresh = manifests.slice(0, 3);
    const all = summarize(fresh, { now, rpo: "1h", rules: { requiredLabels: HASH } });
    expect(all.overall.status).toBe("ok");
    expect(all.jobs[0]).toMatchObject({ rpo: "1h", rpoBreached: false, problems: [] });
    const viaRules = summarize(fresh, { now, rules: { maxAge: "1m" } });
    expect(viaRules.jobs[0]).toMatchObject({ rpo: "1m", rpoBreached: true, status: "failing" });
    expect(summarize([], { now }).overall).toMatchObject({
      status: "ok",
      jobs: 0,
      backups: 0,
      complianceRate: null,
    });
    expect(summarize([], { now, jobs: ["db"] }).jobs[0]).toMatchObject({
      status: "failing",
      problems: ["no backup"],
    });
  });

  it("is JSON: the report survives a round trip", () => {
    const r = report();
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  it("names a bad option", () => {
    try {
      summarize(manifests, { now, rpo: "15 minutes" });
      expect.unreachable();
    } catch (error) {
      expect((error as { code: string }).code).toBe("CONFIG_INVALID");
      expect(
        (error as { details: { issues: Array<{ path: string }> } }).details.issues.map((i) => i.path),
      ).toEqual(["rpo"]);
    }
  });
});

describe("formatStatusText", () => {
  it("prints a headline, an aligned table, the problems and the totals", () => {
    const text = formatStatusText(report());
    expect(text).toBe(
      [
        "stowage status at 2026-11-21 12:00:00 UTC: FAILING: 2 of 4 jobs breach their RPO",
        "",
        "JOB     STATUS   LAST BACKUP (UTC)    AGE  RPO          BACKUPS   STORED     PLAIN  COMPLIANT",
        "app-db  WARNING  2026-11-21 11:55:00  5m   15m                3  2.9 KiB  11.7 KiB      75.0%",
        "audit   FAILING  never                -    5m BREACHED        0      0 B       0 B          -",
        "k8s     FAILING  2026-11-21 10:00:00  2h   6h BREACHED        2  2.1 KiB   8.1 KiB      50.0%",
        "logs    FAILING  2026-11-21 13:00:00  -1h  -                  1     10 B      20 B       0.0%",
        "",
        "Problems:",
        "  app-db: 1 of 4 backups not compliant",
        "  app-db: 1 manifest cannot be read",
        "  audit: RPO 5m breached: no valid backup",
        "  k8s: RPO 6h breached: the newest valid backup started 8h ago",
        `  k8s: the newest backup ${manifests[4]!.id} does not pass validation (encryption)`,
        "  k8s: 1 of 2 backups not compliant",
        "  logs: no backup passes validation",
        "  logs: 1 of 1 backups not compliant",
        "  logs: 1 backup dated in the future (clock skew?)",
        "",
        "Total: 6 backups in 4 jobs, 5.0 KiB stored (19.8 KiB plain), compliance 57.1% (4/7), 1 unreadable manifests",
        "",
      ].join("\n"),
    );
  });

  it("says OK and 'No backups.' when there is nothing to worry about", () => {
    expect(formatStatusText(summarize([], { now }))).toBe(
      "stowage status at 2026-11-21 12:00:00 UTC: OK\n\nNo backups.\n\nTotal: 0 backups in 0 jobs, 0 B stored (0 B plain), compliance - (0/0)\n",
    );
  });

  it("formats durations and sizes for people", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(59_000)).toBe("59s");
    expect(formatDuration(3_725_000)).toBe("1h 2m");
    expect(formatDuration(90_000_000)).toBe("1d 1h");
    expect(formatDuration(86_400_000 + 5_000)).toBe("1d");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(5 * 1024 ** 3)).toBe("5.0 GiB");
  });
});

/** A strict reader of the Prometheus text format 0.0.4, independent of the writer. */
function parseExposition(text: string) {
  expect(text.endsWith("\n")).toBe(true);
  const families = new Map<
    string,
    { help?: string; type?: string; samples: Array<{ labels: Record<string, string>; value: number }> }
  >();
  let current: string | undefined;
  const seen = new Set<string>();
  for (const line of text.slice(0, -1).split("\n")) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      expect(families.has(m[1]!), `HELP once for ${m[1]}`).toBe(false);
      families.set(m[1]!, { help: m[2]!, samples: [] });
      current = m[1]!;
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (m) {
      expect(m[1]).toBe(current);
      families.get(m[1]!)!.type = m[2]!;
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `sample line: ${line}`).not.toBeNull();
    const [, name, labelText = "", valueText] = m!;
    expect(name, "samples follow their family's HELP and TYPE").toBe(current);
    const labels: Record<string, string> = {};
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
    let rest = 0;
    while (rest < labelText.length) {
      const lm = labelRe.exec(labelText);
      expect(lm, `labels: ${labelText}`).not.toBeNull();
      labels[lm![1]!] = lm![2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
      rest = labelRe.lastIndex;
    }
    const series = `${name}${JSON.stringify(labels)}`;
    expect(seen.has(series), `duplicate series ${series}`).toBe(false);
    seen.add(series);
    const value =
      valueText === "+Inf" ? Number.POSITIVE_INFINITY : valueText === "NaN" ? Number.NaN : Number(valueText);
    expect(Number.isNaN(value) && valueText !== "NaN").toBe(false);
    families.get(name!)!.samples.push({ labels, value });
  }
  for (const [name, f] of families) {
    expect(f.type, `TYPE of ${name}`).toBe("gauge");
    expect(f.help!.length).toBeGreaterThan(10);
  }
  return families;
}

describe("formatPrometheus", () => {
  it("writes gauges with HELP and TYPE lines that a strict reader accepts", () => {
    const families = parseExposition(formatPrometheus(report()));
    const value = (name: string, labels: Record<string, string>) =>
      families.get(name)?.samples.find((s) => JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
    expect(value("stowage_last_backup_timestamp_seconds", { backup_job: "app-db" })).toBe(
      Date.parse("2026-11-21T11:55:00Z") / 1000,
    );
    expect(value("stowage_last_valid_backup_timestamp_seconds", { backup_job: "k8s" })).toBe(
      Date.parse("2026-11-21T04:00:00Z") / 1000,
    );
    expect(value("stowage_last_backup_age_seconds", { backup_job: "app-db" })).toBe(300);
    expect(value("stowage_backups", { backup_job: "app-db" })).toBe(3);
    expect(value("stowage_backups", { backup_job: "audit" })).toBe(0);
    expect(value("stowage_backup_bytes", { backup_job: "app-db", kind: "stored" })).toBe(3003);
    expect(value("stowage_backup_bytes", { backup_job: "app-db", kind: "plain" })).toBe(12003);
    expect(value("stowage_rpo_breached", { backup_job: "k8s" })).toBe(1);
    expect(value("stowage_rpo_breached", { backup_job: "app-db" })).toBe(0);
    expect(value("stowage_rpo_seconds", { backup_job: "k8s" })).toBe(21600);
    expect(value("stowage_invalid_manifests", { backup_job: "app-db" })).toBe(1);
    expect(value("stowage_compliance_ratio", { backup_job: "k8s" })).toBe(0.5);
    expect(value("stowage_job_healthy", { backup_job: "app-db" })).toBe(0);
    expect(value("stowage_status_timestamp_seconds", {})).toBe(now.getTime() / 1000);
    // A job that never ran has no last-backup sample (absent, not 0) and no RPO when it has none.
    expect(value("stowage_last_backup_timestamp_seconds", { backup_job: "audit" })).toBeUndefined();
    expect(value("stowage_rpo_breached", { backup_job: "logs" })).toBeUndefined();
  });

  it("escapes label values: backslash, double quote and newline", () => {
    expect(escapeLabelValue('a\\b"c\nd')).toBe('a\\\\b\\"c\\nd');
    const odd = 'we"ird\\job\nname';
    const text = formatPrometheus(
      summarize([fakeManifest({ job: odd, startedAt: "2026-11-21T11:00:00Z" })], { now }),
    );
    expect(text).toContain('stowage_backups{backup_job="we\\"ird\\\\job\\nname"} 1\n');
    const families = parseExposition(text);
    expect(families.get("stowage_backups")!.samples[0]!.labels.backup_job).toBe(odd);
  });

  it("with no jobs, still a valid exposition with the report time", () => {
    const families = parseExposition(formatPrometheus(summarize([], { now })));
    expect([...families.keys()]).toEqual(["stowage_status_timestamp_seconds"]);
  });
});
