/**
 * `stowage wal-push <path>` and `stowage wal-fetch <name> <dest>`: the commands PostgreSQL runs as
 * its `archive_command` and `restore_command`. The job (its sink, transforms and keys) comes from
 * the config; keys never travel on the command line.
 */
import { resolve } from "node:path";
import { isStowageError } from "../core/errors.js";
import type { StowageConfig } from "../jobs/config.js";
import type { Job } from "../jobs/job.js";
import { archiveWal, MAX_AHEAD } from "../sources/postgres/wal-archive.js";
import { fetchWal } from "../sources/postgres/wal-fetch.js";
import { selectJobs } from "./config.js";
import { type Flags, positiveInteger } from "./flags.js";
import { EXIT, type Io, print, reportError, UsageError } from "./output.js";

/**
 * wal-fetch's exit code for every failure but a missing file. PostgreSQL takes any exit code up to
 * 125 for "not archived" and ends recovery there, promoting a cluster that is missing what a wrong
 * key or a damaged file kept back; above 125 it aborts recovery instead, which is what such a
 * failure needs.
 */
export const WAL_FETCH_FATAL = 126;

async function oneJob(flags: Flags, load: () => Promise<StowageConfig>, command: string): Promise<Job> {
  const [name, ...more] = flags.job ?? [];
  if (!name || more.length > 0) throw new UsageError(`${command} needs exactly one --job`);
  const [job] = selectJobs(await load(), [name]);
  return job!;
}

function positionals(flags: Flags, count: number, usage: string): string[] {
  const given = flags.positionals ?? [];
  if (given.length !== count) throw new UsageError(`usage: stowage ${usage}`);
  return given;
}

/** Archives one WAL file; exit 0 only once it (and its record) is durably stored. */
export async function walPushCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const [path] = positionals(flags, 1, "wal-push <path> --job <name>");
  const ahead = positiveInteger(flags.ahead, "ahead", MAX_AHEAD) ?? 0;
  const job = await oneJob(flags, load, "wal-push");
  const result = await archiveWal({
    sink: job.sink,
    job: job.name,
    path: resolve(io.cwd, path!),
    transforms: job.transforms,
    ahead,
    signal: io.signal,
  });
  if (flags.json) print(io, JSON.stringify({ ok: true, ...result }));
  return EXIT.ok;
}

/**
 * Fetches one WAL file to `dest`. Exit 0: written; 1, quietly: not in the archive (PostgreSQL asks
 * for files that do not exist); {@link WAL_FETCH_FATAL}: anything else, which aborts recovery.
 */
export async function walFetchCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  try {
    const [name, dest] = positionals(flags, 2, "wal-fetch <name> <dest> --job <name>");
    const job = await oneJob(flags, load, "wal-fetch");
    const result = await fetchWal({
      sink: job.sink,
      job: job.name,
      name: name!,
      dest: resolve(io.cwd, dest!),
      keys: job.keys,
      signal: io.signal,
    });
    if (flags.json) print(io, JSON.stringify({ ok: true, ...result }));
    return EXIT.ok;
  } catch (error) {
    if (isStowageError(error, "NOT_FOUND")) return EXIT.failed;
    await reportError(error, "wal-fetch", flags, io);
    return WAL_FETCH_FATAL;
  }
}
