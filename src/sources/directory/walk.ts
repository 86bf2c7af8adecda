import { createHash } from "node:crypto";
import { lstat, open, opendir } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isStowageError, StowageError } from "../../core/errors.js";

/** One path of the folder, as the walk found it. */
export interface Entry {
  rel: string;
  abs: string;
  type: "file" | "directory" | "symlink";
  size: number;
  mode: number;
  mtime: Date;
  /** Nanosecond times and the inode, as text: what an incremental compares. */
  mtimeNs: string;
  ctimeNs: string;
  ino: string;
}

/** The folder's paths in sorted order, a folder before what is in it. */
export async function* walkTree(
  root: string,
  rel: string,
  keep: (rel: string) => boolean,
  skip: (rel: string) => boolean,
  counts: { skipped: number },
  signal: AbortSignal,
): AsyncGenerator<Entry> {
  const dir = rel ? join(root, rel) : root;
  const names: string[] = [];
  try {
    for await (const dirent of await opendir(dir)) names.push(dirent.name);
  } catch (error) {
    throw unreadable(root, rel || ".", error);
  }
  names.sort();
  for (const name of names) {
    if (signal.aborted) throw new StowageError("ABORTED", "directory source: aborted");
    const childRel = rel ? `${rel}/${name}` : name;
    if (skip(childRel)) continue;
    const abs = join(root, childRel);
    const info = await lstat(abs, { bigint: true }).catch((error: unknown) => {
      throw unreadable(root, childRel, error);
    });
    const base = {
      rel: childRel,
      abs,
      mode: Number(info.mode & 0o7777n),
      mtime: info.mtime,
      mtimeNs: info.mtimeNs.toString(),
      ctimeNs: info.ctimeNs.toString(),
      ino: info.ino.toString(),
    };
    if (info.isDirectory()) {
      yield { ...base, type: "directory", size: 0 };
      yield* walkTree(root, childRel, keep, skip, counts, signal);
    } else if (!keep(childRel)) {
    } else if (info.isFile()) {
      yield { ...base, type: "file", size: Number(info.size) };
    } else if (info.isSymbolicLink()) {
      yield { ...base, type: "symlink", size: 0 };
    } else {
      counts.skipped++; // sockets, FIFOs, devices: not something a backup can carry
    }
  }
}

export function unreadable(root: string, rel: string, error: unknown): StowageError {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT"
    ? fileFailed(root, rel, "was removed while the folder was packed", { reason: "vanished" }, error)
    : fileFailed(root, rel, `cannot be read (${code ?? "error"})`, { reason: "unreadable" }, error);
}

/**
 * Counts what passes and fails with `short()` when the file ends before its listed size: before
 * the tar entry sees the end, so the named error (not tar-stream's bare "Size mismatch") is the one
 * that destroys the archive.
 */
class Counter extends Transform {
  bytes = 0;
  readonly hash = createHash("sha256");
  constructor(
    private readonly expected: number,
    private readonly short: (seen: number) => Error,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    callback(this.bytes === this.expected ? null : this.short(this.bytes));
  }
}

/** SOURCE_FAILED naming the file (relative to the folder) and what happened to it. */
function fileFailed(
  root: string,
  rel: string,
  problem: string,
  extra: Record<string, unknown>,
  cause?: unknown,
) {
  return new StowageError("SOURCE_FAILED", `directory source ${root}: ${rel} ${problem}`, {
    ...(cause !== undefined ? { cause } : {}),
    details: { path: root, file: rel, ...extra },
  });
}

/**
 * Streams one file's first `size` bytes into its tar entry. A file that shrank, grew or vanished
 * since it was listed fails the backup, naming it: a torn file is worse than no backup.
 * @returns the SHA-256 of the bytes packed.
 */
export async function packFile(
  root: string,
  entry: Entry,
  target: NodeJS.WritableStream,
  signal: AbortSignal,
): Promise<string> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(entry.abs, "r");
  } catch (error) {
    throw unreadable(root, entry.rel, error);
  }
  const counter = new Counter(entry.size, (seen) =>
    fileFailed(
      root,
      entry.rel,
      `shrank while it was packed (${seen} of the ${entry.size} bytes seen when listed)`,
      { reason: "changed-while-read", expected: entry.size, actual: seen },
    ),
  );
  try {
    const file = handle.createReadStream({
      start: 0,
      end: entry.size - 1,
      highWaterMark: 1 << 20,
      autoClose: false,
    });
    try {
      await pipeline(file, counter, target, { signal });
    } catch (error) {
      if (isStowageError(error)) throw error;
      throw fileFailed(root, entry.rel, "could not be packed", { reason: "unreadable" }, error);
    }
    const now = await handle.stat();
    if (now.size !== entry.size) {
      throw fileFailed(
        root,
        entry.rel,
        `${now.size > entry.size ? "grew" : "shrank"} while it was packed (${entry.size} bytes when listed, ${now.size} after)`,
        { reason: "changed-while-read", expected: entry.size, actual: now.size },
      );
    }
    return counter.hash.digest("hex");
  } finally {
    await handle.close().catch(() => undefined);
  }
}
