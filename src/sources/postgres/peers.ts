/**
 * The optional peers `pg` and `pg-copy-streams`, loaded only when a function of this adapter runs,
 * and connecting a `pg` client with them.
 */
import type { Client as PgClient } from "pg";
import {
  isStowageError,
  type StowageError,
  type StowageErrorCode,
  throwIfAborted,
} from "../../core/errors.js";
import { importPeer } from "../../core/peer.js";
import {
  coded,
  describeTarget,
  errorMessage,
  passwordFromPassfile,
  type ResolvedConnection,
  redactor,
} from "./connection.js";

export type PgModule = typeof import("pg");

export const loadPg = (where: string): Promise<PgModule> =>
  importPeer("pg", where, async () => {
    const mod = (await import("pg")) as PgModule & { default?: PgModule };
    return mod.default ?? mod;
  });

type CopyToFactory = typeof import("pg-copy-streams").to;
export const loadCopyTo = (where: string): Promise<CopyToFactory> =>
  importPeer("pg-copy-streams", where, async () => {
    const mod = (await import("pg-copy-streams")) as { to?: CopyToFactory; default?: { to: CopyToFactory } };
    const to = mod.to ?? mod.default?.to;
    if (!to) throw new Error("pg-copy-streams has no export `to`");
    return to;
  });

/** Connects a `pg` client; the signal ends a connection attempt in flight. */
export async function connectClient(
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
export function connectionError(
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
