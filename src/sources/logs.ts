import { type FileHandle, open, realpath, stat } from "node:fs/promises";
import { dirname, isAbsolute, relative, resolve, sep } from "node:path";
import { Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import picomatch from "picomatch";
import type { z } from "zod";
import { linkSignal } from "../core/abort.js";
import { StowageError, throwIfAborted } from "../core/errors.js";
import { loadGlob } from "../core/lazy-deps.js";
import { durationSchema, lazySchema, parseDuration, parseOptions } from "../core/options.js";
import { newPack, packedTar } from "../core/pack-tar.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../core/types.js";

/** A moment: a Date, an ISO 8601 date-time, or a duration before the run's start ("24h", "7d"). */
const momentSchema = lazySchema((z) =>
  z.union([
    z.date(),
    durationSchema,
    z.iso.datetime({ offset: true, error: 'expected a Date, an ISO date-time or a duration such as "24h"' }),
  ]),
);

/** The zod schema of {@link LogsSourceOptions}, which parses the options at the boundary. */
export const logsSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * Globs of the files to export (tinyglobby syntax: `**`, `{a,b}`, `*.log*`), relative to
       * `baseDir` or absolute. Rotated files (`app.log.1`, `app.log.2.gz`) are files like any other:
       * match them (`app.log*`) and they are kept as they are, compressed or not.
       */
      paths: z.array(z.string().min(1)).min(1, "at least one glob"),
      /**
       * The folder paths in the tar are relative to, and relative globs start from. Every matched
       * file must lie under it.
       * @default the deepest folder common to all globs when they are all absolute, else the process's cwd
       */
      baseDir: z.string().min(1).optional(),
      /** Keep files modified at or after this moment; a duration counts back from the run's start. @default no lower bound */
      since: momentSchema.optional(),
      /** Keep files modified before this moment; a duration counts back from the run's start. @default no upper bound */
      until: momentSchema.optional(),
      /** Fail rather than export more files than this (a glob gone wide). @default 10000 */
      maxFiles: z.number().int().positive().default(10_000),
      /** Globs (relative to `baseDir`) of files to leave out, e.g. `["**\/*.tmp"]`. @default [] */
      exclude: z.array(z.string().min(1)).default([]),
      /** Logical name for the manifest. @default "logs" */
      name: z.string().min(1).default("logs"),
      /**
       * Back up an empty tar when no file matches in the window, rather than fail with SOURCE_EMPTY.
       * Off by default: a glob that stopped matching (a renamed folder, a log moved) would otherwise
       * make a backup of nothing every run, and look like success.
       * @default false
       */
      allowEmpty: z.boolean().default(false),
    })
    .strict(),
);
/** What {@link logsSource} takes: which log files (globs, time window, limits) and how they are packed. */
export interface LogsSourceOptions {
  /**
   * Globs of the files to export (tinyglobby syntax: `**`, `{a,b}`, `*.log*`), relative to
   * `baseDir` or absolute. Rotated files (`app.log.1`, `app.log.2.gz`) are files like any other:
   * match them (`app.log*`) and they are kept as they are, compressed or not.
   */
  paths: string[];
  /**
   * The folder paths in the tar are relative to, and relative globs start from. Every matched
   * file must lie under it.
   * @default the deepest folder common to all globs when they are all absolute, else the process's cwd
   */
  baseDir?: string;
  /** Keep files modified at or after this moment; a duration counts back from the run's start. @default no lower bound */
  since?: string | Date;
  /** Keep files modified before this moment; a duration counts back from the run's start. @default no upper bound */
  until?: string | Date;
  /** Fail rather than export more files than this (a glob gone wide). @default 10000 */
  maxFiles?: number;
  /** Globs (relative to `baseDir`) of files to leave out, e.g. `["**\/*.tmp"]`. @default [] */
  exclude?: string[];
  /** Logical name for the manifest. @default "logs" */
  name?: string;
  /**
   * Back up an empty tar when no file matches in the window, rather than fail with SOURCE_EMPTY.
   * Off by default: a glob that stopped matching (a renamed folder, a log moved) would otherwise
   * make a backup of nothing every run, and look like success.
   * @default false
   */
  allowEmpty?: boolean;
}
type _LogsSourceOptionsAgrees = Assert<Agrees<LogsSourceOptions, z.input<typeof logsSourceOptionsSchema>>>;

function moment(
  value: z.output<typeof momentSchema> | undefined,
  startedAt: Date,
  option: string,
): Date | undefined {
  if (value === undefined) return undefined;
  if (value instanceof Date) return value;
  if (/^\d+(ms|s|m|h|d|w|y)$/.test(value))
    return new Date(startedAt.getTime() - parseDuration(value, option));
  return new Date(value);
}

/** The deepest folder holding every glob's static part. */
function commonBase(patterns: readonly string[]): string {
  const bases = patterns.map((p) => {
    const scan = picomatch.scan(p);
    return resolve(scan.isGlob ? scan.base || "/" : dirname(p));
  });
  let common = bases[0]!;
  for (const base of bases.slice(1)) {
    while (common !== base && !base.startsWith(common === sep ? common : common + sep))
      common = dirname(common);
  }
  return common;
}

/**
 * Counts what passes, and errors instead of ending when less than `size` came: the tar header
 * already promised `size` bytes, so a file that shrank must fail here, before the entry ends short.
 */
class ExpectSize extends Transform {
  bytes = 0;
  constructor(
    private readonly size: number,
    private readonly path: string,
  ) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    callback(null, chunk);
  }
  override _flush(callback: TransformCallback): void {
    if (this.bytes >= this.size) {
      callback();
      return;
    }
    callback(
      new StowageError(
        "SOURCE_FAILED",
        `logs source: ${this.path} shrank while it was read (${this.bytes} of ${this.size} bytes)`,
        { details: { reason: "shrank", path: this.path, bytesAtOpen: this.size, bytesRead: this.bytes } },
      ),
    );
  }
}

interface Candidate {
  abs: string;
  rel: string;
  /** The file itself, links resolved: what is opened. */
  real?: string;
}

/** Whether `path` lies under the folder `base` (both absolute). */
const isUnder = (base: string, path: string) => {
  const rel = relative(base, path);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
};

/**
 * Log files as a tar: every file matched by `paths` (and not by `exclude`) whose modification
 * time falls in `[since, until)`, in path order, with paths relative to `baseDir`, their modes and
 * their mtimes (to the millisecond, in a pax header). Files are copied as they are; rotated and
 * compressed files included. A file that grows while it is read (an active log) is read up to the
 * size it had when opened, and `details.grew` lists it; one that shrinks (truncated or rotated
 * with copytruncate mid-read) fails the backup rather than store a torn file. Symlinked files are
 * followed and stored as files when the file they lead to lies under `baseDir` too. Memory: one
 * read buffer; one open file at a time, closed when the stream ends, fails or is destroyed.
 *
 * Details: `files`, `bytes`, `window` (`since`/`until` as ISO strings or null), `baseDir`,
 * `patterns`, `outsideWindow` (matched but left out), and `grew` (`[{ path, bytesAtOpen, bytesNow }]`).
 *
 * @throws {CONFIG_INVALID} on bad options, each named; from `open`, when a match lies outside
 *   `baseDir` (or is a link to a file outside it) or `since` is not before `until`.
 * @throws {SOURCE_EMPTY} (from `backup`) when no file matches in the window, unless `allowEmpty`
 *   (`details.reason` `"no-files"`, with `outsideWindow`: how many matched but fell outside it).
 * @throws {SOURCE_FAILED} (from `backup`) when more than `maxFiles` files match, a file cannot be
 *   read, or a file shrinks while read (`details.reason`: `"too-many-files"`, `"shrank"`).
 * @throws {ABORTED} when the backup's signal fires.
 * @example
 * await backup({
 *   job: "app-logs",
 *   source: logsSource({ paths: ["/var/log/app/*.log*", "/var/log/audit/**"], since: "24h" }),
 *   transforms: [gzip()],
 *   sink,
 * });
 */
export function logsSource(options: LogsSourceOptions): Source {
  const opts = parseOptions(logsSourceOptionsSchema, options, "logsSource");
  const baseDir = resolve(
    opts.baseDir ?? (opts.paths.every((p) => isAbsolute(p)) ? commonBase(opts.paths) : process.cwd()),
  );
  const excluded = opts.exclude.length > 0 ? picomatch(opts.exclude, { dot: true }) : () => false;

  return {
    kind: "logs",
    name: opts.name,
    async open({ signal, startedAt }: SourceContext): Promise<SourceOutput> {
      const since = moment(opts.since, startedAt, "since");
      const until = moment(opts.until, startedAt, "until");
      if (since && until && since.getTime() >= until.getTime()) {
        throw new StowageError("CONFIG_INVALID", "logsSource: since must be before until", {
          details: { issues: [{ path: "since", problem: "not before until" }] },
        });
      }
      const window = { since: since?.toISOString() ?? null, until: until?.toISOString() ?? null };

      const glob = await loadGlob();
      const matched = await glob(opts.paths, {
        cwd: baseDir,
        absolute: true,
        dot: true,
        onlyFiles: true,
        expandDirectories: false,
        followSymbolicLinks: true,
        signal,
      });
      throwIfAborted(signal, "logs source");
      const candidates: Candidate[] = [];
      for (const abs of new Set(matched)) {
        const rel = relative(baseDir, abs).split(sep).join("/");
        if (rel.startsWith("../") || rel === ".." || isAbsolute(rel)) {
          throw new StowageError("CONFIG_INVALID", `logsSource: ${abs} is outside baseDir ${baseDir}`, {
            details: { issues: [{ path: "baseDir", problem: `does not contain ${abs}` }] },
          });
        }
        if (!excluded(rel)) candidates.push({ abs, rel });
      }
      candidates.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));

      // The window is decided on one stat per file, before the tar starts, so that maxFiles is
      // checked before a byte is produced.
      const inWindow: Candidate[] = [];
      let outsideWindow = 0;
      const realBase = await realpath(baseDir).catch(() => baseDir);
      for (const candidate of candidates) {
        throwIfAborted(signal, "logs source");
        const info = await stat(candidate.abs).catch(() => undefined);
        if (!info?.isFile()) continue; // vanished (rotated away) since the glob, or not a file
        // A link is followed only to a file under baseDir: a link planted in a log folder must not
        // carry another file (a key, /etc/shadow) into the backup.
        const real = await realpath(candidate.abs).catch(() => undefined);
        if (real === undefined) continue;
        if (!isUnder(realBase, real)) {
          throw new StowageError(
            "CONFIG_INVALID",
            `logsSource: ${candidate.abs} is a link to ${real}, outside baseDir ${baseDir}`,
            { details: { issues: [{ path: "baseDir", problem: `does not contain ${real}` }] } },
          );
        }
        candidate.real = real;
        const t = info.mtime.getTime();
        if ((since && t < since.getTime()) || (until && t >= until.getTime())) outsideWindow++;
        else inWindow.push(candidate);
      }
      if (inWindow.length === 0 && !opts.allowEmpty) {
        throw new StowageError(
          "SOURCE_EMPTY",
          `logs source: no file matches ${opts.paths.join(", ")} under ${baseDir}${outsideWindow > 0 ? ` in the window (${outsideWindow} outside it)` : ""}`,
          { details: { reason: "no-files", baseDir, patterns: opts.paths, window, outsideWindow } },
        );
      }
      if (inWindow.length > opts.maxFiles) {
        throw new StowageError(
          "SOURCE_FAILED",
          `logs source: ${inWindow.length} files match, more than maxFiles ${opts.maxFiles}`,
          { details: { reason: "too-many-files", matched: inWindow.length, maxFiles: opts.maxFiles } },
        );
      }

      const counts = { files: 0, bytes: 0 };
      const grew: Array<{ path: string; bytesAtOpen: number; bytesNow: number }> = [];
      const pack = await newPack();
      // Stops the read in progress when the run is aborted or the consumer goes away early, so
      // the open file is closed either way.
      const stop = linkSignal(signal);
      const produce = async () => {
        try {
          await packAll();
        } finally {
          stop.dispose();
        }
      };
      const packAll = async () => {
        for (const { abs, rel, real } of inWindow) {
          throwIfAborted(stop.signal, "logs source");
          let handle: FileHandle | undefined;
          try {
            handle = await open(real ?? abs, "r");
            const info = await handle.stat({ bigint: true });
            const size = Number(info.size);
            const header = {
              name: rel,
              type: "file" as const,
              size,
              mode: Number(info.mode) & 0o777,
              mtime: new Date(Number(info.mtimeMs)),
              // Exact digits, not a float: "1717400000.123456789".
              pax: {
                mtime: `${info.mtimeNs / 1_000_000_000n}.${String(info.mtimeNs % 1_000_000_000n).padStart(9, "0")}`,
              },
            };
            if (size === 0) {
              pack.entry(header, Buffer.alloc(0));
            } else {
              const entry = pack.entry(header);
              const file = handle.createReadStream({
                start: 0,
                end: size - 1,
                autoClose: false,
                highWaterMark: 1 << 20,
              });
              await pipeline(file, new ExpectSize(size, rel), entry, { signal: stop.signal });
            }
            const now = (await handle.stat()).size;
            if (now > size) grew.push({ path: rel, bytesAtOpen: size, bytesNow: now });
            counts.files++;
            counts.bytes += size;
          } finally {
            await handle?.close();
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
          return { baseDir, patterns: opts.paths, ...counts, window, outsideWindow, grew };
        },
      };
    },
  };
}
