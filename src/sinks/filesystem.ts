import { randomBytes } from "node:crypto";
import { type FileHandle, mkdir, open, opendir, rename, rmdir, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { notFound, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { parseOptions } from "../core/options.js";
import type { ObjectInfo, ReadOptions, Sink, SinkFile, WriteOptions, WrittenObject } from "../core/types.js";

export const filesystemSinkOptionsSchema = z
  .object({
    /** The folder that holds every key; created if missing. */
    root: z.string().min(1, "root must name a folder"),
    /** Permissions of written files; backups are private by default. @default 0o600 */
    fileMode: z.number().int().min(0).max(0o777).default(0o600),
    /** Permissions of folders the sink creates. @default 0o700 */
    dirMode: z.number().int().min(0).max(0o777).default(0o700),
  })
  .strict();
export type FilesystemSinkOptions = z.input<typeof filesystemSinkOptionsSchema>;

/** Temporary files carry this marker; `list` never shows them, `temporaryFiles` does. */
export const TEMP_MARKER = ".stowage-tmp-";

/** A filesystem sink, plus the temporary files a crash may leave behind (for `findOrphans`). */
export interface FilesystemSink extends Sink {
  readonly root: string;
  /** Temporary files left by interrupted writes (keys are their paths relative to root). */
  temporaryFiles(options?: ReadOptions): AsyncIterable<ObjectInfo>;
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

const isMissing = (error: unknown) => (error as NodeJS.ErrnoException | null)?.code === "ENOENT";

/**
 * Stores each key as a file under `root`. A write goes to a temporary file in the target folder,
 * is fsynced, renamed into place, and the folder fsynced, so a crash leaves either the whole
 * object or no object under its key (at worst a temporary file that `list` does not show).
 * Memory: one read buffer (1 MiB) per stream.
 *
 * @default fileMode 0o600, dirMode 0o700
 * @throws {CONFIG_INVALID} for a bad option, or a key with `..`, an absolute path or a control
 *   character, before the disk is touched.
 * @example const sink = filesystemSink({ root: "/var/backups/stowage" });
 */
export function filesystemSink(options: FilesystemSinkOptions): FilesystemSink {
  const opts = parseOptions(filesystemSinkOptionsSchema, options, "filesystemSink");
  const root = resolve(opts.root);
  const pathOf = (key: string) => {
    assertSafeKey(key, "filesystem sink");
    return join(root, ...key.split("/"));
  };
  /**
   * Creates the folder and the temporary file. A concurrent `delete` may remove the folder it just
   * emptied between the two steps; then the folder is made again, once.
   */
  const openTemp = async (
    folder: string,
    temp: string,
    retry = true,
  ): Promise<{ handle: FileHandle; made: string[] }> => {
    const made = await makeFolder(folder);
    try {
      return { handle: await open(temp, "wx", opts.fileMode), made };
    } catch (error) {
      if (retry && isMissing(error)) return openTemp(folder, temp, false);
      throw error;
    }
  };
  /**
   * Makes `folder` and any missing parents, and returns the folders whose entries changed (the
   * parent of each folder made): a new folder is on disk only once its parent has been
   * synced, so the commit syncs them with the object's own folder.
   */
  const makeFolder = async (folder: string): Promise<string[]> => {
    const first = await mkdir(folder, { recursive: true, mode: opts.dirMode });
    if (first === undefined) return [];
    const changed: string[] = [];
    for (let dir = folder; dirname(dir) !== dir; dir = dirname(dir)) {
      changed.push(dirname(dir));
      if (dir === first) break;
    }
    return changed;
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
  const keyOf = (path: string) => relative(root, path).split(sep).join("/");
  const tempName = (name: string) => `.${name}${TEMP_MARKER}${randomBytes(6).toString("hex")}`;
  /**
   * The end of every write: the file's data on disk, the file renamed to its key, and the folder
   * (so the new name) on disk, with the parent of every folder made for it. Closes the handle
   * whatever happens.
   */
  const commit = async (
    handle: FileHandle,
    behind: WriteBehind,
    temp: string,
    key: string,
    made: string[],
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
    return { key, location: pathToFileURL(path).href };
  };

  /** Every file under `dir`, recursively; `wantTemp` picks temporary files or committed ones. */
  async function* walk(dir: string, wantTemp: boolean): AsyncGenerator<string> {
    let entries: import("node:fs").Dirent[];
    try {
      const handle = await opendir(dir);
      entries = [];
      for await (const entry of handle) entries.push(entry);
    } catch (error) {
      if (isMissing(error) || (error as NodeJS.ErrnoException).code === "ENOTDIR") return;
      throw error;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) yield* walk(path, wantTemp);
      else if (entry.isFile() && entry.name.includes(TEMP_MARKER) === wantTemp) yield path;
    }
  }

  async function* listing(
    prefix: string,
    wantTemp: boolean,
    signal?: AbortSignal,
  ): AsyncGenerator<ObjectInfo> {
    // Walk only the deepest folder the prefix names in full, then filter by the prefix.
    const folder = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/")) : "";
    if (folder) assertSafeKey(folder, "filesystem sink");
    const keys: string[] = [];
    for await (const path of walk(folder ? join(root, ...folder.split("/")) : root, wantTemp)) {
      throwIfAborted(signal, "filesystem sink: listing");
      const key = keyOf(path);
      if (key.startsWith(prefix)) keys.push(key);
    }
    keys.sort();
    for (const key of keys) {
      const info = await stat(join(root, ...key.split("/"))).catch((e: unknown) => {
        if (isMissing(e)) return undefined; // deleted while listing
        throw e;
      });
      if (info) yield { key, size: info.size, lastModified: info.mtime };
    }
  }

  return {
    kind: "filesystem",
    root,
    capabilities: { readLatency: "immediate", delete: true },

    async write(key: string, body: Readable, options: WriteOptions = {}): Promise<WrittenObject> {
      const path = pathOf(key);
      const folder = dirname(path);
      const temp = join(folder, tempName(basename(path)));
      try {
        throwIfAborted(options.signal, `filesystem sink: writing ${key}`);
        const { handle, made } = await openTemp(folder, temp);
        let writer: FileWriter;
        try {
          writer = new FileWriter(handle);
          await pipeline(body, writer, options.signal ? { signal: options.signal } : {});
          throwIfAborted(options.signal, `filesystem sink: writing ${key}`);
        } catch (error) {
          await handle.close();
          throw error;
        }
        return await commit(handle, writer.behind, temp, key, made);
      } catch (error) {
        body.destroy();
        await unlink(temp).catch(() => undefined);
        await removeEmptyFolders(folder);
        throw error;
      }
    },

    /**
     * A temporary file in the root, opened for reading and writing, that `commit(key)` renames to
     * its key after an fsync (and the folder's), as `write` does.
     */
    async openFile(options: WriteOptions = {}): Promise<SinkFile> {
      throwIfAborted(options.signal, "filesystem sink: opening a file");
      const temp = join(root, tempName("direct"));
      const made = await makeFolder(root);
      const handle = await open(temp, "wx+", opts.fileMode);
      const behind = new WriteBehind(handle);
      let settled = false;
      const discard = async () => {
        settled = true;
        await handle.close().catch(() => undefined);
        await unlink(temp).catch(() => undefined);
      };
      return {
        handle,
        grown: (bytes) => behind.grown(bytes),
        async commit(key, commitOptions = {}) {
          if (settled) throw new Error("filesystem sink: this file was already committed or discarded");
          try {
            throwIfAborted(commitOptions.signal, `filesystem sink: writing ${key}`);
            settled = true;
            return await commit(handle, behind, temp, key, made);
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
      try {
        const info = await stat(pathOf(key));
        return info.isFile() ? { key, size: info.size, lastModified: info.mtime } : undefined;
      } catch (error) {
        if (isMissing(error)) return undefined;
        throw error;
      }
    },

    list(prefix: string, options: ReadOptions = {}): AsyncIterable<ObjectInfo> {
      return listing(prefix, false, options.signal);
    },

    temporaryFiles(options: ReadOptions = {}): AsyncIterable<ObjectInfo> {
      return listing("", true, options.signal);
    },

    async delete(keys: readonly string[]): Promise<void> {
      const paths = keys.map(pathOf);
      for (const path of paths) {
        await unlink(path).catch((error: unknown) => {
          if (!isMissing(error)) throw error;
        });
        await removeEmptyFolders(dirname(path));
      }
    },
  };
}
