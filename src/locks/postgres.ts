/**
 * `stowage/locks/postgres`: a {@link Lock} on PostgreSQL session advisory locks, as job queues
 * (graphile-worker, pg-boss) use them. Each lease is one session of its own: the server releases
 * the lock the moment that session ends — the holder's process killed, its connection cut — and
 * `idle_session_timeout` (PostgreSQL 14+) set to the ttl ends the session of a holder that stops
 * renewing (a paused process) within its ttl.
 */
import { createHash } from "node:crypto";
import type { Client as PgClient } from "pg";
import type { z } from "zod";
import {
  type AcquireOptions,
  checkAcquire,
  type Lease,
  type Lock,
  lockFailed,
  trackedLease,
} from "../core/lock.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { type PgConnection, pgConnectionSchema, resolveConnection } from "../sources/postgres/connection.js";
import { connectClient, connectionError, loadPg } from "../sources/postgres/peers.js";

/** The zod schema of {@link PostgresLockOptions}, which parses the options at the boundary. */
export const postgresLockOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The database whose advisory locks are used (a primary: the fencing token is a transaction id). */
      connection: pgConnectionSchema,
      /** @default 10000 */
      connectTimeoutMs: z.number().int().positive().default(10_000),
    })
    .strict(),
);
/** What {@link postgresLock} takes: the connection to the primary and its connect timeout. */
export interface PostgresLockOptions {
  /** The database whose advisory locks are used (a primary: the fencing token is a transaction id). */
  connection: PgConnection;
  /** How long to wait for the server to answer. @default 10000 */
  connectTimeoutMs?: number;
}
type _PostgresLockOptionsAgrees = Assert<
  Agrees<PostgresLockOptions, z.input<typeof postgresLockOptionsSchema>>
>;

/** The advisory lock key of a name: 64 bits of its SHA-256, so any name fits. */
function lockKey(name: string): string {
  return createHash("sha256").update(`stowage:${name}`).digest().readBigInt64BE(0).toString();
}

/**
 * A lock on `pg_try_advisory_lock(key)` in a session opened for each lease, with `key` 64 bits of
 * the lock name's SHA-256. The fencing token is a fresh transaction id (`pg_current_xact_id()`),
 * which only grows. Renewing proves the session still holds the lock and resets its idle timer;
 * releasing unlocks and closes the session. Loads the optional peer `pg`.
 *
 * @throws {CONFIG_INVALID} naming each bad option.
 * @example
 * startScheduler(jobs, { lock: postgresLock({ connection: process.env.DATABASE_URL! }) });
 */
export function postgresLock(options: PostgresLockOptions): Lock {
  const opts = parseOptions(postgresLockOptionsSchema, options, "postgresLock");
  const conn = resolveConnection(opts.connection);
  return {
    kind: "postgres",
    async acquire(name: string, acquire: AcquireOptions): Promise<Lease | undefined> {
      checkAcquire("postgres", name, acquire);
      const { ttlMs, holder, signal } = acquire;
      const key = lockKey(name);
      const started = performance.now();
      let client: PgClient | undefined;
      let row: { ok: boolean; token: string } | undefined;
      try {
        const pg = await loadPg("postgresLock");
        client = await connectClient(pg, conn, conn.database, opts.connectTimeoutMs, signal);
        try {
          await client.query(`SET idle_session_timeout = ${Math.max(1, Math.floor(ttlMs))}`);
        } catch (error) {
          // Before PostgreSQL 14 there is no idle timeout: the lock then lasts as long as the session.
          if ((error as { code?: string }).code !== "42704") throw error;
        }
        const result = await client.query<{ ok: boolean; token: string }>(
          "SELECT pg_try_advisory_lock($1::bigint) AS ok, pg_current_xact_id()::text AS token",
          [key],
        );
        row = result.rows[0];
      } catch (error) {
        await client?.end().catch(() => undefined);
        throw lockFailed(
          "postgres",
          name,
          "taking an advisory lock",
          connectionError("LOCK_FAILED", "postgresLock", conn, conn.database, error, signal),
        );
      }
      const session = client;
      if (!row?.ok) {
        await session.end().catch(() => undefined);
        return undefined;
      }
      return trackedLease(
        { name, holder, fencingToken: Number(row.token), ttlMs, kind: "postgres" },
        {
          async renew() {
            try {
              const held = await session.query<{ n: string }>(
                "SELECT count(*)::text AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()",
              );
              return Number(held.rows[0]?.n ?? 0) > 0;
            } catch {
              // The session is gone (ended by the server, the connection cut): so is its lock.
              return false;
            }
          },
          async release() {
            try {
              await session.query("SELECT pg_advisory_unlock($1::bigint)", [key]);
            } finally {
              await session.end().catch(() => undefined);
            }
          },
        },
        started,
      );
    },
  };
}
