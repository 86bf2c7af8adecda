/**
 * Strategy A — a governance platform's tiered backups — as one stowage config.
 *
 * Every backup carries `constitutional_hash=cdd01ef066bc6cf2` and is validated for it (a backup
 * without it fails its job), is gzip-compressed (a custom-format dump is compressed already) and
 * AES-256-GCM-encrypted, and every backup, copy and deletion is written to the audit log. Three
 * tiers, each kind with its own retention on each:
 *
 * | kind                          | job(s)                          | local   | offsite  | archive |
 * |-------------------------------|---------------------------------|---------|----------|---------|
 * | postgres                      | postgres (full, every 4 h)      | 30 days | 90 days  | 7 years |
 * | kubernetes                    | kubernetes (daily)              | 30 days | 90 days  | —       |
 * | services (HTTP state)         | service-state (hourly),         | 7 days  | 30 days  | —       |
 * |                               | user-sessions (every 15 min)    |         |          |         |
 * | constitutional audit (log)    | audit-log (every 5 min)         | 90 days | 365 days | 7 years |
 *
 * - local: a folder (`/backups`); offsite: an S3 bucket (`…-offsite`); archive: a second bucket
 *   (`…-archive`) in S3 Glacier Flexible Retrieval with Object Lock (COMPLIANCE, 7 years), so not
 *   even the account's root can delete an archived backup before its 7 years are up.
 * - Every backup is copied offsite; only the first backup of each calendar month is copied to the
 *   archive (`copies[].every: "monthly"`): the monthly database copy and the monthly audit trail.
 *   If that copy fails, the next backup of the month is copied instead.
 * - A tier keeps a backup for as long as its row says (`maxAge`): "30 days" is 30 × 24 h, "7
 *   years" 7 × 365.25 days; the newest valid backup of a job is never deleted, and the archive's
 *   Object Lock holds a backup at least as long as its retention does.
 *
 * The schedules, and what is not a stowage job:
 * - database full every 4 hours: `postgres`; the transaction logs every 5 minutes are PostgreSQL's
 *   WAL archiving (`archive_command`, pgBackRest or WAL-G), which a logical dump cannot replace;
 * - audit logs continuously: `audit-log` every 5 minutes (what a cron schedule can do) — the audit
 *   trail reaches the archive monthly with the first backup of each month;
 * - service configurations hourly, user sessions every 15 minutes: `service-state`, `user-sessions`;
 * - system configuration daily: `kubernetes` (the namespace's objects, secrets included, encrypted);
 * - compliance reports monthly: `stowage status --json --config examples/tiered-backups.ts`;
 * - application logs, metrics and weekly system (volume) snapshots have no row in the retention
 *   table; add them as jobs like these once they have one.
 *
 * Run it three ways:
 *   tsx examples/tiered-backups.ts --once          one cycle now (exit 1 if a job failed)
 *   tsx examples/tiered-backups.ts                 the scheduler, until SIGTERM/SIGINT
 *   stowage run --config examples/tiered-backups.ts   the CLI (status, verify, drill... too)
 *
 * Everything comes from the environment, so the same file runs against production or local test
 * servers. Secrets (the key, passwords, tokens) come only from the environment, never argv:
 *   STOWAGE_KEY              encryption key: 64 hex digits or base64 of 32 bytes (required)
 *   STOWAGE_BACKUP_DIR       the local tier                           (default /backups)
 *   STOWAGE_AUDIT_LOG        the audit log (JSON lines)               (default <backup dir>/../audit/audit.jsonl)
 *   STOWAGE_PG_URL           postgres://user@host:port/db (password in PGPASSWORD or the URL)
 *   STOWAGE_S3_BUCKET        the offsite bucket (…-offsite); STOWAGE_S3_PREFIX, STOWAGE_S3_REGION (default us-east-1)
 *   STOWAGE_S3_ARCHIVE_BUCKET  the archive bucket (…-archive), created with Object Lock enabled
 *   STOWAGE_ARCHIVE_LOCK     the archive's Object Lock mode: COMPLIANCE (default) or GOVERNANCE
 *   STOWAGE_S3_ENDPOINT      an S3-compatible endpoint (MinIO...), path-style; AWS credentials from
 *                            the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, IRSA...)
 *   STOWAGE_KUBE_SERVER      API server URL (with STOWAGE_KUBE_TOKEN); default: in-cluster or ~/.kube/config
 *   STOWAGE_KUBE_NAMESPACE   the namespace to back up                 (default acgs)
 *   STOWAGE_STATE_URL        the service's configuration/state endpoint (GET, JSON carrying constitutional_hash)
 *   STOWAGE_SESSIONS_URL     the user-sessions export endpoint (GET, JSON carrying constitutional_hash)
 *   STOWAGE_STATE_TOKEN      bearer token for both (optional)
 *   STOWAGE_TIME_ZONE        zone for schedules and calendar months (default UTC)
 */
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { S3Client } from "@aws-sdk/client-s3";
import { KubeConfig } from "@kubernetes/client-node";
import {
  aes256gcm,
  auditLog,
  defineConfig,
  defineJob,
  filesystemSink,
  gzip,
  type Job,
  runJobs,
  type Sink,
  type Source,
  startScheduler,
} from "stowage";
import { glacierSink } from "stowage/sinks/glacier";
import { s3Sink } from "stowage/sinks/s3";
import { httpSource } from "stowage/sources/http";
import { kubernetesSource } from "stowage/sources/kubernetes";
import { logsSource } from "stowage/sources/logs";
import { pgDumpSource } from "stowage/sources/postgres";

export const CONSTITUTIONAL_HASH = "cdd01ef066bc6cf2";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`tiered-backups: set ${name}`);
  return value;
}

/** The cluster: STOWAGE_KUBE_SERVER (+ STOWAGE_KUBE_TOKEN), else in-cluster or ~/.kube/config. */
export function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  const server = process.env.STOWAGE_KUBE_SERVER;
  if (!server) {
    kc.loadFromDefault(); // in a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config
    return kc;
  }
  const token = process.env.STOWAGE_KUBE_TOKEN;
  kc.loadFromOptions({
    clusters: [{ name: "target", server, skipTLSVerify: server.startsWith("http://") }],
    users: [{ name: "stowage", ...(token ? { token } : {}) }],
    contexts: [{ name: "target", cluster: "target", user: "stowage" }],
    currentContext: "target",
  });
  return kc;
}

function s3Client(): S3Client {
  const endpoint = process.env.STOWAGE_S3_ENDPOINT;
  return new S3Client({
    region: process.env.STOWAGE_S3_REGION ?? "us-east-1",
    ...(endpoint
      ? {
          endpoint,
          forcePathStyle: true,
          // S3-compatible stores often mishandle the SDK's default streaming checksums.
          requestChecksumCalculation: "WHEN_REQUIRED",
          responseChecksumValidation: "WHEN_REQUIRED",
        }
      : {}),
  });
}

/** Strategy A's retention table: how long each kind is kept in each tier. */
export const RETENTION = {
  postgres: { local: "30d", offsite: "90d", archive: "7y" },
  kubernetes: { local: "30d", offsite: "90d" },
  services: { local: "7d", offsite: "30d" },
  audit: { local: "90d", offsite: "365d", archive: "7y" },
} as const satisfies Record<string, { local: string; offsite: string; archive?: string }>;
export type Kind = keyof typeof RETENTION;

/** How long the archive's Object Lock holds each object: as long as its longest archive retention. */
export const ARCHIVE_LOCK = "7y";

/** The jobs: which kind each is, when it runs, and the freshness its backups are checked for. */
export const JOBS = {
  postgres: { kind: "postgres", schedule: "0 */4 * * *", maxAge: "8h" },
  kubernetes: { kind: "kubernetes", schedule: "0 1 * * *", maxAge: "2d" },
  "service-state": { kind: "services", schedule: "0 * * * *", maxAge: "2h" },
  "user-sessions": { kind: "services", schedule: "*/15 * * * *", maxAge: "30m" },
  "audit-log": { kind: "audit", schedule: "*/5 * * * *", maxAge: "10m" },
} as const satisfies Record<string, { kind: Kind; schedule: string; maxAge: string }>;
export type JobName = keyof typeof JOBS;

/** What {@link tieredJobs} builds the jobs from: the three tiers and one source per job. */
export interface TieredParts {
  local: Sink;
  offsite: Sink;
  /** Declares the Glacier classes (a `glacierSink`); the archive copies are written as GLACIER. */
  archive: Sink;
  sources: Record<JobName, Source>;
  /** The encryption key (64 hex digits or base64 of 32 bytes). */
  key: string;
  timeZone?: string;
}

/**
 * Strategy A's jobs over any three sinks and five sources: the table above, as stowage options.
 * `tieredConfig()` calls it with the real sinks and sources; a test can call it with in-memory ones.
 */
export function tieredJobs(parts: TieredParts): Job[] {
  const { local, offsite, archive, key } = parts;
  const keys = [{ key }];
  return (Object.keys(JOBS) as JobName[]).map((name) => {
    const { kind, schedule, maxAge } = JOBS[name];
    const tiers: { local: string; offsite: string; archive?: string } = RETENTION[kind];
    const labels = { constitutional_hash: CONSTITUTIONAL_HASH, kind };
    return defineJob({
      name,
      description: `${kind}: ${tiers.local} local, ${tiers.offsite} offsite${tiers.archive ? `, ${tiers.archive} archive (monthly)` : ""}`,
      schedule,
      ...(parts.timeZone ? { timeZone: parts.timeZone } : {}),
      source: parts.sources[name],
      // A custom-format dump is compressed already.
      transforms: kind === "postgres" ? [aes256gcm({ key })] : [gzip(), aes256gcm({ key })],
      keys,
      sink: local,
      retention: { maxAge: tiers.local },
      copies: [
        { sink: offsite, name: "offsite", retention: { maxAge: tiers.offsite } },
        ...(tiers.archive
          ? [
              {
                sink: archive,
                name: "archive",
                every: "monthly" as const,
                storageClass: "GLACIER",
                retention: { maxAge: tiers.archive },
              },
            ]
          : []),
      ],
      labels,
      // Labelled with the hash, encrypted, and no older than about twice the job's interval.
      rules: {
        requiredLabels: { constitutional_hash: CONSTITUTIONAL_HASH },
        requireEncryption: true,
        maxAge,
      },
      timeout: kind === "postgres" || kind === "kubernetes" ? "1h" : "10m",
    });
  });
}

/** Strategy A from the environment. */
export function tieredConfig() {
  const key = required("STOWAGE_KEY");
  const backupDir = resolve(process.env.STOWAGE_BACKUP_DIR ?? "/backups");
  const auditPath = resolve(
    process.env.STOWAGE_AUDIT_LOG ?? join(dirname(backupDir), "audit", "audit.jsonl"),
  );
  const client = s3Client();
  const prefix = process.env.STOWAGE_S3_PREFIX ?? "";
  const lockMode = process.env.STOWAGE_ARCHIVE_LOCK === "GOVERNANCE" ? "GOVERNANCE" : "COMPLIANCE";
  const timeZone = process.env.STOWAGE_TIME_ZONE ?? "UTC";
  const namespace = process.env.STOWAGE_KUBE_NAMESPACE ?? "acgs";
  const stateToken = process.env.STOWAGE_STATE_TOKEN;
  const headers: Record<string, string> = stateToken ? { Authorization: `Bearer ${stateToken}` } : {};
  // A state export without the hash is not this constitution's state: refuse to keep it.
  const expect = { requiredFields: { constitutional_hash: CONSTITUTIONAL_HASH } };

  const jobs = tieredJobs({
    key,
    timeZone,
    local: filesystemSink({ root: backupDir }),
    offsite: s3Sink({ client, bucket: required("STOWAGE_S3_BUCKET"), prefix }),
    archive: glacierSink({
      client,
      bucket: required("STOWAGE_S3_ARCHIVE_BUCKET"),
      prefix,
      storageClass: "GLACIER",
      objectLock: { mode: lockMode, retainFor: ARCHIVE_LOCK },
    }),
    sources: {
      postgres: pgDumpSource({ connection: required("STOWAGE_PG_URL"), format: "custom" }),
      kubernetes: kubernetesSource({
        kubeConfig: kubeConfig(),
        namespaces: [namespace],
        includeSecrets: true,
      }),
      "service-state": httpSource({
        url: required("STOWAGE_STATE_URL"),
        name: "service-state",
        headers,
        expect,
      }),
      "user-sessions": httpSource({
        url: required("STOWAGE_SESSIONS_URL"),
        name: "user-sessions",
        headers,
        expect,
      }),
      "audit-log": logsSource({
        paths: [`${dirname(auditPath)}/*.jsonl*`],
        baseDir: dirname(auditPath),
        name: "audit-log",
      }),
    },
  });

  return defineConfig({
    jobs,
    audit: auditLog({ path: auditPath }),
    concurrency: 2,
    timeZone,
    status: {
      rules: { requiredLabels: { constitutional_hash: CONSTITUTIONAL_HASH }, requireEncryption: true },
    },
  });
}

/** `stowage run --config examples/tiered-backups.ts` calls this. */
export default tieredConfig;

const isMain =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href;
if (isMain) {
  const config = tieredConfig();
  if (process.argv.includes("--once")) {
    const cycle = await runJobs(config.jobs, { audit: config.audit, concurrency: config.concurrency });
    for (const job of cycle.jobs) {
      const copies = job.copies.map((c) => ` ${c.target}:${c.status}`).join("");
      const errors = job.errors.map((e) => ` ${e.stage}:${e.code}`).join("");
      console.log(
        `${job.status === "succeeded" ? "ok  " : "FAIL"} ${job.job.padEnd(14)} ${String(job.bytes.stored).padStart(9)} B${copies}${errors}`,
      );
    }
    console.log(JSON.stringify({ ok: cycle.ok, succeeded: cycle.succeeded, failed: cycle.failed }));
    process.exitCode = cycle.ok ? 0 : 1;
  } else {
    const scheduler = startScheduler(config.jobs, {
      audit: config.audit,
      timeZone: config.timeZone,
      jitter: "30s",
      onEvent: (event) => console.log(JSON.stringify({ ...event, result: undefined })),
    });
    for (const job of scheduler.nextRuns()) console.log(`${job.job}: next run ${job.at?.toISOString()}`);
    const shutdown = () => {
      console.log("stopping: waiting for running backups (a second signal aborts them)");
      const abort = new AbortController();
      process.once("SIGTERM", () => abort.abort());
      process.once("SIGINT", () => abort.abort());
      void scheduler.stop({ signal: abort.signal });
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  }
}
