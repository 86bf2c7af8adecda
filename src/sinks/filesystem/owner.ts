/**
 * The liveness record of a filesystem sink's temporary file: who is writing it, and a heartbeat,
 * so that a sweep removes the file of a writer that died and never the file of one still writing,
 * on this host or on another host sharing the folder (NFS).
 *
 * Beside every temporary file `.<name>.stowage-tmp-<random>` lies its owner record, the same name
 * with `.owner` appended, created *before* the file and removed *after* it has been renamed into
 * place or removed. It holds one line of JSON:
 *
 * ```json
 * {"v":1,"host":"db-1","bootId":"79141590-…","pidNs":"pid:[4026531836]","pid":4242,
 *  "pidStart":"81736263","startedAt":"2026-11-29T03:00:00.000Z","heartbeatMs":30000}
 * ```
 *
 * and while the write goes on the writer rewrites it every `heartbeatMs` (30 s by default), which
 * makes the *filesystem* stamp the record's mtime with its own clock. A sweep decides:
 *
 * 1. **Same machine** — the record's host name, boot id (`/proc/sys/kernel/random/boot_id`) and
 *    pid namespace all equal the sweeper's: the writer is alive exactly when a process with that
 *    pid exists and started at the recorded time (`/proc/<pid>/stat`, field 22), so a recycled
 *    pid is not mistaken for the writer. A crashed writer's file is removed by the next sweep, and
 *    a stalled one (pg_dump waiting for a lock for hours) is kept, whatever the clocks say.
 * 2. **Anywhere else** (another host, another container's pid namespace, a reboot since, no
 *    `/proc`, or a record not yet written): the heartbeat decides. The sweeper learns the
 *    filesystem's "now" by creating a probe file in the swept folder and reading its mtime, and
 *    calls the writer dead when its record's mtime is more than `max(15 min, 20 × heartbeatMs)`
 *    older than that. Both times are stamped by the same filesystem (on NFS, the server), so the
 *    hosts' own clocks may differ by any amount; the window leaves room for attribute caching and
 *    for filesystems that take a client's clock (then up to ~14 minutes of skew). When no probe
 *    can be made (a read-only folder), such records are kept: a sweep that cannot tell never
 *    removes.
 *
 * A temporary file with no record (left by a version without records) is judged by its own mtime
 * against the sweep's `now - olderThanMs`, as before.
 *
 * @internal
 */
import { randomBytes } from "node:crypto";
import type { Stats } from "node:fs";
import { type FileHandle, open, readFile, readlink, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";

/** The owner record of a temporary file is the file's name with this appended. */
export const OWNER_SUFFIX = ".owner";
/** The shortest time without a heartbeat after which a writer on another machine counts as dead. */
export const STALE_MIN_MS = 15 * 60_000;
/** How many missed heartbeats make a writer dead (when that is longer than {@link STALE_MIN_MS}). */
export const STALE_BEATS = 20;

/** What an owner record holds. */
export interface OwnerRecord {
  v: 1;
  host: string;
  bootId?: string;
  pidNs?: string;
  pid: number;
  /** The process's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22). */
  pidStart?: string;
  /** When the write began, by the writer's clock (for people; never compared with another clock). */
  startedAt: string;
  heartbeatMs: number;
}

type Machine = Pick<OwnerRecord, "host" | "bootId" | "pidNs">;

const readTrimmed = (path: string) =>
  readFile(path, "utf8").then(
    (text) => text.trim() || undefined,
    () => undefined,
  );

/**
 * A process's start time (`/proc/<pid>/stat`, field 22): the string, `null` when there is no such
 * process, `undefined` when it cannot be told (no /proc, no permission).
 */
export async function processStart(pid: number): Promise<string | null | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? null : undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count from after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return null; // exited, not yet reaped
  return fields[19];
}

let machine: Promise<Machine & { pidStart?: string }> | undefined;

/** This process's machine and start time, read once. */
export function thisMachine(): Promise<Machine & { pidStart?: string }> {
  machine ??= (async () => {
    const [bootId, pidNs, pidStart] = await Promise.all([
      readTrimmed("/proc/sys/kernel/random/boot_id"),
      readlink("/proc/self/ns/pid").catch(() => undefined),
      processStart(process.pid),
    ]);
    return {
      host: hostname(),
      ...(bootId ? { bootId } : {}),
      ...(pidNs ? { pidNs } : {}),
      ...(pidStart ? { pidStart } : {}),
    };
  })();
  return machine;
}

/** An owner record being kept alive; `release` stops the heartbeat and removes the record. */
export interface Claim {
  release(): Promise<void>;
}

/**
 * Creates the owner record of `temp` (before `temp` itself) and starts its heartbeat.
 * @throws what `open` throws (ENOENT when the folder is gone, EROFS, EACCES, ...)
 */
export async function claim(temp: string, fileMode: number, heartbeatMs: number): Promise<Claim> {
  const me = await thisMachine();
  const record: OwnerRecord = {
    v: 1,
    ...me,
    pid: process.pid,
    startedAt: new Date().toISOString(),
    heartbeatMs,
  };
  const bytes = Buffer.from(`${JSON.stringify(record)}\n`);
  const path = temp + OWNER_SUFFIX;
  const handle: FileHandle = await open(path, "wx", fileMode);
  try {
    await handle.write(bytes, 0, bytes.length, 0);
  } catch (error) {
    await handle.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw error;
  }
  // Rewriting the same bytes is a write all the same: the filesystem stamps the mtime.
  let beating: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    beating = handle.write(bytes, 0, bytes.length, 0).catch(() => undefined);
  }, heartbeatMs);
  timer.unref();
  let released: Promise<void> | undefined;
  return {
    release() {
      released ??= (async () => {
        clearInterval(timer);
        await beating;
        await handle.close().catch(() => undefined);
        await unlink(path).catch(() => undefined);
      })();
      return released;
    },
  };
}

/** Parses a record; undefined for one that is empty (being written) or not a record. */
export function parseRecord(text: string): OwnerRecord | undefined {
  try {
    const r = JSON.parse(text) as Partial<OwnerRecord> | null;
    if (r?.v !== 1 || typeof r.host !== "string" || typeof r.pid !== "number") return undefined;
    return r as OwnerRecord;
  } catch {
    return undefined;
  }
}

/**
 * The filesystem's own "now" in `folder`: the mtime of a probe file it stamps on creation.
 * Undefined when no file can be made there. The probe carries the temporary marker (`list` never
 * shows it) and is removed at once.
 */
export async function filesystemNow(folder: string, marker: string): Promise<number | undefined> {
  const probe = join(folder, `.clock${marker}${randomBytes(6).toString("hex")}`);
  try {
    const handle = await open(probe, "wx", 0o600);
    try {
      return (await handle.stat()).mtimeMs;
    } finally {
      await handle.close().catch(() => undefined);
      await unlink(probe).catch(() => undefined);
    }
  } catch {
    return undefined;
  }
}

/**
 * Whether the writer that owns a record is still alive (see the module's comment for the rule).
 * `recordText` is undefined when the record could not be read; `fsNow` gives the filesystem's time.
 */
export async function ownerAlive(
  recordText: string | undefined,
  recordStat: Pick<Stats, "mtimeMs">,
  fsNow: () => Promise<number | undefined>,
): Promise<boolean> {
  const record = recordText === undefined ? undefined : parseRecord(recordText);
  if (record) {
    const me = await thisMachine();
    const sameMachine =
      record.host === me.host &&
      record.bootId !== undefined &&
      record.bootId === me.bootId &&
      record.pidNs !== undefined &&
      record.pidNs === me.pidNs &&
      record.pidStart !== undefined;
    if (sameMachine) {
      const start = await processStart(record.pid);
      if (start === null) return false;
      if (start !== undefined) return start === record.pidStart;
    }
  }
  const now = await fsNow();
  if (now === undefined) return true; // cannot tell: keep
  const beat = record && Number.isFinite(record.heartbeatMs) ? record.heartbeatMs : 30_000;
  return now - recordStat.mtimeMs <= Math.max(STALE_MIN_MS, STALE_BEATS * beat);
}
