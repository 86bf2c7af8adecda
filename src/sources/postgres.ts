/**
 * PostgreSQL: `pg_dump` and `COPY … TO STDOUT` sources, and a restore through `psql` / `pg_restore`.
 *
 * `pg` and `pg-copy-streams` are optional peer dependencies, loaded only when a function here runs.
 * Passwords reach the child processes through `PGPASSWORD` (or a passfile named by `PGPASSFILE`),
 * never through argv, and are redacted from every message and detail this module produces.
 *
 * This entry exports the factories, their option schemas and the public types; the parts live in
 * `./postgres/`: connections (options, tool environment, redaction), the optional peers, versions,
 * the pg_dump source, SQL literals and the query source, and the restore.
 */

export {
  type PgConnection,
  type PgConnectionFields,
  pgConnectionFieldsSchema,
  pgConnectionSchema,
} from "./postgres/connection.js";
export {
  type PgDumpDetails,
  type PgDumpSourceOptions,
  pgDumpSource,
  pgDumpSourceOptionsSchema,
} from "./postgres/pg-dump-source.js";
export {
  type PgQuerySourceOptions,
  pgQuerySource,
  pgQuerySourceOptionsSchema,
} from "./postgres/pg-query-source.js";
export {
  type RestorePostgresOptions,
  type RestorePostgresResult,
  restorePostgres,
  restorePostgresOptionsSchema,
} from "./postgres/restore.js";
export type { PgParam } from "./postgres/sql-literals.js";
