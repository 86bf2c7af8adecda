import { readlink, stat } from "node:fs/promises";
import { resolve } from "node:path";
import picomatch from "picomatch";
import type { z } from "zod";
import { linkSignal } from "../core/abort.js";
import { StowageError } from "../core/errors.js";
import type { ChainableSource, ChainPlan } from "../core/incremental.js";
import { type ChainRecord, type Manifest, parseManifest } from "../core/manifest.js";
import { lazySchema, parseOptions, sinkSchema } from "../core/options.js";
import { newPack, packedTar } from "../core/pack-tar.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { DecryptionKey, Sink, SourceContext, SourceOutput } from "../core/types.js";
import { INDEX_MEMBER, readIndex } from "./directory/file-index.js";
import { EMPTY_SHA256, type IndexBase, IndexBuilder, IndexCache } from "./directory/incremental.js";
import { packFile, unreadable, walkTree } from "./directory/walk.js";

export {
  type RestoreDirectoryChainOptions,
  type RestoreDirectoryChainResult,
  restoreDirectoryChain,
} from "./directory/chain-restore.js";
export { type FileIndex, INDEX_MEMBER, type IndexEntry, readIndex } from "./directory/file-index.js";

/** Options of an incremental run; see {@link directorySource}. */
export const directoryIncrementalSchema = lazySchema((z) =>
  z
    .object({
      /**
       * The manifest of an earlier chained backup of the same folder and job. Absent: this run is a
       * full that starts a chain (it carries the file index the next run needs).
       */
      base: z.unknown().optional(),
      /** `incremental` against any earlier link, or `differential` against a full. @default "incremental" */
      kind: z.enum(["incremental", "differential"]).default("incremental"),
      /** The sink the base is stored in: its file index is read from there. */
      sink: sinkSchema,
      /** Keys that decrypt the base. @default [] */
      keys: z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).default([]),
      /** Also re-read every unchanged-looking file and compare its SHA-256 (slow: reads the whole tree). @default false */
      compareContent: z.boolean().default(false),
    })
    .strict(),
);

/** Options of an incremental run of {@link directorySource}. */
export interface DirectoryIncrementalOptions {
  /**
   * The manifest of an earlier chained backup of the same folder and job. Absent: this run is a
   * full that starts a chain (it carries the file index the next run needs).
   */
  base?: unknown;
  /** `incremental` against any earlier link, or `differential` against a full. @default "incremental" */
  kind?: "incremental" | "differential";
  /** The sink the base is stored in: its file index is read from there. */
  sink: Sink;
  /** Keys that decrypt the base. @default [] */
  keys?: DecryptionKey[];
  /** Also re-read every unchanged-looking file and compare its SHA-256 (slow: reads the whole tree). @default false */
  compareContent?: boolean;
}
type _DirectoryIncrementalAgrees = Assert<
  Agrees<DirectoryIncrementalOptions, z.input<typeof directoryIncrementalSchema>>
>;

/** The zod schema of {@link DirectorySourceOptions}, which parses the options at the boundary. */
export const directorySourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The folder to back up. */
      path: z.string().min(1, "path must name a folder"),
      /** Globs (relative, `/`-separated) of paths to keep; folders are walked regardless. @default all */
      include: z.array(z.string().min(1)).optional(),
      /** Globs of paths to leave out; a matching folder is not entered. @default none */
      exclude: z.array(z.string().min(1)).optional(),
      /** Logical name for the manifest. @default the folder's path */
      name: z.string().optional(),
      /** Back up only what changed since `incremental.base` (see {@link directoryIncrementalSchema}). */
      incremental: directoryIncrementalSchema.optional(),
    })
    .strict(),
);
/**
 * What {@link directorySource} takes: the folder, which paths to keep or skip, and whether the
 * backup is a full or builds on a base (`incremental`).
 */
export interface DirectorySourceOptions {
  /** The folder to back up. */
  path: string;
  /** Globs (relative, `/`-separated) of paths to keep; folders are walked regardless. @default all */
  include?: string[];
  /** Globs of paths to leave out; a matching folder is not entered. @default none */
  exclude?: string[];
  /** Logical name for the manifest. @default the folder's path */
  name?: string;
  /** Back up only what changed since `incremental.base` (see {@link DirectoryIncrementalOptions}). */
  incremental?: DirectoryIncrementalOptions;
}
type _DirectorySourceOptionsAgrees = Assert<
  Agrees<DirectorySourceOptions, z.input<typeof directorySourceOptionsSchema>>
>;

/** A {@link directorySource}: a source a job can chain (see `ChainableSource`). */
export type DirectorySource = ChainableSource;

/**
 * A folder streamed as a tar (USTAR with pax headers): relative paths, modes, mtimes, symlinks as
 * links. Entries are in sorted order, so the same tree gives the same tar. A file is read up to the
 * size seen when it was reached; one that shrinks, grows or vanishes while the folder is packed
 * fails the backup rather than store a torn file, naming the file (`details.file`, `details.reason`
 * `"changed-while-read"` or `"vanished"`). Exclude files that are appended to all the time (live
 * logs), or back them up with the logs source. Memory: one read buffer at a time.
 *
 * **Chains.** With `incremental` (or through a job's per-kind schedule, which calls `chainFrom`),
 * each backup also carries a file index (path, type, size, mode, mtime, ctime, inode, SHA-256, and
 * which backup holds each file's bytes) as the tar's last member, `.stowage-index.ndjson`, so it
 * is compressed and encrypted like the files. Without a base the run is a `full` that starts a
 * chain. With one, it packs every folder and symlink but only the files that are new or whose
 * size, mtime, ctime, mode or inode changed (or content, with `compareContent`); deletions are in
 * the index. The manifest's `chain` names the kind and the parent. Restore a chained backup with
 * `restoreDirectoryChain`, which applies the links in order. The base's index is read back from
 * the sink, or from memory when this source wrote it (the last full and last run are kept).
 * Memory: the base's and this run's index, about 200 bytes a path.
 *
 * @throws {CONFIG_INVALID} on bad options (a base that is not a chained directory backup, a
 *   differential whose base is not a full); {SOURCE_FAILED} when `path` is not a readable folder,
 *   or a file changed, vanished or could not be read while packed, or the base's index cannot be
 *   read (its error is the cause).
 * @example directorySource({ path: "/srv/app/uploads", exclude: ["**\/*.tmp"] })
 * @example directorySource({ path: "/srv/app/uploads", incremental: { base: lastManifest, sink } })
 */
export function directorySource(options: DirectorySourceOptions): DirectorySource {
  const opts = parseOptions(directorySourceOptionsSchema, options, "directorySource");
  return makeSource(opts, new IndexCache());
}

type ParsedOptions = z.output<typeof directorySourceOptionsSchema>;

function badBase(problem: string): StowageError {
  return new StowageError(
    "CONFIG_INVALID",
    `directorySource: invalid options: incremental.base: ${problem}`,
    {
      details: { issues: [{ path: "incremental.base", problem }] },
    },
  );
}

function makeSource(opts: ParsedOptions, cache: IndexCache): DirectorySource {
  const root = resolve(opts.path);
  const name = opts.name ?? root;
  const keep = opts.include ? picomatch(opts.include, { dot: true }) : () => true;
  const skipGlob = opts.exclude ? picomatch(opts.exclude, { dot: true }) : () => false;
  const inc = opts.incremental;
  const chained = inc !== undefined;
  // The index member's name at the top of the folder is reserved in a chained backup.
  const skip = chained ? (rel: string) => rel === INDEX_MEMBER || skipGlob(rel) : skipGlob;
  const base =
    inc?.base === undefined ? undefined : parseManifest(inc.base, "directorySource: incremental.base");
  if (base) {
    if (!base.chain) throw badBase("not part of a chain (its manifest has no chain record)");
    if (base.source.kind !== "directory" || base.source.details.path !== root) {
      throw badBase(`not a backup of ${root}`);
    }
    if (inc!.kind === "differential" && base.chain.kind !== "full") {
      throw badBase("a differential's base must be a full");
    }
  }

  return {
    kind: "directory",
    name,
    chainFrom(plan: ChainPlan): DirectorySource {
      const { kind, base: planBase, sink, keys } = plan;
      const incremental =
        kind === "full" || !planBase
          ? {
              sink,
              keys: [...(keys ?? [])],
              kind: "incremental" as const,
              compareContent: inc?.compareContent ?? false,
            }
          : {
              sink,
              keys: [...(keys ?? [])],
              kind,
              base: planBase,
              compareContent: inc?.compareContent ?? false,
            };
      const next = parseOptions(directorySourceOptionsSchema, { ...opts, incremental }, "directorySource");
      return makeSource(next, cache);
    },
    async open({ signal, job }: SourceContext): Promise<SourceOutput> {
      const info = await stat(root).catch((error: unknown) => {
        throw new StowageError("SOURCE_FAILED", `directory source: cannot read ${root}`, { cause: error });
      });
      if (!info.isDirectory())
        throw new StowageError("SOURCE_FAILED", `directory source: ${root} is not a folder`);
      if (base && job !== undefined && base.job !== job)
        throw badBase(`a backup of job ${base.job}, not ${job}`);
      const builder = chained
        ? new IndexBuilder(
            base ? inc!.kind : "full",
            base ? await baseIndex(base, signal) : undefined,
            inc!.compareContent,
          )
        : undefined;

      const counts = { files: 0, directories: 0, symlinks: 0, bytes: 0, skipped: 0 };
      const changes = { packed: 0, unchanged: 0, deleted: 0 };
      let record: ChainRecord | undefined;
      const pack = await newPack();
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
            builder?.record(entry);
          } else if (entry.type === "symlink") {
            counts.symlinks++;
            pack.entry({
              ...header,
              type: "symlink",
              linkname: await readlink(entry.abs).catch((error: unknown) => {
                throw unreadable(root, entry.rel, error);
              }),
            });
            builder?.record(entry);
          } else {
            counts.files++;
            counts.bytes += entry.size;
            const kept = await builder?.unchanged(root, entry);
            if (kept) {
              changes.unchanged++;
              builder!.record(entry, undefined, kept);
              continue;
            }
            changes.packed++;
            let sha256 = EMPTY_SHA256;
            if (entry.size === 0) {
              pack.entry({ ...header, type: "file", size: 0 }, Buffer.alloc(0));
            } else {
              sha256 = await packFile(
                root,
                entry,
                pack.entry({ ...header, type: "file", size: entry.size }),
                stop.signal,
              );
            }
            builder?.record(entry, sha256);
          }
        }
        if (builder) {
          const done = builder.finish();
          changes.deleted = done.index.deleted.length;
          pack.entry({ name: INDEX_MEMBER, type: "file", mode: 0o600, mtime: new Date(0) }, done.bytes);
          record = done.record;
          cache.put(done.record.index.sha256, done.index);
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
          return { path: root, ...counts, ...(builder ? { changes } : {}) };
        },
        chain: () => record,
      };
    },
  };

  async function baseIndex(manifest: Manifest, signal: AbortSignal): Promise<IndexBase> {
    const cached = cache.get(manifest.chain!.index.sha256);
    if (cached) return { manifest, index: cached };
    try {
      const index = await readIndex({ sink: inc!.sink, manifest, keys: inc!.keys, signal });
      return { manifest, index };
    } catch (error) {
      throw new StowageError(
        "SOURCE_FAILED",
        `directory source ${root}: cannot read the file index of the base ${manifest.artifact.key}`,
        { cause: error, details: { path: root, base: manifest.id, reason: "base-unreadable" } },
      );
    }
  }
}
