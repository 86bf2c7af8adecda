import { type FileHandle, open, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { notFound, StowageError, throwIfAborted } from "../core/errors.js";
import { parseOptions } from "../core/options.js";
import type {
  Leftover,
  ObjectInfo,
  OpenFileOptions,
  ReadOptions,
  SinkFile,
  WriteOptions,
  WrittenObject,
} from "../core/types.js";
import { FileWriter, WriteBehind } from "./filesystem/file-writer.js";
import { folders, isMissing } from "./filesystem/folders.js";
import { listings } from "./filesystem/listing.js";
import {
  type FilesystemSink,
  type FilesystemSinkOptions,
  filesystemSinkOptionsSchema,
  TEMP_MARKER,
} from "./filesystem/options.js";
import { type Claim, OWNER_SUFFIX } from "./filesystem/owner.js";

export {
  type FilesystemSink,
  type FilesystemSinkOptions,
  filesystemSinkOptionsSchema,
  TEMP_MARKER,
} from "./filesystem/options.js";

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
  const tree = folders(root, opts);
  const { pathOf, tempName, refuseLinks, openTemp, removeEmptyFolders, commit } = tree;
  const { listing, leftovers } = listings(root, tree);

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
