import type { z } from "zod";
import { lazySchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type {
  Leftover,
  LeftoverOptions,
  OpenFileOptions,
  ReadOptions,
  Sink,
  SinkFile,
} from "../../core/types.js";

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
/** What {@link filesystemSink} takes: the root folder, file and folder modes, the heartbeat. */
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
  /** The root folder as an absolute path (resolved against the working folder; links not followed). */
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

export type ParsedFilesystemSinkOptions = z.output<typeof filesystemSinkOptionsSchema>;
