/**
 * Strategy B — a security orchestrator's disaster recovery — as one stowage config.
 *
 * Recovery objectives, as classes, and the job each applies to:
 *
 * | class        | RTO    | RPO    | jobs                                                        |
 * |--------------|--------|--------|-------------------------------------------------------------|
 * | critical     | 30 min | 15 min | application-data                                            |
 * | standard     | 2 h    | 1 h    | configuration (RTO; its RPO is the archive class: daily)    |
 * | non-critical | 4 h    | —      | infrastructure (backed up on every deployment: no clock RPO) |
 * | archive      | —      | 24 h   | configuration                                               |
 *
 * `stowage status` fails a job whose newest valid backup is older than its RPO; every drill
 * reports the measured RTO (restore + check) against its job's RTO class, and the backup's age
 * against its RPO class.
 *
 * | job              | what                         | when                               | kept                                        |
 * |------------------|------------------------------|------------------------------------|---------------------------------------------|
 * | application-data | pg_dump (custom format)      | every 15 minutes                   | 30 days daily, 12 months weekly, 7 years monthly |
 * | configuration    | the service's configuration  | daily, and on change               | 90 days                                     |
 * | infrastructure   | the Kubernetes namespace     | on every deployment                | 12 months                                   |
 *
 * - Backups go to S3 in the primary region and are copied (verified while copied) to a bucket in
 *   a second region, each with the same retention there. Every job is replicated, so that a
 *   failover to the second region has the data, the configuration and the infrastructure.
 * - Application data: the strategy asks for incrementals every 15 minutes and a full backup daily.
 *   stowage has no incremental backups yet, so every 15-minute backup is a full one; the
 *   grandfather-father-son retention (`keepDaily: 30, keepWeekly: 52, keepMonthly: 84`) keeps the
 *   newest backup of each of the last 30 days, 52 ISO weeks and 84 months — the daily, weekly and
 *   monthly generations — and the newest backup of today, so the RPO holds.
 * - "On change" and "on every deployment" are triggers, not schedules: the deploy pipeline runs
 *   `stowage run --config examples/disaster-recovery.ts --job infrastructure --job configuration`,
 *   and a service that embeds the scheduler calls `scheduler.trigger("configuration")` when its
 *   configuration changes.
 * - "12 months" is `maxAge: "1y"` (365.25 days); "90 days" is 90 × 24 h. A job's retention runs
 *   when the job runs, so for infrastructure, which runs only on deployments, a daily
 *   `stowage prune --config examples/disaster-recovery.ts --job infrastructure` deletes a backup on
 *   the day it turns a year old rather than at the next deployment.
 * - The status RPO is measured from the newest valid backup's start, so a 15-minute schedule meets
 *   a 15-minute RPO only while every run starts on its tick; alert on two breached scrapes.
 *
 * The tests of the backups:
 * - monthly backup test (scheduled, 06:00 on the 1st): every job's newest backup is verified
 *   (stored SHA-256, and a trial decryption), restored into a scratch target in the test
 *   environment (a new database, a folder, a server-side dry run), checked, and the RPO and RTO
 *   measured; one JSON report per month lands in STOWAGE_DRILL_DIR. Run it now with
 *     tsx examples/disaster-recovery.ts --monthly-test
 * - quarterly failover drill (a person runs it, with the second region as the only source):
 *     stowage drill --config examples/disaster-recovery.ts --from region-2 --report failover-drill.json
 *   or `tsx examples/disaster-recovery.ts --failover-drill`; exit code 1 if any drill failed.
 *
 * Run it:
 *   tsx examples/disaster-recovery.ts --once       one run of every job now (exit 1 if one failed)
 *   tsx examples/disaster-recovery.ts              the scheduler (jobs and the monthly test)
 *   stowage status --config examples/disaster-recovery.ts    RPO per job
 *
 * Environment (secrets only from the environment, never argv):
 *   STOWAGE_KEY                encryption key: 64 hex digits or base64 of 32 bytes (required)
 *   STOWAGE_PG_URL             the application database
 *   STOWAGE_DRILL_PG_URL       where scratch databases may be created (default STOWAGE_PG_URL)
 *   STOWAGE_S3_BUCKET          the primary bucket; STOWAGE_S3_REGION (default us-east-1)
 *   STOWAGE_S3_REPLICA_BUCKET  the second region's bucket; STOWAGE_S3_REPLICA_REGION (default us-west-2)
 *   STOWAGE_S3_PREFIX          a key prefix in both buckets (optional)
 *   STOWAGE_S3_ENDPOINT        an S3-compatible endpoint for both (MinIO...), path-style
 *   STOWAGE_CONFIG_URL         the configuration export (GET, JSON); STOWAGE_CONFIG_TOKEN (optional)
 *   STOWAGE_KUBE_SERVER        API server URL (with STOWAGE_KUBE_TOKEN); default in-cluster or ~/.kube/config
 *   STOWAGE_KUBE_NAMESPACE     the namespace to back up (default acso)
 *   STOWAGE_AUDIT_LOG          the audit log (default ./audit/dr-audit.jsonl)
 *   STOWAGE_DRILL_DIR          where drill reports go (default ./drill-reports)
 *   STOWAGE_TIME_ZONE          zone for schedules and the calendar retention (default UTC)
 */
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { S3Client } from "@aws-sdk/client-s3";
import {
  aes256gcm,
  auditLog,
  type DrillCheck,
  type DrillTarget,
  defineConfig,
  defineJob,
  gzip,
  type Job,
  type RetentionPolicy,
  runDrills,
  runJobs,
  type ScheduledDrill,
  type Sink,
  type Source,
  startScheduler,
} from "stowage";
import { s3Sink } from "stowage/sinks/s3";
import { httpSource } from "stowage/sources/http";
import { kubernetesRestoreTarget, kubernetesSource } from "stowage/sources/kubernetes";
import { pgDumpSource, postgresRestoreTarget } from "stowage/sources/postgres";
import { kubeConfig } from "./tiered-backups.js";

/** Recovery time objectives: how long a restore of each class may take. */
export const RTO = { critical: "30m", standard: "2h", "non-critical": "4h" } as const;
/** Recovery point objectives: how much data each class may lose. */
export const RPO = { critical: "15m", standard: "1h", archive: "24h" } as const;

/** Grandfather-father-son: 30 days of dailies, 12 months of weeklies, 7 years of monthlies. */
export const GFS = { keepDaily: 30, keepWeekly: 52, keepMonthly: 84 } as const satisfies RetentionPolicy;

/** The jobs: schedule (none: triggered), retention, and recovery classes. */
export const JOBS = {
  "application-data": {
    // A full backup every 15 minutes; the 15-minute incrementals and daily full land with incremental backups.
    schedule: "*/15 * * * *",
    retention: GFS,
    rpoClass: "critical",
    rtoClass: "critical",
  },
  configuration: {
    schedule: "0 2 * * *",
    retention: { maxAge: "90d" },
    rpoClass: "archive",
    rtoClass: "standard",
  },
  infrastructure: {
    schedule: undefined,
    retention: { maxAge: "1y" },
    rpoClass: undefined,
    rtoClass: "non-critical",
  },
} as const satisfies Record<
  string,
  {
    schedule: string | undefined;
    retention: RetentionPolicy;
    rpoClass: keyof typeof RPO | undefined;
    rtoClass: keyof typeof RTO;
  }
>;
export type JobName = keyof typeof JOBS;

/** The monthly backup test: every job's drill at 06:00 on the 1st, one report a month. */
export function monthlyTest(reportDir: string): ScheduledDrill {
  return {
    name: "monthly-backup-test",
    schedule: "0 6 1 * *",
    report: (at) => join(reportDir, `monthly-backup-test-${at.toISOString().slice(0, 7)}.json`),
  };
}

/** What {@link drJobs} builds the jobs from. */
export interface DrParts {
  /** S3 in the primary region. */
  primary: Sink;
  /** S3 in the second region. */
  replica: Sink;
  sources: Record<JobName, Source>;
  /** Where each job's drill restores to, and what it checks there. */
  drills: Record<JobName, { target: DrillTarget; check?: DrillCheck }>;
  key: string;
  timeZone?: string;
}

/** Strategy B's jobs over any two sinks: the tables above, as stowage options. */
export function drJobs(parts: DrParts): Job[] {
  const { key } = parts;
  return (Object.keys(JOBS) as JobName[]).map((name) => {
    const spec = JOBS[name];
    const rpo = spec.rpoClass ? RPO[spec.rpoClass] : undefined;
    return defineJob({
      name,
      ...(spec.schedule ? { schedule: spec.schedule } : {}),
      ...(parts.timeZone ? { timeZone: parts.timeZone } : {}),
      source: parts.sources[name],
      transforms: name === "application-data" ? [aes256gcm({ key })] : [gzip(), aes256gcm({ key })],
      keys: [{ key }],
      sink: parts.primary,
      retention: spec.retention,
      copies: [{ sink: parts.replica, name: "region-2", retention: spec.retention }],
      objectives: {
        rto: RTO[spec.rtoClass],
        rtoClass: spec.rtoClass,
        ...(rpo ? { rpo, rpoClass: spec.rpoClass } : {}),
      },
      rules: { requireEncryption: true },
      drill: { ...parts.drills[name] },
      timeout: "1h",
    });
  });
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`disaster-recovery: set ${name}`);
  return value;
}

function s3Client(region: string): S3Client {
  const endpoint = process.env.STOWAGE_S3_ENDPOINT;
  return new S3Client({
    region,
    ...(endpoint
      ? {
          endpoint,
          forcePathStyle: true,
          requestChecksumCalculation: "WHEN_REQUIRED",
          responseChecksumValidation: "WHEN_REQUIRED",
        }
      : {}),
  });
}

/** Row counts of every public table of the restored database; the drill fails if all are empty. */
const ROW_COUNTS = `
  SELECT c.relname AS table_name,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1`;
const tablesHaveRows: DrillCheck = ({ rows }) => {
  const tables = (rows ?? []).map((r) => ({ table: String(r.table_name), rows: Number(r.n) }));
  return { ok: tables.some((t) => t.rows > 0), details: { tables } };
};
const isJsonObject: DrillCheck = async ({ file }) => {
  const value = JSON.parse(await readFile(file!, "utf8")) as unknown;
  return {
    ok: typeof value === "object" && value !== null,
    details: { bytes: (await readFile(file!)).length },
  };
};

/** Strategy B from the environment. */
export function disasterRecoveryConfig() {
  const key = required("STOWAGE_KEY");
  const prefix = process.env.STOWAGE_S3_PREFIX ?? "";
  const timeZone = process.env.STOWAGE_TIME_ZONE ?? "UTC";
  const connection = required("STOWAGE_PG_URL");
  const token = process.env.STOWAGE_CONFIG_TOKEN;
  const jobs = drJobs({
    key,
    timeZone,
    primary: s3Sink({
      client: s3Client(process.env.STOWAGE_S3_REGION ?? "us-east-1"),
      bucket: required("STOWAGE_S3_BUCKET"),
      prefix,
    }),
    replica: s3Sink({
      client: s3Client(process.env.STOWAGE_S3_REPLICA_REGION ?? "us-west-2"),
      bucket: required("STOWAGE_S3_REPLICA_BUCKET"),
      prefix,
    }),
    sources: {
      "application-data": pgDumpSource({ connection, format: "custom" }),
      configuration: httpSource({
        url: required("STOWAGE_CONFIG_URL"),
        name: "configuration",
        headers: token ? { Authorization: `Bearer ${token}` } : {},
      }),
      infrastructure: kubernetesSource({
        kubeConfig: kubeConfig(),
        namespaces: [process.env.STOWAGE_KUBE_NAMESPACE ?? "acso"],
        includeSecrets: true,
      }),
    },
    drills: {
      "application-data": {
        target: postgresRestoreTarget({
          connection: process.env.STOWAGE_DRILL_PG_URL ?? connection,
          query: ROW_COUNTS,
        }),
        check: tablesHaveRows,
      },
      configuration: { target: { kind: "directory" }, check: isJsonObject },
      // A server-side dry run (dryRun=All): every object is checked by the API server, none stored.
      infrastructure: {
        target: kubernetesRestoreTarget({ kubeConfig: kubeConfig() }),
        check: ({ kubernetes }) => ({
          ok: (kubernetes?.counts.failed ?? 1) === 0,
          details: { counts: kubernetes?.counts },
        }),
      },
    },
  });
  return defineConfig({
    jobs,
    audit: auditLog({ path: resolve(process.env.STOWAGE_AUDIT_LOG ?? "audit/dr-audit.jsonl") }),
    timeZone,
  });
}

/** `stowage run|status|drill --config examples/disaster-recovery.ts` calls this. */
export default disasterRecoveryConfig;

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const config = disasterRecoveryConfig();
  const reportDir = resolve(process.env.STOWAGE_DRILL_DIR ?? "drill-reports");
  const printDrills = (report: Awaited<ReturnType<typeof runDrills>>) => {
    for (const d of report.drills) {
      const rto = d.objectives.rto;
      const rpo = d.objectives.rpo;
      console.log(
        `${d.ok ? "ok  " : "FAIL"} ${d.job.padEnd(17)} RTO ${d.rtoMs ?? "-"} ms of ${rto ? `${rto.limitMs} ms (${rto.class})` : "-"}` +
          `  RPO ${d.rpoMs === null ? "-" : `${Math.round(d.rpoMs / 1000)} s`} of ${rpo ? `${rpo.limitMs / 1000} s (${rpo.class})` : "-"}` +
          d.errors.map((e) => ` ${e.stage}:${e.code}`).join(""),
      );
    }
    console.log(`report: ${report.path}`);
    process.exitCode = report.ok ? 0 : 1;
  };
  if (process.argv.includes("--once")) {
    const cycle = await runJobs(config.jobs, { audit: config.audit });
    for (const job of cycle.jobs) {
      const copies = job.copies.map((c) => ` ${c.target}:${c.status}`).join("");
      const errors = job.errors.map((e) => ` ${e.stage}:${e.code}`).join("");
      console.log(`${job.status === "succeeded" ? "ok  " : "FAIL"} ${job.job.padEnd(17)}${copies}${errors}`);
    }
    process.exitCode = cycle.ok ? 0 : 1;
  } else if (process.argv.includes("--monthly-test")) {
    const test = monthlyTest(reportDir);
    printDrills(
      await runDrills(config.jobs, { name: test.name, report: test.report!, audit: config.audit! }),
    );
  } else if (process.argv.includes("--failover-drill")) {
    const at = new Date().toISOString().slice(0, 10);
    printDrills(
      await runDrills(config.jobs, {
        name: "quarterly-failover-drill",
        from: "region-2",
        report: join(reportDir, `failover-drill-${at}.json`),
        audit: config.audit!,
      }),
    );
  } else {
    const scheduler = startScheduler(config.jobs, {
      audit: config.audit,
      timeZone: config.timeZone,
      jitter: "30s",
      drills: [monthlyTest(reportDir)],
      onEvent: (event) => console.log(JSON.stringify({ ...event, result: undefined })),
      onDrill: (event) => console.log(JSON.stringify({ ...event, report: event.report?.path })),
    });
    for (const next of scheduler.nextRuns()) console.log(`${next.job}: next run ${next.at?.toISOString()}`);
    const shutdown = () => {
      const abort = new AbortController();
      process.once("SIGTERM", () => abort.abort());
      process.once("SIGINT", () => abort.abort());
      void scheduler.stop({ signal: abort.signal });
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  }
}
