/**
 * PostgreSQL: `pg_dump` and `COPY … TO STDOUT` sources, and a restore through `psql` / `pg_restore`;
 * point-in-time recovery: WAL archiving (`archiveWal` / `fetchWal`, behind `stowage wal-push` and
 * `stowage wal-fetch`), base backups (`pgBaseBackupSource`) and `restorePostgresToPoint`
 * (see docs/PITR.md).
 *
 * `pg` and `pg-copy-streams` are optional peer dependencies, loaded only when a function here runs.
 * Passwords reach the child processes through `PGPASSWORD` (or a passfile named by `PGPASSFILE`),
 * never through argv, and are redacted from every message and detail this module produces.
 *
 * This entry exports the factories, their option schemas and the public types; the parts live in
 * `./postgres/`: connections (options, tool environment, redaction), the optional peers, versions,
 * the pg_dump source, SQL literals and the query source, and the restore.
 */

export type { ArchivedWal, WalFileKind, WalFileName } from "../core/wal-names.js";
// Point-in-time recovery: WAL archiving, base backups, restore to a moment.
export {
  BASE_BACKUP_SOURCE_KIND,
  type PgBaseBackupDetails,
  type PgBaseBackupSourceOptions,
  pgBaseBackupSource,
  pgBaseBackupSourceOptionsSchema,
} from "./postgres/base-backup-source.js";
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
export {
  type PostgresRestoreTargetOptions,
  postgresRestoreTarget,
  postgresRestoreTargetOptionsSchema,
} from "./postgres/restore-target.js";
export {
  type RestorePostgresToPointOptions,
  type RestorePostgresToPointResult,
  type RestorePostgresToPointStart,
  restorePostgresToPoint,
  restorePostgresToPointOptionsSchema,
} from "./postgres/restore-to-point.js";
export type { PgParam } from "./postgres/sql-literals.js";
export {
  type ArchiveWalOptions,
  type ArchiveWalResult,
  archiveWal,
  archiveWalOptionsSchema,
} from "./postgres/wal-archive.js";
export { type FetchWalOptions, fetchWal, fetchWalOptionsSchema } from "./postgres/wal-fetch.js";
export type { RecoveryTarget } from "./postgres/wal-plan.js";
export {
  type ApplyWalRetentionOptions,
  applyWalRetention,
  applyWalRetentionOptionsSchema,
  listArchivedWal,
} from "./postgres/wal-retention.js";
