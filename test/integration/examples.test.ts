/**
 * The seeds' examples, run end to end as a user runs them (`tsx examples/...`), against the local
 * test servers: PostgreSQL, an S3-speaking server, the Kubernetes-API test server and an HTTP
 * service. No skips: if a server cannot start, these tests fail.
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { listManifests } from "../../src/core/catalog.js";
import { restore, verify } from "../../src/core/restore.js";
import { readAll } from "../../src/core/streams.js";
import { readAuditLog } from "../../src/jobs/audit.js";
import { filesystemSink } from "../../src/sinks/filesystem.js";
import { s3Sink } from "../../src/sinks/s3.js";
import { restorePostgres } from "../../src/sources/postgres.js";
import { json, startHttpServer, type TestHttpServer } from "../support/http.js";
import { KubeApiServer } from "../support/kube-api-server.js";
import { seedShop } from "../support/kube-fixtures.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

const repo = new URL("../..", import.meta.url).pathname;
const tsx = join(repo, "node_modules/.bin/tsx");
// The examples import "stowage" as users do; the repo's tsconfig maps it to the source.
const tsconfig = process.env.STOWAGE_EXAMPLES_TSCONFIG ?? join(repo, "tsconfig.json");
const HASH = "cdd01ef066bc6cf2";
const KEY = "5f".repeat(32);

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}
function runExample(args: string[], env: Record<string, string>, cwd: string): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      tsx,
      ["--tsconfig", tsconfig, ...args],
      { cwd, env: { ...process.env, ...env }, maxBuffer: 64 << 20 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr }),
    );
  });
}

let pg: TestPostgres;
let s3: S3TestServer;
let kube: KubeApiServer;
let http: TestHttpServer;
let work: string;
let bucket: string;
let env: Record<string, string>;
const state = {
  constitutional_hash: HASH,
  policies: [{ id: "p1", version: 3 }],
  updatedAt: "2026-01-01T00:00:00Z",
};
const sessions = { constitutional_hash: HASH, sessions: [{ id: "s1", user: "u1" }] };
let archiveBucket: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-examples-"));
  [pg, s3, kube, http] = await Promise.all([
    startPostgres(),
    startS3Server(),
    KubeApiServer.start(),
    startHttpServer({
      "/api/v1/state": (_req, res) => json(res, 200, state),
      "/api/v1/sessions": (_req, res) => json(res, 200, sessions),
    }),
  ]);
  await seedShop(kube);
  await pg.query("CREATE DATABASE acgs");
  await pg.query(
    "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, qty int NOT NULL); " +
      "INSERT INTO orders SELECT g, 'item-' || g, g % 7 FROM generate_series(1, 2500) g; " +
      "CREATE TABLE audit_events (id serial PRIMARY KEY, hash text NOT NULL); " +
      `INSERT INTO audit_events (hash) SELECT '${HASH}' FROM generate_series(1, 40);`,
    "acgs",
  );
  ({ bucket } = await s3.scratch());
  ({ bucket: archiveBucket } = await s3.scratch());
  const credentials = s3.clientConfig().credentials as { accessKeyId: string; secretAccessKey: string };
  env = {
    STOWAGE_KEY: KEY,
    STOWAGE_BACKUP_DIR: join(work, "backups"),
    STOWAGE_AUDIT_LOG: join(work, "audit", "audit.jsonl"),
    STOWAGE_PG_URL: pg.url("acgs"),
    STOWAGE_DRILL_PG_URL: pg.url("postgres"),
    STOWAGE_S3_BUCKET: bucket,
    STOWAGE_S3_ARCHIVE_BUCKET: archiveBucket,
    STOWAGE_SESSIONS_URL: `${http.url}/api/v1/sessions`,
    STOWAGE_S3_ENDPOINT: s3.endpoint,
    STOWAGE_S3_REGION: s3.region,
    AWS_ACCESS_KEY_ID: credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
    STOWAGE_KUBE_SERVER: kube.url,
    STOWAGE_KUBE_NAMESPACE: "shop",
    STOWAGE_STATE_URL: `${http.url}/api/v1/state`,
    STOWAGE_DRILL_REPORT: join(work, "drill-report.json"),
  };
}, 180_000);

afterAll(async () => {
  await Promise.allSettled([pg?.stop(), s3?.stop(), kube?.close(), http?.close()]);
  if (work) await rm(work, { recursive: true, force: true });
});

describe("examples/tiered-backups.ts and examples/restore-drill.ts", () => {
  it("one cycle backs up every kind, labelled and validated, copied offsite, and the month's first to the locked archive", async () => {
    const ran = await runExample([join(repo, "examples/tiered-backups.ts"), "--once"], env, work);
    expect(ran.stderr).not.toMatch(/Error/);
    expect(ran.code).toBe(0);
    expect(ran.stdout).toMatch(/^ok +postgres .* offsite:succeeded archive:succeeded/m);
    expect(ran.stdout).toMatch(/^ok +audit-log .* offsite:succeeded archive:succeeded/m);
    for (const job of ["kubernetes", "service-state", "user-sessions"])
      expect(ran.stdout).toMatch(new RegExp(`^ok +${job} .* offsite:succeeded$`, "m"));

    const local = filesystemSink({ root: env.STOWAGE_BACKUP_DIR! });
    const { manifests, invalid } = await listManifests(local);
    expect(invalid).toEqual([]);
    expect(manifests.map((m) => m.job).sort()).toEqual([
      "audit-log",
      "kubernetes",
      "postgres",
      "service-state",
      "user-sessions",
    ]);
    for (const m of manifests) {
      expect(m.labels.constitutional_hash).toBe(HASH);
      expect(m.transforms.map((t) => t.name)).toContain("aes-256-gcm");
      expect((await verify({ sink: local, manifest: m, keys: [{ key: KEY }] })).ok).toBe(true);
    }
    expect(Object.fromEntries(manifests.map((m) => [m.job, m.labels.kind]))).toEqual({
      postgres: "postgres",
      kubernetes: "kubernetes",
      "service-state": "services",
      "user-sessions": "services",
      "audit-log": "audit",
    });
    // The archive: the month's first backup of the database and of the audit trail, in GLACIER,
    // under Object Lock (COMPLIANCE) for seven years, which the manifest records as its hold.
    const archive = s3Sink({ client: s3.client(), bucket: archiveBucket });
    const archived = (await listManifests(archive)).manifests;
    expect(archived.map((m) => m.job).sort()).toEqual(["audit-log", "postgres"]);
    for (const m of archived) {
      expect(m.artifact.storageClass).toBe("GLACIER");
      const head = await s3
        .client()
        .send(new HeadObjectCommand({ Bucket: archiveBucket, Key: m.artifact.key }));
      expect(head.ObjectLockMode).toBe("COMPLIANCE");
      expect(Date.parse(m.retainUntil!)).toBeGreaterThan(Date.now() + 7 * 365 * 86_400_000);
    }

    // The offsite copy: same bytes, its own location, and it restores into a database with every row.
    const offsite = s3Sink({ client: s3.client(), bucket });
    const copies = (await listManifests(offsite, { job: "postgres" })).manifests;
    expect(copies.map((m) => m.job)).toEqual(["postgres"]);
    const original = manifests.find((m) => m.job === "postgres")!;
    expect(copies[0]!.artifact.sha256).toBe(original.artifact.sha256);
    expect(copies[0]!.artifact.location).toBe(`s3://${bucket}/${original.artifact.key}`);
    await restorePostgres({
      stream: await restore({ sink: offsite, manifest: copies[0]!, keys: [{ key: KEY }] }),
      format: "custom",
      connection: pg.connection("postgres"),
      database: "restored_from_s3",
      createDatabase: true,
    });
    const rows = await pg.query<{ n: number; sum: number }>(
      "SELECT count(*)::int AS n, sum(qty)::int AS sum FROM orders",
      "restored_from_s3",
    );
    const expected = await pg.query<{ n: number; sum: number }>(
      "SELECT count(*)::int AS n, sum(qty)::int AS sum FROM orders",
      "acgs",
    );
    expect(rows).toEqual(expected);

    // The service state comes back byte for byte.
    const stateManifest = manifests.find((m) => m.job === "service-state")!;
    const plain = await readAll(
      await restore({ sink: local, manifest: stateManifest, keys: [{ key: KEY }] }),
    );
    expect(JSON.parse(plain.toString("utf8"))).toEqual(state);

    // The audit log: one line per backup and per copy, no secret in it.
    const audit = await readAuditLog({ path: env.STOWAGE_AUDIT_LOG! });
    expect(
      audit
        .filter((e) => e.action === "backup")
        .map((e) => `${e.job}:${e.result}`)
        .sort(),
    ).toEqual(["audit-log:ok", "kubernetes:ok", "postgres:ok", "service-state:ok", "user-sessions:ok"]);
    const copied = audit.filter((e) => e.action === "copy");
    expect(copied.length).toBe(5 + 2);
    expect(copied).toContainEqual(
      expect.objectContaining({
        job: "postgres",
        sink: "s3",
        from: "filesystem",
        result: "ok",
        sha256: original.artifact.sha256,
      }),
    );
    expect(copied).toContainEqual(
      expect.objectContaining({ job: "postgres", sink: "glacier", result: "ok" }),
    );
    const auditText = await readFile(env.STOWAGE_AUDIT_LOG!, "utf8");
    for (const secret of [KEY, pg.password, env.AWS_SECRET_ACCESS_KEY!]) {
      expect(auditText).not.toContain(secret);
      expect(ran.stdout + ran.stderr).not.toContain(secret);
      for (const m of [...manifests, ...copies]) expect(JSON.stringify(m)).not.toContain(secret);
    }
  });

  it("the CLI reads the same file as its config: status is OK and exposes Prometheus metrics", async () => {
    const cli = join(repo, "src/cli.ts");
    const status = await runExample(
      [cli, "status", "--config", join(repo, "examples/tiered-backups.ts")],
      env,
      work,
    );
    expect(status.stderr).toBe("");
    expect(status.code).toBe(0);
    expect(status.stdout).toMatch(/postgres +ok/);
    const prom = await runExample(
      [cli, "status", "--prometheus", "--config", join(repo, "examples/tiered-backups.ts")],
      env,
      work,
    );
    expect(prom.code).toBe(0);
    expect(prom.stdout).toMatch(/^stowage_last_backup_timestamp_seconds\{backup_job="kubernetes"\} /m);
  });

  it("the monthly restore drill restores every tier into scratch targets, checks them and reports RPO/RTO", async () => {
    const applied = () => kube.requests.filter((r) => r.method === "PATCH");
    const before = applied().length;
    const ran = await runExample([join(repo, "examples/restore-drill.ts")], env, work);
    expect(ran.code).toBe(0);
    const report = JSON.parse(await readFile(env.STOWAGE_DRILL_REPORT!, "utf8"));
    expect(report.ok).toBe(true);
    expect(report.constitutional_hash).toBe(HASH);
    expect(
      report.drills.map(
        (d: { drill: string; ok: boolean; target: string }) => `${d.drill}:${d.target}:${d.ok}`,
      ),
    ).toEqual([
      "postgres:postgres:true",
      "postgres (offsite copy in S3):postgres:true",
      "kubernetes:kubernetes:true",
      "service-state:directory:true",
      "audit-log:directory:true",
    ]);
    for (const d of report.drills) {
      expect(d.verify.ok).toBe(true);
      expect(d.rpoMs).toBeGreaterThanOrEqual(0);
      expect(d.rtoMs).toBeGreaterThanOrEqual(0);
      expect(d.objectives.rpo.met).toBe(true);
      expect(d.cleanup.ok).toBe(true);
    }
    const pgDrill = report.drills[0];
    expect(pgDrill.check.details.tables).toEqual([
      { table: "audit_events", rows: 40 },
      { table: "orders", rows: 2500 },
    ]);
    // Scratch databases are gone; the Kubernetes drill was a dry run (every apply had dryRun=All).
    const scratch = await pg.query("SELECT datname FROM pg_database WHERE datname LIKE 'stowage_drill_%'");
    expect(scratch).toEqual([]);
    const patches = applied().slice(before);
    expect(patches.length).toBeGreaterThan(0);
    expect(patches.every((r) => r.query.dryRun === "All")).toBe(true);
    // The drill's verifies and restores are in the audit log too.
    const audit = await readAuditLog({ path: env.STOWAGE_AUDIT_LOG! });
    expect(audit.filter((e) => e.action === "drill").map((e) => e.result)).toEqual([
      "ok",
      "ok",
      "ok",
      "ok",
      "ok",
    ]);
    expect(audit.filter((e) => e.action === "restore").length).toBeGreaterThanOrEqual(5);
  });

  it("a state export without the constitutional hash is refused and fails its job (exit 1)", async () => {
    http.route("/api/v1/state", (_req, res) => json(res, 200, { policies: [] }));
    try {
      const ran = await runExample([join(repo, "examples/tiered-backups.ts"), "--once"], env, work);
      expect(ran.code).toBe(1);
      expect(ran.stdout).toMatch(/^FAIL service-state .*backup:SOURCE_VALIDATION_FAILED/m);
      expect(ran.stdout).toMatch(/^ok +postgres /m);
    } finally {
      http.route("/api/v1/state", (_req, res) => json(res, 200, state));
    }
  });
});

describe("examples/signed-backups.ts", () => {
  it("signs a backup, restores it under the verify key and validates the signed chain", async () => {
    const ran = await runExample([join(repo, "examples/signed-backups.ts")], {}, work);
    expect(ran.stderr).toBe("");
    expect(ran.code).toBe(0);
    expect(ran.stdout).toContain("order 1\norder 2\n");
    expect(ran.stdout).toContain("1 of 1 backups valid");
  });
});

describe("examples/kubernetes", () => {
  it("every CronJob forbids overlap, runs a CLI command of the image, and keeps secrets out of args", async () => {
    const text = await readFile(join(repo, "examples/kubernetes/cronjob.yaml"), "utf8");
    // biome-ignore lint/suspicious/noExplicitAny: a manifest is walked as plain data
    const docs = parseAllDocuments(text).map((d) => d.toJS() as Record<string, any>);
    const cronJobs = docs.filter((d) => d.kind === "CronJob");
    expect(cronJobs.length).toBeGreaterThanOrEqual(2);
    for (const cj of cronJobs) {
      expect(cj.spec.concurrencyPolicy).toBe("Forbid");
      const container = cj.spec.jobTemplate.spec.template.spec.containers[0];
      expect(["run", "verify", "status", "restore", "prune", "drill"]).toContain(container.args[0]);
      expect(container.args.join(" ")).not.toMatch(/KEY|PASSWORD|SECRET|TOKEN/i);
    }
    const dockerfile = await readFile(join(repo, "examples/kubernetes/Dockerfile"), "utf8");
    expect(dockerfile).toMatch(/ENTRYPOINT .*dist\/cli\.js/);
  });
});
