import { randomBytes } from "node:crypto";
import type { z } from "zod";
import { formatOf } from "../../core/content-types.js";
import { StowageError } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { RestoreTarget } from "../../core/restore-target.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import {
  extraArgsSchema,
  type PgConnection,
  pgConnectionSchema,
  redactor,
  resolveConnection,
} from "./connection.js";
import { connectClient, loadPg } from "./peers.js";
import { restorePostgres } from "./restore.js";

/** The zod schema of {@link PostgresRestoreTargetOptions}, which parses the options at the boundary. */
export const postgresRestoreTargetOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** A connection whose user may CREATE and DROP databases. */
      connection: pgConnectionSchema,
      /** The database restored into; created, and dropped by the caller's cleanup (a drill's scratch). @default "stowage_drill_<job>_<random>" */
      database: z.string().min(1).max(63).optional(),
      /** A query run on the restored database; its rows are the fact `rows` a drill's check sees. */
      query: z.string().min(1).optional(),
      /** More arguments for psql / pg_restore, e.g. ["--no-owner"]. */
      extraArgs: extraArgsSchema,
    })
    .strict(),
);
/** What {@link postgresRestoreTarget} takes: the connection, the scratch database, a check query. */
export interface PostgresRestoreTargetOptions {
  /** A connection whose user may CREATE and DROP databases. */
  connection: PgConnection;
  /** The database restored into; created, and dropped by the caller's cleanup (a drill's scratch). @default "stowage_drill_<job>_<random>" */
  database?: string;
  /** A query run on the restored database; its rows are the fact `rows` a drill's check sees. */
  query?: string;
  /** More arguments for psql / pg_restore, e.g. ["--no-owner"]; connection, file and format ones are refused. @default [] */
  extraArgs?: string[];
}
type _PostgresRestoreTargetOptionsAgrees = Assert<
  Agrees<PostgresRestoreTargetOptions, z.input<typeof postgresRestoreTargetOptionsSchema>>
>;

/** The pg_dump format of a content type, by the one content-type table. */
const dumpFormat = (contentType: string): "plain" | "custom" | undefined => {
  const format = formatOf(contentType);
  return format === "sql" ? "plain" : format === "pg-custom" ? "custom" : undefined;
};

/** A scratch database name: lowercase, `stowage_drill_<job>_<random>`, at most 63 bytes. */
function scratchDatabase(job: string): string {
  const safe = job.replace(/[^a-z0-9_]/g, "_").slice(0, 30);
  return `stowage_drill_${safe}_${randomBytes(4).toString("hex")}`;
}

/**
 * A PostgreSQL database as a {@link RestoreTarget}, for restore drills: a `pg_dump` backup (plain or
 * custom) is restored with {@link restorePostgres} into a database it creates (a scratch one by
 * default), which the caller's cleanup drops. Facts for a check: `database` and the `rows` of `query`.
 *
 * @throws {CONFIG_INVALID} for bad options.
 * @example
 * restoreDrill({ job: db, target: postgresRestoreTarget({ connection: process.env.DRILL_PG_URL!,
 *   query: "SELECT count(*) FROM orders" }), check: ({ rows }) => Number(rows?.[0]?.count) > 0 });
 */
export function postgresRestoreTarget(options: PostgresRestoreTargetOptions): RestoreTarget {
  const opts = parseOptions(postgresRestoreTargetOptionsSchema, options, "postgresRestoreTarget");
  return {
    kind: "postgres",
    accepts: (manifest) =>
      dumpFormat(manifest.content.contentType) !== undefined ||
      `not a pg_dump backup (${manifest.content.contentType})`,
    async restore(plain, { manifest, signal, onCleanup }) {
      const format = dumpFormat(manifest.content.contentType);
      if (!format) {
        plain.destroy();
        throw new StowageError(
          "CONFIG_INVALID",
          `postgresRestoreTarget: ${manifest.artifact.key} is not a PostgreSQL dump (${manifest.content.contentType})`,
          { details: { issues: [{ path: "target", problem: "not a pg_dump backup" }] } },
        );
      }
      const database = opts.database ?? scratchDatabase(manifest.job);
      // Registered before the restore: restorePostgres drops what it created on failure, and
      // DROP … IF EXISTS makes a second drop harmless.
      onCleanup?.(() => dropDatabase(opts.connection, database));
      const result = await restorePostgres({
        stream: plain,
        format,
        connection: opts.connection,
        database,
        createDatabase: true,
        clean: true,
        ...(opts.query ? { check: opts.query } : {}),
        ...(opts.extraArgs.length > 0 ? { extraArgs: opts.extraArgs } : {}),
        signal,
      });
      return {
        bytes: manifest.content.bytes, // restore() errors the stream unless every byte matched
        details: { database, format, ...(result.check ? { rows: result.check.length } : {}) },
        facts: { database, ...(result.check ? { rows: result.check } : {}) },
      };
    },
  };
}

/** Drops a scratch database (on the connection's own database, else "postgres"). */
async function dropDatabase(
  connection: z.output<typeof pgConnectionSchema>,
  database: string,
): Promise<void> {
  const where = "postgresRestoreTarget";
  const conn = resolveConnection(connection);
  const pg = await loadPg(where);
  let client: Awaited<ReturnType<typeof connectClient>> | undefined;
  try {
    client = await connectClient(pg, conn, conn.database, 10_000, undefined);
    await client.query(`DROP DATABASE IF EXISTS "${database.replace(/"/g, '""')}" WITH (FORCE)`);
  } catch (error) {
    const redact = redactor(conn);
    const cause = error instanceof Error ? new Error(redact(error.message)) : error;
    throw new StowageError("RESTORE_FAILED", `${where}: dropping the scratch database ${database} failed`, {
      cause,
      details: { database },
    });
  } finally {
    await client?.end().catch(() => undefined);
  }
}
