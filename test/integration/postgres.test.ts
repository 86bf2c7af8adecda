import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Transform as NodeTransform, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { inspect, promisify } from "node:util";
import { from as copyFrom } from "pg-copy-streams";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { childrenDieWithParent } from "../../src/core/child-process.js";
import {
  aes256gcm,
  backup,
  type FilesystemSink,
  filesystemSink,
  gzip,
  isStowageError,
  listManifests,
  type Manifest,
  readAll,
  restore,
  type Source,
  StowageError,
  type Transform,
} from "../../src/index.js";
import { selectBackup } from "../../src/policies/select.js";
import { pgDumpSource, pgQuerySource, restorePostgres } from "../../src/sources/postgres.js";
import { sourceConformance } from "../../src/testing.js";
import { sha } from "../support/expect-helpers.js";
import { freePort, startPostgres, type TestPostgres } from "../support/postgres.js";

const run = promisify(execFile);
const key = randomBytes(32);

let server: TestPostgres;
let work: string;
let realPgDump: string;
/** Every error, manifest and log produced, checked at the end for the password. */
const seen: unknown[] = [];

/** The fixture: several tables (one of 120k rows), jsonb, bytea, awkward text, a sequence, a view. */
const FIXTURE = `
CREATE SEQUENCE invoice_no_seq START 1000;
SELECT setval('invoice_no_seq', 4242);
CREATE TABLE customers (
  id bigserial PRIMARY KEY, name text NOT NULL, email text, note text, created_at timestamptz NOT NULL);
INSERT INTO customers (name, email, note, created_at)
  SELECT 'Customer ' || g, 'c' || g || '@example.com',
    CASE g % 6
      WHEN 0 THEN E'line1\\nline2\\ttab \\\\ backslash "double" ''single'' \\r'
      WHEN 1 THEN 'ünïcödé ✓ 日本語 😀'
      WHEN 2 THEN NULL
      WHEN 3 THEN ''
      WHEN 4 THEN '\\.'
      ELSE ',comma,;semi;' END,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
  FROM generate_series(1, 20000) g;
CREATE TABLE events (
  id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers(id), kind text,
  payload jsonb, at timestamptz);
INSERT INTO events (customer_id, kind, payload, at)
  SELECT 1 + g % 20000, (ARRAY['login','order','refund','logout'])[1 + g % 4],
    jsonb_build_object('n', g, 'amount', (g % 1000) / 7.0, 'tags', jsonb_build_array('a', g % 3),
                       'text', E'q"\\\\\\n' || g, 'nested', jsonb_build_object('ok', g % 2 = 0)),
    timestamptz '2024-01-01' + g * interval '1 second'
  FROM generate_series(1, 120000) g;
CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blobs SELECT g, '\\x00ff0a5c'::bytea || decode(repeat(md5(g::text), 16), 'hex')
  FROM generate_series(1, 3000) g;
CREATE TABLE invoices (
  no bigint PRIMARY KEY DEFAULT nextval('invoice_no_seq'), customer_id bigint, amount numeric(12,2));
INSERT INTO invoices (customer_id, amount) SELECT g, g * 1.25 FROM generate_series(1, 5000) g;
CREATE VIEW customer_totals AS
  SELECT c.id, c.name, count(e.id) AS events
  FROM customers c LEFT JOIN events e ON e.customer_id = c.id GROUP BY c.id, c.name;
`;

/** Row count and an md5 of every table's and view's rows (in text form, sorted), and sequences. */
async function fingerprint(database: string): Promise<Record<string, string>> {
  const client = await server.client(database);
  try {
    const out: Record<string, string> = {};
    const relations = await client.query<{ name: string }>(
      `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`,
    );
    for (const { name } of relations.rows) {
      const { rows } = await client.query(
        `SELECT count(*)::text AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS sum FROM "${name}" t`,
      );
      out[name] = `${rows[0].n}:${rows[0].sum}`;
    }
    const seqs = await client.query(
      `SELECT sequencename AS name, last_value::text AS v FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`,
    );
    for (const row of seqs.rows) out[`seq:${row.name}`] = String(row.v);
    return out;
  } finally {
    await client.end();
  }
}

async function listAll(sink: FilesystemSink): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of sink.list("")) keys.push(o.key);
  // Temporary files and their owner records, by name: what a failed run must not leave.
  for (const path of (await readdir(sink.root, { recursive: true }).catch(() => [])) as string[]) {
    if (path.includes(".stowage-tmp-")) keys.push(`tmp:${path}`);
  }
  return keys;
}

async function failure(promise: Promise<unknown>): Promise<StowageError> {
  try {
    await promise;
  } catch (error) {
    seen.push(error);
    if (isStowageError(error)) return error;
    throw error;
  }
  throw new Error("expected a failure");
}

/** A pg_dump stand-in script: logs its argv, writes its pid, then runs `body`. */
async function wrapper(
  name: string,
  body: string,
): Promise<{ path: string; pidFile: string; argvFile: string }> {
  const dir = await mkdtemp(join(work, `${name}-`));
  const path = join(dir, "pg_dump");
  const pidFile = join(dir, "pid");
  const argvFile = join(dir, "argv");
  await writeFile(
    path,
    `#!/bin/sh
if [ "$1" = "--version" ]; then
  ${body.includes("VERSION:") ? body.split("VERSION:")[1] : `exec ${realPgDump} --version`}
fi
printf '%s\\n' "$@" >> ${argvFile}
echo $$ > ${pidFile}
${body.split("VERSION:")[0]}
`,
  );
  await chmod(path, 0o755);
  return { path, pidFile, argvFile };
}

/** A pass-through transform that calls `at` once `threshold` bytes have passed, and waits for it. */
function tap(threshold: number, at: () => Promise<void> | void): Transform {
  return {
    name: "tap",
    role: "other",
    extension: "",
    encode: () => {
      let seen = 0;
      let fired = false;
      return new NodeTransform({
        transform(chunk: Buffer, _e, callback) {
          seen += chunk.length;
          if (!fired && seen >= threshold) {
            fired = true;
            Promise.resolve(at()).then(
              () => callback(null, chunk),
              (error: Error) => callback(error),
            );
          } else callback(null, chunk);
        },
      });
    },
    decode: () => new NodeTransform({ transform: (c, _e, cb) => cb(null, c) }),
    describe: () => ({ name: "tap", role: "other" }),
  };
}

/** A filesystem sink that counts the files it hands out, so a test knows which path ran. */
function countingSink(root: string) {
  const sink = filesystemSink({ root: join(work, root) });
  const openFile = sink.openFile?.bind(sink);
  const calls = { openFile: 0 };
  sink.openFile = (options) => {
    calls.openFile++;
    return (openFile as NonNullable<typeof openFile>)(options);
  };
  return { sink, calls };
}

let intoFile = 0;
/**
 * A backup with no transforms, so that pg_dump writes straight into the sink's file, that must
 * fail and leave nothing (no artifact, manifest or temporary file); `onBytes` runs once the first
 * bytes have been hashed.
 */
async function attemptIntoFile(
  source: Source,
  options: { signal?: AbortSignal; onBytes?: () => void } = {},
): Promise<StowageError> {
  const { sink, calls } = countingSink(`direct-fail-${++intoFile}`);
  let fired = false;
  const error = await failure(
    backup({
      job: "direct-fail",
      source,
      sink,
      signal: options.signal,
      onProgress: (p) => {
        if (!fired && p.bytesRead > 0 && options.onBytes) {
          fired = true;
          options.onBytes();
        }
      },
    }),
  );
  expect(calls.openFile).toBe(1);
  expect(await listAll(sink)).toEqual([]);
  return error;
}

const isGone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
};

let sourceFingerprint: Record<string, string>;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-pgtest-"));
  server = await startPostgres();
  realPgDump = (await run("sh", ["-c", "command -v pg_dump"])).stdout.trim();
  await server.query("DROP DATABASE IF EXISTS shop");
  await server.query("CREATE DATABASE shop");
  await server.query(FIXTURE, "shop");
  sourceFingerprint = await fingerprint("shop");
}, 180_000);

afterAll(async () => {
  await server?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("pgDumpSource → gzip → AES-256-GCM → filesystem, restored with restorePostgres", () => {
  it("has the fixture it claims", () => {
    expect(Object.keys(sourceFingerprint).sort()).toEqual(
      [
        "blobs",
        "customer_totals",
        "customers",
        "events",
        "invoices",
        "seq:customers_id_seq",
        "seq:events_id_seq",
        "seq:invoice_no_seq",
      ].sort(),
    );
    expect(sourceFingerprint.events?.startsWith("120000:")).toBe(true);
    expect(sourceFingerprint["seq:invoice_no_seq"]).toBe("9242"); // setval 4242, then 5000 rows
  });

  for (const format of ["plain", "custom"] as const) {
    it(`round-trips every table, view and sequence (${format})`, async () => {
      const sink = filesystemSink({ root: join(work, `sink-${format}`) });
      const probe = await wrapper(`argv-${format}`, `exec ${realPgDump} "$@"`);
      const manifest = await backup({
        job: `shop-${format}`,
        source: pgDumpSource({
          // One format through a URL, the other through fields: both paths are used.
          connection: format === "plain" ? server.url("shop") : server.connection("shop"),
          format,
          pgDumpPath: probe.path,
        }),
        transforms: [gzip(), aes256gcm({ key })],
        sink,
      });
      seen.push(manifest);
      expect(manifest.source.kind).toBe("postgres");
      expect(manifest.source.details).toMatchObject({
        database: "shop",
        format,
        tables: 4,
        serverVersion: expect.stringMatching(/^15\./),
        pgDumpVersion: expect.stringMatching(/^\d+\.\d+/),
      });
      expect(manifest.source.details.databaseBytes).toBeGreaterThan(1_000_000);
      expect(manifest.content.contentType).toBe(
        format === "plain" ? "application/sql" : "application/x-postgresql-custom",
      );
      expect(manifest.artifact.key.endsWith(format === "plain" ? ".sql.gz.enc" : ".dump.gz.enc")).toBe(true);
      // The password went by environment: pg_dump's argv never held it.
      const argv = await readFile(probe.argvFile, "utf8");
      expect(argv).toContain("--dbname");
      expect(argv).not.toContain(server.password);
      seen.push(argv);

      const { manifests } = await listManifests(sink, { job: `shop-${format}` });
      const chosen = selectBackup(manifests, { job: `shop-${format}` });
      expect(chosen?.id).toBe(manifest.id);

      const database = `restored_${format}`;
      const result = await restorePostgres({
        stream: await restore({ sink, manifest: chosen as Manifest, keys: [{ key }] }),
        format,
        connection: format === "plain" ? server.connection() : server.url(),
        database,
        createDatabase: true,
        clean: true,
        check:
          "SELECT count(*)::int AS events, (SELECT count(*)::int FROM customers) AS customers FROM events",
      });
      expect(result).toMatchObject({ database, format, createdDatabase: true });
      expect(result.check).toEqual([{ events: 120000, customers: 20000 }]);
      expect(await fingerprint(database)).toEqual(sourceFingerprint);
    });
  }

  it("takes the password from a passfile (PGPASSFILE) as well", async () => {
    const passfile = join(work, "pgpass");
    await writeFile(
      passfile,
      `# test\n${server.host}:${server.port}:*:${server.user}:${server.password.replace(/[\\:]/g, "\\$&")}\n`,
      {
        mode: 0o600,
      },
    );
    const { password: _omitted, ...fields } = server.connection("shop");
    const sink = filesystemSink({ root: join(work, "sink-passfile") });
    const manifest = await backup({
      job: "passfile",
      source: pgDumpSource({
        connection: { ...fields, passfile },
        schemas: ["public"],
        tables: ["invoices"],
      }),
      sink,
    });
    expect(manifest.source.details).toMatchObject({ database: "shop", tables: 4 });
    const sql = (await readAll(await restore({ sink, manifest }))).toString("utf8");
    expect(sql).toContain("CREATE TABLE public.invoices");
    expect(sql).not.toContain("CREATE TABLE public.events");
  });

  it("restores a custom dump over an existing database with clean (pg_restore --clean)", async () => {
    const sink = filesystemSink({ root: join(work, "sink-clean") });
    const manifest = await backup({
      job: "shop-clean",
      source: pgDumpSource({ connection: server.connection("shop"), format: "custom" }),
      sink,
    });
    await server.query("DROP DATABASE IF EXISTS clean_target");
    await server.query("CREATE DATABASE clean_target");
    const once = async () =>
      restorePostgres({
        stream: await restore({ sink, manifest }),
        format: "custom",
        connection: server.connection(),
        database: "clean_target",
        clean: true,
      });
    await once();
    await server.query("DELETE FROM invoices WHERE no > 1000", "clean_target");
    await once(); // the second run drops and recreates what the dump holds
    expect(await fingerprint("clean_target")).toEqual(sourceFingerprint);
  });
});

describe("no transforms into the filesystem sink: pg_dump writes straight into the sink's file", () => {
  it("stores what pg_dump > file stores, hashed right, and restores it", async () => {
    const { sink, calls } = countingSink("direct-plain");
    const progress: number[] = [];
    // pg_dump ≥ 15.14 fences a plain dump with a random \restrict key; fix it to compare bytes.
    const help = (await run(realPgDump, ["--help"])).stdout;
    const restrictKey = help.includes("--restrict-key") ? "--restrict-key=stowagetest" : "";
    const manifest = await backup({
      job: "direct",
      source: pgDumpSource({
        connection: server.connection("shop"),
        extraArgs: restrictKey ? [restrictKey] : [],
      }),
      sink,
      onProgress: (p) => progress.push(p.bytesRead),
    });
    seen.push(manifest);
    expect(calls.openFile).toBe(1);
    const stored = await readFile(join(sink.root, ...manifest.artifact.key.split("/")));
    const anchor = join(work, "direct-anchor.sql");
    await run("sh", ["-c", `"${realPgDump}" --no-password ${restrictKey} --dbname "$URL" > "${anchor}"`], {
      env: { ...process.env, URL: server.url("shop"), PGPASSWORD: server.password },
    });
    expect(stored.equals(await readFile(anchor))).toBe(true); // byte for byte
    expect(manifest.artifact).toMatchObject({ bytes: stored.length, sha256: sha(stored) });
    expect(manifest.content).toMatchObject({ bytes: stored.length, sha256: sha(stored) });
    expect(manifest.artifact.key.endsWith(".sql")).toBe(true);
    expect(manifest.source.details).toMatchObject({ database: "shop", format: "plain", tables: 4 });
    expect(progress.at(-1)).toBe(stored.length);
    expect(await listAll(sink)).toEqual([manifest.artifact.key, expect.stringMatching(/manifest/)]);

    await restorePostgres({
      stream: await restore({ sink, manifest }),
      format: "plain",
      connection: server.connection(),
      database: "restored_direct",
      createDatabase: true,
    });
    expect(await fingerprint("restored_direct")).toEqual(sourceFingerprint);
  });

  it("a custom archive goes through the stream (pg_dump would rewrite its head in a file)", async () => {
    const { sink, calls } = countingSink("direct-custom");
    const manifest = await backup({
      job: "direct-custom",
      source: pgDumpSource({ connection: server.connection("shop"), format: "custom" }),
      sink,
    });
    expect(calls.openFile).toBe(0);
    const stored = await readFile(join(sink.root, ...manifest.artifact.key.split("/")));
    expect(manifest.artifact.sha256).toBe(sha(stored));
  });

  describe("failures leave no artifact, no manifest and no temporary file", () => {
    const attempt = attemptIntoFile;
    /** Writes a line, then waits: a pg_dump caught in the middle of its work. */
    const stalled = () => wrapper("stalled", `echo "-- the start of a dump"\nexec sleep 30`);

    it("pg_dump SIGKILLed half-way", async () => {
      const probe = await stalled();
      let pid = 0;
      const error = await attempt(
        pgDumpSource({ connection: server.connection("shop"), pgDumpPath: probe.path }),
        {
          onBytes: () => {
            pid = Number(readFileSync(probe.pidFile, "utf8"));
            process.kill(pid, "SIGKILL");
          },
        },
      );
      expect(pid).toBeGreaterThan(0);
      expect(error.code).toBe("SOURCE_FAILED");
      expect(error.details.signal).toBe("SIGKILL");
      expect(isGone(pid)).toBe(true); // reaped by the time backup() rejects
    });

    it("abort mid-dump kills and reaps pg_dump", async () => {
      const probe = await stalled();
      const controller = new AbortController();
      let pid = 0;
      const error = await attempt(
        pgDumpSource({ connection: server.connection("shop"), pgDumpPath: probe.path }),
        {
          signal: controller.signal,
          onBytes: () => {
            pid = Number(readFileSync(probe.pidFile, "utf8"));
            controller.abort();
          },
        },
      );
      expect(error.code).toBe("ABORTED");
      expect(pid).toBeGreaterThan(0);
      expect(isGone(pid)).toBe(true); // killed and reaped by the time backup() rejects
    });

    it("pg_dump cannot write into the file (a full disk): the sink's failure", async () => {
      const full = await wrapper(
        "full",
        `echo "-- the start"\necho "pg_dump: error: could not write to output file: No space left on device" >&2\nexit 1`,
      );
      const error = await attempt(
        pgDumpSource({ connection: server.connection("shop"), pgDumpPath: full.path }),
      );
      expect(error.code).toBe("SINK_WRITE_FAILED");
      expect(error.details.exitCode).toBe(1);
    });
  });
});

describe("pgQuerySource (COPY … TO STDOUT)", () => {
  const query = `SELECT c.id, c.name, c.note, c.created_at, b.data, e.payload
    FROM customers c LEFT JOIN blobs b ON b.id = c.id LEFT JOIN events e ON e.id = c.id
    WHERE c.id <= $1 AND c.name <> $2 -- a comment with $3 and a ) in it
    ORDER BY c.id;`;
  const params = [5000, "it's not \\ this one"];
  const inlined = query.replace("$1", "5000").replace("$2", `E'it''s not \\\\ this one'`).replace(/;$/, "");

  it("exports jsonl that is byte for byte the server's row_to_json, with the row count", async () => {
    const sink = filesystemSink({ root: join(work, "sink-jsonl") });
    const manifest = await backup({
      job: "audit-jsonl",
      source: pgQuerySource({ connection: server.url("shop"), query, params, format: "jsonl" }),
      transforms: [gzip(), aes256gcm({ key })],
      sink,
    });
    seen.push(manifest);
    expect(manifest.source.details).toMatchObject({ rows: 5000, format: "jsonl", database: "shop" });
    expect(manifest.content.contentType).toBe("application/x-ndjson");
    const text = (await readAll(await restore({ sink, manifest, keys: [{ key }] }))).toString("utf8");
    const lines = text.split("\n");
    expect(lines.pop()).toBe("");
    const expected = await server.query<{ j: string }>(
      `SELECT row_to_json(t)::text AS j FROM (${inlined}) t`,
      "shop",
    );
    expect(lines).toHaveLength(5000);
    expect(lines).toEqual(expected.map((r) => r.j));
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed[0]).toMatchObject({
      id: 1,
      name: "Customer 1",
      data: expect.stringMatching(/^\\x00ff0a5c/),
    });
    expect(parsed.find((r) => r.id === 6).note).toBe("line1\nline2\ttab \\ backslash \"double\" 'single' \r");
  });

  it("exports csv that loads back (COPY FROM) into the same rows, NULL and '' kept apart", async () => {
    const sink = filesystemSink({ root: join(work, "sink-csv") });
    const manifest = await backup({
      job: "audit-csv",
      source: pgQuerySource({ connection: server.connection("shop"), query, params, format: "csv" }),
      transforms: [gzip()],
      sink,
    });
    expect(manifest.source.details).toMatchObject({ rows: 5000, format: "csv" });
    expect(manifest.artifact.key.endsWith(".csv.gz")).toBe(true);
    const client = await server.client("shop");
    try {
      await client.query(
        "CREATE TEMP TABLE copy_back (id bigint, name text, note text, created_at timestamptz, data bytea, payload jsonb)",
      );
      await pipeline(
        await restore({ sink, manifest }),
        client.query(copyFrom("COPY copy_back FROM STDIN WITH (FORMAT csv, HEADER true)")),
      );
      const sum = async (sql: string) =>
        (
          await client.query(
            `SELECT count(*)::int AS n, md5(string_agg(t::text, E'\\n' ORDER BY t.id)) AS s FROM (${sql}) t`,
          )
        ).rows[0];
      const back = await sum("SELECT * FROM copy_back");
      expect(back).toEqual(await sum(inlined));
      expect(back.n).toBe(5000);
      const kinds = (from: string) =>
        `SELECT count(*) FILTER (WHERE note IS NULL)::int AS nulls, count(*) FILTER (WHERE note = '')::int AS empties FROM (${from}) t`;
      const got = (await client.query(kinds("SELECT * FROM copy_back"))).rows[0];
      expect(got).toEqual({ nulls: 834, empties: 833 });
      expect(got).toEqual((await client.query(kinds(inlined))).rows[0]);
    } finally {
      await client.end();
    }
  });

  it("inlines params of every kind so that the server reads them back exactly", async () => {
    const awkward = 'it\'s \\ a "test" $1 -- /* ünï 😀 \n\t\r';
    const params = [
      awkward,
      42,
      Buffer.from([0, 1, 92, 39, 255]),
      { a: [1, "x'y"] },
      [3, 4],
      new Date("2026-01-02T03:04:05.678Z"),
      null,
      true,
    ];
    const sink = filesystemSink({ root: join(work, "sink-params") });
    const manifest = await backup({
      job: "params",
      source: pgQuerySource({
        connection: server.connection("shop"),
        query:
          "SELECT $1::text AS s, $2::int AS n, $3::bytea AS b, $4::jsonb AS j, $5::int[] AS a, $6::timestamptz AS t, $7::text AS z, $8::bool AS ok",
        params,
      }),
      sink,
    });
    const [line] = (await readAll(await restore({ sink, manifest }))).toString("utf8").split("\n");
    expect(JSON.parse(line as string)).toEqual({
      s: awkward,
      n: 42,
      b: "\\x00015c27ff",
      j: { a: [1, "x'y"] },
      a: [3, 4],
      t: "2026-01-02T03:04:05.678+00:00",
      z: null,
      ok: true,
    });
  });

  it("fails with SOURCE_FAILED on a bad query and leaves nothing", async () => {
    const sink = filesystemSink({ root: join(work, "sink-badquery") });
    const error = await failure(
      backup({
        job: "bad",
        source: pgQuerySource({
          connection: server.connection("shop"),
          query: "SELECT * FROM no_such_table",
        }),
        sink,
      }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(await listAll(sink)).toEqual([]);
  });
});

describe("failure matrix: each leaves no artifact and no manifest", () => {
  let n = 0;
  const attempt = async (source: Source, transforms: Transform[] = [], signal?: AbortSignal) => {
    const sink = filesystemSink({ root: join(work, `fail-${++n}`) });
    const error = await failure(
      backup({ job: "fail", source, sink, transforms: [...transforms, gzip(), aes256gcm({ key })], signal }),
    );
    expect(await listAll(sink)).toEqual([]);
    return error;
  };

  it("wrong password", async () => {
    const wrong = `Wrong-${randomBytes(6).toString("hex")}`;
    const error = await attempt(
      pgDumpSource({ connection: { ...server.connection("shop"), password: wrong } }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.pgCode).toBe("28P01");
    expect(inspect(error, { depth: 10 })).not.toContain(wrong);
  });

  it("unknown database", async () => {
    const error = await attempt(pgDumpSource({ connection: server.connection("no_such_database") }));
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.pgCode).toBe("3D000");
  });

  it("server not listening", async () => {
    const port = await freePort();
    const error = await attempt(
      pgDumpSource({ connection: { ...server.connection("shop"), port }, connectTimeoutMs: 3000 }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.pgCode).toBe("ECONNREFUSED");
  });

  it("pg_dump not found", async () => {
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop"), pgDumpPath: join(work, "no", "pg_dump") }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.errno).toBe("ENOENT");
  });

  it("server major newer than pg_dump: SOURCE_FAILED naming both, before pg_dump runs", async () => {
    const old = await wrapper(
      "old",
      `exec ${realPgDump} "$@"\nVERSION: echo "pg_dump (PostgreSQL) 14.10"; exit 0`,
    );
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop"), pgDumpPath: old.path }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ pgDumpVersion: "14.10", pgDumpMajor: 14, serverMajor: 15 });
    await expect(readFile(old.argvFile, "utf8")).rejects.toMatchObject({ code: "ENOENT" }); // never ran
  });

  it("asks pg_dump for its version with the dump's own arguments, so a wrapper picks the same pg_dump", async () => {
    // Debian's pg_wrapper chooses which installed pg_dump to run from the arguments (an explicit
    // --host means the newest, --cluster a given one); `pg_dump --version` alone may get another.
    const versionArgv = join(work, "version-argv");
    const probe = await wrapper(
      "same-args",
      `exec ${realPgDump} "$@"\nVERSION: printf '%s\\n' "$@" > ${versionArgv}; exec ${realPgDump} --version`,
    );
    await backup({
      job: "same-args",
      source: pgDumpSource({
        connection: server.connection("shop"),
        pgDumpPath: probe.path,
        extraArgs: ["--no-comments"],
      }),
      sink: filesystemSink({ root: join(work, "sink-same-args") }),
    });
    const asked = (await readFile(versionArgv, "utf8")).trimEnd().split("\n");
    const dumped = (await readFile(probe.argvFile, "utf8")).trimEnd().split("\n");
    expect(asked).toEqual(["--version", ...dumped]);
    expect(dumped).toEqual(expect.arrayContaining(["--host", server.host, "--port", "--no-comments"]));
  });

  // pg_dump's exit is judged the same whether its output comes through a pipe (transforms) or
  // pg_dump writes straight into the sink's file (none).
  for (const [through, attemptThrough] of [
    ["through a pipe", (source: Source) => attempt(source)],
    ["into the sink's file", (source: Source) => attemptIntoFile(source)],
  ] as const) {
    it(`pg_dump exits non-zero (no matching table), ${through}: the stderr tail is in the error`, async () => {
      const error = await attemptThrough(
        pgDumpSource({ connection: server.connection("shop"), tables: ["no_such_table"] }),
      );
      expect(error.code).toBe("SOURCE_FAILED");
      expect(error.details.exitCode).toBe(1);
      expect(String(error.details.stderr)).toMatch(/no matching tables/);
    });

    it(`pg_dump writes everything and exits 0 but reports an error on stderr, ${through}`, async () => {
      const liar = await wrapper("liar", `${realPgDump} "$@"\necho "pg_dump: error: simulated" >&2\nexit 0`);
      const error = await attemptThrough(
        pgDumpSource({ connection: server.connection("shop"), pgDumpPath: liar.path }),
      );
      expect(error.code).toBe("SOURCE_FAILED");
      expect(error.details.exitCode).toBe(0);
    });
  }

  it("the password is redacted from pg_dump's stderr", async () => {
    const leak = await wrapper(
      "leak",
      `echo "pg_dump: error: could not connect with password $PGPASSWORD to postgres://u:$PGPASSWORD@h/db" >&2\nexit 1`,
    );
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop"), pgDumpPath: leak.path }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(String(error.details.stderr)).toContain("[REDACTED]");
    expect(inspect(error, { depth: 10 })).not.toContain(server.password);
  });

  it("pg_dump SIGKILLed half-way", async () => {
    const probe = await wrapper("kill", `exec ${realPgDump} "$@"`);
    let pid = 0;
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop"), pgDumpPath: probe.path }),
      [
        tap(1 << 20, async () => {
          pid = Number(await readFile(probe.pidFile, "utf8"));
          process.kill(pid, "SIGKILL");
        }),
      ],
    );
    expect(pid).toBeGreaterThan(0);
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.signal).toBe("SIGKILL");
    expect(isGone(pid)).toBe(true);
  });

  it("abort mid-stream kills and reaps pg_dump", async () => {
    const probe = await wrapper("abort", `exec ${realPgDump} "$@"`);
    const controller = new AbortController();
    let pid = 0;
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop"), pgDumpPath: probe.path }),
      [
        tap(1 << 20, async () => {
          pid = Number(await readFile(probe.pidFile, "utf8"));
          expect(isGone(pid)).toBe(false);
          controller.abort();
        }),
      ],
      controller.signal,
    );
    expect(error.code).toBe("ABORTED");
    expect(pid).toBeGreaterThan(0);
    expect(isGone(pid)).toBe(true); // killed and reaped by the time backup() rejects
  });

  it("abort mid-COPY closes the query's connection", async () => {
    const controller = new AbortController();
    const error = await attempt(
      pgQuerySource({ connection: server.connection("shop"), query: "SELECT * FROM events ORDER BY id" }),
      [tap(1 << 20, () => controller.abort())],
      controller.signal,
    );
    expect(error.code).toBe("ABORTED");
    await expect
      .poll(
        async () =>
          (
            await server.query<{ n: number }>(
              "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'stowage'",
            )
          )[0]?.n,
      )
      .toBe(0);
  });

  it("a consumer that stops early gets pg_dump killed and reaped", async () => {
    const probe = await wrapper("early", `exec ${realPgDump} "$@"`);
    const source = pgDumpSource({ connection: server.connection("shop"), pgDumpPath: probe.path });
    const out = await source.open({ signal: new AbortController().signal, startedAt: new Date() });
    const closed = new Promise((resolve) => out.stream.once("close", resolve));
    for await (const _chunk of out.stream) break;
    await closed;
    const pid = Number(await readFile(probe.pidFile, "utf8"));
    expect(isGone(pid)).toBe(true);
    const error = await failure(out.details());
    expect(error.code).toBe("ABORTED");
  });

  it("abort before the source opens", async () => {
    const controller = new AbortController();
    controller.abort();
    const error = await attempt(
      pgDumpSource({ connection: server.connection("shop") }),
      [],
      controller.signal,
    );
    expect(error.code).toBe("ABORTED");
  });
});

describe("restorePostgres failures", () => {
  const databases = async () =>
    (await server.query<{ datname: string }>("SELECT datname FROM pg_database")).map((r) => r.datname);

  it("a SQL error stops psql (ON_ERROR_STOP), and the database it created is dropped", async () => {
    const error = await failure(
      restorePostgres({
        stream: Readable.from([
          Buffer.from("CREATE TABLE ok (id int);\nTHIS IS NOT SQL;\nCREATE TABLE later (id int);\n"),
        ]),
        format: "plain",
        connection: server.connection(),
        database: "bad_restore",
        createDatabase: true,
      }),
    );
    expect(error.code).toBe("RESTORE_FAILED");
    expect(error.details.exitCode).toBe(3);
    expect(await databases()).not.toContain("bad_restore");
  });

  it("an input that fails half-way kills psql before it can commit a partial dump", async () => {
    await server.query("DROP DATABASE IF EXISTS partial_target");
    await server.query("CREATE DATABASE partial_target");
    const input = Readable.from(
      (async function* () {
        yield Buffer.from("CREATE TABLE partial (id int);\nINSERT INTO partial VALUES (1);\n");
        await new Promise((r) => setTimeout(r, 200));
        throw new StowageError("INTEGRITY_MISMATCH", "simulated corrupt artifact");
      })(),
    );
    const error = await failure(
      restorePostgres({
        stream: input,
        format: "plain",
        connection: server.connection(),
        database: "partial_target",
      }),
    );
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    const tables = await server.query(
      "SELECT tablename FROM pg_tables WHERE tablename = 'partial'",
      "partial_target",
    );
    expect(tables).toEqual([]);
  });

  it("pg_restore --exit-on-error on a truncated custom archive", async () => {
    const sink = filesystemSink({ root: join(work, "sink-trunc") });
    const manifest = await backup({
      job: "trunc",
      source: pgDumpSource({ connection: server.connection("shop"), format: "custom" }),
      sink,
    });
    const whole = await readAll(await restore({ sink, manifest }), 1 << 30);
    const error = await failure(
      restorePostgres({
        stream: Readable.from([whole.subarray(0, Math.floor(whole.length / 2))]),
        format: "custom",
        connection: server.connection(),
        database: "trunc_restore",
        createDatabase: true,
      }),
    );
    expect(error.code).toBe("RESTORE_FAILED");
    expect(await databases()).not.toContain("trunc_restore");
  });

  it("wrong password", async () => {
    const wrong = `Wrong-${randomBytes(6).toString("hex")}`;
    const error = await failure(
      restorePostgres({
        stream: Readable.from([Buffer.from("SELECT 1;\n")]),
        format: "plain",
        connection: { ...server.connection(), password: wrong },
        database: "never",
        createDatabase: true,
      }),
    );
    expect(error.code).toBe("RESTORE_FAILED");
    expect(inspect(error, { depth: 10 })).not.toContain(wrong);
  });

  it("clean alone is refused for a plain dump", async () => {
    const error = await failure(
      restorePostgres({
        stream: Readable.from([Buffer.from("SELECT 1;\n")]),
        format: "plain",
        connection: server.connection(),
        database: "x",
        clean: true,
      }),
    );
    expect(error.code).toBe("CONFIG_INVALID");
  });
});

describe("child processes", () => {
  it("are tied to this process here: setpriv --pdeathsig is found and works (else pg_dump could outlive it)", async () => {
    expect(await childrenDieWithParent()).toBe(true);
  });
});

describe("secrets", () => {
  it("the test password never appears in an error, a manifest, argv or the server's log", async () => {
    expect(seen.length).toBeGreaterThan(10);
    for (const value of seen) {
      const text =
        value instanceof Error
          ? `${inspect(value, { depth: 10 })} ${JSON.stringify((value as StowageError).details ?? {})}`
          : typeof value === "string"
            ? value
            : JSON.stringify(value);
      expect(text).not.toContain(server.password);
    }
    for (const line of server.logs()) expect(line).not.toContain(server.password);
  });
});

/** Resolves once no pg_dump of this process is alive and no session is open on the database. */
const releasedPostgres = (database: string) => async () => {
  const children: string[] = [];
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const [, comm = "", rest = ""] = /^\d+ \((.*)\) (.*)$/s.exec(stat) ?? [];
    if (Number(rest.split(" ")[1]) === process.pid && comm === "pg_dump") children.push(pid);
  }
  if (children.length > 0) throw new Error(`pg_dump still running: ${children.join(", ")}`);
  const [row] = await server.query<{ n: string }>(
    `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = '${database}' AND pid <> pg_backend_pid()`,
  );
  if (Number(row?.n) > 0) throw new Error(`${row?.n} session(s) still open on ${database}`);
};

const slow = { describe, it: (name: string, fn: () => Promise<void>) => it(name, fn, 120_000) };
const wrongPassword = "not-the-password-5e1f";
for (const [name, make] of [
  ["pgDumpSource", (connection: ReturnType<TestPostgres["connection"]>) => pgDumpSource({ connection })],
  [
    "pgQuerySource",
    (connection: ReturnType<TestPostgres["connection"]>) =>
      pgQuerySource({ connection, query: "SELECT * FROM events ORDER BY id", format: "jsonl" }),
  ],
] as const) {
  sourceConformance(slow, name, async () => ({
    source: make(server.connection("shop")),
    released: releasedPostgres("shop"),
    secrets: [server.password, wrongPassword],
    failing: () => make({ ...server.connection("shop"), password: wrongPassword }),
  }));
}
