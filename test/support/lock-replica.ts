/**
 * One replica of a service that embeds the scheduler, for the lock tests: a child Node process
 * (run with tsx) that schedules one job on a lock shared with its sibling processes and prints,
 * one JSON line each, what it does: `ready`, every lease it takes (`acquired`, with its fencing
 * token), every backup it starts writing (`open`) and every scheduler event. The parent kills or
 * pauses it by pid and reads what the shared sink and audit trail hold.
 *
 * Configured by the STOWAGE_LOCK_REPLICA environment variable (JSON, see `ReplicaConfig`).
 */
import { Readable } from "node:stream";
import { S3Client, type S3ClientConfig } from "@aws-sdk/client-s3";
import type { Lock } from "../../src/core/lock.js";
import type { Source } from "../../src/core/types.js";
import { auditLog } from "../../src/jobs/audit.js";
import { defineJob } from "../../src/jobs/job.js";
import { startScheduler } from "../../src/jobs/scheduler.js";
import { kubernetesLease } from "../../src/locks/kubernetes.js";
import { postgresLock } from "../../src/locks/postgres.js";
import { s3Lock } from "../../src/locks/s3.js";
import { filesystemSink } from "../../src/sinks/filesystem.js";
import { kubeConfigFor } from "./kube-fixtures.js";

export interface ReplicaConfig {
  replica: string;
  kind: "kubernetes" | "postgres" | "s3";
  kubernetes?: { url: string; namespace: string };
  postgres?: { connection: { host: string; port: number; user: string; password: string; database: string } };
  s3?: { clientConfig: S3ClientConfig; bucket: string; prefix: string };
  sinkRoot: string;
  auditPath: string;
  schedule: string;
  ttl: string;
  /** How long each backup's source takes to stream its bytes. */
  runMs: number;
}

const config = JSON.parse(process.env.STOWAGE_LOCK_REPLICA ?? "{}") as ReplicaConfig;
const say = (line: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify({ replica: config.replica, ...line })}\n`);

function engine(): Lock {
  if (config.kind === "kubernetes") {
    return kubernetesLease({
      kubeConfig: kubeConfigFor(config.kubernetes!.url),
      namespace: config.kubernetes!.namespace,
    });
  }
  if (config.kind === "postgres") return postgresLock({ connection: config.postgres!.connection });
  return s3Lock({
    client: new S3Client(config.s3!.clientConfig),
    bucket: config.s3!.bucket,
    prefix: config.s3!.prefix,
  });
}

/** The engine, telling the parent about every lease it takes. */
function reporting(lock: Lock): Lock {
  return {
    kind: lock.kind,
    async acquire(name, options) {
      const lease = await lock.acquire(name, options);
      if (lease) say({ type: "acquired", name, fencingToken: lease.fencingToken });
      return lease;
    },
  };
}

/** Bytes that take `runMs` to arrive, naming the replica, so a run is long enough to be caught mid-way. */
const slowSource: Source = {
  kind: "test",
  name: "slow",
  async open() {
    say({ type: "open" });
    const steps = 10;
    async function* bytes() {
      for (let i = 0; i < steps; i++) {
        await new Promise((r) => setTimeout(r, config.runMs / steps));
        yield Buffer.from(`${config.replica} chunk ${i}\n`);
      }
    }
    return {
      stream: Readable.from(bytes()),
      contentType: "text/plain",
      details: async () => ({ replica: config.replica }),
    };
  },
};

const job = defineJob({
  name: "app-db",
  schedule: config.schedule,
  source: slowSource,
  sink: filesystemSink({ root: config.sinkRoot }),
});

const scheduler = startScheduler([job], {
  lock: { lock: reporting(engine()), ttl: config.ttl, replica: config.replica },
  audit: auditLog({ path: config.auditPath }),
  onEvent: (event) => {
    const result = "result" in event ? event.result : undefined;
    say({
      type: event.type,
      scheduledFor: event.scheduledFor,
      ...("reason" in event ? { reason: event.reason } : {}),
      ...("errors" in event ? { errors: event.errors } : {}),
      ...(result?.manifest
        ? { key: result.manifest.artifact.key, fencingToken: result.manifest.lease?.fencingToken }
        : {}),
    });
  },
});

process.once("SIGTERM", () => {
  void scheduler.stop({ signal: AbortSignal.timeout(5_000) }).then(() => process.exit(0));
});
say({ type: "ready" });
