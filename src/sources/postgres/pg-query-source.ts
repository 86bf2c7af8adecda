/**
 * `pgQuerySource`: a query's result streamed with `COPY (query) TO STDOUT` as CSV or JSON lines.
 */
import { finished } from "node:stream/promises";
import type { Client as PgClient } from "pg";
import type { z } from "zod";
import { StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import type { PgConnection } from "./connection.js";
import { pgConnectionSchema, resolveConnection } from "./connection.js";
import { connectClient, connectionError, loadCopyTo, loadPg } from "./peers.js";
import { copyBody, inlineParams, type PgParam } from "./sql-literals.js";

/** The zod schema of {@link PgQuerySourceOptions}, which parses the options at the boundary. */
export const pgQuerySourceOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/** What {@link pgQuerySource} takes: the connection, the query, and the output format. */
export interface PgQuerySourceOptions {
  /** Where to connect: a URL or fields. The password never reaches argv, logs or errors. */
  connection: PgConnection;
  /** A SELECT (or anything COPY accepts in parentheses); `$1`… refer to `params`. */
  query: string;
  /** The database to query. @default the connection's database */
  database?: string;
  /** Values for `$1`, `$2`, …; inlined as quoted literals (COPY takes no bind parameters). @default [] */
  params?: unknown[];
  /** `csv` (RFC 4180-style, PostgreSQL's CSV) or `jsonl` (one `row_to_json` object a line). @default "jsonl" */
  format?: "csv" | "jsonl";
  /** A header line for csv. @default true */
  header?: boolean;
  /** How long to wait for the server to answer. @default 10000 */
  connectTimeoutMs?: number;
  /** Logical name for the manifest. @default the database name */
  name?: string;
}
type _PgQuerySourceOptionsAgrees = Assert<
  Agrees<PgQuerySourceOptions, z.input<typeof pgQuerySourceOptionsSchema>>
>;

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
