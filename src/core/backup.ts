import type { Duplex } from "node:stream";
import { z } from "zod";
import { writeManifest } from "./catalog.js";
import { type BackupRun, backupThroughFile, canBackupThroughFile } from "./direct.js";
import { StowageError, throwIfAborted, wrapError } from "./errors.js";
import { FirstFailure, transfer } from "./failure.js";
import { artifactKey, assertSafeKey, JOB_NAME_PATTERN, newBackupId } from "./keys.js";
import { type ChainRecord, labelsSchema, MANIFEST_VERSION, type Manifest } from "./manifest.js";
import { parseOptions, signalSchema, sinkSchema, sourceSchema, transformSchema } from "./options.js";
import { EndGate, HashCounter, settled, throttle } from "./streams.js";
import type {
  BackupProgress,
  Sink,
  Source,
  SourceContext,
  SourceOutput,
  Transform,
  WriteOptions,
} from "./types.js";
import { VERSION } from "./version.js";

export const backupOptionsSchema = z
  .object({
    /** The job name; the first segment of every key. Lowercase letters, digits, `.`, `_`, `-`. */
    job: z.string().regex(JOB_NAME_PATTERN, "lowercase letters, digits, '.', '_' and '-', at most 128"),
    source: sourceSchema,
    /** Applied in order on the way in (compress before you encrypt). @default [] */
    transforms: z.array(transformSchema).default([]),
    sink: sinkSchema,
    /** Free string labels kept in the manifest, e.g. { constitutional_hash: "…" }. @default {} */
    labels: labelsSchema.default({}),
    /** A storage class the sink declares in `capabilities.storageClasses`. */
    storageClass: z.string().optional(),
    /** A hold: retention keeps this backup until then. */
    retainUntil: z.date().optional(),
    /** Let a sensitive source (e.g. Kubernetes with secrets) be stored unencrypted. @default false */
    allowUnencrypted: z.boolean().default(false),
    signal: signalSchema.optional(),
    onProgress: z.custom<(p: BackupProgress) => void>((v) => typeof v === "function").optional(),
    /**
     * The clock the backup's start and finish times (and so its id and key) are read from, as a
     * cycle's `now` (simulations, tests). Progress is timed on the real clock. @default () => new Date()
     */
    now: z
      .custom<() => Date>((v) => typeof v === "function", "expected a function returning a Date")
      .optional(),
  })
  .strict();
export type BackupOptions = z.input<typeof backupOptionsSchema>;

const EXTENSIONS: Record<string, string> = {
  "application/sql": ".sql",
  "application/x-tar": ".tar",
  "application/json": ".json",
  "application/x-ndjson": ".jsonl",
  "text/csv": ".csv",
  "text/plain": ".txt",
  "application/x-postgresql-custom": ".dump",
};

/**
 * Runs one backup: source → SHA-256 of the plain bytes → transforms in order → SHA-256 and size
 * of the stored bytes → `sink.write`, then the manifest beside the artifact.
 *
 * All or nothing: the sink commits only after the source has ended *and* reported success
 * (`details()`), and the manifest is written only after the artifact. A failure or abort at any
 * byte leaves neither, and the source's process or handle is released.
 *
 * With no transforms, a source that runs another process (`pgDumpSource`) and a sink on a local
 * disk (`filesystemSink`), the process writes straight into the sink's file and stowage hashes the
 * file as it grows ({@link backupThroughFile}): the same guarantees, without the bytes passing
 * through this process.
 *
 * @returns the manifest that was written.
 * @throws {CONFIG_INVALID} bad options (each named), a sensitive source without encryption, or a
 *   storage class the sink does not support — before the source is opened.
 * @throws {SOURCE_FAILED | TRANSFORM_FAILED | SINK_WRITE_FAILED} naming the stage that failed
 *   first, with the original error as `cause`; a source may throw a more precise code.
 * @throws {ABORTED} when `signal` fires.
 * @example
 * const manifest = await backup({
 *   job: "app-db", source: pgDumpSource({ connection }), sink: filesystemSink({ root: "/backups" }),
 *   transforms: [gzip(), aes256gcm({ key: process.env.BACKUP_KEY! })],
 *   labels: { constitutional_hash: "cdd01ef066bc6cf2" },
 * });
 */
export async function backup(options: BackupOptions): Promise<Manifest> {
  const opts = parseOptions(backupOptionsSchema, options, "backup");
  const { job, source, transforms, sink, signal } = opts;

  if (source.sensitive && !opts.allowUnencrypted && !transforms.some((t) => t.role === "encryption")) {
    throw new StowageError(
      "CONFIG_INVALID",
      `backup: source ${source.kind}:${source.name} holds secrets and no encryption transform is configured (set allowUnencrypted to store it in the clear)`,
      {
        details: {
          issues: [{ option: "transforms", problem: "encryption required for a sensitive source" }],
        },
      },
    );
  }
  if (opts.storageClass !== undefined && !sink.capabilities.storageClasses?.includes(opts.storageClass)) {
    throw new StowageError(
      "CONFIG_INVALID",
      `backup: the ${sink.kind} sink does not offer storage class ${opts.storageClass}`,
      { details: { issues: [{ option: "storageClass", problem: "not offered by the sink" }] } },
    );
  }
  throwIfAborted(signal, "backup");

  const clock = opts.now ?? (() => new Date());
  const startedAt = clock();
  if (!(startedAt instanceof Date) || Number.isNaN(startedAt.getTime())) {
    throw new StowageError("CONFIG_INVALID", "backup: now() did not return a valid Date", {
      details: { issues: [{ option: "now", problem: "not a valid Date" }] },
    });
  }
  const realStart = Date.now();
  const id = newBackupId(startedAt);
  const what = { job, source: `${source.kind}:${source.name}` };

  // Our own controller, so that a failing sink can stop the source as well as the caller can.
  const controller = new AbortController();
  const forwardAbort = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", forwardAbort, { once: true });
  try {
    const context = { signal: controller.signal, startedAt, job };
    const write = {
      signal: controller.signal,
      contentType: "application/octet-stream",
      storageClass: opts.storageClass,
    };
    const keyFor = (output: { contentType: string; extension?: string }) => {
      const extension =
        (output.extension ?? EXTENSIONS[output.contentType] ?? ".bin") +
        transforms.map((t) => t.extension).join("");
      const key = artifactKey(job, id, extension);
      assertSafeKey(key, `backup ${job}`);
      return key;
    };
    const progress = throttle<BackupProgress>(250, (p) => opts.onProgress?.(p));
    const report = (bytesRead: number, bytesWritten: number, done = false) =>
      progress({ bytesRead, bytesWritten, elapsedMs: Date.now() - realStart, done }, done);

    const run = canBackupThroughFile(source, sink, transforms)
      ? await backupThroughFile({
          source,
          sink,
          context,
          write,
          prefix: artifactKey(job, id, ""),
          keyFor,
          onBytes: (bytes) => report(bytes, bytes),
          what: `backup ${job}`,
          details: what,
          signal,
        })
      : await backupThroughStreams({
          job,
          what,
          source,
          transforms,
          sink,
          context,
          write,
          keyFor,
          report,
          signal,
        });
    const { key, written, sourceDetails } = run;
    report(run.content.bytes, run.artifact.bytes, true);

    // A sink that locks the object (S3 Object Lock) says until when; the manifest holds the later date.
    const lockedUntil = written.retainUntil;
    const holdUntil =
      lockedUntil && (!opts.retainUntil || lockedUntil > opts.retainUntil) ? lockedUntil : opts.retainUntil;
    const manifest: Manifest = {
      version: MANIFEST_VERSION,
      id,
      job,
      startedAt: startedAt.toISOString(),
      finishedAt: clock().toISOString(),
      source: { kind: source.kind, name: source.name, details: sourceDetails },
      artifact: {
        sink: sink.kind,
        key,
        location: written.location,
        ...run.artifact,
        ...((written.storageClass ?? opts.storageClass)
          ? { storageClass: written.storageClass ?? opts.storageClass }
          : {}),
      },
      content: { ...run.content, contentType: run.contentType },
      transforms: transforms.map((t) => t.describe()),
      labels: opts.labels,
      ...(holdUntil ? { retainUntil: holdUntil.toISOString() } : {}),
      ...(run.chain ? { chain: run.chain } : {}),
      generator: { name: "stowage", version: VERSION },
    };

    await writeManifest(sink, manifest, {
      signal: controller.signal,
      what: `backup ${job}`,
      details: { ...what, key },
    });
    return manifest;
  } finally {
    signal?.removeEventListener("abort", forwardAbort);
  }
}

interface StreamsRun {
  job: string;
  what: { job: string; source: string };
  source: Source;
  transforms: Transform[];
  sink: Sink;
  context: SourceContext;
  write: WriteOptions;
  keyFor(output: SourceOutput): string;
  report(bytesRead: number, bytesWritten: number): void;
  signal?: AbortSignal;
}

/**
 * The general path: source → SHA-256 of the plain bytes → transforms in order → SHA-256 and size
 * of the stored bytes → `sink.write`, committed only after the source has reported success.
 */
async function backupThroughStreams(run: StreamsRun): Promise<BackupRun> {
  const { job, what, source, transforms, sink, signal } = run;
  let output: SourceOutput;
  try {
    output = await source.open(run.context);
  } catch (error) {
    throw wrapError(error, "SOURCE_FAILED", `backup ${job}: source ${what.source} failed`, what, signal);
  }
  let key: string;
  try {
    key = run.keyFor(output);
  } catch (error) {
    output.stream.destroy();
    await settled(output.stream);
    throw error;
  }
  const details = { ...what, key };

  const failure = new FirstFailure();
  let encoders: Duplex[];
  try {
    encoders = await Promise.all(transforms.map((t) => t.encode()));
  } catch (error) {
    // Released before the error is thrown, as on every other failure (a process reaped, a file closed).
    output.stream.destroy();
    await settled(output.stream);
    throw wrapError(error, "TRANSFORM_FAILED", `backup ${job}: a transform failed to start`, details, signal);
  }

  const report = () => run.report(plain.bytes, stored.bytes);
  const plain = new HashCounter(report);
  // With no transforms the stored bytes are the plain bytes: hash them once.
  const stored = encoders.length === 0 ? plain : new HashCounter(report);
  let sourceDetails: Record<string, unknown> = {};
  const gate = new EndGate(async () => {
    try {
      sourceDetails = await output.details();
    } catch (error) {
      failure.note("SOURCE_FAILED", `backup ${job}: source ${what.source} failed`, error);
      throw error;
    }
  });

  failure.watch(output.stream, "SOURCE_FAILED", `backup ${job}: source ${what.source} failed`);
  for (const [i, t] of transforms.entries()) {
    failure.watch(encoders[i]!, "TRANSFORM_FAILED", `backup ${job}: transform ${t.name} failed`);
  }

  const stages = encoders.length === 0 ? [plain] : [plain, ...encoders, stored];
  const written = await transfer({
    streams: [output.stream, ...stages, gate],
    sink,
    key,
    write: run.write,
    failure,
    writing: `backup ${job}: ${sink.kind} sink failed writing ${key}`,
    unclaimed: { code: "SOURCE_FAILED", what: `backup ${job}: stream failed` },
    details,
    signal,
  });
  return {
    key,
    contentType: output.contentType,
    written,
    content: { bytes: plain.bytes, sha256: plain.digest() },
    artifact: { bytes: stored.bytes, sha256: stored.digest() },
    sourceDetails,
    ...chainOf(output),
  };
}

/** The chain record an incremental source reports, shaped to spread into the run. */
function chainOf(output: SourceOutput): { chain?: ChainRecord } {
  const chain = output.chain?.();
  return chain ? { chain } : {};
}
