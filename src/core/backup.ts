import type { Duplex } from "node:stream";
import type { z } from "zod";
import { BlockHashCounter } from "./blocks.js";
import { writeSignedManifest } from "./chain.js";
import { extensionOf } from "./content-types.js";
import { type BackupRun, backupThroughFile, canBackupThroughFile } from "./direct.js";
import { StowageError, throwIfAborted, wrapError } from "./errors.js";
import { FirstFailure, transfer } from "./failure.js";
import { artifactKey, assertSafeKey, JOB_NAME_PATTERN, newBackupId } from "./keys.js";
import { type Fence, fenceSchema } from "./lock.js";
import { type ChainRecord, labelsSchema, MANIFEST_VERSION, type Manifest } from "./manifest.js";
import {
  lazySchema,
  parseOptions,
  signalSchema,
  sinkSchema,
  sourceSchema,
  transformSchema,
} from "./options.js";
import { signerFrom } from "./signing.js";
import { EndGate, HashCounter, settled, throttle } from "./streams.js";
import type { Agrees, Assert } from "./type-checks.js";
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

export const backupOptionsSchema = lazySchema((z) =>
  z
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
      /**
       * A lease the run must still hold when it commits: `check` runs just before the artifact is
       * committed (after the source has reported success) and a throw (LOCK_LOST) leaves nothing;
       * the lease goes into the manifest as `lease`. Set by a job that runs on a `lock`.
       */
      fence: fenceSchema.optional(),
      /**
       * Signs the manifest (a `stowage-sign1:…` string from `generateSigningKey()`) and records the
       * job's previous manifest on the sink in it (`previous`), which costs a LIST and a GET
       * (see `findPrevious`). Never written anywhere. @default unsigned
       */
      signingKey: z.string().optional(),
    })
    .strict(),
);
export interface BackupOptions {
  /** The job name; the first segment of every key. Lowercase letters, digits, `.`, `_`, `-`. */
  job: string;
  /** What to back up: a Source from one of the adapters, or your own. */
  source: Source;
  /** Where the artifact and its manifest are written. */
  sink: Sink;
  /** Applied in order on the way in (compress before you encrypt). @default [] */
  transforms?: Transform[];
  /** Free string labels kept in the manifest, e.g. { constitutional_hash: "…" }. @default {} */
  labels?: Record<string, string>;
  /** A storage class the sink declares in `capabilities.storageClasses`. */
  storageClass?: string;
  /** A hold: retention keeps this backup until then. */
  retainUntil?: Date;
  /** Let a sensitive source (e.g. Kubernetes with secrets) be stored unencrypted. @default false */
  allowUnencrypted?: boolean;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /** Called (at most every 250 ms, and once at the end) with the bytes read and written so far. */
  onProgress?: (p: BackupProgress) => void;
  /**
   * The clock the backup's start and finish times (and so its id and key) are read from, as a
   * cycle's `now` (simulations, tests). Progress is timed on the real clock. @default () => new Date()
   */
  now?: () => Date;
  /**
   * A lease the run must still hold when it commits: `check` runs just before the artifact is
   * committed (after the source has reported success) and a throw (LOCK_LOST) leaves nothing;
   * the lease goes into the manifest as `lease`. Set by a job that runs on a `lock`.
   */
  fence?: Fence;
  /**
   * Signs the manifest (a `stowage-sign1:…` string from `generateSigningKey()`) and records the
   * job's previous manifest on the sink in it (`previous`), which costs a LIST and a GET
   * (see `findPrevious`). Never written anywhere. @default unsigned
   */
  signingKey?: string;
}
type _BackupOptionsAgrees = Assert<Agrees<BackupOptions, z.input<typeof backupOptionsSchema>>>;

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
 * file as it grows (`backupThroughFile`): the same guarantees, without the bytes passing
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
          issues: [{ path: "transforms", problem: "encryption required for a sensitive source" }],
        },
      },
    );
  }
  if (opts.storageClass !== undefined && !sink.capabilities.storageClasses?.includes(opts.storageClass)) {
    throw new StowageError(
      "CONFIG_INVALID",
      `backup: the ${sink.kind} sink does not offer storage class ${opts.storageClass}`,
      { details: { issues: [{ path: "storageClass", problem: "not offered by the sink" }] } },
    );
  }
  const signer = opts.signingKey === undefined ? undefined : signerFrom(opts.signingKey);
  throwIfAborted(signal, "backup");

  const clock = opts.now ?? (() => new Date());
  const startedAt = clock();
  if (!(startedAt instanceof Date) || Number.isNaN(startedAt.getTime())) {
    throw new StowageError("CONFIG_INVALID", "backup: now() did not return a valid Date", {
      details: { issues: [{ path: "now", problem: "not a valid Date" }] },
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
        (output.extension ?? extensionOf(output.contentType) ?? ".bin") +
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
          ...(opts.fence ? { beforeCommit: fenceCheck(opts.fence, controller.signal) } : {}),
        })
      : await backupThroughStreams({
          job,
          id,
          what,
          source,
          transforms,
          sink,
          context,
          write,
          keyFor,
          report,
          signal,
          ...(opts.fence ? { beforeCommit: fenceCheck(opts.fence, controller.signal) } : {}),
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
      ...(opts.fence ? { lease: opts.fence.lease } : {}),
      ...(run.chain ? { chain: run.chain } : {}),
      generator: { name: "stowage", version: VERSION },
    };

    return await writeSignedManifest(sink, manifest, signer, {
      signal: controller.signal,
      what: `backup ${job}`,
      details: { ...what, key },
    });
  } finally {
    signal?.removeEventListener("abort", forwardAbort);
  }
}

const fenceCheck = (fence: Fence, signal: AbortSignal) => () => fence.check({ signal });

interface StreamsRun {
  job: string;
  /** The backup's id: with the job, the identity an encryption stage binds into its header. */
  id: string;
  what: { job: string; source: string };
  source: Source;
  transforms: Transform[];
  sink: Sink;
  context: SourceContext;
  write: WriteOptions;
  keyFor(output: SourceOutput): string;
  report(bytesRead: number, bytesWritten: number): void;
  signal?: AbortSignal;
  /** Runs after the source reported success, before the sink sees the end (the commit). */
  beforeCommit?: () => Promise<void>;
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
    encoders = await Promise.all(transforms.map((t) => t.encode({ job, id: run.id })));
  } catch (error) {
    // Released before the error is thrown, as on every other failure (a process reaped, a file closed).
    output.stream.destroy();
    await settled(output.stream);
    throw wrapError(error, "TRANSFORM_FAILED", `backup ${job}: a transform failed to start`, details, signal);
  }

  const report = () => run.report(plain.bytes, stored.bytes);
  // Unencrypted artifacts also get a SHA-256 a block, so a restore can check them as they stream.
  const blocked = !transforms.some((t) => t.role === "encryption");
  const plain = encoders.length === 0 && blocked ? new BlockHashCounter(report) : new HashCounter(report);
  // With no transforms the stored bytes are the plain bytes: hash them once.
  const stored =
    encoders.length === 0 ? plain : blocked ? new BlockHashCounter(report) : new HashCounter(report);
  let sourceDetails: Record<string, unknown> = {};
  const gate = new EndGate(async () => {
    try {
      sourceDetails = await output.details();
    } catch (error) {
      failure.note("SOURCE_FAILED", `backup ${job}: source ${what.source} failed`, error);
      throw error;
    }
    try {
      await run.beforeCommit?.();
    } catch (error) {
      failure.note("SINK_WRITE_FAILED", `backup ${job}: not committed`, error);
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
    artifact: {
      bytes: stored.bytes,
      sha256: stored.digest(),
      ...(stored instanceof BlockHashCounter ? { blocks: stored.blocks() } : {}),
    },
    sourceDetails,
    ...chainOf(output),
  };
}

/** The chain record an incremental source reports, shaped to spread into the run. */
function chainOf(output: SourceOutput): { chain?: ChainRecord } {
  const chain = output.chain?.();
  return chain ? { chain } : {};
}
