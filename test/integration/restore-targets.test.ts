/**
 * The adapters' RestoreTargets in a restore drill, against real servers: a pg_dump backup restored
 * into a scratch PostgreSQL database that the drill drops afterwards, and a service's state sent
 * back to its restore endpoint over HTTP.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defineJob, restoreDrill, runJob } from "../../src/jobs/index.js";
import { memorySink } from "../../src/sinks/memory.js";
import { bytesSource } from "../../src/sources/bytes.js";
import { httpRestoreTarget } from "../../src/sources/http.js";
import { pgDumpSource, postgresRestoreTarget } from "../../src/sources/postgres.js";
import { gzip } from "../../src/transforms/gzip.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";

let server: TestPostgres;

beforeAll(async () => {
  server = await startPostgres();
  await server.query("DROP DATABASE IF EXISTS target_src");
  await server.query("CREATE DATABASE target_src");
  await server.query(
    "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, 'n' || g FROM generate_series(1, 500) g",
    "target_src",
  );
}, 180_000);

afterAll(async () => {
  await server?.stop();
});

describe("postgresRestoreTarget", () => {
  it.each(["plain", "custom"] as const)(
    "restores a %s dump into a scratch database, hands the query's rows to the check, and drops it",
    async (format) => {
      const job = defineJob({
        name: `pg-${format}`,
        source: pgDumpSource({ connection: server.connection("target_src"), format }),
        transforms: [gzip()],
        sink: memorySink(),
      });
      await runJob(job);
      let database: string | undefined;
      const report = await restoreDrill({
        job,
        target: postgresRestoreTarget({
          connection: server.connection(),
          query: "SELECT count(*)::int AS n, sum(id)::int AS total FROM orders",
        }),
        check: (context) => {
          database = context.database;
          return context.rows?.[0]?.n === 500 && context.rows?.[0]?.total === 125_250;
        },
      });
      expect(report).toMatchObject({ ok: true, target: "postgres", cleanup: { ok: true }, errors: [] });
      expect(report.restore?.details).toMatchObject({ format, rows: 1 });
      expect(database).toMatch(/^stowage_drill_pg_/);
      const left = await server.query(`SELECT 1 FROM pg_database WHERE datname = '${database}'`);
      expect(left).toEqual([]);
      expect(JSON.stringify(report)).not.toContain(server.password);
    },
    120_000,
  );

  it("refuses a backup that is not a dump, before reading it", async () => {
    const job = defineJob({
      name: "not-a-dump",
      source: bytesSource({ data: Buffer.from("a,b\n"), contentType: "text/csv" }),
      sink: memorySink(),
    });
    await runJob(job);
    const target = postgresRestoreTarget({ connection: server.connection() });
    const report = await restoreDrill({ job, target });
    expect(report.errors).toEqual([expect.objectContaining({ stage: "restore", code: "CONFIG_INVALID" })]);
  });
});

describe("httpRestoreTarget", () => {
  let http: Server;
  const received: Array<{ type: string | undefined; body: Buffer }> = [];
  beforeAll(async () => {
    http = createServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      received.push({ type: req.headers["content-type"], body: Buffer.concat(chunks) });
      res.writeHead(req.headers.authorization === "Bearer s3cret-token" ? 204 : 401).end();
    });
    await new Promise<void>((done) => http.listen(0, "127.0.0.1", done));
  });
  afterAll(() => new Promise<void>((done) => http.close(() => done())));

  it("sends the state back with the backup's content type; a refusal fails the drill without the token", async () => {
    const state = Buffer.from(JSON.stringify({ constitutional_hash: "cdd01ef066bc6cf2", items: [1, 2, 3] }));
    const job = defineJob({
      name: "service",
      source: bytesSource({ data: state, contentType: "application/json" }),
      sink: memorySink(),
    });
    await runJob(job);
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/restore`;
    const report = await restoreDrill({
      job,
      target: httpRestoreTarget({ url, headers: { Authorization: "Bearer s3cret-token" } }),
    });
    expect(report).toMatchObject({ ok: true, target: "http", restore: { details: { requests: 1 } } });
    expect(received.at(-1)?.type).toBe("application/json");
    expect(received.at(-1)?.body.equals(state)).toBe(true);

    const refused = await restoreDrill({
      job,
      target: httpRestoreTarget({ url, headers: { Authorization: "Bearer wr0ng-token" } }),
    });
    expect(refused.errors[0]).toMatchObject({ stage: "restore", code: "RESTORE_FAILED" });
    expect(JSON.stringify(refused)).not.toContain("wr0ng-token");
  });
});
