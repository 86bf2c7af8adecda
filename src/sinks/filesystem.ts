import { randomBytes } from "node:crypto";
import type { Dirent, Stats } from "node:fs";
import {
  type FileHandle,
  lstat,
  mkdir,
  open,
  opendir,
  readFile,
  readlink,
  rename,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import type { z } from "zod";
import { notFound, StowageError, type StowageErrorCode, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type {
  Leftover,
  LeftoverOptions,
  ObjectInfo,
  OpenFileOptions,
  ReadOptions,
  Sink,
  SinkFile,
  WriteOptions,
  WrittenObject,
} from "../core/types.js";
import { type Claim, claim, filesystemNow, OWNER_SUFFIX, ownerAlive } from "./filesystem/owner.js";

/** The zod schema of {@link FilesystemSinkOptions}, which parses the options at the boundary. */
export const filesystemSinkOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The folder that holds every key; created if missing. It may itself be a symbolic link. */
      root: z.string().min(1, "root must name a folder"),
      /** Permissions of written files; backups are private by default. @default 0o600 */
      fileMode: z.number().int().min(0).max(0o777).default(0o600),
      /** Permissions of folders the sink creates. @default 0o700 */
      dirMode: z.number().int().min(0).max(0o777).default(0o700),
      /**
       * How often a writer rewrites the owner record of its temporary file while it writes, so that
       * a sweep on another host can tell it is alive (see {@link FilesystemSink.leftovers}).
       * @default 30000
       */
      heartbeatMs: z.number().int().min(10).max(600_000).default(30_000),
    })
    .strict(),
);
export interface FilesystemSinkOptions {
  /** The folder that holds every key; created if missing. It may itself be a symbolic link. */
  root: string;
  /** Permissions of written files; backups are private by default. @default 0o600 */
  fileMode?: number;
  /** Permissions of folders the sink creates. @default 0o700 */
  dirMode?: number;
  /**
   * How often a writer rewrites the owner record of its temporary file while it writes, so that
   * a sweep on another host can tell it is alive (see {@link FilesystemSink.leftovers}).
   * @default 30000
   */
  heartbeatMs?: number;
}
type _FilesystemSinkOptionsAgrees = Assert<
  Agrees<FilesystemSinkOptions, z.input<typeof filesystemSinkOptionsSchema>>
>;

/**
 * Temporary files (and their owner records, `<temp>.owner`) carry this marker in their name;
 * `list` never shows them, `leftovers` reports those whose writer is gone.
 */
export const TEMP_MARKER = ".stowage-tmp-";

/** A filesystem sink; it reports and removes what interrupted writes leave (for `findOrphans`). */
export interface FilesystemSink extends Sink {
  readonly root: string;
  /**
   * A temporary file beside where `options.prefix` says the key will be, for another process to
   * write into (see {@link Sink.openFile}).
   */
  openFile(options?: OpenFileOptions): Promise<SinkFile>;
  /**
   * The temporary files under `prefix` whose writer is gone (kind `"temporary-file"`; keys are
   * paths relative to the root), and owner records left without their file (kind
   * `"owner-record"`). A file with an owner record is reported only when its writer is dead:
   * on this machine, when its process no longer exists; from another host, when its heartbeat
   * stopped more than `max(15 min, 20 × heartbeatMs)` ago by the filesystem's own clock — never
   * by comparing the sweeper's clock with the file's mtime. `olderThanMs` and `now` apply only to
   * temporary files without a record (left by versions before records). The rule in full is in
   * `docs/FILESYSTEM.md`.
   * @throws {SINK_READ_FAILED} when the folder cannot be read, or goes through a symbolic link.
   */
  leftovers(prefix: string, options: LeftoverOptions): AsyncIterable<Leftover>;
  /**
   * Removes reported leftovers: the temporary file and its owner record; one already gone is not
   * an error.
   * @throws {SINK_DELETE_FAILED} for a key that is not a temporary file or record of this sink, or
   *   a path through a symbolic link.
   */
  removeLeftovers(leftovers: readonly Leftover[], options?: ReadOptions): Promise<void>;
}

async function syncFolder(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Asks the kernel to write a growing file's pages out every 32 MiB while writing goes on
 * (write-behind), so that the fsync before the rename has little left to do and a large backup
 * does not end with seconds of flushing. A failed write-behind sync is kept and fails `sync()`:
 * Linux reports a failed write-back to one sync of an open file only, so the final fsync alone
 * could succeed after pages written earlier were lost.
 * @internal exported for its unit test
 */
export class WriteBehind {
  private flushed: Promise<void> = Promise.resolve();
  private failure: { error: unknown } | undefined;
  private synced = 0;

  constructor(private readonly handle: Pick<FileHandle, "datasync" | "sync">) {}

  grown(bytes: number): void {
    if (bytes - this.synced < WRITE_BEHIND_BYTES) return;
    this.synced = bytes;
    this.flushed = this.flushed
      .then(() => this.handle.datasync())
      .catch((error: unknown) => {
        this.failure ??= { error };
      });
  }

  /**
   * Makes the whole file durable: the final fsync starts at once, beside a write-behind sync
   * still running, and fails if it or any write-behind sync failed.
   */
  async sync(): Promise<void> {
    await Promise.all([this.flushed, this.handle.sync()]);
    if (this.failure) throw this.failure.error;
  }
}

/**
 * Writes a stream into an open file in batches of at least 1 MiB (one `writev` of the chunks
 * gathered, not copied), so that a source delivering 10 KiB reads (a child's pipe) costs one
 * trip to the thread pool per MiB instead of one per read, with {@link WriteBehind}. Holds at
 * most one batch in memory beyond the one being written. The caller closes the handle (a
 * FileHandle closes only after its pending operations, so no write or sync outlives it).
 */
class FileWriter extends Writable {
  readonly behind: WriteBehind;
  private batch: Buffer[] = [];
  private batchBytes = 0;
  private written = 0;

  constructor(private readonly handle: FileHandle) {
    super({ highWaterMark: BATCH_BYTES });
    this.behind = new WriteBehind(handle);
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.batch.push(chunk);
    this.batchBytes += chunk.length;
    if (this.batchBytes < BATCH_BYTES) callback();
    else this.writeBatch().then(() => callback(), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.writeBatch().then(() => callback(), callback);
  }

  private async writeBatch(): Promise<void> {
    let buffers = this.batch;
    let left = this.batchBytes;
    this.written += left;
    this.batch = [];
    this.batchBytes = 0;
    while (left > 0) {
      const { bytesWritten } = await this.handle.writev(buffers);
      if (bytesWritten === 0) throw new Error("filesystem sink: the file accepted no bytes");
      left -= bytesWritten;
      if (left > 0) buffers = unwritten(buffers, bytesWritten);
    }
    this.behind.grown(this.written);
  }
}

/** The buffers after the first `written` bytes of `buffers` (after a short write). */
function unwritten(buffers: Buffer[], written: number): Buffer[] {
  let i = 0;
  while (written >= buffers[i]!.length) written -= buffers[i++]!.length;
  return [buffers[i]!.subarray(written), ...buffers.slice(i + 1)];
}

const BATCH_BYTES = 1 << 20;
const WRITE_BEHIND_BYTES = 32 << 20;

const errnoOf = (error: unknown) => (error as NodeJS.ErrnoException | null)?.code;
const isMissing = (error: unknown) => errnoOf(error) === "ENOENT";

/** The code of an error the sink raises itself, by what it was doing. */
const CODES = {
  write: "SINK_WRITE_FAILED",
  read: "SINK_READ_FAILED",
  delete: "SINK_DELETE_FAILED",
} as const satisfies Record<string, StowageErrorCode>;
type Operation = keyof typeof CODES;

/** When a temporary file began, as its filesystem says. */
const startOf = (info: Stats) => (info.birthtimeMs > 0 ? info.birthtime : info.mtime);

/**
 * Stores each key as a file under `root`. A write goes to a temporary file in the target folder,
 * is fsynced, renamed into place, and the folder fsynced, so a crash leaves either the whole
 * object or no object under its key (at worst a temporary file that `list` does not show).
 * Memory: one read buffer (1 MiB) per stream.
 *
 * Every temporary file has an owner record beside it (host, pid, process start time, boot id, and
 * a heartbeat while it is written), so that `leftovers` — and through it `findOrphans` and
 * `applyRetention` — remove the file of a writer that died, and never the file of one still
 * writing, however long it stalls and whatever the hosts' clocks say. The rule is in
 * {@link FilesystemSink.leftovers} and `docs/FILESYSTEM.md`.
 *
 * Symbolic links: the root itself may be a link, but the sink never goes through a link *below*
 * it. A key whose path meets one (a folder or the file itself) is refused — writing with
 * SINK_WRITE_FAILED, reading with SINK_READ_FAILED, deleting with SINK_DELETE_FAILED, with
 * `details.reason` "symbolic-link" — and a listing that meets one fails with SINK_READ_FAILED
 * rather than silently leaving part of the sink out; so `list("")` and `list("job/")` always
 * agree, and nothing is ever written, read or deleted out of the root through a link. (The check
 * guards against links made by mistake; it is not a defence against someone who can write into
 * the root while the sink runs.)
 *
 * @default fileMode 0o600, dirMode 0o700, heartbeatMs 30000
 * @throws {CONFIG_INVALID} for a bad option, or a key with `..`, an absolute path or a control
 *   character, before the disk is touched.
 * @throws {SINK_WRITE_FAILED} naming the folder and the real cause (EROFS, EACCES, ENOTDIR) when
 *   a folder or file cannot be created, e.g. a root on a read-only mount.
 * @example const sink = filesystemSink({ root: "/var/backups/stowage" });
 */
export function filesystemSink(options: FilesystemSinkOptions): FilesystemSink {
  const opts = parseOptions(filesystemSinkOptionsSchema, options, "filesystemSink");
  const root = resolve(opts.root);
  const pathOf = (key: string) => {
    assertSafeKey(key, "filesystem sink");
    return join(root, ...key.split("/"));
  };
  const keyOf = (path: string) => relative(root, path).split(sep).join("/");
  const tempName = (name: string) => `.${name}${TEMP_MARKER}${randomBytes(6).toString("hex")}`;

  /** The error for a path below the root that meets the symbolic link `link`. */
  const linkRefused = async (link: string, operation: Operation, key: string) => {
    const target = await readlink(link).catch(() => undefined);
    const verb = { write: "write", read: "read", delete: "delete" }[operation];
    return new StowageError(
      CODES[operation],
      `filesystem sink: refusing to ${verb} "${key}" through the symbolic link ${link}${target === undefined ? "" : ` (to ${target})`}: the sink never follows a link below its root`,
      {
        details: {
          key,
          link: keyOf(link),
          ...(target === undefined ? {} : { target }),
          reason: "symbolic-link",
        },
      },
    );
  };
  /**
   * Refuses a path below the root that goes through a symbolic link (a folder or the last part).
   * Parts that do not exist yet are fine: the sink creates them as real folders.
   */
  const refuseLinks = async (path: string, operation: Operation, key: string) => {
    const parts = relative(root, path).split(sep).filter(Boolean);
    let at = root;
    for (const part of parts) {
      at = join(at, part);
      let info: Stats;
      try {
        info = await lstat(at);
      } catch (error) {
        if (isMissing(error) || errnoOf(error) === "ENOTDIR") return;
        throw error;
      }
      if (info.isSymbolicLink()) throw await linkRefused(at, operation, key);
    }
  };

  /** SINK_WRITE_FAILED naming the folder and the real cause. */
  const writeFailed = (what: string, folder: string, cause: unknown) => {
    const errno = errnoOf(cause);
    return new StowageError(
      "SINK_WRITE_FAILED",
      `filesystem sink: cannot ${what} ${folder}: ${errno ?? (cause as Error | undefined)?.message ?? String(cause)}`,
      { cause, details: { folder, ...(errno ? { errno } : {}) } },
    );
  };
  /**
   * Makes `folder` and any missing parents, and returns the folders whose entries changed (the
   * parent of each folder made): a new folder is on disk only once its parent has been
   * synced, so the commit syncs them with the object's own folder.
   * @throws {SINK_WRITE_FAILED} naming the folder that could not be made and why.
   */
  const makeFolder = async (folder: string): Promise<string[]> => {
    let first: string | undefined;
    try {
      first = await mkdir(folder, { recursive: true, mode: opts.dirMode });
    } catch (error) {
      first = await makeFolderStepwise(folder, error);
    }
    if (first === undefined) return [];
    const changed: string[] = [];
    for (let dir = folder; dirname(dir) !== dir; dir = dirname(dir)) {
      changed.push(dirname(dir));
      if (dir === first) break;
    }
    return changed;
  };
  /**
   * Node 20's recursive mkdir reports ENOENT for whatever stopped it below an existing folder
   * (a read-only mount, a permission): made one folder at a time, the real cause shows.
   */
  const makeFolderStepwise = async (folder: string, error: unknown): Promise<string | undefined> => {
    const missing: string[] = [];
    for (
      let dir = folder;
      !(await lstat(dir).then(
        () => true,
        () => false,
      ));
      dir = dirname(dir)
    ) {
      missing.unshift(dir);
      if (dirname(dir) === dir) break;
    }
    if (missing.length === 0) throw writeFailed("create the folder", folder, error);
    let first: string | undefined;
    for (const dir of missing) {
      try {
        await mkdir(dir, { mode: opts.dirMode });
        first ??= dir;
      } catch (e) {
        if (errnoOf(e) !== "EEXIST") throw writeFailed("create the folder", dir, e);
      }
    }
    return first;
  };
  /**
   * Creates the folder, the owner record and the temporary file, in that order (a sweep that
   * sees the file sees its record). A concurrent `delete` may remove the folder it just emptied
   * between the steps; then the folder is made again, once.
   */
  const openTemp = async (
    folder: string,
    temp: string,
    flags: "wx" | "wx+",
    retry = true,
  ): Promise<{ handle: FileHandle; made: string[]; owner: Claim }> => {
    const made = await makeFolder(folder);
    let owner: Claim;
    try {
      owner = await claim(temp, opts.fileMode, opts.heartbeatMs);
    } catch (error) {
      if (retry && isMissing(error)) return openTemp(folder, temp, flags, false);
      throw writeFailed("create a file in the folder", folder, error);
    }
    try {
      return { handle: await open(temp, flags, opts.fileMode), made, owner };
    } catch (error) {
      await owner.release();
      if (retry && isMissing(error)) return openTemp(folder, temp, flags, false);
      throw writeFailed("create a file in the folder", folder, error);
    }
  };
  /** Removes `dir` and its parents while they are empty, up to (not including) the root. */
  const removeEmptyFolders = async (dir: string) => {
    for (; dir.startsWith(root + sep); dir = dirname(dir)) {
      if (
        !(await rmdir(dir).then(
          () => true,
          () => false,
        ))
      )
        break;
    }
  };
  /**
   * The end of every write: the file's data on disk, the file renamed to its key, the folder
   * (so the new name) on disk, with the parent of every folder made for it, and the owner record
   * removed. Closes the handle whatever happens.
   */
  const commit = async (
    handle: FileHandle,
    behind: WriteBehind,
    temp: string,
    key: string,
    made: string[],
    owner: Claim,
  ) => {
    const path = pathOf(key);
    try {
      await behind.sync();
    } finally {
      await handle.close();
    }
    const folder = dirname(path);
    const changed = [folder, ...made, ...(await makeFolder(folder))];
    await rename(temp, path);
    // Synced together, the new name and any new folders on its way cost about one journal commit.
    await Promise.all([...new Set(changed)].map(syncFolder));
    await owner.release();
    return { key, location: pathToFileURL(path).href };
  };

  /**
   * Every file under `dir`, recursively. A symbolic link anywhere below fails the walk (see the
   * factory's comment); an entry whose type the filesystem does not report is looked up.
   */
  async function* walk(dir: string): AsyncGenerator<string> {
    let entries: Dirent[];
    try {
      const handle = await opendir(dir);
      entries = [];
      for await (const entry of handle) entries.push(entry);
    } catch (error) {
      if (isMissing(error) || errnoOf(error) === "ENOTDIR") return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      let type: Pick<Dirent, "isDirectory" | "isFile" | "isSymbolicLink"> | undefined = entry;
      if (!entry.isDirectory() && !entry.isFile() && !entry.isSymbolicLink()) {
        type = await lstat(path).catch(() => undefined); // DT_UNKNOWN (some NFS, XFS): ask
      }
      if (type?.isDirectory()) yield* walk(path);
      else if (type?.isFile()) yield path;
      else if (type?.isSymbolicLink()) throw await linkRefused(path, "read", keyOf(path));
    }
  }
  /** Every file under the deepest folder `prefix` names in full whose key starts with `prefix`. */
  async function* filesUnder(prefix: string, signal?: AbortSignal): AsyncGenerator<string> {
    const folder = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    if (folder) assertSafeKey(folder, "filesystem sink");
    const start = folder ? join(root, ...folder.split("/")) : root;
    await refuseLinks(start, "read", prefix);
    for await (const path of walk(start)) {
      throwIfAborted(signal, "filesystem sink: listing");
      if (keyOf(path).startsWith(prefix)) yield path;
    }
  }
  const statOrGone = (path: string) =>
    stat(path).catch((e: unknown) => {
      if (isMissing(e)) return undefined; // deleted while listing
      throw e;
    });

  async function* listing(prefix: string, signal?: AbortSignal): AsyncGenerator<ObjectInfo> {
    const keys: string[] = [];
    for await (const path of filesUnder(prefix, signal)) {
      if (!basename(path).includes(TEMP_MARKER)) keys.push(keyOf(path));
    }
    keys.sort();
    for (const key of keys) {
      const info = await statOrGone(join(root, ...key.split("/")));
      if (info) yield { key, size: info.size, lastModified: info.mtime };
    }
  }

  async function* leftovers(prefix: string, options: LeftoverOptions): AsyncGenerator<Leftover> {
    const { signal } = options;
    const temps = new Set<string>();
    const records = new Set<string>();
    let swept = root;
    for await (const path of filesUnder(prefix, signal)) {
      const name = basename(path);
      if (!name.includes(TEMP_MARKER)) continue;
      if (name.endsWith(OWNER_SUFFIX)) records.add(path);
      else temps.add(path);
      swept = dirname(path);
    }
    // The filesystem's own time, asked for once and only if a heartbeat must be judged.
    let clock: Promise<number | undefined> | undefined;
    const fsNow = () => {
      clock ??= filesystemNow(swept, TEMP_MARKER);
      return clock;
    };
    /** Whether the writer owning this record is alive; a record gone meanwhile counts as alive. */
    const alive = async (record: string) => {
      const [text, info] = await Promise.all([
        readFile(record, "utf8").catch(() => undefined),
        statOrGone(record),
      ]);
      if (!info) return true; // committed or discarded just now
      return ownerAlive(text, info, fsNow);
    };
    const cutoff = options.now.getTime() - options.olderThanMs;
    const found: Leftover[] = [];
    for (const temp of temps) {
      throwIfAborted(signal, "filesystem sink: looking for leftovers");
      const info = await statOrGone(temp);
      if (!info) continue;
      const record = temp + OWNER_SUFFIX;
      // Looked up again if the walk missed it: a record is made before its file.
      const owned = records.has(record) || (await statOrGone(record)) !== undefined;
      const dead = owned ? !(await alive(record)) : info.mtimeMs < cutoff;
      if (dead)
        found.push({ kind: "temporary-file", key: keyOf(temp), id: keyOf(temp), startedAt: startOf(info) });
    }
    for (const record of records) {
      if (temps.has(record.slice(0, -OWNER_SUFFIX.length))) continue;
      throwIfAborted(signal, "filesystem sink: looking for leftovers");
      const info = await statOrGone(record);
      if (info && !(await alive(record))) {
        found.push({ kind: "owner-record", key: keyOf(record), id: keyOf(record), startedAt: startOf(info) });
      }
    }
    found.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* found;
  }

  return {
    kind: "filesystem",
    root,
    capabilities: { readLatency: "immediate", delete: true },

    async write(key: string, body: Readable, options: WriteOptions = {}): Promise<WrittenObject> {
      const path = pathOf(key);
      const folder = dirname(path);
      const temp = join(folder, tempName(basename(path)));
      let owner: Claim | undefined;
      let checked = false;
      try {
        throwIfAborted(options.signal, `filesystem sink: writing ${key}`);
        await refuseLinks(path, "write", key);
        checked = true;
        const opened = await openTemp(folder, temp, "wx");
        const { handle, made } = opened;
        owner = opened.owner;
        let writer: FileWriter;
        try {
          writer = new FileWriter(handle);
          await pipeline(body, writer, options.signal ? { signal: options.signal } : {});
          throwIfAborted(options.signal, `filesystem sink: writing ${key}`);
        } catch (error) {
          await handle.close();
          throw error;
        }
        return await commit(handle, writer.behind, temp, key, made, owner);
      } catch (error) {
        if (checked) {
          await unlink(temp).catch(() => undefined);
          await owner?.release();
          await removeEmptyFolders(folder);
        }
        // Destroyed last, just before the rejection: the caller learns of the sink's failure
        // before the stages before it report the premature close of their output.
        body.destroy();
        throw error;
      }
    },

    /**
     * A temporary file beside where `options.prefix` says the key will be (the root without it),
     * opened for reading and writing, that `commit(key)` renames to its key after an fsync (and
     * the folder's), as `write` does. It has an owner record like any temporary file.
     */
    async openFile(options: OpenFileOptions = {}): Promise<SinkFile> {
      throwIfAborted(options.signal, "filesystem sink: opening a file");
      const prefix = options.prefix ?? "";
      let folder = root;
      let name = "direct";
      if (prefix !== "") {
        const path = pathOf(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
        if (prefix.endsWith("/")) folder = path;
        else [folder, name] = [dirname(path), basename(path)];
      }
      await refuseLinks(folder, "write", prefix);
      const temp = join(folder, tempName(name));
      const { handle, made, owner } = await openTemp(folder, temp, "wx+");
      const behind = new WriteBehind(handle);
      let settled = false;
      const discard = async () => {
        settled = true;
        await handle.close().catch(() => undefined);
        await unlink(temp).catch(() => undefined);
        await owner.release();
        await removeEmptyFolders(folder);
      };
      return {
        handle,
        grown: (bytes) => behind.grown(bytes),
        async commit(key, commitOptions = {}) {
          if (settled) throw new Error("filesystem sink: this file was already committed or discarded");
          try {
            throwIfAborted(commitOptions.signal, `filesystem sink: writing ${key}`);
            settled = true;
            await refuseLinks(pathOf(key), "write", key);
            return await commit(handle, behind, temp, key, made, owner);
          } catch (error) {
            await discard();
            await removeEmptyFolders(dirname(pathOf(key)));
            throw error;
          }
        },
        discard,
      };
    },

    async read(key: string, options: ReadOptions = {}): Promise<Readable> {
      const path = pathOf(key);
      throwIfAborted(options.signal, `filesystem sink: reading ${key}`);
      await refuseLinks(path, "read", key);
      let handle: FileHandle;
      try {
        handle = await open(path, "r");
      } catch (error) {
        if (isMissing(error)) throw notFound(key, "filesystem sink");
        throw error;
      }
      return handle.createReadStream({ highWaterMark: 1 << 20 });
    },

    async stat(key: string): Promise<ObjectInfo | undefined> {
      const path = pathOf(key);
      await refuseLinks(path, "read", key);
      try {
        const info = await stat(path);
        return info.isFile() ? { key, size: info.size, lastModified: info.mtime } : undefined;
      } catch (error) {
        if (isMissing(error)) return undefined;
        throw error;
      }
    },

    list(prefix: string, options: ReadOptions = {}): AsyncIterable<ObjectInfo> {
      return listing(prefix, options.signal);
    },

    leftovers,

    async removeLeftovers(found: readonly Leftover[], options: ReadOptions = {}): Promise<void> {
      for (const leftover of found) {
        throwIfAborted(options.signal, "filesystem sink: removing leftovers");
        const path = pathOf(leftover.id);
        if (!basename(path).includes(TEMP_MARKER)) {
          throw new StowageError(
            "SINK_DELETE_FAILED",
            `filesystem sink: "${leftover.id}" is not a temporary file; removeLeftovers removes only what leftovers reported`,
            { details: { key: leftover.id } },
          );
        }
        await refuseLinks(path, "delete", leftover.id);
        const temp = path.endsWith(OWNER_SUFFIX) ? path.slice(0, -OWNER_SUFFIX.length) : path;
        for (const file of [temp, temp + OWNER_SUFFIX]) {
          await unlink(file).catch((error: unknown) => {
            if (!isMissing(error)) throw error;
          });
        }
        await removeEmptyFolders(dirname(path));
      }
    },

    async delete(keys: readonly string[]): Promise<void> {
      const paths = keys.map(pathOf);
      for (const [i, path] of paths.entries()) {
        await refuseLinks(path, "delete", keys[i]!);
        await unlink(path).catch((error: unknown) => {
          if (!isMissing(error)) throw error;
        });
        await removeEmptyFolders(dirname(path));
      }
    },
  };
}
