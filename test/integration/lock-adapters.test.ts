/**
 * Each lock adapter against its real server, in one process: one winner among racing acquirers,
 * a fencing token that grows with every take-over, a lease lost to a take-over or to the death of
 * its session found out at the next renewal, and the servers' compare-and-swap answered as the
 * real APIs answer it (Kubernetes: 409 AlreadyExists / Conflict; S3: 412 PreconditionFailed).
 */
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isStowageError } from "../../src/core/errors.js";
import type { Lease, Lock } from "../../src/core/lock.js";
import { kubernetesLease } from "../../src/locks/kubernetes.js";
import { postgresLock } from "../../src/locks/postgres.js";
import { s3Lock } from "../../src/locks/s3.js";
import { KubeApiServer } from "../support/kube-api-server.js";
import { kubeConfigFor } from "../support/kube-fixtures.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { type S3TestServer, startS3Server } from "../support/s3-server.js";

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";

/** What every adapter must do, whatever its engine. */
async function contract(lock: Lock, name: string): Promise<void> {
  // Five replicas race for a free lock: exactly one wins.
  const raced = await Promise.all(
    ["a", "b", "c", "d", "e"].map((holder) => lock.acquire(name, { ttlMs: 60_000, holder })),
  );
  const winners = raced.filter((l): l is Lease => l !== undefined);
  expect(winners).toHaveLength(1);
  const first = winners[0]!;
  await first.renew();
  expect(await lock.acquire(name, { ttlMs: 60_000, holder: "z" })).toBeUndefined();
  await first.release();
  // Released: the next holder gets it, with a larger token.
  const second = await lock.acquire(name, { ttlMs: 60_000, holder: "z" });
  expect(second).toBeDefined();
  expect(second!.fencingToken).toBeGreaterThan(first.fencingToken);
  await expect(first.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
  await second!.release();
  const error = await lock.acquire(name, { ttlMs: 10, holder: "z" }).catch((e: unknown) => e);
  expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
}

describe("kubernetesLease", () => {
  let server: KubeApiServer;
  beforeAll(async () => {
    server = await KubeApiServer.start();
    server.put({ apiVersion: "v1", kind: "Namespace", metadata: { name: "shop" } });
  });
  afterAll(() => server?.close());
  const lock = () => kubernetesLease({ kubeConfig: kubeConfigFor(server.url), namespace: "shop" });

  it("keeps the Lock contract on Lease objects", async () => {
    await contract(lock(), "app-db");
    const lease = server.get("leases.coordination.k8s.io", "shop", "stowage-app-db");
    expect(lease).toMatchObject({ kind: "Lease", spec: { leaseTransitions: 1 } });
  });

  it("takes over an expired Lease; the old holder finds out at its next renewal", async () => {
    const old = (await lock().acquire("expiring", { ttlMs: 1_000, holder: "old" }))!;
    expect(await lock().acquire("expiring", { ttlMs: 1_000, holder: "new" })).toBeUndefined();
    await new Promise((r) => setTimeout(r, 1_100));
    const taken = await lock().acquire("expiring", { ttlMs: 60_000, holder: "new" });
    expect(taken?.fencingToken).toBe(old.fencingToken + 1);
    await expect(old.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    expect(server.get("leases.coordination.k8s.io", "shop", "stowage-expiring")).toMatchObject({
      spec: { holderIdentity: "new" },
    });
  });

  it("the test server answers as the API does: 409 AlreadyExists, 409 Conflict on a stale resourceVersion", async () => {
    const base = `${server.url}/apis/coordination.k8s.io/v1/namespaces/shop/leases`;
    const body = { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "raw" }, spec: {} };
    const post = () =>
      fetch(base, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const created = (await (await post()).json()) as { metadata: { resourceVersion: string } };
    const again = await post();
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ kind: "Status", reason: "AlreadyExists" });
    const put = (resourceVersion: string | undefined) =>
      fetch(`${base}/raw`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          ...body,
          metadata: { name: "raw", resourceVersion },
          spec: { holderIdentity: "x" },
        }),
      });
    const ok = await put(created.metadata.resourceVersion);
    expect(ok.status).toBe(200);
    const stale = await put(created.metadata.resourceVersion);
    expect(stale.status).toBe(409);
    expect(await stale.json()).toMatchObject({ kind: "Status", reason: "Conflict" });
    expect((await put(undefined)).status).toBe(422);
  });
});

describe("postgresLock", () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startPostgres();
  }, 120_000);
  afterAll(() => pg?.stop());
  const lock = () => postgresLock({ connection: pg.connection() });

  it("keeps the Lock contract on advisory locks", async () => {
    await contract(lock(), "app-db");
  });

  it("loses the lease when its session dies, and another replica takes it at once", async () => {
    const held = (await lock().acquire("dies", { ttlMs: 60_000, holder: "a" }))!;
    expect(await lock().acquire("dies", { ttlMs: 60_000, holder: "b" })).toBeUndefined();
    // With a timeout, pg_terminate_backend waits until the backend has exited (and so released
    // its advisory locks); without one it only signals it, and the next acquire may come first.
    await pg.query(
      "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
    );
    await expect(held.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    const taken = await lock().acquire("dies", { ttlMs: 60_000, holder: "b" });
    expect(taken).toBeDefined();
    await taken!.release();
    await held.release();
  });

  it("a holder that stops renewing loses its session after the ttl (idle_session_timeout)", async () => {
    const idle = (await lock().acquire("idle", { ttlMs: 1_000, holder: "a" }))!;
    await new Promise((r) => setTimeout(r, 1_800));
    const taken = await lock().acquire("idle", { ttlMs: 60_000, holder: "b" });
    expect(taken).toBeDefined();
    await expect(idle.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    await taken!.release();
  });

  it("says where it could not connect, without the password", async () => {
    const bad = postgresLock({ connection: { ...pg.connection(), port: 1 } });
    const error = await bad.acquire("x", { ttlMs: 5_000, holder: "a" }).catch((e: unknown) => e);
    expect(isStowageError(error, "LOCK_FAILED")).toBe(true);
    expect(
      JSON.stringify({ m: (error as Error).message, d: (error as { details: unknown }).details }),
    ).not.toContain(pg.password);
  });
});

describe("s3Lock", () => {
  let s3: S3TestServer;
  beforeAll(async () => {
    s3 = await startS3Server();
  }, 60_000);
  afterAll(() => s3?.stop());

  it("keeps the Lock contract on a lease object", async () => {
    const { bucket, prefix } = await s3.scratch();
    await contract(s3Lock({ client: s3.client(), bucket, prefix }), "app-db");
  });

  it("takes over an expired lease; the old holder finds out at its next renewal", async () => {
    const { bucket, prefix } = await s3.scratch();
    const lock = s3Lock({ client: s3.client(), bucket, prefix });
    const old = (await lock.acquire("expiring", { ttlMs: 1_000, holder: "old" }))!;
    await new Promise((r) => setTimeout(r, 1_100));
    const taken = await lock.acquire("expiring", { ttlMs: 60_000, holder: "new" });
    expect(taken?.fencingToken).toBe(old.fencingToken + 1);
    await expect(old.renew()).rejects.toMatchObject({ code: "LOCK_LOST" });
    const stored = await s3
      .client()
      .send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}expiring.lease.json` }));
    expect(JSON.parse(await stored.Body!.transformToString())).toMatchObject({ holder: "new", token: 2 });
  });

  it("the test server answers conditional PUTs as S3 does: 412 PreconditionFailed, one winner of a race", async () => {
    const { bucket, prefix } = await s3.scratch();
    const client = s3.client();
    const Key = `${prefix}cas`;
    const put = (condition: { IfNoneMatch?: string; IfMatch?: string }, body: string) =>
      client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: body, ...condition }));
    const first = await put({ IfNoneMatch: "*" }, "one");
    const refused = await put({ IfNoneMatch: "*" }, "two").catch((e: unknown) => e);
    expect((refused as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode).toBe(412);
    const racers = await Promise.allSettled(
      ["a", "b", "c", "d"].map((body) => put({ IfMatch: first.ETag! }, `racer ${body}`)),
    );
    expect(racers.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of racers.filter((x) => x.status === "rejected")) {
      expect((r as PromiseRejectedResult).reason.$metadata.httpStatusCode).toBe(412);
    }
    const missing = await client
      .send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}none`, Body: "x", IfMatch: first.ETag! }))
      .catch((e: unknown) => e);
    expect((missing as { $metadata: { httpStatusCode: number } }).$metadata.httpStatusCode).toBe(404);
  });
});
