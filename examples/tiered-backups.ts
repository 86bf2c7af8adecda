/**
 * Tiered backups (the ACGS-2 seed's schedule), as one stowage config:
 *
 * | job              | what                        | every   | kept                                   |
 * |------------------|-----------------------------|---------|----------------------------------------|
 * | postgres         | pg_dump (custom format)     | 15 min  | 30 days locally, copied to S3, 90 days |
 * | kubernetes       | one namespace's objects     | 6 h     | 30 days                                |
 * | service-state    | the service's state (HTTP)  | 30 min  | 30 days                                |
 * | audit-log        | stowage's own audit log     | 5 min   | 90 days                                |
 *
 * Every backup is gzip-compressed, AES-256-GCM-encrypted, labelled
 * `constitutional_hash=cdd01ef066bc6cf2` and validated for that label (a backup without it fails
 * its job), and every backup, copy and deletion is written to the audit log.
 *
 * Run it three ways:
 *   tsx examples/tiered-backups.ts --once          one cycle now (exit 1 if a job failed)
 *   tsx examples/tiered-backups.ts                 the scheduler, until SIGTERM/SIGINT
 *   stowage run --config examples/tiered-backups.ts   the CLI (status, verify, drill... too)
 *
 * Everything comes from the environment, so the same file runs against production or local test
 * servers. Secrets (the key, passwords, tokens) come only from the environment, never argv:
 *   STOWAGE_KEY              encryption key: 64 hex digits or base64 of 32 bytes (required)
 *   STOWAGE_BACKUP_DIR       local backup folder                      (default ./backups)
 *   STOWAGE_AUDIT_LOG        the audit log (JSON lines)               (default <backup dir>/../audit/audit.jsonl)
 *   STOWAGE_PG_URL           postgres://user@host:port/db (password in PGPASSWORD or the URL)
 *   STOWAGE_S3_BUCKET        the offsite bucket; STOWAGE_S3_PREFIX, STOWAGE_S3_REGION (default us-east-1)
 *   STOWAGE_S3_ENDPOINT      an S3-compatible endpoint (MinIO...), path-style; AWS credentials from
 *                            the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, IRSA...)
 *   STOWAGE_KUBE_SERVER      API server URL (with STOWAGE_KUBE_TOKEN); default: in-cluster or ~/.kube/config
 *   STOWAGE_KUBE_NAMESPACE   the namespace to back up                 (default acgs)
 *   STOWAGE_STATE_URL        the service's state endpoint (GET, JSON carrying constitutional_hash)
 *   STOWAGE_STATE_TOKEN      bearer token for it (optional)
 *   STOWAGE_TIME_ZONE        zone for schedules and calendar retention (default UTC)
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
  runJobs,
  startScheduler,
} from "stowage";
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

/** The seed's four tiers, from the environment. */
export function tieredConfig() {
  const key = required("STOWAGE_KEY");
  const backupDir = resolve(process.env.STOWAGE_BACKUP_DIR ?? "backups");
  const auditPath = resolve(
    process.env.STOWAGE_AUDIT_LOG ?? join(dirname(backupDir), "audit", "audit.jsonl"),
  );
  const labels = { constitutional_hash: CONSTITUTIONAL_HASH };
  // Each tier must be labelled, encrypted, and no older than twice its interval.
  const rules = (maxAge: string) => ({ requiredLabels: labels, requireEncryption: true, maxAge });
  const transforms = [gzip(), aes256gcm({ key })];
  const keys = [{ key }];
  const local = filesystemSink({ root: backupDir });
  const offsite = s3Sink({
    client: s3Client(),
    bucket: required("STOWAGE_S3_BUCKET"),
    prefix: process.env.STOWAGE_S3_PREFIX ?? "",
  });
  const timeZone = process.env.STOWAGE_TIME_ZONE ?? "UTC";

  const postgres = defineJob({
    name: "postgres",
    description: "PostgreSQL every 15 minutes; 30 days locally, 90 days in S3",
    schedule: "*/15 * * * *",
    source: pgDumpSource({ connection: required("STOWAGE_PG_URL"), format: "custom" }),
    transforms: [aes256gcm({ key })], // a custom-format dump is compressed already
    keys,
    sink: local,
    retention: { keepWithin: "30d" },
    copies: [{ sink: offsite, name: "s3", retention: { keepWithin: "90d" } }],
    labels: { ...labels, tier: "15m" },
    rules: rules("30m"),
    timeout: "1h",
  });
  const namespace = process.env.STOWAGE_KUBE_NAMESPACE ?? "acgs";
  const kubernetes = defineJob({
    name: "kubernetes",
    description: `Kubernetes namespace ${namespace} every 6 hours, 30 days`,
    schedule: "0 */6 * * *",
    source: kubernetesSource({ kubeConfig: kubeConfig(), namespaces: [namespace], includeSecrets: true }),
    transforms,
    keys,
    sink: local,
    retention: { keepWithin: "30d" },
    labels: { ...labels, tier: "6h" },
    rules: rules("12h"),
    timeout: "1h",
  });
  const stateToken = process.env.STOWAGE_STATE_TOKEN;
  const serviceState = defineJob({
    name: "service-state",
    description: "the service's state every 30 minutes, 30 days",
    schedule: "*/30 * * * *",
    source: httpSource({
      url: required("STOWAGE_STATE_URL"),
      name: "service-state",
      headers: stateToken ? { Authorization: `Bearer ${stateToken}` } : {},
      // A state export without the hash is not this constitution's state: refuse to keep it.
      expect: { requiredFields: { constitutional_hash: CONSTITUTIONAL_HASH } },
    }),
    transforms,
    keys,
    sink: local,
    retention: { keepWithin: "30d" },
    labels: { ...labels, tier: "30m" },
    rules: rules("1h"),
    timeout: "10m",
  });
  const auditLogJob = defineJob({
    name: "audit-log",
    description: "stowage's audit log every 5 minutes, 90 days",
    schedule: "*/5 * * * *",
    source: logsSource({
      paths: [`${dirname(auditPath)}/*.jsonl*`],
      baseDir: dirname(auditPath),
      name: "audit-log",
    }),
    transforms,
    keys,
    sink: local,
    retention: { keepWithin: "90d" },
    labels: { ...labels, tier: "5m" },
    rules: rules("10m"),
    timeout: "10m",
  });

  return defineConfig({
    jobs: [postgres, kubernetes, serviceState, auditLogJob],
    audit: auditLog({ path: auditPath }),
    concurrency: 2,
    timeZone,
    status: { rules: { requiredLabels: labels, requireEncryption: true } },
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
