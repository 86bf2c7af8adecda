/**
 * `restorePostgres`: a dump fed into `psql` or `pg_restore`, optionally into a database created for
 * it, which is dropped again if the restore fails.
 */
import type { ChildProcessByStdio } from "node:child_process";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import {
  type ChildExit,
  hasExited,
  lastLines,
  OutputTail,
  spawnChild,
  stopChild,
} from "../../core/child-process.js";
import { isStowageError, StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions, signalSchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { PgConnection } from "./connection.js";
import {
  coded,
  describeTarget,
  errorMessage,
  extraArgsSchema,
  pgConnectionSchema,
  redactor,
  resolveConnection,
  toolConnectionArgs,
  toolEnvironment,
} from "./connection.js";
import { connectClient, connectionError, loadPg } from "./peers.js";

const isReadable = (v: unknown): v is Readable =>
  typeof v === "object" && v !== null && typeof (v as Readable).pipe === "function" && "readable" in v;

/** The zod schema of {@link RestorePostgresOptions}, which parses the options at the boundary. */
export const restorePostgresOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/**
 * What {@link restorePostgres} takes: the dump and its format, where to restore it, and how
 * (create or clean the database, one transaction, a check query).
 */
export interface RestorePostgresOptions {
  /** The plain bytes of a dump, e.g. what `restore()` returns. */
  stream: Readable;
  /** How the dump was made: `plain` goes through psql, `custom` through pg_restore. */
  format: "custom" | "plain";
  /** Where to connect (the user needs rights to create the database if `createDatabase`). */
  connection: PgConnection;
  /** The database to restore into. */
  database: string;
  /**
   * Create the database first (from template0). It must not exist, unless `clean` is also set,
   * which drops it first. A database created here is dropped again if the restore fails.
   * @default false
   */
  createDatabase?: boolean;
  /**
   * Drop what is there first: with `createDatabase`, the whole database (`DROP DATABASE … WITH
   * (FORCE)`); otherwise, for `custom`, the dumped objects (`pg_restore --clean --if-exists`).
   * A plain dump carries DROP statements only if made with `--clean`, so `clean` alone is
   * refused for `plain`.
   * @default false
   */
  clean?: boolean;
  /** Restore in one transaction, so a failure leaves the database as it was. @default true */
  singleTransaction?: boolean;
  /** A query run on the restored database afterwards (e.g. row counts); its rows are returned. */
  check?: string;
  /** @default "psql" */
  psqlPath?: string;
  /** @default "pg_restore" */
  pgRestorePath?: string;
  /** More arguments for psql / pg_restore, e.g. ["--no-owner"]. */
  extraArgs?: string[];
  /** The database to connect to for CREATE/DROP DATABASE. @default the connection's database, else "postgres" */
  maintenanceDatabase?: string;
  /** @default 10000 */
  connectTimeoutMs?: number;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestorePostgresOptionsAgrees = Assert<
  Agrees<RestorePostgresOptions, z.input<typeof restorePostgresOptionsSchema>>
>;

/** What {@link restorePostgres} did. */
export interface RestorePostgresResult {
  /** The database restored into. */
  database: string;
  /** The dump's format, which chose the tool: psql for `plain`, pg_restore for `custom`. */
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
            issues: [{ path: "clean", problem: "not possible for a plain dump without createDatabase" }],
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
