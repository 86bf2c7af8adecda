/**
 * `fetchWal`: one archived WAL file back to where PostgreSQL's `restore_command` wants it.
 */
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import { isStowageError, StowageError, throwIfAborted, wrapError } from "../../core/errors.js";
import { JOB_NAME_PATTERN } from "../../core/keys.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema } from "../../core/options.js";
import { restore } from "../../core/restore.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { DecryptionKey, Sink } from "../../core/types.js";
import { walNameOrThrow } from "../../core/wal-names.js";
import { readWalRecord } from "./wal-record.js";

/** The zod schema of {@link FetchWalOptions}, which parses the options at the boundary. */
export const fetchWalOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      job: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
      /** The WAL file's name, `%f` of `restore_command`. */
      name: z.string().min(1),
      /** Where to write it, `%p` of `restore_command` (relative to the data directory there). */
      dest: z.string().min(1),
      /** Keys for an encrypted archive, as for `restore`. @default [] */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).default([]),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** What {@link fetchWal} takes: the archive's sink and job, the file (`%f`), where to write it (`%p`), keys. */
export interface FetchWalOptions {
  /** The sink that holds the WAL archive. */
  sink: Sink;
  /** The job whose prefix holds the WAL: `<job>/wal/<timeline>/` (lowercase letters, digits, '.', '_' and '-', at most 128). */
  job: string;
  /** The WAL file's name, `%f` of `restore_command`. */
  name: string;
  /** Where to write it, `%p` of `restore_command` (relative to the data directory there). */
  dest: string;
  /** Keys for an encrypted archive, as for `restore`. @default [] */
  keys?: DecryptionKey[];
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _FetchWalOptionsAgrees = Assert<Agrees<FetchWalOptions, z.input<typeof fetchWalOptionsSchema>>>;

/**
 * Fetches one archived WAL file: reads its record, undoes its transforms (checking the stored and
 * plain SHA-256 and sizes, authenticating every encrypted chunk) into a temporary file beside
 * `dest`, syncs it and renames it to `dest`. `dest` appears whole or not at all.
 *
 * PostgreSQL asks for files that do not exist (the next segment, a newer timeline's history), so
 * a missing one is NOT_FOUND and nothing else: `stowage wal-fetch` exits 1 quietly for it, and
 * with a code that aborts recovery for every other failure, so that a wrong key or a damaged file
 * never ends recovery early at the wrong point.
 *
 * @returns the plain size written.
 * @throws {NOT_FOUND} no such archived file. {CONFIG_INVALID} a name that is not a WAL file's.
 * @throws {DECRYPT_FAILED} no key opens it. {INTEGRITY_MISMATCH} it is damaged.
 * @throws {RESTORE_FAILED} `dest` could not be written. {SINK_READ_FAILED} {ABORTED}
 * @example
 * await fetchWal({ sink, job: "app-db", name: "000000010000000000000003", dest: "pg_wal/RECOVERYXLOG", keys: [{ key }] });
 */
export async function fetchWal(options: FetchWalOptions): Promise<{
  /** The WAL file written to `dest`. */
  name: string;
  /** Its plain size in bytes. */
  bytes: number;
}> {
  const opts = parseOptions(fetchWalOptionsSchema, options, "fetchWal");
  const { sink, job, dest, keys, signal } = opts;
  const file = walNameOrThrow(opts.name, "name", "fetchWal");
  const where = `fetchWal ${job} ${file.name}`;
  throwIfAborted(signal, where);
  const record = await readWalRecord(sink, job, file, signal);
  if (!record) {
    throw new StowageError("NOT_FOUND", `${where}: not in the archive`, { details: { name: file.name } });
  }
  // No verifying read first: nothing reaches `dest` until every digest has been checked.
  const plain = await restore({
    sink,
    manifest: record,
    keys,
    verifyFirst: false,
    ...(signal ? { signal } : {}),
  });
  const temp = join(dirname(dest), `.${basename(dest)}.${randomBytes(6).toString("hex")}.stowage-tmp`);
  try {
    await pipeline(plain, createWriteStream(temp, { flags: "wx", mode: 0o600 }), signal ? { signal } : {});
    const handle = await open(temp, "r+");
    await handle.sync().finally(() => handle.close());
    await rename(temp, dest);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    if (isStowageError(error)) throw error;
    throw wrapError(error, "RESTORE_FAILED", `${where}: writing ${dest}`, { name: file.name, dest }, signal);
  }
  return { name: file.name, bytes: record.content.bytes };
}
