import { createHash } from "node:crypto";
import { readSync } from "node:fs";
import { setTimeout as delay, setImmediate as nextTurn } from "node:timers/promises";
import type { ArtifactBlocks } from "./blocks.js";
import { type StowageErrorCode, wrapError } from "./errors.js";
import type { ChainRecord } from "./manifest.js";
import type {
  FileSourceOutput,
  Sink,
  SinkFile,
  Source,
  SourceContext,
  WriteOptions,
  WrittenObject,
} from "./types.js";

/** How much of the file is read back at a time. */
const READ_BYTES = 1 << 20;
/** How long to wait, once the reader has caught up with the writer, before looking again. */
const POLL_MS = 5;

export interface ThroughFileOptions {
  /** A source with `openToFile`. */
  source: Source;
  /** A sink with `openFile`. */
  sink: Sink;
  /** The run's own context; its signal stops the source. */
  context: SourceContext;
  write: WriteOptions;
  /**
   * What the artifact's key will start with (`<job>/<day>/<id>`): the sink keeps its temporary file
   * there, under the job's prefix, where a sweep of the job finds it if this process dies.
   */
  prefix: string;
  /** The artifact's key, from what the source says it produces. */
  keyFor(output: { contentType: string; extension?: string }): string;
  /** Called as bytes are hashed. */
  onBytes(bytes: number): void;
  /** Names the backup in errors, e.g. "backup app-db". */
  what: string;
  details: Record<string, unknown>;
  /** The caller's signal, so an abort is reported as ABORTED. */
  signal?: AbortSignal;
  /** Runs after the source reported success, before the file is committed (a lease's fence). */
  beforeCommit?: () => Promise<void>;
}

/** What either of `backup()`'s paths hands back for the manifest. */
export interface BackupRun {
  key: string;
  contentType: string;
  written: WrittenObject;
  /** The plain bytes, as the source gave them. */
  content: { bytes: number; sha256: string };
  /** The stored bytes; with no transforms, the plain bytes. Blocks: when unencrypted (stream path). */
  artifact: { bytes: number; sha256: string; blocks?: ArtifactBlocks };
  sourceDetails: Record<string, unknown>;
  /** The source's chain record, for an incremental source (see `SourceOutput.chain`). */
  chain?: ChainRecord;
}

/** Whether `backup()` can take {@link backupThroughFile}: no transforms, and both ends able to. */
export const canBackupThroughFile = (source: Source, sink: Sink, transforms: readonly unknown[]) =>
  transforms.length === 0 && source.openToFile !== undefined && sink.openFile !== undefined;

/**
 * `backup()`'s path for a source that runs another process (pg_dump) into a sink on a local disk,
 * with no transforms: the process writes straight into the sink's temporary file, as
 * `pg_dump > file` would, and this process only reads the file back (from the page cache) as it
 * grows, to hash and count it. Each byte is copied by the kernel once instead of through a pipe,
 * this process and a write, which on a small machine leaves the CPU to the database and pg_dump.
 *
 * All or nothing, like the stream path: the file becomes the object only after the writer has
 * finished successfully and every byte it wrote has been hashed; on any failure or abort the
 * process is stopped and reaped and the temporary file removed. Memory: one 1 MiB buffer.
 */
export async function backupThroughFile(options: ThroughFileOptions): Promise<BackupRun> {
  const { source, sink, context, what, signal } = options;
  const { openToFile } = source;
  const { openFile } = sink;
  if (!openToFile || !openFile)
    throw new TypeError("backupThroughFile: needs source.openToFile and sink.openFile");
  const fail = (code: StowageErrorCode, message: string, error: unknown, details = options.details) =>
    wrapError(error, code, `${what}: ${message}`, details, signal);

  let file: SinkFile;
  try {
    file = await openFile.call(sink, { ...options.write, prefix: options.prefix });
  } catch (error) {
    throw fail("SINK_WRITE_FAILED", `${sink.kind} sink failed to open a file`, error);
  }
  const sourceFailed = {
    code: "SOURCE_FAILED",
    message: `source ${source.kind}:${source.name} failed`,
  } as const;
  let output: FileSourceOutput;
  try {
    output = await openToFile.call(source, file.handle.fd, context);
  } catch (error) {
    await file.discard();
    throw fail(sourceFailed.code, sourceFailed.message, error);
  }

  let stage: { code: StowageErrorCode; message: string } = sourceFailed;
  let key: string | undefined;
  try {
    key = options.keyFor(output);
    const readBack = `${sink.kind} sink failed reading back what was written to ${key}`;
    const digest = await follow(file, output, context.signal, options.onBytes, (error) =>
      fail("SINK_WRITE_FAILED", readBack, error, { ...options.details, key }),
    );
    const sourceDetails = await output.details();
    await options.beforeCommit?.();
    stage = { code: "SINK_WRITE_FAILED", message: `${sink.kind} sink failed writing ${key}` };
    const written = await file.commit(key, options.write);
    return {
      key,
      contentType: output.contentType,
      written,
      content: digest,
      artifact: digest,
      sourceDetails,
    };
  } catch (error) {
    await output.stop();
    await file.discard();
    throw fail(stage.code, stage.message, error, key ? { ...options.details, key } : options.details);
  }
}

/**
 * Reads the file as the writer grows it, hashing every byte, until the writer has finished and
 * the file holds nothing more. Rejects as soon as the writer fails.
 */
async function follow(
  file: SinkFile,
  output: FileSourceOutput,
  signal: AbortSignal,
  onBytes: (bytes: number) => void,
  /** The error for a failed read of the file, told apart from the source's own failures. */
  readFailed: (error: unknown) => Error,
): Promise<{ bytes: number; sha256: string }> {
  const state: { ended: boolean; error?: unknown } = { ended: false };
  // Resolves (never rejects) once the writer has finished, either way.
  const settled = output.finished.then(
    () => {
      state.ended = true;
    },
    (error: unknown) => {
      state.error = error ?? new Error("the source failed");
      state.ended = true;
    },
  );
  const hash = createHash("sha256");
  const buffer = Buffer.allocUnsafe(READ_BYTES);
  let position = 0;
  // A blocking read, on purpose: what it reads was written a moment ago and sits in the page
  // cache, so it costs a copy of 1 MiB (~0.1 ms, less than hashing that MiB, which holds the
  // thread anyway), where a promise read would cost a round trip through libuv's thread pool, two
  // thread wake-ups per MiB. On two cores busy with the server and pg_dump, those wake-ups made
  // the dump some 5 % slower (BENCHMARKS.md). The loop yields after every read.
  const read = () => {
    try {
      return readSync(file.handle.fd, buffer, 0, buffer.length, position);
    } catch (error) {
      throw readFailed(error);
    }
  };
  for (;;) {
    // Taken before the read: once the writer has ended, a read that finds nothing means the end.
    const ended = state.ended;
    if (state.error !== undefined) throw state.error;
    const bytesRead = read();
    if (bytesRead > 0) {
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
      file.grown(position);
      onBytes(position);
      await nextTurn(undefined, { signal }); // the event loop's turn: at most one read and hash at a time
    } else if (ended) {
      break;
    } else {
      await Promise.race([delay(POLL_MS, undefined, { signal }), settled]); // wakes when the writer ends
    }
  }
  return { bytes: position, sha256: hash.digest("hex") };
}
