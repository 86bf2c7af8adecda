/**
 * PostgreSQL: `pg_dump` and `COPY … TO STDOUT` sources, and a restore through `psql` / `pg_restore`.
 *
 * `pg` and `pg-copy-streams` are optional peer dependencies, loaded only when a function here runs.
 * Passwords reach the child processes through `PGPASSWORD` (or a passfile named by `PGPASSFILE`),
 * never through argv, and are redacted from every message and detail this module produces.
 */
import type { ChildProcessByStdio } from "node:child_process";
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { type Readable, Writable } from "node:stream";
import { finished, pipeline } from "node:stream/promises";
import type { Client as PgClient } from "pg";
import { z } from "zod";
import {
  type ChildExit,
  ChildStdout,
  hasExited,
  lastLines,
  OutputTail,
  runCollecting,
  spawnChild,
  stopChild,
} from "../core/child-process.js";
import {
  isStowageError,
  StowageError,
  type StowageErrorCode,
  throwIfAborted,
} from "../core/errors.js";
import { parseOptions, signalSchema } from "../core/options.js";
import type { FileSourceOutput, Source, SourceContext, SourceOutput } from "../core/types.js";

// ---------------------------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------------------------

const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] as const;

/** A connection given as fields. */
export const pgConnectionFieldsSchema = z
  .object({
    /** Host name, IP address, or a folder holding the server's Unix socket. @default "localhost" */
    host: z.string().min(1).default("localhost"),
    /** @default 5432 */
    port: z.number().int().min(1).max(65535).default(5432),
    /** @default the operating-system user, as libpq does */
    user: z.string().min(1).optional(),
    /** Handed to child processes as `PGPASSWORD`, never as an argument. */
    password: z.string().optional(),
    /** A libpq password file (`host:port:db:user:password` lines), handed over as `PGPASSFILE`. */
    passfile: z.string().min(1).optional(),
    /** @default "postgres" */
    database: z.string().min(1).optional(),
    /** libpq's `sslmode`. @default libpq's default ("prefer") for the tools; no TLS for the checks */
    sslmode: z.enum(SSL_MODES).optional(),
  })
  .strict();

const URL_PARAMS = new Set([
  "sslmode",
  "host",
  "port",
  "user",
  "password",
  "dbname",
  "passfile",
  "application_name",
  "connect_timeout",
]);

/**
 * A PostgreSQL connection: a `postgres://user:password@host:port/database?sslmode=…` URL, or
 * {@link pgConnectionFieldsSchema fields}. Problems are reported without echoing the URL (it may
 * hold a password).
 */
export const pgConnectionSchema = z.union([
  z.string().superRefine((value, ctx) => {
    const problem = urlProblem(value);
    if (problem) ctx.addIssue({ code: "custom", message: problem });
  }),
  pgConnectionFieldsSchema,
]);
export type PgConnection = z.input<typeof pgConnectionSchema>;

/** A connection with every field decided. */
interface ResolvedConnection {
  host: string;
  port: number;
  user: string;
  password?: string;
  passfile?: string;
  database: string;
  sslmode?: (typeof SSL_MODES)[number];
}

function urlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "expected a postgres:// or postgresql:// URL";
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return "expected a postgres:// or postgresql:// URL";
  }
  for (const name of url.searchParams.keys()) {
    if (!URL_PARAMS.has(name)) return `URL parameter "${name}" is not supported`;
  }
  const sslmode = url.searchParams.get("sslmode");
  if (sslmode !== null && !(SSL_MODES as readonly string[]).includes(sslmode)) {
    return `sslmode must be one of ${SSL_MODES.join(", ")}`;
  }
  const port = url.searchParams.get("port") ?? url.port;
  if (port && !/^\d{1,5}$/.test(port)) return "port must be a number";
  return undefined;
}

function resolveConnection(
  input: z.output<typeof pgConnectionSchema>,
  database?: string,
): ResolvedConnection {
  const defaultUser = () => process.env.PGUSER ?? userInfo().username;
  if (typeof input !== "string") {
    return {
      host: input.host,
      port: input.port,
      user: input.user ?? defaultUser(),
      ...(input.password !== undefined ? { password: input.password } : {}),
      ...(input.passfile !== undefined ? { passfile: input.passfile } : {}),
      database: database ?? input.database ?? "postgres",
      ...(input.sslmode ? { sslmode: input.sslmode } : {}),
    };
  }
  const url = new URL(input);
  const q = url.searchParams;
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const password = q.get("password") ?? (url.password ? decodeURIComponent(url.password) : undefined);
  const passfile = q.get("passfile") ?? undefined;
  const sslmode = (q.get("sslmode") ?? undefined) as ResolvedConnection["sslmode"];
  return {
    host: q.get("host") ?? (hostname ? decodeURIComponent(hostname) : "localhost"),
    port: Number(q.get("port") ?? (url.port || 5432)),
    user: q.get("user") ?? (url.username ? decodeURIComponent(url.username) : defaultUser()),
    ...(password !== undefined ? { password } : {}),
    ...(passfile ? { passfile } : {}),
    database:
      database ??
      q.get("dbname") ??
      (url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : "postgres"),
    ...(sslmode ? { sslmode } : {}),
  };
}

/** Where a connection points, without its password: for messages and manifests. */
function describeTarget(c: ResolvedConnection, database = c.database): Record<string, unknown> {
  return { host: c.host, port: c.port, user: c.user, database };
}

/** The environment for a libpq tool: the password by environment, never argv. */
function toolEnvironment(c: ResolvedConnection, connectTimeoutMs: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_MESSAGES: "C", PGAPPNAME: "stowage" };
  env.PGCONNECT_TIMEOUT = String(Math.max(2, Math.ceil(connectTimeoutMs / 1000)));
  if (c.password !== undefined) {
    env.PGPASSWORD = c.password;
  } else if (c.passfile !== undefined) {
    delete env.PGPASSWORD; // PGPASSWORD would take precedence over the passfile
    env.PGPASSFILE = c.passfile;
  }
  if (c.sslmode) env.PGSSLMODE = c.sslmode;
  return env;
}

/** Connection arguments for libpq tools; no secret is among them. */
function toolConnectionArgs(c: ResolvedConnection, database: string): string[] {
  return ["--host", c.host, "--port", String(c.port), "--username", c.user, "--dbname", dbnameArg(database)];
}

/** libpq reads a `--dbname` with `=` or a URL prefix as a connection string; quote such names. */
function dbnameArg(name: string): string {
  if (!name.includes("=") && !/^postgres(ql)?:\/\//.test(name)) return name;
  return `dbname='${name.replace(/[\\']/g, "\\$&")}'`;
}

/** The password a libpq passfile holds for this connection, or undefined. */
async function passwordFromPassfile(c: ResolvedConnection, database: string): Promise<string | undefined> {
  if (!c.passfile) return undefined;
  const text = await readFile(c.passfile, "utf8");
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const fields: string[] = [];
    let current = "";
    for (let i = 0; i < line.length; i++) {
      const ch = line[i]!;
      if (ch === "\\" && i + 1 < line.length) current += line[++i];
      else if (ch === ":" && fields.length < 4) {
        fields.push(current);
        current = "";
      } else current += ch;
    }
    fields.push(current);
    if (fields.length !== 5) continue;
    const [host, port, db, user, password] = fields as [string, string, string, string, string];
    const match = (pattern: string, value: string) => pattern === "*" || pattern === value;
    const hostMatches = match(host, c.host) || (host === "localhost" && c.host.startsWith("/"));
    if (hostMatches && match(port, String(c.port)) && match(db, database) && match(user, c.user)) {
      return password;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Secrets and errors
// ---------------------------------------------------------------------------------------------

/** Replaces the password (and URL-encoded forms of it) and anything shaped like one with `***`. */
function redactor(c: ResolvedConnection): (text: string) => string {
  const secrets = [c.password, c.password && encodeURIComponent(c.password)]
    .filter((s): s is string => typeof s === "string" && s.length > 0)
    .sort((a, b) => b.length - a.length);
  return (text) => {
    let out = text;
    for (const secret of secrets) out = out.split(secret).join("***");
    return out
      .replace(/(postgres(?:ql)?:\/\/[^:@/\s]*):[^@\s]*@/gi, "$1:***@")
      .replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, "$1***");
  };
}

/** An error whose message (and cause's message) has been redacted. */
function coded(
  code: StowageErrorCode,
  message: string,
  redact: (s: string) => string,
  details: Record<string, unknown>,
  cause?: unknown,
): StowageError {
  let safeCause = cause;
  if (cause instanceof Error && redact(cause.message) !== cause.message) {
    safeCause = new Error(redact(cause.message));
  }
  return new StowageError(code, redact(message), {
    ...(safeCause !== undefined ? { cause: safeCause } : {}),
    details,
  });
}

const errorMessage = (error: unknown) => (error instanceof Error ? error.message : String(error));

// ---------------------------------------------------------------------------------------------
// Optional peers
// ---------------------------------------------------------------------------------------------

type PgModule = typeof import("pg");

async function loadPeer<T>(name: string, where: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (error) {
    throw new StowageError(
      "UNSUPPORTED",
      `${where} needs the optional peer dependency "${name}": npm install pg pg-copy-streams`,
      { cause: error, details: { package: name } },
    );
  }
}

const loadPg = (where: string): Promise<PgModule> =>
  loadPeer("pg", where, async () => {
    const mod = (await import("pg")) as PgModule & { default?: PgModule };
    return mod.default ?? mod;
  });

type CopyToFactory = typeof import("pg-copy-streams").to;
const loadCopyTo = (where: string): Promise<CopyToFactory> =>
  loadPeer("pg-copy-streams", where, async () => {
    const mod = (await import("pg-copy-streams")) as { to?: CopyToFactory; default?: { to: CopyToFactory } };
    const to = mod.to ?? mod.default?.to;
    if (!to) throw new Error("pg-copy-streams has no export `to`");
    return to;
  });

/** Connects a `pg` client; the signal ends a connection attempt in flight. */
async function connectClient(
  pg: PgModule,
  c: ResolvedConnection,
  database: string,
  connectTimeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<PgClient> {
  const password = c.password ?? (await passwordFromPassfile(c, database));
  const client = new pg.Client({
    host: c.host,
    port: c.port,
    user: c.user,
    database,
    ...(password !== undefined ? { password } : {}),
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: "stowage",
    ...(c.sslmode === "require" || c.sslmode === "verify-ca" || c.sslmode === "verify-full"
      ? { ssl: c.sslmode === "require" ? { rejectUnauthorized: false } : true }
      : {}),
  });
  client.on("error", () => undefined); // a dropped connection surfaces on the query in flight
  const stop = () => void client.end().catch(() => undefined);
  signal?.addEventListener("abort", stop, { once: true });
  try {
    await client.connect();
    throwIfAborted(signal, "postgres");
    return client;
  } catch (error) {
    await client.end().catch(() => undefined);
    throw error;
  } finally {
    signal?.removeEventListener("abort", stop);
  }
}

/** Turns a connection failure into a coded error that says where, without the password. */
function connectionError(
  code: StowageErrorCode,
  where: string,
  c: ResolvedConnection,
  database: string,
  error: unknown,
  signal: AbortSignal | undefined,
): StowageError {
  if (isStowageError(error)) return error;
  const redact = redactor(c);
  if (signal?.aborted) {
    return coded("ABORTED", `${where}: aborted`, redact, describeTarget(c, database), error);
  }
  const pgCode = (error as { code?: unknown } | null)?.code;
  return coded(
    code,
    `${where}: cannot query PostgreSQL at ${c.host}:${c.port} as "${c.user}" (database "${database}"): ${errorMessage(error)}`,
    redact,
    { ...describeTarget(c, database), ...(typeof pgCode === "string" ? { pgCode } : {}) },
    error,
  );
}

// ---------------------------------------------------------------------------------------------
// Versions
// ---------------------------------------------------------------------------------------------

/** A PostgreSQL major version from a `--version` line or a version string ("15.18", "9.6.24"). */
export function parsePostgresVersion(text: string): { version: string; major: number } | undefined {
  const match = /(?:\(PostgreSQL\)\s+|^)(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(text.trim());
  if (!match) return undefined;
  const first = Number(match[1]);
  const second = match[2] === undefined ? undefined : Number(match[2]);
  const major = first >= 10 ? first : Number(`${first}.${second ?? 0}`);
  const version = [match[1], match[2], match[3]].filter((p) => p !== undefined).join(".");
  return { version, major };
}

/** The major version in `server_version_num` (150018 → 15; 90624 → 9.6). */
export function serverMajor(serverVersionNum: number): number {
  return serverVersionNum >= 100000
    ? Math.floor(serverVersionNum / 10000)
    : Math.floor(serverVersionNum / 10000) + Math.floor((serverVersionNum % 10000) / 100) / 10;
}

/**
 * Checks that a `pg_dump` can dump a server: pg_dump refuses servers of a newer major version.
 *
 * @returns both versions, for the manifest.
 * @throws {SOURCE_FAILED} naming both versions when the server is newer, or when the
 *   `pg_dump --version` output cannot be read.
 * @example assertPgDumpCanDump("pg_dump (PostgreSQL) 15.18", 160004) // throws: server 16 is newer
 */
export function assertPgDumpCanDump(
  pgDumpVersionOutput: string,
  serverVersionNum: number,
  serverVersion = String(serverVersionNum),
): { pgDumpVersion: string; pgDumpMajor: number; serverMajor: number } {
  const dump = parsePostgresVersion(pgDumpVersionOutput);
  if (!dump) {
    throw new StowageError(
      "SOURCE_FAILED",
      `pg_dump: cannot read its version from "${pgDumpVersionOutput.trim().slice(0, 120)}"`,
      { details: { pgDumpVersionOutput: pgDumpVersionOutput.trim().slice(0, 200) } },
    );
  }
  const major = serverMajor(serverVersionNum);
  if (major > dump.major) {
    throw new StowageError(
      "SOURCE_FAILED",
      `pg_dump ${dump.version} cannot dump PostgreSQL server ${serverVersion}: the server's major version (${major}) is newer than pg_dump's (${dump.major}); install a pg_dump of major version ${major} or later`,
      {
        details: {
          pgDumpVersion: dump.version,
          pgDumpMajor: dump.major,
          serverVersion,
          serverMajor: major,
        },
      },
    );
  }
  return { pgDumpVersion: dump.version, pgDumpMajor: dump.major, serverMajor: major };
}

// ---------------------------------------------------------------------------------------------
// pgDumpSource
// ---------------------------------------------------------------------------------------------

/** Arguments stowage sets itself; `extraArgs` may not override them. */
const RESERVED_DUMP_ARGS =
  /^(-f|--file|-F|--format|-d|--dbname|-h|--host|-p|--port|-U|--username|-W|--password|-w|--no-password)(=|$)|^-[fFdhpUWw]./;

/** Extra command-line arguments, refusing the ones stowage sets itself. */
const extraArgsSchema = z
  .array(
    z
      .string()
      .refine(
        (a) => !RESERVED_DUMP_ARGS.test(a),
        "sets a connection, file or format option stowage sets itself",
      ),
  )
  .default([]);

export const pgDumpSourceOptionsSchema = z
  .object({
    /** Where to connect: a URL or fields. The password goes to pg_dump by environment only. */
    connection: pgConnectionSchema,
    /** The database to dump. @default the connection's database */
    database: z.string().min(1).optional(),
    /** `plain` SQL (restore with psql) or pg_dump's `custom` archive (restore with pg_restore). @default "plain" */
    format: z.enum(["plain", "custom"]).default("plain"),
    /** The pg_dump binary. @default "pg_dump" (from PATH) */
    pgDumpPath: z.string().min(1).default("pg_dump"),
    /** Only these schemas (`--schema`). */
    schemas: z.array(z.string().min(1)).optional(),
    /** Only these tables (`--table`, patterns allowed). */
    tables: z.array(z.string().min(1)).optional(),
    /** Leave these tables out (`--exclude-table`). */
    excludeTables: z.array(z.string().min(1)).optional(),
    /** More pg_dump arguments, e.g. ["--no-owner", "-Z0"]; connection, file and format ones are refused. */
    extraArgs: extraArgsSchema,
    /** How long to wait for the server to answer. @default 10000 */
    connectTimeoutMs: z.number().int().positive().default(10_000),
    /** Logical name for the manifest. @default the database name */
    name: z.string().min(1).optional(),
  })
  .strict();
export type PgDumpSourceOptions = z.input<typeof pgDumpSourceOptionsSchema>;

/** Facts a `pgDumpSource` records in the manifest. */
export interface PgDumpDetails extends Record<string, unknown> {
  serverVersion: string;
  pgDumpVersion: string;
  database: string;
  format: "plain" | "custom";
  /** `pg_database_size` when the dump started, in bytes. */
  databaseBytes: number;
  /** Ordinary and partitioned tables outside the system schemas. */
  tables: number;
  host: string;
  port: number;
}

/**
 * Streams `pg_dump` of one database. Before spawning it, checks with `pg` that the server answers
 * and that this pg_dump can dump its major version. The stream ends only after pg_dump has exited 0
 * without reporting an error; a non-zero exit, a signal or an `error:` on stderr fails the backup
 * with the (redacted) stderr tail in the message and `details.stderr`. Destroying the stream or
 * aborting kills pg_dump (SIGTERM, then SIGKILL) and reaps it. Memory: one 1 MiB buffer.
 *
 * A plain dump backed up with no transforms into a sink with a local file (`filesystemSink`) is
 * written by pg_dump straight into that file, as `pg_dump > file` would, and hashed as it grows
 * ({@link Source.openToFile}); the rules above hold all the same.
 *
 * @default format "plain", pgDumpPath "pg_dump", connectTimeoutMs 10000
 * @throws {CONFIG_INVALID} on bad options (each named), when called.
 * @throws {SOURCE_FAILED} the server does not answer or refuses the login, the database is
 *   unknown, pg_dump is missing or older than the server, or pg_dump fails.
 * @throws {SINK_WRITE_FAILED} when pg_dump, writing straight into the sink's file, cannot write
 *   (a full disk).
 * @throws {UNSUPPORTED} when the optional peer `pg` is not installed.
 * @example
 * await backup({
 *   job: "app-db",
 *   source: pgDumpSource({ connection: process.env.DATABASE_URL!, format: "custom" }),
 *   transforms: [aes256gcm({ key })],
 *   sink,
 * });
 */
export function pgDumpSource(options: PgDumpSourceOptions): Source {
  const opts = parseOptions(pgDumpSourceOptionsSchema, options, "pgDumpSource");
  const conn = resolveConnection(opts.connection, opts.database);
  const database = conn.database;
  const redact = redactor(conn);
  const where = `pgDumpSource(${database})`;
  // pg_dump's arguments: no secret among them (the password goes by environment or passfile).
  const args = [
    `--format=${opts.format === "plain" ? "p" : "c"}`,
    "--no-password",
    ...toolConnectionArgs(conn, database),
    ...(opts.schemas ?? []).flatMap((s) => ["--schema", s]),
    ...(opts.tables ?? []).flatMap((t) => ["--table", t]),
    ...(opts.excludeTables ?? []).flatMap((t) => ["--exclude-table", t]),
    ...opts.extraArgs,
  ];

  /** Steps 1–3: the checks before pg_dump runs; returns what running it needs. */
  const prepare = async (signal: AbortSignal) => {
    throwIfAborted(signal, where);
    const env = toolEnvironment(conn, opts.connectTimeoutMs);
    const target = describeTarget(conn);

    // 1 and 2 run together: pg_dump says its version (no server needed) while the server is
    // asked for its version and the facts for the manifest. pg_dump's problems are reported first.
    const factsPromise = (async () => {
      const pg = await loadPg("pgDumpSource");
      try {
        const client = await connectClient(pg, conn, database, opts.connectTimeoutMs, signal);
        try {
          const { rows } = await client.query(
            `SELECT current_setting('server_version_num')::int AS num,
                    current_setting('server_version') AS version,
                    pg_database_size(current_database())::text AS size,
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                        AND n.nspname NOT LIKE 'pg_toast%')::int AS tables`,
          );
          const row = rows[0] as { num: number; version: string; size: string; tables: number };
          return { num: row.num, version: row.version, size: Number(row.size), tables: row.tables };
        } finally {
          await client.end().catch(() => undefined);
        }
      } catch (error) {
        throw connectionError("SOURCE_FAILED", where, conn, database, error, signal);
      }
    })();
    factsPromise.catch(() => undefined); // awaited below, after pg_dump's own checks
    // With the dump's own arguments after it (pg_dump reads only its first argument when that is
    // --version): Debian's pg_wrapper picks which installed pg_dump runs from them (--host, --port,
    // --cluster), so this is the pg_dump that will dump.
    const version = await runCollecting(opts.pgDumpPath, ["--version", ...args], env, signal);
    throwIfAborted(signal, where);
    if (version.error || version.code !== 0) {
      const missing = version.error?.code === "ENOENT";
      throw coded(
        "SOURCE_FAILED",
        missing
          ? `${where}: pg_dump not found at "${opts.pgDumpPath}" (install postgresql-client or set pgDumpPath)`
          : `${where}: "${opts.pgDumpPath} --version" failed: ${version.error?.message ?? `exit ${version.code ?? version.signal}`} ${lastLines(version.stderr)}`,
        redact,
        {
          ...target,
          pgDumpPath: opts.pgDumpPath,
          ...(version.error?.code ? { errno: version.error.code } : {}),
        },
        version.error,
      );
    }

    const facts = await factsPromise;
    const serverVersion = facts.version.split(" ")[0] ?? facts.version;

    // 3. This pg_dump can dump that server.
    let compat: ReturnType<typeof assertPgDumpCanDump>;
    try {
      compat = assertPgDumpCanDump(version.stdout, facts.num, serverVersion);
    } catch (error) {
      const e = error as StowageError;
      throw coded("SOURCE_FAILED", `${where}: ${e.message}`, redact, { ...target, ...e.details });
    }
    throwIfAborted(signal, where);
    const details: PgDumpDetails = {
      serverVersion,
      pgDumpVersion: compat.pgDumpVersion,
      database,
      format: opts.format,
      databaseBytes: facts.size,
      tables: facts.tables,
      host: conn.host,
      port: conn.port,
    };
    return { env, target, details };
  };

  /** Step 4: pg_dump itself, its stdout a pipe or an open file; `judge` reads its exit. */
  const run = async (prepared: Awaited<ReturnType<typeof prepare>>, stdout: "pipe" | number) => {
    const { env, target } = prepared;
    const { child, exit } = await spawnChild(opts.pgDumpPath, args, {
      env,
      stdio: ["ignore", stdout, "pipe"],
    });
    const stderr = new OutputTail();
    child.stderr!.on("data", (chunk: Buffer) => stderr.push(chunk));
    const judge = (result: ChildExit): Error | undefined => {
      const tail = redact(stderr.toString());
      const reported = /^pg_dump: (error|fatal):|^(ERROR|FATAL): /m.test(tail);
      if (!result.error && result.code === 0 && !result.signal && !reported) return undefined;
      const how = result.error
        ? `could not run: ${result.error.message}`
        : result.signal
          ? `was killed by ${result.signal}`
          : result.code !== 0
            ? `exited with code ${result.code}`
            : "reported an error";
      // Writing into the sink's own file, pg_dump's failure to write (a full disk) is the sink's.
      const sinkFull = typeof stdout === "number" && /could not write to output file/.test(tail);
      const code = sinkFull ? "SINK_WRITE_FAILED" : "SOURCE_FAILED";
      return coded(code, `${where}: pg_dump ${how}${tail ? `: ${lastLines(tail)}` : ""}`, redact, {
        ...target,
        exitCode: result.code,
        signal: result.signal,
        stderr: tail,
      });
    };
    return { child, exit, judge };
  };
  const contentType = opts.format === "plain" ? "application/sql" : "application/x-postgresql-custom";
  const extension = opts.format === "plain" ? ".sql" : ".dump";

  /**
   * pg_dump writes straight into `fd`, as `pg_dump > file` would; see {@link Source.openToFile}.
   * Plain format only: into a file it can seek, pg_dump writes a custom archive's table of contents
   * again at the end, with offsets, over bytes already hashed; only a plain dump is append-only.
   */
  const openToFile = async (fd: number, { signal }: SourceContext): Promise<FileSourceOutput> => {
    const prepared = await prepare(signal);
    const { child, exit, judge } = await run(prepared, fd);
    let stopped = false;
    const stop = async () => {
      stopped = true;
      await stopChild(child);
    };
    const onAbort = () => void stop();
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort(); // fired while pg_dump was being spawned
    const outcome = exit.then((result) => {
      signal.removeEventListener("abort", onAbort);
      if (stopped) throw new StowageError("ABORTED", `${where}: stopped before pg_dump finished`);
      const error = judge(result);
      if (error) throw error;
    });
    outcome.catch(() => undefined); // the core awaits it; never an unhandled rejection
    return {
      contentType,
      extension,
      finished: outcome,
      stop,
      details: async () => {
        await outcome;
        return { ...prepared.details };
      },
    };
  };

  return {
    kind: "postgres",
    name: opts.name ?? database,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const prepared = await prepare(signal);
      const { child, exit, judge } = await run(prepared, "pipe");
      const stream = new ChildStdout("pg_dump", child, exit, judge);
      const onAbort = () => stream.destroy(new StowageError("ABORTED", `${where}: aborted`));
      signal.addEventListener("abort", onAbort, { once: true });
      stream.once("close", () => signal.removeEventListener("abort", onAbort));
      if (signal.aborted) onAbort(); // fired while pg_dump was being spawned
      return {
        stream,
        contentType,
        extension,
        details: async () => {
          await stream.done;
          return { ...prepared.details };
        },
      };
    },
    ...(opts.format === "plain" ? { openToFile } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// pgQuerySource
// ---------------------------------------------------------------------------------------------

/** A value that can stand in for `$n` in a query. */
export type PgParam =
  | string
  | number
  | bigint
  | boolean
  | Date
  | Uint8Array
  | null
  | undefined
  | readonly PgParam[]
  | { [key: string]: unknown };

const quoteLiteral = (text: string): string => {
  if (text.includes("\0")) {
    throw new StowageError(
      "CONFIG_INVALID",
      "pgQuerySource: a parameter holds a NUL character, which PostgreSQL cannot store",
      {
        details: { issues: [{ option: "params", problem: "NUL character" }] },
      },
    );
  }
  const body = text.replace(/'/g, "''");
  return text.includes("\\") ? ` E'${body.replace(/\\/g, "\\\\")}'` : `'${body}'`;
};

function arrayLiteral(values: readonly PgParam[]): string {
  const items = values.map((v) => {
    if (v === null || v === undefined) return "NULL";
    if (Array.isArray(v)) return arrayLiteral(v);
    const text = literalText(v);
    return `"${text.replace(/[\\"]/g, "\\$&")}"`;
  });
  return `{${items.join(",")}}`;
}

/** The text PostgreSQL should read for a parameter (as node-postgres would send it). */
function literalText(value: Exclude<PgParam, null | undefined>): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) {
      throw new StowageError("CONFIG_INVALID", "pgQuerySource: a parameter is an invalid Date", {
        details: { issues: [{ option: "params", problem: "invalid Date" }] },
      });
    }
    return value.toISOString();
  }
  if (value instanceof Uint8Array) return `\\x${Buffer.from(value).toString("hex")}`;
  if (Array.isArray(value)) return arrayLiteral(value);
  return JSON.stringify(value);
}

/**
 * Replaces `$1`, `$2`, … in `sql` with quoted literals of `params`. `COPY (query) TO STDOUT` takes
 * no bind parameters, so they are inlined; the scanner skips string literals (standard and `E''`),
 * quoted identifiers, dollar-quoted bodies and comments, and leaves identifiers such as `a$1` alone.
 * Literals are untyped (`'42'`), so PostgreSQL infers their type from context as it would for
 * a bind parameter.
 *
 * @throws {CONFIG_INVALID} when the query names a parameter that is not given.
 */
export function inlineParams(sql: string, params: readonly PgParam[]): string {
  let out = "";
  let i = 0;
  const n = sql.length;
  const isIdent = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);
  while (i < n) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === "-" && next === "-") {
      const end = sql.indexOf("\n", i);
      const stop = end === -1 ? n : end;
      out += sql.slice(i, stop);
      i = stop;
    } else if (ch === "/" && next === "*") {
      let depth = 0;
      let j = i;
      while (j < n) {
        if (sql[j] === "/" && sql[j + 1] === "*") {
          depth++;
          j += 2;
        } else if (sql[j] === "*" && sql[j + 1] === "/") {
          depth--;
          j += 2;
          if (depth === 0) break;
        } else j++;
      }
      out += sql.slice(i, j);
      i = j;
    } else if (ch === "'") {
      const escapes = (sql[i - 1] === "E" || sql[i - 1] === "e") && !isIdent(sql[i - 2]);
      let j = i + 1;
      while (j < n) {
        if (escapes && sql[j] === "\\") j += 2;
        else if (sql[j] === "'" && sql[j + 1] === "'") j += 2;
        else if (sql[j] === "'") break;
        else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === '"') {
      let j = i + 1;
      while (j < n) {
        if (sql[j] === '"' && sql[j + 1] === '"') j += 2;
        else if (sql[j] === '"') break;
        else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === "$" && !isIdent(sql[i - 1])) {
      const param = /^\$(\d+)/.exec(sql.slice(i, i + 12));
      const tag = param
        ? null
        : /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i));
      if (param) {
        const index = Number(param[1]);
        if (index < 1 || index > params.length) {
          throw new StowageError(
            "CONFIG_INVALID",
            `pgQuerySource: the query uses $${index} but ${params.length} parameter(s) were given`,
            { details: { issues: [{ option: "params", problem: `no parameter $${index}` }] } },
          );
        }
        const value = params[index - 1];
        out += value === null || value === undefined ? "NULL" : quoteLiteral(literalText(value));
        i += param[0].length;
      } else if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        const stop = close === -1 ? n : close + tag[0].length;
        out += sql.slice(i, stop);
        i = stop;
      } else {
        out += ch;
        i++;
      }
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** A query made ready to sit inside `COPY ( … )`: no trailing semicolon, a comment cannot swallow `)`. */
const copyBody = (sql: string) => `\n${sql.replace(/[\s;]+$/, "")}\n`;

export const pgQuerySourceOptionsSchema = z
  .object({
    connection: pgConnectionSchema,
    /** The database to query. @default the connection's database */
    database: z.string().min(1).optional(),
    /** A SELECT (or anything COPY accepts in parentheses); `$1`… refer to `params`. */
    query: z.string().min(1),
    /** Values for `$1`, `$2`, …; inlined as quoted literals (COPY takes no bind parameters). @default [] */
    params: z.array(z.unknown()).default([]),
    /** `csv` (RFC 4180-style, PostgreSQL's CSV) or `jsonl` (one `row_to_json` object a line). @default "jsonl" */
    format: z.enum(["csv", "jsonl"]).default("jsonl"),
    /** A header line for csv. @default true */
    header: z.boolean().default(true),
    /** How long to wait for the server to answer. @default 10000 */
    connectTimeoutMs: z.number().int().positive().default(10_000),
    /** Logical name for the manifest. @default the database name */
    name: z.string().min(1).optional(),
  })
  .strict();
export type PgQuerySourceOptions = z.input<typeof pgQuerySourceOptionsSchema>;

/**
 * Streams a query's result with `COPY (query) TO STDOUT` (pg-copy-streams), with backpressure and
 * one connection. `jsonl` gives each row as `row_to_json` text on its own line, byte for byte as
 * the server renders it (no re-escaping); `csv` is PostgreSQL's CSV with an optional header. The
 * row count goes into the manifest. Destroying the stream or aborting closes the connection.
 *
 * @default format "jsonl", header true, params []
 * @throws {CONFIG_INVALID} on bad options, or a query naming a parameter that is not given.
 * @throws {SOURCE_FAILED} when the server does not answer, the login fails, or the query fails.
 * @throws {UNSUPPORTED} when the optional peers `pg` / `pg-copy-streams` are not installed.
 * @example
 * pgQuerySource({
 *   connection,
 *   query: "SELECT * FROM audit_log WHERE at >= $1 ORDER BY id",
 *   params: [new Date(Date.now() - 86_400_000)],
 *   format: "jsonl",
 * })
 */
export function pgQuerySource(options: PgQuerySourceOptions): Source {
  const opts = parseOptions(pgQuerySourceOptionsSchema, options, "pgQuerySource");
  const conn = resolveConnection(opts.connection, opts.database);
  const database = conn.database;
  const where = `pgQuerySource(${database})`;
  const body = copyBody(inlineParams(opts.query, opts.params as PgParam[]));
  // jsonl: CSV mode with a delimiter and quote that JSON text never holds (row_to_json escapes
  // every control character), so the server never quotes or escapes: each line is the JSON as is.
  const copySql =
    opts.format === "csv"
      ? `COPY (${body}) TO STDOUT WITH (FORMAT csv, HEADER ${opts.header ? "true" : "false"})`
      : `COPY (SELECT row_to_json(stowage_row) FROM (${body}) AS stowage_row) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')`;

  return {
    kind: "postgres-query",
    name: opts.name ?? database,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      throwIfAborted(signal, where);
      const pg = await loadPg("pgQuerySource");
      const copyTo = await loadCopyTo("pgQuerySource");
      let client: PgClient;
      let serverVersion: string;
      try {
        client = await connectClient(pg, conn, database, opts.connectTimeoutMs, signal);
        try {
          serverVersion = String((await client.query("SHOW server_version")).rows[0]?.server_version ?? "");
        } catch (error) {
          await client.end().catch(() => undefined);
          throw error;
        }
      } catch (error) {
        throw connectionError("SOURCE_FAILED", where, conn, database, error, signal);
      }

      const copy = client.query(copyTo(copySql, { highWaterMark: 1 << 20 }));
      let released: Promise<void> | undefined;
      const release = () => {
        released ??= client.end().catch(() => undefined);
        return released;
      };
      const onAbort = () => copy.destroy(new StowageError("ABORTED", `${where}: aborted`));
      signal.addEventListener("abort", onAbort, { once: true });
      // The row count arrives with CommandComplete, after the data; a query queued behind the
      // COPY runs once it has. A failed or stopped COPY ends the client, which drops the socket.
      const ended = finished(copy)
        .then(() => client.query("SELECT 1"))
        .finally(() => {
          signal.removeEventListener("abort", onAbort);
          return release();
        });
      ended.catch(() => undefined); // observed through details()

      return {
        stream: copy,
        contentType: opts.format === "csv" ? "text/csv" : "application/x-ndjson",
        extension: opts.format === "csv" ? ".csv" : ".jsonl",
        details: async () => {
          try {
            await ended;
          } catch (error) {
            throw connectionError("SOURCE_FAILED", where, conn, database, error, signal);
          }
          return {
            database,
            format: opts.format,
            rows: copy.rowCount,
            serverVersion: serverVersion.split(" ")[0] ?? serverVersion,
            query: opts.query,
          };
        },
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------
// restorePostgres
// ---------------------------------------------------------------------------------------------

const isReadable = (v: unknown): v is Readable =>
  typeof v === "object" && v !== null && typeof (v as Readable).pipe === "function" && "readable" in v;

export const restorePostgresOptionsSchema = z
  .object({
    /** The plain bytes of a dump, e.g. what `restore()` returns. */
    stream: z.custom<Readable>(isReadable, "expected a Readable"),
    /** How the dump was made: `plain` goes through psql, `custom` through pg_restore. */
    format: z.enum(["plain", "custom"]),
    /** Where to connect (the user needs rights to create the database if `createDatabase`). */
    connection: pgConnectionSchema,
    /** The database to restore into. */
    database: z.string().min(1),
    /**
     * Create the database first (from template0). It must not exist, unless `clean` is also set,
     * which drops it first. A database created here is dropped again if the restore fails.
     * @default false
     */
    createDatabase: z.boolean().default(false),
    /**
     * Drop what is there first: with `createDatabase`, the whole database (`DROP DATABASE … WITH
     * (FORCE)`); otherwise, for `custom`, the dumped objects (`pg_restore --clean --if-exists`).
     * A plain dump carries DROP statements only if made with `--clean`, so `clean` alone is
     * refused for `plain`.
     * @default false
     */
    clean: z.boolean().default(false),
    /** Restore in one transaction, so a failure leaves the database as it was. @default true */
    singleTransaction: z.boolean().default(true),
    /** A query run on the restored database afterwards (e.g. row counts); its rows are returned. */
    check: z.string().min(1).optional(),
    /** @default "psql" */
    psqlPath: z.string().min(1).default("psql"),
    /** @default "pg_restore" */
    pgRestorePath: z.string().min(1).default("pg_restore"),
    /** More arguments for psql / pg_restore, e.g. ["--no-owner"]. */
    extraArgs: extraArgsSchema,
    /** The database to connect to for CREATE/DROP DATABASE. @default the connection's database, else "postgres" */
    maintenanceDatabase: z.string().min(1).optional(),
    /** @default 10000 */
    connectTimeoutMs: z.number().int().positive().default(10_000),
    signal: signalSchema.optional(),
  })
  .strict();
export type RestorePostgresOptions = z.input<typeof restorePostgresOptionsSchema>;

export interface RestorePostgresResult {
  database: string;
  format: "plain" | "custom";
  /** Whether the database was created by this call. */
  createdDatabase: boolean;
  /** The rows of the `check` query, when one was given. */
  check?: Array<Record<string, unknown>>;
}

/**
 * Restores a dump into a database: a plain dump through `psql -v ON_ERROR_STOP=1`, a custom one
 * through `pg_restore --exit-on-error`, by default in a single transaction. The input is fed with
 * backpressure; if it fails (a bad decryption, an integrity mismatch) or the signal fires, the
 * tool is killed *before* its input is closed, so it cannot commit half a dump. The password goes
 * by environment only.
 *
 * @default createDatabase false, clean false, singleTransaction true
 * @throws {CONFIG_INVALID} on bad options, or `clean` without `createDatabase` for a plain dump.
 * @throws {RESTORE_FAILED} when the database cannot be created, or psql / pg_restore fails (the
 *   redacted stderr tail is in the message and `details.stderr`), or the check query fails.
 * @throws the input stream's own StowageError (e.g. INTEGRITY_MISMATCH) when the input fails.
 * @throws {ABORTED} when `signal` fires.
 * @example
 * const plain = await restore({ sink, manifest, keys: [{ key }] });
 * const { check } = await restorePostgres({
 *   stream: plain, format: "custom", connection, database: "app_restored", createDatabase: true,
 *   check: "SELECT count(*) AS orders FROM orders",
 * });
 */
export async function restorePostgres(options: RestorePostgresOptions): Promise<RestorePostgresResult> {
  let opts: z.output<typeof restorePostgresOptionsSchema>;
  try {
    opts = parseOptions(restorePostgresOptionsSchema, options, "restorePostgres");
    if (opts.clean && !opts.createDatabase && opts.format === "plain") {
      throw new StowageError(
        "CONFIG_INVALID",
        "restorePostgres: clean without createDatabase cannot clean for a plain dump (make the dump with --clean, or set createDatabase to recreate the database)",
        {
          details: {
            issues: [{ option: "clean", problem: "not possible for a plain dump without createDatabase" }],
          },
        },
      );
    }
  } catch (error) {
    (options as { stream?: Readable } | undefined)?.stream?.destroy?.();
    throw error;
  }
  const { signal, database, format, stream: input } = opts;
  const conn = resolveConnection(opts.connection, database);
  const redact = redactor(conn);
  const where = `restorePostgres(${database})`;
  const target = describeTarget(conn, database);
  const maintenance =
    opts.maintenanceDatabase ??
    (typeof opts.connection === "string"
      ? resolveConnection(opts.connection).database
      : opts.connection.database) ??
    "postgres";

  let created = false;
  let restored = false;
  const pg = opts.createDatabase || opts.check ? await loadPg("restorePostgres") : undefined;
  const admin = async (sql: string, withSignal = signal) => {
    const client = await connectClient(pg!, conn, maintenance, opts.connectTimeoutMs, withSignal);
    try {
      await client.query(sql);
    } finally {
      await client.end().catch(() => undefined);
    }
  };
  const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

  try {
    throwIfAborted(signal, where);
    if (opts.createDatabase) {
      try {
        if (opts.clean) await admin(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`);
        await admin(`CREATE DATABASE ${ident(database)} TEMPLATE template0`);
        created = true;
      } catch (error) {
        throw connectionError(
          "RESTORE_FAILED",
          `${where}: creating the database`,
          conn,
          maintenance,
          error,
          signal,
        );
      }
    }

    const env = toolEnvironment(conn, opts.connectTimeoutMs);
    const tool = format === "plain" ? opts.psqlPath : opts.pgRestorePath;
    const args =
      format === "plain"
        ? [
            "-X",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
            // Not --single-transaction: psql would take the end of its input for the end of the
            // dump and COMMIT, and when this process dies the kernel closes psql's stdin a moment
            // before psql itself is killed. The feed below writes BEGIN and COMMIT itself, and
            // COMMIT only once the whole dump has been read and checked.
            ...toolConnectionArgs(conn, database),
            ...opts.extraArgs,
          ]
        : [
            "--exit-on-error",
            "--no-password",
            ...(opts.singleTransaction ? ["--single-transaction"] : []),
            ...(opts.clean && !opts.createDatabase ? ["--clean", "--if-exists"] : []),
            ...toolConnectionArgs(conn, database),
            ...opts.extraArgs,
          ];
    const { child, exit } = await spawnChild<ChildProcessByStdio<Writable, null, Readable>>(tool, args, {
      env,
      stdio: ["pipe", "ignore", "pipe"],
    });
    const stderr = new OutputTail();
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.stdin.on("error", () => undefined); // EPIPE when the tool stops early: its exit says why

    // Feeds the tool's stdin. On failure, kill first and close stdin after: closing first would
    // let psql see a clean end of input and commit a partial dump.
    const toolGone = new Error("the restore tool exited before reading the whole dump");
    const ownTransaction = format === "plain" && opts.singleTransaction;
    if (ownTransaction) child.stdin.write("BEGIN;\n");
    const feed = new Writable({
      highWaterMark: 1 << 20,
      write(chunk: Buffer, _encoding, callback) {
        if (hasExited(child) || child.stdin.destroyed) return callback(toolGone);
        if (child.stdin.write(chunk)) return callback();
        const go = () => {
          child.stdin.off("drain", go);
          child.stdin.off("close", go);
          callback();
        };
        child.stdin.on("drain", go);
        child.stdin.on("close", go);
      },
      final(callback) {
        // Reached only when the dump ended cleanly (restore's checks passed): now it may commit.
        if (ownTransaction) child.stdin.end("\nCOMMIT;\n");
        else child.stdin.end();
        callback();
      },
      destroy(error, callback) {
        if (error && error !== toolGone && !hasExited(child)) child.kill("SIGKILL");
        if (error) child.stdin.destroy();
        callback(error);
      },
    });

    const [fed, result] = await Promise.allSettled([pipeline(input, feed, signal ? { signal } : {}), exit]);
    if (fed.status === "rejected" && fed.reason !== toolGone) {
      await stopChild(child);
      const error = fed.reason;
      if (signal?.aborted) throw coded("ABORTED", `${where}: aborted`, redact, target, error);
      if (isStowageError(error)) throw error;
      throw coded(
        "RESTORE_FAILED",
        `${where}: reading the dump failed: ${errorMessage(error)}`,
        redact,
        target,
        error,
      );
    }
    const exited = (result as PromiseFulfilledResult<ChildExit>).value;
    if (exited.error || exited.code !== 0 || exited.signal || fed.status === "rejected") {
      const tail = redact(stderr.toString());
      const missing = exited.error?.code === "ENOENT";
      const how = exited.signal
        ? `was killed by ${exited.signal}`
        : exited.code !== 0
          ? `exited with code ${exited.code}`
          : "exited before reading the whole dump";
      throw coded(
        "RESTORE_FAILED",
        missing
          ? `${where}: ${tool} not found (install postgresql-client or set ${format === "plain" ? "psqlPath" : "pgRestorePath"})`
          : `${where}: ${tool} ${how}${tail ? `: ${lastLines(tail)}` : ""}`,
        redact,
        { ...target, tool, exitCode: exited.code, signal: exited.signal, stderr: tail },
        exited.error,
      );
    }
    restored = true;

    const report: RestorePostgresResult = { database, format, createdDatabase: created };
    if (opts.check) {
      try {
        const client = await connectClient(pg!, conn, database, opts.connectTimeoutMs, signal);
        try {
          report.check = (await client.query(opts.check)).rows as Array<Record<string, unknown>>;
        } finally {
          await client.end().catch(() => undefined);
        }
      } catch (error) {
        throw connectionError(
          "RESTORE_FAILED",
          `${where}: the check query failed`,
          conn,
          database,
          error,
          signal,
        );
      }
    }
    return report;
  } catch (error) {
    input.destroy();
    // A database this call created and could not fill is removed; one that was restored and only
    // failed its check is left for the caller to inspect.
    if (created && !restored) {
      await admin(`DROP DATABASE IF EXISTS ${ident(database)} WITH (FORCE)`, undefined).catch(
        () => undefined,
      );
    }
    if (isStowageError(error)) throw error;
    throw coded(
      signal?.aborted ? "ABORTED" : "RESTORE_FAILED",
      `${where}: ${errorMessage(error)}`,
      redact,
      target,
      error,
    );
  }
}
