import { lstat, open, opendir, readlink, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import picomatch from "picomatch";
import { z } from "zod";
import { linkSignal } from "../core/abort.js";
import { isStowageError, StowageError } from "../core/errors.js";
import { loadTarStream } from "../core/lazy-deps.js";
import { parseOptions } from "../core/options.js";
import { packedTar } from "../core/pack-tar.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../core/types.js";

export const directorySourceOptionsSchema = z
  .object({
    /** The folder to back up. */
    path: z.string().min(1, "path must name a folder"),
    /** Globs (relative, `/`-separated) of paths to keep; folders are walked regardless. @default all */
    include: z.array(z.string().min(1)).optional(),
    /** Globs of paths to leave out; a matching folder is not entered. @default none */
    exclude: z.array(z.string().min(1)).optional(),
    /** Logical name for the manifest. @default the folder's path */
    name: z.string().optional(),
  })
  .strict();
export interface DirectorySourceOptions {
  /** The folder to back up. */
  path: string;
  /** Globs (relative, `/`-separated) of paths to keep; folders are walked regardless. @default all */
  include?: string[];
  /** Globs of paths to leave out; a matching folder is not entered. @default none */
  exclude?: string[];
  /** Logical name for the manifest. @default the folder's path */
  name?: string;
}
type _DirectorySourceOptionsAgrees = Assert<
  Agrees<DirectorySourceOptions, z.input<typeof directorySourceOptionsSchema>>
>;

interface Entry {
  rel: string;
  abs: string;
  type: "file" | "directory" | "symlink";
  size: number;
  mode: number;
  mtime: Date;
}

async function* walkTree(
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
    const info = await lstat(abs).catch((error: unknown) => {
      throw unreadable(root, childRel, error);
    });
    const base = { rel: childRel, abs, mode: info.mode & 0o7777, mtime: info.mtime };
    if (info.isDirectory()) {
      yield { ...base, type: "directory", size: 0 };
      yield* walkTree(root, childRel, keep, skip, counts, signal);
    } else if (!keep(childRel)) {
    } else if (info.isFile()) {
      yield { ...base, type: "file", size: info.size };
    } else if (info.isSymbolicLink()) {
      yield { ...base, type: "symlink", size: 0 };
    } else {
      counts.skipped++; // sockets, FIFOs, devices: not something a backup can carry
    }
  }
}

function unreadable(root: string, rel: string, error: unknown): StowageError {
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
  constructor(
    private readonly expected: number,
    private readonly short: (seen: number) => Error,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
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
 */
async function packFile(
  root: string,
  entry: Entry,
  target: NodeJS.WritableStream,
  signal: AbortSignal,
): Promise<void> {
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
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * A folder streamed as a tar (USTAR with pax headers): relative paths, modes, mtimes, symlinks as
 * links. Entries are in sorted order, so the same tree gives the same tar. A file is read up to the
 * size seen when it was reached; one that shrinks, grows or vanishes while the folder is packed
 * fails the backup rather than store a torn file, naming the file (`details.file`, `details.reason`
 * `"changed-while-read"` or `"vanished"`). Exclude files that are appended to all the time (live
 * logs), or back them up with the logs source. Memory: one read buffer at a time.
 *
 * @throws {CONFIG_INVALID} on bad options; {SOURCE_FAILED} when `path` is not a readable folder,
 *   or a file changed, vanished or could not be read while packed.
 * @example directorySource({ path: "/srv/app/uploads", exclude: ["**\/*.tmp"] })
 */
export function directorySource(options: DirectorySourceOptions): Source {
  const opts = parseOptions(directorySourceOptionsSchema, options, "directorySource");
  const root = resolve(opts.path);
  const keep = opts.include ? picomatch(opts.include, { dot: true }) : () => true;
  const skip = opts.exclude ? picomatch(opts.exclude, { dot: true }) : () => false;

  return {
    kind: "directory",
    name: opts.name ?? root,
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      const info = await stat(root).catch((error: unknown) => {
        throw new StowageError("SOURCE_FAILED", `directory source: cannot read ${root}`, { cause: error });
      });
      if (!info.isDirectory())
        throw new StowageError("SOURCE_FAILED", `directory source: ${root} is not a folder`);

      const counts = { files: 0, directories: 0, symlinks: 0, bytes: 0, skipped: 0 };
      const pack = (await loadTarStream()).pack();
      // Stops the walk and the file being read when the consumer goes away early (the tar entry
      // of a destroyed pack never drains), so the file is closed and details() settles.
      const stop = linkSignal(signal);
      const produce = async () => {
        try {
          await walk();
        } finally {
          stop.dispose();
        }
      };
      const walk = async () => {
        for await (const entry of walkTree(root, "", keep, skip, counts, stop.signal)) {
          const header = { name: entry.rel, mode: entry.mode, mtime: entry.mtime };
          if (entry.type === "directory") {
            counts.directories++;
            pack.entry({ ...header, type: "directory" });
          } else if (entry.type === "symlink") {
            counts.symlinks++;
            pack.entry({
              ...header,
              type: "symlink",
              linkname: await readlink(entry.abs).catch((error: unknown) => {
                throw unreadable(root, entry.rel, error);
              }),
            });
          } else {
            counts.files++;
            counts.bytes += entry.size;
            if (entry.size === 0) {
              pack.entry({ ...header, type: "file", size: 0 }, Buffer.alloc(0));
            } else {
              await packFile(
                root,
                entry,
                pack.entry({ ...header, type: "file", size: entry.size }),
                stop.signal,
              );
            }
          }
        }
      };
      const produced = produce();
      const stream = packedTar(pack, produced);
      stream.once("close", () => stop.abort());
      return {
        stream,
        contentType: "application/x-tar",
        details: async () => {
          await produced;
          return { path: root, ...counts };
        },
      };
    },
  };
}
