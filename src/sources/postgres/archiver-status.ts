/**
 * What the server says about its WAL archiving (`pg_stat_archiver` and the WAL position), for
 * `stowage status`: the archiver's lag and failures, which the archive alone cannot show.
 */
import type { ArchiverStats } from "../../policies/wal-report.js";
import type { ResolvedConnection } from "./connection.js";
import { connectClient, connectionError, loadPg } from "./peers.js";

const QUERY = `SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current,
  archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time
  FROM pg_stat_archiver`;

interface Row {
  current: string | null;
  archived_count: string;
  last_archived_wal: string | null;
  last_archived_time: Date | null;
  failed_count: string;
  last_failed_wal: string | null;
  last_failed_time: Date | null;
}

/**
 * Asks the server once. A standby has no current WAL position of its own (`currentSegment` is
 * left out). @throws {SOURCE_FAILED} the server cannot be reached; {ABORTED}
 */
export async function archiverStatus(
  conn: ResolvedConnection,
  connectTimeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<ArchiverStats> {
  const where = `archiverStatus(${conn.host}:${conn.port})`;
  const database = conn.database;
  try {
    const pg = await loadPg(where);
    const client = await connectClient(pg, conn, database, connectTimeoutMs, signal);
    try {
      const row = (await client.query<Row>(QUERY)).rows[0]!;
      return {
        ...(row.current ? { currentSegment: row.current } : {}),
        archivedCount: Number(row.archived_count),
        lastArchivedWal: row.last_archived_wal,
        lastArchivedAt: row.last_archived_time?.toISOString() ?? null,
        failedCount: Number(row.failed_count),
        lastFailedWal: row.last_failed_wal,
        lastFailedAt: row.last_failed_time?.toISOString() ?? null,
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  } catch (error) {
    throw connectionError("SOURCE_FAILED", where, conn, database, error, signal);
  }
}
