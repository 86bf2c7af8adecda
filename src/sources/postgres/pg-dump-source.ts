/**
 * `pgDumpSource`: checks that the server answers and that this pg_dump can dump it, then streams
 * pg_dump's output (or lets it write straight into the sink's file).
 */
import type { z } from "zod";
import {
  type ChildExit,
  ChildStdout,
  lastLines,
  OutputTail,
  runCollecting,
  spawnChild,
  stopChild,
} from "../../core/child-process.js";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { FileSourceOutput, Source, SourceContext, SourceOutput } from "../../core/types.js";
import type { PgConnection } from "./connection.js";
import {
  coded,
  describeTarget,
  extraArgsSchema,
  pgConnectionSchema,
  redactor,
  resolveConnection,
  toolConnectionArgs,
  toolEnvironment,
} from "./connection.js";
import { connectClient, connectionError, loadPg } from "./peers.js";
import { assertPgDumpCanDump } from "./version.js";

/** The zod schema of {@link PgDumpSourceOptions}, which parses the options at the boundary. */
export const pgDumpSourceOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/**
 * What {@link pgDumpSource} takes: the connection, the pg_dump binary and format, and what to
 * include; the password goes to pg_dump through its environment, never its arguments.
 */
export interface PgDumpSourceOptions {
  /** Where to connect: a URL or fields. The password goes to pg_dump by environment only. */
  connection: PgConnection;
  /** The database to dump. @default the connection's database */
  database?: string;
  /** `plain` SQL (restore with psql) or pg_dump's `custom` archive (restore with pg_restore). @default "plain" */
  format?: "custom" | "plain";
  /** The pg_dump binary. @default "pg_dump" (from PATH) */
  pgDumpPath?: string;
  /** Only these schemas (`--schema`). */
  schemas?: string[];
  /** Only these tables (`--table`, patterns allowed). */
  tables?: string[];
  /** Leave these tables out (`--exclude-table`). */
  excludeTables?: string[];
  /** More pg_dump arguments, e.g. ["--no-owner", "-Z0"]; connection, file and format ones are refused. */
  extraArgs?: string[];
  /** How long to wait for the server to answer. @default 10000 */
  connectTimeoutMs?: number;
  /** Logical name for the manifest. @default the database name */
  name?: string;
}
type _PgDumpSourceOptionsAgrees = Assert<
  Agrees<PgDumpSourceOptions, z.input<typeof pgDumpSourceOptionsSchema>>
>;

/** Facts a `pgDumpSource` records in the manifest. */
export interface PgDumpDetails extends Record<string, unknown> {
  /** The server's `version()`, first word (e.g. `16.4`). */
  serverVersion: string;
  /** The version pg_dump reported (`pg_dump --version`). */
  pgDumpVersion: string;
  /** The database dumped. */
  database: string;
  /** pg_dump's format: `plain` SQL (psql restores it) or `custom` (pg_restore). */
  format: "plain" | "custom";
  /** `pg_database_size` when the dump started, in bytes. */
  databaseBytes: number;
  /** Ordinary and partitioned tables outside the system schemas. */
  tables: number;
  /** The server's host as connected to (never the password). */
  host: string;
  /** The server's port. */
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
