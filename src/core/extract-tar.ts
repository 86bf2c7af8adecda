import {
  chmod,
  link,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  symlink,
  unlink,
  utimes,
} from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { PassThrough, type Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isStowageError, StowageError, throwIfAborted, wrapError } from "./errors.js";
import {
  classify,
  type ExtractRefusal,
  refuse,
  resolveWithin,
  SYMLOOP_MAX,
  safeRelative,
  safeRelativeLink,
} from "./extract-tar-safety.js";
import { loadTarStream } from "./lazy-deps.js";
import type { Manifest } from "./manifest.js";
import { restoredManifest } from "./restore.js";

export type { ExtractRefusal } from "./extract-tar-safety.js";

/** Options of {@link extractTar}. */
export interface ExtractTarOptions {
  /** Aborts the extraction; what was written so far is removed. */
  signal?: AbortSignal;
  /**
   * Refuse the archive once its files add up to more than this many bytes.
   * @default the plain size the manifest declares (`content.bytes`): of `manifest`, or of the
   *   stream's own when it came from `restore()`; else unlimited
   */
  maxBytes?: number;
  /**
   * The manifest of the backup being unpacked, for a stream that did not come straight from
   * `restore()` (one piped through something else); it sets the default `maxBytes`.
   */
  manifest?: {
    /** The backup's content, of which only `bytes` is read. */
    content: Pick<Manifest["content"], "bytes">;
  };
}

/** What {@link extractTar} wrote. */
export interface ExtractTarResult {
  /** The folder the archive was unpacked into. */
  directory: string;
  /** Regular files written. */
  files: number;
  /** Folders made. */
  directories: number;
  /** Symbolic links made. */
  symlinks: number;
  /** Hard links made. */
  hardlinks: number;
  /** Bytes of file content written. */
  bytes: number;
}

/**
 * A pax time ("1717400000.123456789") as a Date, rounded to the nearest millisecond without float
 * arithmetic: `utimes` with that Date gives back the same nanoseconds a `utimes` with a Date gave
 * the original.
 */
function paxTime(value: string | undefined): Date | undefined {
  const match = value ? /^(\d{1,15})(?:\.(\d+))?$/.exec(value) : null;
  if (!match) return undefined;
  const ns = BigInt(match[1]!) * 1_000_000_000n + BigInt((match[2] ?? "").padEnd(9, "0").slice(0, 9));
  return new Date(Number((ns + 500_000n) / 1_000_000n));
}

/** Counts what passes and fails if it is not exactly the declared size. */
class ExactSize extends Transform {
  private seen = 0;
  constructor(
    private readonly declared: number,
    private readonly name: string,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.declared) {
      callback(refuse(this.name, "size-mismatch", `more data than the declared ${this.declared} bytes`));
    } else callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    if (this.seen !== this.declared) {
      callback(refuse(this.name, "truncated", `${this.seen} of the declared ${this.declared} bytes`));
    } else callback();
  }
}

/**
 * Unpacks a tar stream into `directory`, refusing anything that could write outside it: absolute
 * paths, `..`, symlinks and hard links whose targets leave the folder (checked against the finished
 * tree, link by link), writes through a symlink, device files and FIFOs, and file data that is not
 * the size its header declares. It unpacks into a temporary sibling folder
 * (`.<name>.stowage-extract-*`) and renames it into place only when the whole archive has been read
 * and checked, so a refused, broken or aborted archive leaves nothing behind: the target stays
 * absent (or empty), and the temporary folder is removed.
 *
 * `directory` must not exist or be empty. Modes (without setuid, setgid and sticky bits) and mtimes
 * are restored (a pax `mtime` gives sub-second precision); owners are not. The target folder itself
 * gets the mode and mtime of a `./` entry if the archive has one, else 0700. Symlinks are created
 * last, after every file, so nothing is ever written through one. Memory: one entry's read buffer.
 *
 * @throws {RESTORE_FAILED} for a refused entry or a damaged archive, with `details.reason` an
 *   {@link ExtractRefusal} (`"path-traversal"`, `"link-escape"`, `"truncated"`, …) and
 *   `details.entry` the entry's name; a {@link StowageError} from the stream itself (e.g.
 *   `INTEGRITY_MISMATCH` from `restore`) passes through with its own code.
 * @throws {CONFIG_INVALID} when the target is a non-empty folder, a symlink or not a folder:
 *   checked before a byte is read.
 * @throws {ABORTED} when `signal` fires.
 * @example await extractTar(await restore({ sink, manifest, keys }), "/tmp/restored");
 */
export async function extractTar(
  stream: Readable,
  directory: string,
  options: ExtractTarOptions = {},
): Promise<ExtractTarResult> {
  const { signal } = options;
  const target = resolve(directory);
  const maxBytes = options.maxBytes ?? (options.manifest ?? restoredManifest(stream))?.content.bytes;
  // The target itself is never followed: a symlink there would be replaced (or written through),
  // and a file there could not become the folder. Refuse both before reading a byte.
  const self = await lstat(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    stream.destroy();
    throw wrapError(e, "CONFIG_INVALID", `extractTar: cannot use ${target}`);
  });
  if (self && !self.isDirectory()) {
    stream.destroy();
    const problem = self.isSymbolicLink() ? "is a symlink" : "is not a folder";
    throw new StowageError("CONFIG_INVALID", `extractTar: the target ${target} ${problem}`, {
      details: { issues: [{ path: "directory", problem }] },
    });
  }
  const existing = await readdir(target).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    stream.destroy();
    throw wrapError(e, "CONFIG_INVALID", `extractTar: cannot use ${target}`);
  });
  if (existing && existing.length > 0) {
    stream.destroy();
    throw new StowageError("CONFIG_INVALID", `extractTar: ${target} is not empty`, {
      details: { issues: [{ path: "directory", problem: "not empty" }] },
    });
  }
  const createdParent = await mkdir(dirname(target), { recursive: true });
  const temp = await mkdtemp(join(dirname(target), `.${basename(target)}.stowage-extract-`));
  const result: ExtractTarResult = {
    directory: target,
    files: 0,
    directories: 0,
    symlinks: 0,
    hardlinks: 0,
    bytes: 0,
  };
  /** Folder modes and mtimes, applied last: writing into a folder changes its mtime. */
  const dirAttrs = new Map<string, { mode: number; mtime: Date }>();
  /** Symlinks by relative path, created after every other entry. */
  const pendingLinks = new Map<string, { linkname: string; name: string; mtime: Date | undefined }>();
  const knownDirs = new Set<string>([""]);

  /** Creates the parents of `rel` as real folders; refuses a parent that is a file or a symlink. */
  async function parentOf(rel: string, name: string): Promise<void> {
    const parts = rel.split("/").slice(0, -1);
    let prefix = "";
    for (const part of parts) {
      prefix = prefix ? `${prefix}/${part}` : part;
      if (knownDirs.has(prefix)) continue;
      if (pendingLinks.has(prefix)) {
        throw refuse(name, "write-through-symlink", `${prefix} is a symlink in this archive`);
      }
      const dir = join(temp, ...prefix.split("/"));
      const info = await lstat(dir).catch(() => undefined);
      if (!info) await mkdir(dir, { mode: 0o700 });
      else if (info.isSymbolicLink()) throw refuse(name, "write-through-symlink", "a parent is a symlink");
      else if (!info.isDirectory()) throw refuse(name, "conflict", "a parent path is not a folder");
      knownDirs.add(prefix);
    }
  }
  /** Makes room for a non-folder entry at `rel`: a later entry replaces an earlier file or link. */
  async function clear(rel: string, name: string): Promise<string> {
    pendingLinks.delete(rel);
    const dest = join(temp, ...rel.split("/"));
    const info = await lstat(dest).catch(() => undefined);
    if (info?.isDirectory()) throw refuse(name, "conflict", "an entry would replace a folder");
    if (info) await unlink(dest);
    return dest;
  }

  const extract = (await loadTarStream()).extract();
  const feeding = pipeline(stream, extract, signal ? { signal } : {});
  let feedError: unknown;
  feeding.catch((error: unknown) => {
    feedError = error;
  });
  try {
    for await (const entry of extract) {
      // Hand the entry to a Node stream at once: an entry (a streamx stream) that the archive's
      // end destroys while we create folders would otherwise never settle a later pipeline.
      const body = new PassThrough({ highWaterMark: 1 << 20 });
      if (entry.destroyed) body.destroy(new Error("extractTar: entry closed early"));
      else pipeline(entry, body).catch(() => undefined); // its error reaches `body`
      throwIfAborted(signal, "extractTar");
      const { header } = entry;
      const rel = safeRelative(header.name);
      const mode = (header.mode ?? 0o644) & 0o777;
      const paxMtime = (header.pax as Record<string, string> | null | undefined)?.mtime;
      const mtime = paxTime(paxMtime) ?? header.mtime;
      if (rel === "") {
        if (header.type !== "directory")
          throw refuse(header.name, "conflict", "an entry names the folder itself");
        dirAttrs.set("", { mode, mtime: mtime ?? new Date() });
        body.resume();
        continue;
      }
      await parentOf(rel, header.name);
      switch (header.type) {
        case "directory": {
          if (pendingLinks.has(rel)) pendingLinks.delete(rel);
          const dest = join(temp, ...rel.split("/"));
          const info = await lstat(dest).catch(() => undefined);
          if (info && !info.isDirectory())
            throw refuse(header.name, "conflict", "a folder would replace a file");
          if (!info) await mkdir(dest, { mode: 0o700 });
          if (!knownDirs.has(rel)) result.directories++;
          knownDirs.add(rel);
          dirAttrs.set(rel, { mode, mtime: mtime ?? new Date() });
          body.resume();
          break;
        }
        case "file":
        case "contiguous-file": {
          const size = header.size ?? 0;
          if (maxBytes !== undefined && result.bytes + size > maxBytes) {
            throw refuse(header.name, "too-large", `the archive exceeds maxBytes (${maxBytes})`);
          }
          const dest = await clear(rel, header.name);
          // O_EXCL: never opens an existing path, so never follows a link someone put there.
          const handle = await open(dest, "wx", 0o600);
          await pipeline(
            body,
            new ExactSize(size, header.name),
            handle.createWriteStream({ highWaterMark: 1 << 20 }),
          );
          await chmod(dest, mode);
          if (mtime) await utimes(dest, mtime, mtime);
          result.files++;
          result.bytes += size;
          break;
        }
        case "symlink": {
          const linkname = header.linkname ?? "";
          const from = rel.split("/").slice(0, -1);
          // A first, lexical check refuses the obvious at once; the finished tree is checked again.
          if ((await resolveWithin(temp, from, linkname, { left: 0 }).catch(() => undefined)) === undefined) {
            throw refuse(header.name, "link-escape", "symlink points outside the target");
          }
          await clear(rel, header.name);
          pendingLinks.set(rel, { linkname, name: header.name, mtime });
          body.resume();
          break;
        }
        case "link": {
          const from = safeRelativeLink(header.name, header.linkname ?? "");
          // No symlink exists in the tree yet, so this lstat sees exactly what the link would name.
          const info = from ? await lstat(join(temp, ...from.split("/"))).catch(() => undefined) : undefined;
          if (!from || pendingLinks.has(from) || !info?.isFile()) {
            throw refuse(header.name, "link-escape", "hard link to something not extracted before it");
          }
          const dest = await clear(rel, header.name);
          await link(join(temp, ...from.split("/")), dest);
          result.hardlinks++;
          body.resume();
          break;
        }
        case "character-device":
        case "block-device":
        case "fifo":
          throw refuse(header.name, "special-file", `a ${header.type} is not restored`);
        default:
          throw refuse(header.name, "special-file", `entry type ${String(header.type)} is not restored`);
      }
    }
    await feeding;

    for (const [rel, { linkname, name }] of pendingLinks) {
      const dest = join(temp, ...rel.split("/"));
      const info = await lstat(dest).catch(() => undefined);
      if (info?.isDirectory()) throw refuse(name, "conflict", "a symlink would replace a folder");
      if (info) await unlink(dest);
      await symlink(linkname, dest);
      result.symlinks++;
    }
    for (const [rel, { linkname, name }] of pendingLinks) {
      const from = rel.split("/").slice(0, -1);
      if ((await resolveWithin(temp, from, linkname, { left: SYMLOOP_MAX })) === undefined) {
        throw refuse(name, "link-escape", "symlink resolves to a place outside the target");
      }
    }
    for (const [rel, { mtime }] of pendingLinks) {
      if (mtime) await lutimes(join(temp, ...rel.split("/")), mtime, mtime);
    }
    // Deepest first, so setting a child's attributes does not disturb its parent's mtime.
    const dirs = [...dirAttrs].sort((a, b) => b[0].length - a[0].length);
    for (const [rel, { mode, mtime }] of dirs) {
      const path = rel === "" ? temp : join(temp, ...rel.split("/"));
      await chmod(path, mode);
      await utimes(path, mtime, mtime);
    }
    throwIfAborted(signal, "extractTar");
    if (existing) await rmdir(target);
    await rename(temp, target);
    return result;
  } catch (error) {
    stream.destroy();
    extract.destroy();
    await feeding.catch(() => undefined);
    await rm(temp, { recursive: true, force: true });
    if (createdParent) await removeEmptyChain(createdParent, dirname(target));
    if (signal?.aborted && !isStowageError(error)) {
      throw wrapError(error, "ABORTED", "extractTar", {}, signal);
    }
    // Our own refusal says best what went wrong; otherwise the input's failure (a cut archive, a
    // damaged artifact) is the cause, and what it broke downstream only a symptom.
    throw (
      (isStowageError(error) ? error : undefined) ??
      classify(feedError) ??
      classify(error) ??
      wrapError(error, "RESTORE_FAILED", "extractTar: the archive could not be unpacked", {}, signal)
    );
  }
}

/** Removes the folders `mkdir -p` made for the target, deepest first, as long as they are empty. */
async function removeEmptyChain(top: string, deepest: string): Promise<void> {
  let dir = deepest;
  while (dir.length >= top.length) {
    try {
      await rmdir(dir);
    } catch {
      return;
    }
    if (dir === top) return;
    dir = dirname(dir);
  }
}
