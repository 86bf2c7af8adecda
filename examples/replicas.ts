/**
 * A service with several replicas, each embedding the scheduler: every scheduled run of a job
 * happens on the one replica that takes its lease. Pick the engine you already run with
 * STOWAGE_LOCK=kubernetes|postgres|s3 (the adapters' clients are optional peers: install
 * `@kubernetes/client-node`, `pg` or `@aws-sdk/client-s3` for the one you use).
 */
import { S3Client } from "@aws-sdk/client-s3";
import { KubeConfig } from "@kubernetes/client-node";
import { auditLog, bytesSource, defineJob, filesystemSink, type Lock, startScheduler } from "stowage";
import { kubernetesLease } from "stowage/locks/kubernetes";
import { postgresLock } from "stowage/locks/postgres";
import { s3Lock } from "stowage/locks/s3";

function lockFromEnvironment(): Lock {
  switch (process.env.STOWAGE_LOCK) {
    case "kubernetes": {
      // coordination.k8s.io/v1 Lease objects (the identity needs get/create/update on leases).
      const kc = new KubeConfig();
      kc.loadFromCluster();
      return kubernetesLease({ kubeConfig: kc, namespace: "shop" });
    }
    case "postgres":
      // A session advisory lock, released the moment the holder's session ends (PostgreSQL 14+
      // also ends an idle holder's session after the ttl).
      return postgresLock({ connection: process.env.DATABASE_URL ?? "postgres://localhost/shop" });
    default:
      // A small lease object written only with If-None-Match / If-Match conditional PUTs (AWS S3
      // since 2024; check that your S3-compatible store honours them).
      return s3Lock({ client: new S3Client({}), bucket: "backups", prefix: "locks/" });
  }
}

const sink = filesystemSink({ root: process.env.STOWAGE_BACKUPS ?? "backups" });
const jobs = [
  defineJob({
    name: "settings",
    schedule: "*/15 * * * *",
    source: bytesSource({ data: JSON.stringify({ feature: true }), name: "settings" }),
    sink,
  }),
];

const lock = lockFromEnvironment();
const scheduler = startScheduler(jobs, {
  lock: { lock, ttl: "30s", ...(process.env.HOSTNAME ? { replica: process.env.HOSTNAME } : {}) }, // or just `lock`
  audit: auditLog({ sink, prefix: "audit" }),
});
process.once("SIGTERM", () => void scheduler.stop({ signal: AbortSignal.timeout(60_000) }));
