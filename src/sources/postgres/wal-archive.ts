/**
 * `archiveWal`: one WAL file (segment, `.history`, `.backup`, `.partial`) through the job's
 * transforms into the sink, for PostgreSQL's `archive_command`.
 */
import { createReadStream } from "node:fs";
import { readdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import { eachConcurrently } from "../../core/each-concurrently.js";
import { StowageError, throwIfAborted, wrapError } from "../../core/errors.js";
import { FirstFailure, transfer } from "../../core/failure.js";
import { assertSafeKey, JOB_NAME_PATTERN, newBackupId } from "../../core/keys.js";
import { MANIFEST_VERSION, type Manifest, serializeManifest } from "../../core/manifest.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema, transformSchema } from "../../core/options.js";
import { HashCounter } from "../../core/streams.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Sink, Transform } from "../../core/types.js";
import { VERSION } from "../../core/version.js";
import {
  parseWalName,
  type WalFileName,
  walNameOrThrow,
  walRecordKey,
  walTimelinePrefix,
} from "../../core/wal-names.js";
import { readWalRecord, WAL_SOURCE_KIND, writeWalRecord } from "./wal-record.js";

/** The zod schema of {@link ArchiveWalOptions}, which parses the options at the boundary. */
export const archiveWalOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      /** The job whose prefix holds the WAL: `<job>/wal/<timeline>/`. */
      job: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
      /** The file PostgreSQL hands `archive_command` as `%p`; its base name is the WAL file's name. */
      path: z.string().min(1),
      /** Applied in order, as a job's are (compress before you encrypt). @default [] */
      transforms: z.array(transformSchema).default([]),
      /**
       * Also archive up to this many of the segments PostgreSQL finished after this one and has
       * not archived yet (the `archive_status/*.ready` files beside `path`), before resolving.
       * @default 0
       */
      ahead: z.number().int().min(0).max(MAX_AHEAD).default(0),
      signal: signalSchema.optional(),
      /** The clock the record's times are read from. @default () => new Date() */
      now: z
        .custom<() => Date>((v) => typeof v === "function", "expected a function returning a Date")
        .optional(),
    })
    .strict(),
);
/** What {@link archiveWal} takes: the sink and job, the file's path (`%p`), its transforms. */
export interface ArchiveWalOptions {
  /** The sink the WAL is archived to. */
  sink: Sink;
  /** The job whose prefix holds the WAL: `<job>/wal/<timeline>/` (lowercase letters, digits, '.', '_' and '-', at most 128). */
  job: string;
  /** The file PostgreSQL hands `archive_command` as `%p`; its base name is the WAL file's name. */
  path: string;
  /** Applied in order, as a job's are (compress before you encrypt). @default [] */
  transforms?: Transform[];
  /**
   * Also archive up to this many (at most 16) of the segments PostgreSQL finished after this one
   * and has not archived yet (the `archive_status/*.ready` files beside `path`, same timeline,
   * oldest first), two at a time, before resolving. PostgreSQL runs one
   * `archive_command` at a time, each a new process; when it then asks for a segment pushed ahead,
   * the push finds it archived with the same content and costs only the start-up and a hash. A
   * push ahead that fails is left for PostgreSQL's own call and does not fail this one.
   * @default 0
   */
  ahead?: number;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /** The clock the record's times are read from. @default () => new Date() */
  now?: () => Date;
}
type _ArchiveWalOptionsAgrees = Assert<Agrees<ArchiveWalOptions, z.input<typeof archiveWalOptionsSchema>>>;

/** What {@link archiveWal} stored, or found already stored. */
export interface ArchiveWalResult {
  /** The WAL file's name, e.g. `000000010000000000000003`. */
  name: string;
  /** "archived" now, or "already-archived" with identical content (PostgreSQL retries pushes). */
  status: "archived" | "already-archived";
  /** The key of the stored file. */
  key: string;
  /** Plain bytes (16 MiB for a segment of a default cluster). */
  bytes: number;
  /** Stored bytes, after the transforms. */
  storedBytes: number;
  /** The segments after this one archived (or found archived) by `ahead`, oldest first. */
  ahead: string[];
}

/** The most segments one push may archive ahead. */
export const MAX_AHEAD = 16;
/** Segments archived ahead at once: each is already block-parallel inside, so two keep both a push's I/O and its compression busy. */
const AHEAD_CONCURRENCY = 2;

/**
 * Archives one WAL file: reads `path`, passes it through `transforms` into
 * `<job>/wal/<timeline>/<name><extensions>`, then writes its record (`….wal.json`, a
 * manifest-shaped JSON with the plain and stored SHA-256). It resolves only once both are durably
 * stored, which is when `archive_command` may exit 0.
 *
 * PostgreSQL may push a file again (after a crash between archiving and noting it): a file whose
 * record is there with the same plain SHA-256 and size succeeds without writing; one with other
 * content fails with INTEGRITY_MISMATCH and leaves the archive as it was — two clusters writing to
 * one job, or a restored cluster archiving on a timeline it did not fork, must not pass silently.
 * The record is found at a key fixed by the name: a push never lists the archive. With `ahead`,
 * the finished segments after this one are archived too before it resolves (see the option).
 *
 * @throws {CONFIG_INVALID} bad options, or a path whose name is not a WAL file's.
 * @throws {INTEGRITY_MISMATCH} the file is already archived with different content.
 * @throws {SOURCE_FAILED} the file cannot be read. {SINK_WRITE_FAILED} {TRANSFORM_FAILED} {ABORTED}
 * @example
 * await archiveWal({ sink, job: "app-db", path: "pg_wal/000000010000000000000003", transforms: [gzip(), aes256gcm({ key })] });
 */
export async function archiveWal(options: ArchiveWalOptions): Promise<ArchiveWalResult> {
  const opts = parseOptions(archiveWalOptionsSchema, options, "archiveWal");
  const file = walNameOrThrow(basename(opts.path), "path", "archiveWal");
  const push = { ...opts, clock: opts.now ?? (() => new Date()) };
  const result = await archiveFile(push, opts.path, file);
  const ahead = opts.ahead > 0 ? await archiveAhead(push, file) : [];
  return { ...result, ahead };
}

type Push = z.output<typeof archiveWalOptionsSchema> & { clock: () => Date };

/**
 * The next `push.ahead` finished segments of `file`'s timeline waiting for the archiver, archived
 * {@link AHEAD_CONCURRENCY} at a time; returns the names that are archived now. PostgreSQL writes
 * `<name>.ready` only once a segment is complete, and recycles a segment only after its own
 * `archive_command` for it succeeded, so a segment listed here stays whole while it is read.
 */
async function archiveAhead(push: Push, file: WalFileName): Promise<string[]> {
  const folder = dirname(push.path);
  let entries: string[];
  try {
    entries = await readdir(join(folder, "archive_status"));
  } catch {
    return []; // not a data directory's pg_wal: nothing to look ahead at
  }
  const next = entries
    .map((entry) => (entry.endsWith(".ready") ? parseWalName(entry.slice(0, -".ready".length)) : undefined))
    .filter(
      (f): f is WalFileName => f?.kind === "segment" && f.timeline === file.timeline && f.name > file.name,
    )
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .slice(0, push.ahead);
  const archived = new Set<string>();
  await eachConcurrently(
    next,
    AHEAD_CONCURRENCY,
    async (ahead) => {
      try {
        await archiveFile(push, join(folder, ahead.name), ahead);
        archived.add(ahead.name);
      } catch {
        // Left for PostgreSQL's own call for it, which reports what is wrong.
      }
    },
    () => push.signal?.aborted === true,
  );
  return next.filter((f) => archived.has(f.name)).map((f) => f.name);
}

/** Archives one WAL file (see {@link archiveWal}). */
async function archiveFile(
  push: Push,
  path: string,
  file: WalFileName,
): Promise<Omit<ArchiveWalResult, "ahead">> {
  const { sink, job, transforms, signal, clock } = push;
  const where = `archiveWal ${job} ${file.name}`;
  throwIfAborted(signal, where);

  const existing = await readWalRecord(sink, job, file, signal);
  if (existing) {
    const local = await hashFile(path, where, signal);
    if (local.bytes === existing.content.bytes && local.sha256 === existing.content.sha256) {
      return {
        name: file.name,
        status: "already-archived",
        key: existing.artifact.key,
        bytes: local.bytes,
        storedBytes: existing.artifact.bytes,
      };
    }
    throw new StowageError(
      "INTEGRITY_MISMATCH",
      `${where}: already archived with different content (${existing.content.bytes} B ${existing.content.sha256.slice(0, 12)}…, this one ${local.bytes} B ${local.sha256.slice(0, 12)}…); refusing to replace it`,
      { details: { name: file.name, key: existing.artifact.key, reason: "archived-differs" } },
    );
  }

  const startedAt = clock();
  // The record's id, known before encoding: an encryption stage binds the artifact to it (format 3).
  const id = newBackupId(startedAt);
  const key = `${walTimelinePrefix(job, file.timeline)}${file.name}${transforms.map((t) => t.extension).join("")}`;
  assertSafeKey(key, where);
  const failure = new FirstFailure();
  const input = createReadStream(path, { highWaterMark: 1 << 20 });
  failure.watch(input, "SOURCE_FAILED", `${where}: reading ${path} failed`);
  let encoders: Awaited<ReturnType<(typeof transforms)[number]["encode"]>>[];
  try {
    encoders = await Promise.all(transforms.map((t) => t.encode({ job, id })));
  } catch (error) {
    input.destroy();
    throw wrapError(error, "TRANSFORM_FAILED", `${where}: a transform failed to start`, { key }, signal);
  }
  for (const [i, t] of transforms.entries()) {
    failure.watch(encoders[i]!, "TRANSFORM_FAILED", `${where}: transform ${t.name} failed`);
  }
  const plain = new HashCounter();
  const stored = encoders.length === 0 ? plain : new HashCounter();
  const written = await transfer({
    streams: [input, ...(encoders.length === 0 ? [plain] : [plain, ...encoders, stored])],
    sink,
    key,
    write: { contentType: "application/octet-stream", ...(signal ? { signal } : {}) },
    failure,
    writing: `${where}: ${sink.kind} sink failed writing ${key}`,
    unclaimed: { code: "SOURCE_FAILED", what: `${where}: stream failed` },
    details: { name: file.name, key },
    ...(signal ? { signal } : {}),
  });

  const record: Manifest = {
    version: MANIFEST_VERSION,
    id,
    job,
    startedAt: startedAt.toISOString(),
    finishedAt: clock().toISOString(),
    source: {
      kind: WAL_SOURCE_KIND,
      name: file.name,
      details: {
        kind: file.kind,
        timeline: file.timeline,
        ...(file.segment !== undefined ? { segment: file.segment } : {}),
      },
    },
    artifact: {
      sink: sink.kind,
      key,
      location: written.location,
      bytes: stored.bytes,
      sha256: stored.digest(),
    },
    content: { bytes: plain.bytes, sha256: plain.digest(), contentType: "application/octet-stream" },
    transforms: transforms.map((t) => t.describe()),
    labels: {},
    generator: { name: "stowage", version: VERSION },
  };
  try {
    await writeWalRecord(sink, walRecordKey(job, file), serializeManifest(record), signal);
  } catch (error) {
    // Without its record the file is not archived: take it away again, as a backup does.
    await sink.delete([key]).catch(() => undefined);
    throw error;
  }
  return { name: file.name, status: "archived", key, bytes: plain.bytes, storedBytes: stored.bytes };
}

/** The SHA-256 and size of a local file. @throws {SOURCE_FAILED} */
async function hashFile(path: string, where: string, signal?: AbortSignal) {
  const counter = new HashCounter();
  const drain = new Writable({ write: (_chunk, _encoding, callback) => callback() });
  try {
    await pipeline(createReadStream(path), counter, drain, signal ? { signal } : {});
  } catch (error) {
    throw wrapError(error, "SOURCE_FAILED", `${where}: reading ${path} failed`, { path }, signal);
  }
  return { bytes: counter.bytes, sha256: counter.digest() };
}
