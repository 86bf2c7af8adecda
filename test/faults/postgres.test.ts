/**
 * Faults of the PostgreSQL source on every write path into a filesystem sink: the host process
 * SIGKILLed mid-dump (the backup runs in a child Node process), a writer stalled on a lock while
 * sweeps run with clocks far ahead, pg_dump failing mid-dump, a wrong password, a server that is
 * down, a missing pg_dump. Each checks the code, what is left on disk and in the process table,
 * and that the password appears in no error and in no pg_dump argv sampled while it ran.
 *
 * To stop pg_dump mid-dump deterministically, the server process that feeds it is paused
 * (SIGSTOP) once the dump is under way: pg_dump then waits for bytes that do not come, as it
 * would on a slow server or a lock, and only the death of its parent can end it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, stat, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  aes256gcm,
  applyRetention,
  backup,
  filesystemSink,
  findOrphans,
  gzip,
  listManifests,
  type Manifest,
  planRetention,
  type Transform,
} from "../../src/index.js";
import { TEMP_MARKER } from "../../src/sinks/filesystem.js";
import { pgDumpSource } from "../../src/sources/postgres.js";
import { freePort, startPostgres, type TestPostgres } from "../support/postgres.js";
import { failureOf, fault, filesUnder, processesNamed } from "./harness.js";

const DB = "faults_pg";
const SMALL_DB = "faults_pg_small";
const key = randomBytes(32).toString("hex");
const repo = fileURLToPath(new URL("../..", import.meta.url));
const childScript = fileURLToPath(new URL("./support/backup-child.ts", import.meta.url));
const restoreChildScript = fileURLToPath(new URL("./support/restore-child.ts", import.meta.url));

let server: TestPostgres;
const roots: string[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  server = await startPostgres();
  await server.query(`CREATE DATABASE ${DB}`);
  await server.query(`CREATE DATABASE ${SMALL_DB}`);
  // ~40 MB of rows: the COPY lasts long enough to be caught under way.
  await server.query(
    `CREATE TABLE big (id int PRIMARY KEY, payload text);
     INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g;
     CREATE TABLE small (id int PRIMARY KEY, note text);
     INSERT INTO small VALUES (1, 'one'), (2, 'two');`,
    DB,
  );
  await server.query(`CREATE TABLE t (id int); INSERT INTO t VALUES (1);`, SMALL_DB);
}, 180_000);

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await server?.stop();
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

async function freshRoot(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "stowage-faults-pg-"));
  roots.push(root);
  return root;
}

/** pg_dump processes of this file's server (other tests on the machine may run their own). */
const ourPgDumps = async () =>
  (await processesNamed("pg_dump")).filter((p) => p.includes(` --port ${server.port} `));

/** Waits up to `ms` for our pg_dump processes to be gone; returns those still there. */
async function pgDumpsAfter(ms: number): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const left = await ourPgDumps();
    if (left.length === 0 || Date.now() > until) return left;
    await delay(50);
  }
}

/** Every pg_dump argv seen so far: searched for the password. */
const argvSeen: string[] = [];
async function sampleArgv(): Promise<void> {
  argvSeen.push(...(await ourPgDumps()));
}

/** Temporary files (not owner records) under `root`, relative to it. */
async function tempFiles(root: string): Promise<string[]> {
  return (await filesUnder(root)).filter((f) => basename(f).includes(TEMP_MARKER) && !f.endsWith(".owner"));
}

/** The backend serving our pg_dump of `database`, with what it is doing. */
async function dumpBackend(
  admin: pg.Client,
  database: string,
  since: Date,
): Promise<{ pid: number; query: string; waiting: string | null } | undefined> {
  // Only backends that connected after `since`: a killed test's pg_dump may leave its backend
  // behind for a while (one waiting for a lock notices its client is gone only once it gets it).
  const { rows } = await admin.query(
    `SELECT pid, query, wait_event_type AS waiting FROM pg_stat_activity
      WHERE datname = $1 AND application_name = 'stowage' AND pid <> pg_backend_pid()
        AND backend_type = 'client backend' AND query NOT LIKE 'SELECT current_setting%'
        AND backend_start >= $2 AND state = 'active'`,
    [database, since],
  );
  return rows.find((r: { query: string }) => /^(COPY|SELECT|LOCK|SET)/i.test(r.query)) as
    | { pid: number; query: string; waiting: string | null }
    | undefined;
}

/** The server's clock now, to tell this test's backends from a killed test's. */
async function serverNow(admin: pg.Client): Promise<Date> {
  const { rows } = await admin.query("SELECT clock_timestamp() AS now");
  return (rows[0] as { now: Date }).now;
}

/** Polls `check` every 10 ms until it returns a value, for at most `ms`. */
async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | undefined>,
  pollMs = 10,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await delay(pollMs);
  }
}

/** One committed backup of `job` (of the small database), so that a retention plan names the job. */
async function firstBackup(root: string, job: string): Promise<Manifest> {
  return backup({
    job,
    source: pgDumpSource({ connection: server.connection(SMALL_DB) }),
    sink: filesystemSink({ root }),
  });
}

/** The sweep a scheduled prune runs: applyRetention over the job, keeping every backup. */
async function sweep(root: string, now = new Date()) {
  const sink = filesystemSink({ root });
  const { manifests } = await listManifests(sink);
  const plan = planRetention(manifests, { keepLast: 100 }, { now });
  return applyRetention({ sink, plan, now });
}

/** What must not remain after a fault: files besides `kept`, our pg_dump processes. */
async function leftoversOf(root: string, kept: Manifest | undefined): Promise<string[]> {
  const keep = new Set(kept ? [kept.artifact.key, `${kept.artifact.key}.manifest.json`] : []);
  const files = (await filesUnder(root)).filter((f) => !keep.has(f));
  return [...files, ...(await pgDumpsAfter(3000)).map((p) => `process ${p}`)];
}

const paths = [
  { name: "plain pg_dump straight into the sink's file", format: "plain", transforms: "none", ext: ".sql" },
  { name: "plain pg_dump through gzip + AES", format: "plain", transforms: "gzip+aes", ext: ".sql.gz.enc" },
  { name: "pg_dump custom format", format: "custom", transforms: "none", ext: ".dump" },
] as const;

describe("the host process SIGKILLed mid-dump: pg_dump dies with it, the next sweep removes its file", () => {
  for (const path of paths) {
    fault(
      "postgres",
      `SIGKILL mid-dump, ${path.name}`,
      async () => {
        const root = await freshRoot();
        const job = "killed";
        const kept = await firstBackup(root, job);
        const admin = await server.client();
        const since = await serverNow(admin);
        let paused: number | undefined;
        let child: ChildProcess | undefined;
        try {
          child = spawn(
            process.execPath,
            [
              "--import",
              "tsx",
              childScript,
              JSON.stringify({
                root,
                job,
                connection: { host: server.host, port: server.port, user: server.user, database: DB },
                format: path.format,
                transforms: path.transforms,
                key,
              }),
            ],
            {
              cwd: repo,
              env: { ...process.env, STOWAGE_FAULT_PG_PASSWORD: server.password },
              stdio: ["ignore", "pipe", "pipe"],
            },
          );
          children.push(child);
          const output: string[] = [];
          child.stdout!.on("data", (c: Buffer) => output.push(c.toString()));
          child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
          // Mid-dump: the big table's COPY is under way and bytes have reached the temp file.
          // Polled without a pause: on the direct path that COPY lasts a few tens of ms.
          const backend = await until(
            `a COPY under way (child said: ${output.join("")})`,
            60_000,
            async () => {
              const b = await dumpBackend(admin, DB, since);
              if (!b || !/^COPY public\.big/.test(b.query)) return undefined;
              const temps = await tempFiles(root);
              const sizes = await Promise.all(temps.map((t) => stat(join(root, t)).then((s) => s.size)));
              return sizes.some((s) => s > 0) ? b : undefined;
            },
            0,
          );
          process.kill(backend.pid, "SIGSTOP");
          paused = backend.pid;
          await sampleArgv();
          const [temp] = await tempFiles(root);
          const exited = new Promise((resolve) => child!.once("exit", resolve));
          child.kill("SIGKILL");
          await exited;

          // pg_dump is gone within a couple of seconds (the kernel kills it as its parent dies).
          const survivors = await pgDumpsAfter(3000);
          process.kill(paused, "SIGCONT");
          paused = undefined;

          // The next sweep over the job removes the temporary file, at once: its writer is dead.
          const found = await findOrphans(filesystemSink({ root }), { olderThan: "1h", prefix: `${job}/` });
          const result = await sweep(root);
          const id = basename(temp!).slice(1).split(".")[0]!;
          const artifactKey = `${dirname(temp!)}/${id}${path.ext}`;
          const error = await failureOf(filesystemSink({ root }).read(artifactKey));
          const manifests = (await listManifests(filesystemSink({ root }), { job })).manifests.map(
            (m) => m.id,
          );
          return {
            error,
            code: "NOT_FOUND",
            leftovers: [
              ...survivors.map((p) => `survived its parent: ${p}`),
              ...(found.temporary.some((t) => t.key === temp) ? [] : [`findOrphans missed ${temp}`]),
              ...(result.orphans.includes(temp!) ? [] : [`applyRetention did not remove ${temp}`]),
              ...manifests.filter((m) => m !== kept.id).map((m) => `manifest ${m}`),
              ...(await leftoversOf(root, kept)),
            ],
            secrets: [server.password, key],
            texts: [...argvSeen, output.join("")],
          };
        } finally {
          if (paused !== undefined) process.kill(paused, "SIGCONT");
          child?.kill("SIGKILL");
          await admin.end();
        }
      },
      120_000,
    );
  }
});

describe("a writer stalled on a lock: sweeps with clocks far ahead keep its file", () => {
  for (const path of [paths[0], paths[1]]) {
    fault(
      "postgres",
      `stalled for "days", swept at +10 min and +2 days, then aborted: ${path.name}`,
      async () => {
        const root = await freshRoot();
        const job = "stalled";
        const kept = await firstBackup(root, job);
        const admin = await server.client();
        const since = await serverNow(admin);
        const locker = await server.client(DB);
        const controller = new AbortController();
        const problems: string[] = [];
        try {
          await locker.query("BEGIN");
          await locker.query("LOCK TABLE small IN ACCESS EXCLUSIVE MODE");
          const transforms: Transform[] = path.transforms === "none" ? [] : [gzip(), aes256gcm({ key })];
          const running = backup({
            job,
            source: pgDumpSource({ connection: server.connection(DB) }),
            transforms,
            sink: filesystemSink({ root }),
            signal: controller.signal,
          });
          running.catch(() => undefined);
          await until("pg_dump waiting for the lock", 60_000, async () => {
            await sampleArgv();
            const b = await dumpBackend(admin, DB, since);
            return b?.waiting === "Lock" && (await tempFiles(root)).length > 0 ? b : undefined;
          });
          // Its temporary file and owner record look two days old, as after a long stall.
          const [temp] = await tempFiles(root);
          const old = new Date(Date.now() - 2 * 86_400_000);
          for (const f of [temp!, `${temp}.owner`]) await utimes(join(root, f), old, old);
          const sink = filesystemSink({ root });
          for (const ahead of [10 * 60_000, 2 * 86_400_000]) {
            const now = new Date(Date.now() + ahead);
            const found = await findOrphans(sink, { olderThan: "1m", now, prefix: `${job}/` });
            if (found.temporary.length > 0)
              problems.push(`findOrphans at +${ahead} ms reported a live writer`);
            const plan = planRetention((await listManifests(sink)).manifests, { keepLast: 100 }, { now });
            const result = await applyRetention({ sink, plan, now, orphans: { olderThan: "1m" } });
            if (result.orphans.length > 0)
              problems.push(`applyRetention removed ${result.orphans.join(", ")}`);
          }
          if (!(await tempFiles(root)).includes(temp!)) problems.push(`the live writer's ${temp} is gone`);
          controller.abort();
          const error = await failureOf(running);
          return {
            error,
            code: "ABORTED",
            leftovers: [...problems, ...(await leftoversOf(root, kept))],
            secrets: [server.password, key],
            texts: argvSeen,
          };
        } finally {
          controller.abort();
          await locker.query("ROLLBACK").catch(() => undefined);
          await locker.end();
          await admin.end();
        }
      },
      120_000,
    );
  }

  fault(
    "postgres",
    "SIGKILL while pg_dump waits for a lock (nothing written yet): pg_dump dies, the sweep removes the empty file",
    async () => {
      const root = await freshRoot();
      const job = "killed-waiting";
      const kept = await firstBackup(root, job);
      const admin = await server.client();
      const since = await serverNow(admin);
      const locker = await server.client(DB);
      let child: ChildProcess | undefined;
      try {
        await locker.query("BEGIN");
        await locker.query("LOCK TABLE small IN ACCESS EXCLUSIVE MODE");
        child = spawn(
          process.execPath,
          [
            "--import",
            "tsx",
            childScript,
            JSON.stringify({
              root,
              job,
              connection: { host: server.host, port: server.port, user: server.user, database: DB },
              format: "plain",
              transforms: "none",
            }),
          ],
          {
            cwd: repo,
            env: { ...process.env, STOWAGE_FAULT_PG_PASSWORD: server.password },
            stdio: "ignore",
          },
        );
        children.push(child);
        await until("pg_dump waiting for the lock", 60_000, async () => {
          await sampleArgv();
          const b = await dumpBackend(admin, DB, since);
          return b?.waiting === "Lock" && (await tempFiles(root)).length > 0 ? b : undefined;
        });
        const [temp] = await tempFiles(root);
        const exited = new Promise((resolve) => child!.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
        const survivors = await pgDumpsAfter(3000);
        const result = await sweep(root);
        const id = basename(temp!).slice(1).split(".")[0]!;
        const error = await failureOf(filesystemSink({ root }).read(`${dirname(temp!)}/${id}.sql`));
        return {
          error,
          code: "NOT_FOUND",
          leftovers: [
            ...survivors.map((p) => `survived its parent: ${p}`),
            ...(result.orphans.includes(temp!) ? [] : [`applyRetention did not remove ${temp}`]),
            ...(await leftoversOf(root, kept)),
          ],
          secrets: [server.password],
          texts: argvSeen,
        };
      } finally {
        child?.kill("SIGKILL");
        await locker.query("ROLLBACK").catch(() => undefined);
        await locker.end();
        await admin.end();
      }
    },
    120_000,
  );
});

describe("pg_dump fails mid-dump (its server connection is terminated)", () => {
  // Not through gzip + AES: there pg_dump's output drains into the pipeline's buffers so fast that
  // a terminate seen to arrive during the big table's COPY most often still leaves a whole dump
  // (tried ten times in a row); that path's mid-dump failure is the SIGKILL fault above.
  for (const path of [paths[0], paths[2]]) {
    fault("postgres", `pg_dump exits non-zero mid-dump, ${path.name}`, async () => {
      const admin = await server.client();
      try {
        const transforms = (): Transform[] =>
          path.transforms === "none" ? [] : [gzip(), aes256gcm({ key })];
        // The big table's COPY can be over (all its rows in socket buffers) by the time the
        // terminate arrives; then the dump is whole and rightly succeeds. Such a run's backup is
        // removed and the fault injected again, until the terminate lands inside the COPY.
        for (let attempt = 1; ; attempt++) {
          const root = await freshRoot();
          const since = await serverNow(admin);
          const running = backup({
            job: "cut",
            source: pgDumpSource({ connection: server.connection(DB), format: path.format }),
            transforms: transforms(),
            sink: filesystemSink({ root }),
          });
          running.catch(() => undefined);
          // Polled without a pause: on the direct path the big table's COPY lasts tens of ms.
          const backend = await until(
            "a COPY under way",
            60_000,
            async () => {
              const b = await dumpBackend(admin, DB, since);
              return b && /^COPY public\.big/.test(b.query) ? b : undefined;
            },
            0,
          );
          // The terminate goes at once (on a busy machine a pause here lets the COPY finish), with
          // pg_dump's argv sampled beside it while the process is still there.
          await Promise.all([sampleArgv(), admin.query("SELECT pg_terminate_backend($1)", [backend.pid])]);
          const error = await failureOf(running);
          // A terminate that found the COPY over (pg_stat_activity can lag a moment behind) leaves
          // a whole dump and a good backup. A pg_dump failure the library missed would succeed
          // every time, and the tenth attempt reports it.
          if (error === undefined && attempt < 10) {
            await rm(root, { recursive: true, force: true });
            continue;
          }
          return {
            error,
            code: "SOURCE_FAILED",
            leftovers: await leftoversOf(root, undefined),
            secrets: [server.password, key],
            texts: argvSeen,
          };
        }
      } finally {
        await admin.end();
      }
    });
  }
});

describe("pg_dump cannot start", () => {
  for (const path of [paths[0], paths[1]]) {
    const transforms = (): Transform[] => (path.transforms === "none" ? [] : [gzip(), aes256gcm({ key })]);
    fault("postgres", `wrong password, ${path.name}`, async () => {
      const root = await freshRoot();
      const wrong = `Wrong-${randomBytes(9).toString("base64url")}-pw`;
      const error = await failureOf(
        backup({
          job: "wrong-password",
          source: pgDumpSource({ connection: { ...server.connection(DB), password: wrong } }),
          transforms: transforms(),
          sink: filesystemSink({ root }),
        }),
      );
      return {
        error,
        code: "SOURCE_FAILED",
        leftovers: await leftoversOf(root, undefined),
        secrets: [wrong, server.password, key],
        texts: [...argvSeen, ...server.logs()],
      };
    });

    fault("postgres", `server down, ${path.name}`, async () => {
      const root = await freshRoot();
      const port = await freePort();
      const error = await failureOf(
        backup({
          job: "server-down",
          source: pgDumpSource({
            connection: { ...server.connection(DB), port },
            connectTimeoutMs: 2000,
          }),
          transforms: transforms(),
          sink: filesystemSink({ root }),
        }),
      );
      return {
        error,
        code: "SOURCE_FAILED",
        leftovers: await leftoversOf(root, undefined),
        secrets: [server.password, key],
      };
    });
  }

  fault("postgres", "pg_dump not installed where pgDumpPath points", async () => {
    const root = await freshRoot();
    const error = await failureOf(
      backup({
        job: "no-pg-dump",
        source: pgDumpSource({ connection: server.connection(DB), pgDumpPath: join(root, "no", "pg_dump") }),
        sink: filesystemSink({ root }),
      }),
    );
    const errno = (error as { details?: { errno?: string } } | undefined)?.details?.errno;
    return {
      error,
      code: "SOURCE_FAILED",
      leftovers: [
        ...(errno === "ENOENT" ? [] : [`errno ${errno}, not ENOENT`]),
        ...(await leftoversOf(root, undefined)),
      ],
      secrets: [server.password],
    };
  });
});

describe("the password never reaches pg_dump's argv", () => {
  fault("postgres", "argv of every pg_dump sampled in this file (checked with a failing run)", async () => {
    const error = await failureOf(
      backup({
        job: "argv",
        source: pgDumpSource({ connection: server.connection(DB), tables: ["no_such_table"] }),
        sink: filesystemSink({ root: await freshRoot() }),
      }),
    );
    return {
      error,
      code: "SOURCE_FAILED",
      leftovers: argvSeen.length > 0 ? [] : ["no pg_dump argv was sampled"],
      secrets: [server.password],
      texts: argvSeen,
    };
  });
});

describe("the host process SIGKILLed mid-restore: psql commits nothing", () => {
  // Not a `fault()`: a killed host has no error to check, only what it left in the database.
  it("SIGKILL while psql reads a plain dump in one transaction: the half-read dump is rolled back", async () => {
    const target = "faults_pg_restore_target";
    await server.query(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`);
    await server.query(`CREATE DATABASE ${target}`);
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        restoreChildScript,
        JSON.stringify({
          connection: { host: server.host, port: server.port, user: server.user, database: target },
          database: target,
        }),
      ],
      {
        cwd: repo,
        env: { ...process.env, STOWAGE_FAULT_PG_PASSWORD: server.password },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    children.push(child);
    const output: string[] = [];
    child.stderr!.on("data", (c: Buffer) => output.push(c.toString()));
    try {
      await until(`the first part fed (child said: ${output.join("")})`, 60_000, async () => {
        const said = (child.stdout!.read() as Buffer | null)?.toString() ?? "";
        output.push(said);
        return output.join("").includes("fed") ? true : undefined;
      });
      // psql has run the CREATE TABLE inside its transaction; then its host dies. When its stdin
      // closes, psql must not take the end of input for the end of the dump and commit.
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await exited;
      const psqls = async () =>
        (await processesNamed("psql")).filter((p) => p.includes(` --port ${server.port} `));
      const end = Date.now() + 5000;
      while ((await psqls()).length > 0 && Date.now() < end) await delay(50);
      const survivors = await psqls();
      const rows = await server.query<{ committed: boolean }>(
        "SELECT to_regclass('public.half_restored') IS NOT NULL AS committed",
        target,
      );
      expect(survivors).toEqual([]);
      expect(rows[0]?.committed).toBe(false);
    } finally {
      child.kill("SIGKILL");
    }
  }, 120_000);
});
