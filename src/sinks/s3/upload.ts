import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type {
  AbortMultipartUploadCommandOutput,
  CompletedPart,
  CreateMultipartUploadCommandOutput,
  ListMultipartUploadsCommandOutput,
  ListPartsCommandOutput,
  PutObjectCommand,
  PutObjectCommandInput,
  S3Client,
  UploadPartCommand,
  UploadPartCommandOutput,
} from "@aws-sdk/client-s3";
import type { MiddlewareStack } from "@smithy/types";
import { isStowageError, StowageError, throwIfAborted } from "../../core/errors.js";
import type { Leftover } from "../../core/types.js";
import { errorName, guardedSend, httpStatus, type RequestGuard } from "./requests.js";
import { s3Sdk } from "./sdk.js";

const MiB = 1024 * 1024;

/** S3's limits on multipart uploads. */
export const S3_LIMITS = {
  /** Parts of one multipart upload. */
  maxParts: 10_000,
  /** The smallest part but the last. */
  minPartSize: 5 * MiB,
  /** The largest part. */
  maxPartSize: 5 * 1024 * MiB,
  /** The largest object. */
  maxObjectSize: 5 * 1024 * 1024 * MiB,
} as const;

/** The part size doubles after every this many parts (see {@link partSizeFor}). */
export const PARTS_PER_STEP = 1_000;

/**
 * The size of part `partNumber` (1-based) of an upload that started with `partSize`: the
 * configured size for parts 1–1,000, twice that for 1,001–2,000, and so on, capped at S3's 5 GiB.
 * The length of a stream is unknown when its upload starts; this schedule lets any stream of up to
 * {@link largestBackupBytes} fit in S3's 10,000 parts while small backups keep small parts (and
 * little memory).
 */
export function partSizeFor(partNumber: number, partSize: number): number {
  const step = Math.floor((partNumber - 1) / PARTS_PER_STEP);
  return Math.min(S3_LIMITS.maxPartSize, partSize * 2 ** step);
}

/**
 * The largest backup an S3 sink with this `partSize` can store: the sum of its 10,000 part sizes
 * (see {@link partSizeFor}), at most S3's 5 TiB object limit. With 5 MiB parts that is about
 * 4.9 TiB; from 6 MiB up, S3's own 5 TiB limit is the bound.
 */
export function largestBackupBytes(partSize: number): number {
  let total = 0;
  for (let step = 0; step < S3_LIMITS.maxParts / PARTS_PER_STEP; step++) {
    total += PARTS_PER_STEP * partSizeFor(step * PARTS_PER_STEP + 1, partSize);
  }
  return Math.min(total, S3_LIMITS.maxObjectSize);
}

/**
 * A part's bytes. Small objects (manifests) stay a list of the chunks that arrived; past 1 MiB
 * the part gets one buffer of its full size, filled in place, so a part costs its size once.
 */
class PartBuffer {
  private chunks: Buffer[] = [];
  private buffer: Buffer | undefined;
  length = 0;

  constructor(
    readonly capacity: number,
    private readonly allocate: (size: number) => Buffer,
  ) {}

  /** Takes what fits of `chunk`; returns how many bytes it took. */
  take(chunk: Buffer): number {
    const n = Math.min(chunk.length, this.capacity - this.length);
    const piece = n === chunk.length ? chunk : chunk.subarray(0, n);
    if (!this.buffer && this.length + n > MiB) {
      this.buffer = this.allocate(this.capacity);
      let at = 0;
      for (const c of this.chunks) at += c.copy(this.buffer, at);
      this.chunks = [];
    }
    if (this.buffer) piece.copy(this.buffer, this.length);
    else this.chunks.push(piece);
    this.length += n;
    return n;
  }

  get full(): boolean {
    return this.length === this.capacity;
  }

  bytes(): Buffer {
    return this.buffer ? this.buffer.subarray(0, this.length) : Buffer.concat(this.chunks, this.length);
  }

  /** The full-size buffer, for reuse by a later part of the same size. */
  release(): Buffer | undefined {
    const b = this.buffer;
    this.buffer = undefined;
    this.chunks = [];
    return b;
  }
}

/**
 * Sends a command's body without `Expect: 100-continue`. The SDK adds that header to every body
 * of 2 MiB or more and then sends the request on a fresh, non-keep-alive connection (Node cannot
 * reuse a socket whose body was never sent), so a multipart upload would pay a TCP connection, a
 * TLS handshake and a round trip for every part. Our bodies are Buffers held in memory, so a
 * request the server refuses costs at most one part's bytes and is retried from memory; measured
 * against the local S3 server, the header cost about 15% of upload throughput. The client's own
 * settings are untouched: this applies to the sink's commands only.
 */
function withoutExpectContinue<C extends UploadPartCommand | PutObjectCommand>(command: C): C {
  const stack = command.middlewareStack as MiddlewareStack<object, object>;
  stack.add(
    (next) => (args) => {
      const { headers } = args.request as { headers?: Record<string, string> };
      if (headers) {
        delete headers.Expect;
        delete headers.expect;
      }
      return next(args);
    },
    // After the S3 client's own addExpectContinueMiddleware (build step, normal priority).
    { step: "build", priority: "low", name: "stowageWithoutExpectContinue" },
  );
  return command;
}

/** What {@link putStream} needs besides the client, the object and its body. */
export interface UploadSettings {
  partSize: number;
  queueSize: number;
  contentMd5: boolean;
  /** No bytes moving on a request for this long fails it (see {@link guardedSend}). */
  idleMs: number;
  signal?: AbortSignal | undefined;
  /** e.g. "s3 sink: writing db/…". */
  where: string;
  /** The sink's key, for errors and leftovers (the object key may carry the sink's prefix). */
  key: string;
}

const md5 = (b: Buffer) => createHash("md5").update(b).digest("base64");
const asError = (e: unknown) => (e instanceof Error ? e : new Error(String(e)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a failed upload's abort is tried before it is reported as left behind. */
const ABORT_ATTEMPTS = 5;
/**
 * After an abort that raced a part request we had to cancel, how long to wait before looking
 * again: S3 may still store such a part after the abort was answered, re-creating the upload.
 */
const SETTLE_MS = 500;

/**
 * Streams `body` into one object. A body that ends within the first part is one PutObject of a
 * Buffer of known length; anything longer is a multipart upload with at most `queueSize` parts in
 * memory, completed only after the body has ended.
 *
 * On failure no new part is sent, and the parts already on their way are waited for (each is
 * bounded by the idle timeout), so none of them can reach S3 after the abort; only the caller's
 * abort cancels them, for a prompt answer. Then the upload is aborted and checked (ListParts and
 * ListMultipartUploads), and aborted again while it remains, a bounded number of times: AWS
 * documents that a part still arriving may be stored after an abort. The first error is thrown;
 * if the upload could not be shown gone, the error says so, with `details.openUpload`
 * (`{ bucket, key, uploadId }`) and `details.leftovers` (for `removeLeftovers`).
 */
export async function putStream(
  client: S3Client,
  params: PutObjectCommandInput,
  body: Readable,
  settings: UploadSettings,
): Promise<void> {
  const { signal, where, idleMs } = settings;
  const sdk = await s3Sdk(where);
  const Bucket = params.Bucket as string;
  const Key = params.Key as string;
  const details = { key: settings.key };
  const guard = (what: string, cancel?: AbortSignal): RequestGuard => ({
    idleMs,
    signal: cancel,
    code: "SINK_WRITE_FAILED",
    what: `${where}: ${what}`,
    details,
  });
  // Fired only by the caller's abort: other failures let the parts in flight finish.
  const cancelParts = new AbortController();
  let cancelledParts = false;
  let failure: { error: unknown } | undefined;
  const fail = (error: unknown) => {
    if (failure) return;
    failure = { error };
    // Errors the body with the sink's error first, so the pipeline feeding it blames the sink,
    // not a "premature close" of the source.
    if (!body.destroyed) body.destroy(asError(error));
  };
  // Read through functions: the failure is set from callbacks, which TypeScript's narrowing cannot see.
  const failed = () => failure;
  const throwIfFailed = () => {
    const f = failed();
    if (f) throw f.error;
  };
  const onAbort = () => {
    fail(new StowageError("ABORTED", `${where}: aborted`, { cause: signal?.reason, details }));
    cancelledParts = inflight.size > 0;
    cancelParts.abort(signal?.reason);
  };
  signal?.addEventListener("abort", onAbort, { once: true });

  const pool: Buffer[] = [];
  const allocate = (size: number) => {
    const i = pool.findIndex((b) => b.length === size);
    return i >= 0 ? pool.splice(i, 1)[0]! : Buffer.allocUnsafe(size);
  };
  let partNumber = 1;
  let part = new PartBuffer(partSizeFor(1, settings.partSize), allocate);
  let uploadId: string | undefined;
  let startedAt = new Date();
  /** CreateMultipartUpload went out and no answer came back: S3 may have created it anyway. */
  let createUnanswered = false;
  const inflight = new Set<Promise<void>>();
  const completed: CompletedPart[] = [];
  const iterator = body[Symbol.asyncIterator]();
  const common = {
    Bucket,
    Key,
    ...(params.SSECustomerAlgorithm ? { SSECustomerAlgorithm: params.SSECustomerAlgorithm } : {}),
  };

  const dispatch = (buffer: PartBuffer, number: number) => {
    const bytes = buffer.bytes();
    const sending = guardedSend<UploadPartCommandOutput>(
      client,
      withoutExpectContinue(
        new sdk.UploadPartCommand({
          ...common,
          UploadId: uploadId,
          PartNumber: number,
          Body: bytes,
          ContentLength: bytes.length,
          ...(settings.contentMd5 ? { ContentMD5: md5(bytes) } : {}),
        }),
      ),
      guard(`UploadPart ${number}`, cancelParts.signal),
    )
      .then(
        (out) => {
          if (!out.ETag) throw new Error(`part ${number} came back without an ETag`);
          completed.push({
            PartNumber: number,
            ETag: out.ETag,
            ...(out.ChecksumCRC32 ? { ChecksumCRC32: out.ChecksumCRC32 } : {}),
            ...(out.ChecksumCRC32C ? { ChecksumCRC32C: out.ChecksumCRC32C } : {}),
            ...(out.ChecksumCRC64NVME ? { ChecksumCRC64NVME: out.ChecksumCRC64NVME } : {}),
            ...(out.ChecksumSHA1 ? { ChecksumSHA1: out.ChecksumSHA1 } : {}),
            ...(out.ChecksumSHA256 ? { ChecksumSHA256: out.ChecksumSHA256 } : {}),
          });
          const freed = buffer.release();
          if (freed && pool.length < settings.queueSize) pool.push(freed);
        },
        (error: unknown) => fail(error),
      )
      .finally(() => inflight.delete(sending));
    inflight.add(sending);
  };

  /** Hands the full part to S3 and starts the next; waits while `queueSize` parts are held. */
  const nextPart = async () => {
    if (uploadId === undefined) {
      startedAt = new Date();
      // Never cancelled: an upload S3 created for a request we gave up on would be left open
      // with an id we never learned. The idle timeout bounds it.
      createUnanswered = true;
      const created = await guardedSend<CreateMultipartUploadCommandOutput>(
        client,
        new sdk.CreateMultipartUploadCommand(params),
        guard("CreateMultipartUpload"),
      ).catch((error: unknown) => {
        // An answer from S3 (an HTTP status) says the upload was not created.
        if (
          httpStatus(error) !== undefined ||
          httpStatus((error as { cause?: unknown })?.cause) !== undefined
        ) {
          createUnanswered = false;
        }
        throw error;
      });
      createUnanswered = false;
      if (!created.UploadId) throw new Error("CreateMultipartUpload returned no UploadId");
      uploadId = created.UploadId;
      throwIfFailed();
    }
    if (partNumber >= S3_LIMITS.maxParts) {
      throw new StowageError(
        "SINK_WRITE_FAILED",
        `${where}: the backup is larger than ${largestBackupBytes(settings.partSize)} bytes, the most ${S3_LIMITS.maxParts} parts starting at partSize ${settings.partSize} can hold; raise partSize`,
        { details: { ...details, partSize: settings.partSize } },
      );
    }
    dispatch(part, partNumber);
    partNumber += 1;
    while (inflight.size >= settings.queueSize && !failed()) await Promise.race(inflight);
    throwIfFailed();
    part = new PartBuffer(partSizeFor(partNumber, settings.partSize), allocate);
  };

  try {
    throwIfAborted(signal, where);
    for (;;) {
      const next = await iterator.next();
      throwIfFailed();
      if (next.done) break;
      let chunk: Buffer = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
      while (chunk.length > 0) {
        chunk = chunk.subarray(part.take(chunk));
        if (part.full) await nextPart();
      }
    }
    if (uploadId === undefined) {
      // The whole body fitted in one part: one PutObject of a Buffer of known length. Not
      // cancelled either: S3 may store a PUT whose bytes all arrived even if we stopped waiting.
      const bytes = part.bytes();
      await guardedSend(
        client,
        withoutExpectContinue(
          new sdk.PutObjectCommand({
            ...params,
            Body: bytes,
            ContentLength: bytes.length,
            ...(settings.contentMd5 ? { ContentMD5: md5(bytes) } : {}),
          }),
        ),
        guard("PutObject"),
      );
      if (failed()) {
        // Aborted while the object was being stored: take it away again.
        await guardedSend(client, new sdk.DeleteObjectCommand({ Bucket, Key }), guard("DeleteObject")).catch(
          () => undefined,
        );
        throwIfFailed();
      }
      return;
    }
    if (part.length > 0) dispatch(part, partNumber);
    while (inflight.size > 0) await Promise.race(inflight);
    throwIfFailed();
    throwIfAborted(signal, where);
    completed.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    // Not cancelled: a Complete that S3 received commits the object whether or not we wait.
    await guardedSend(
      client,
      new sdk.CompleteMultipartUploadCommand({
        ...common,
        UploadId: uploadId,
        MultipartUpload: { Parts: completed },
      }),
      guard("CompleteMultipartUpload"),
    );
    uploadId = undefined; // committed: nothing to abort
  } catch (error) {
    fail(error);
    await iterator.return?.().catch(() => undefined);
    // Each part in flight ends by itself (answered, failed, or stalled past the idle timeout).
    await Promise.allSettled([...inflight]);
    const original = failed()?.error ?? error;
    const cleanup = { idleMs, where, details };
    let remains: { uploadId: string; problem: unknown } | undefined;
    if (uploadId !== undefined) {
      const problem = await discardUpload(
        client,
        { Bucket, Key, UploadId: uploadId },
        cleanup,
        cancelledParts,
      );
      if (problem !== undefined) remains = { uploadId, problem };
    } else if (createUnanswered) {
      // Keys are unique to one write, so an upload open for exactly this key is ours. A server
      // that cannot even list them now most likely never created it.
      try {
        for await (const upload of listUploads(
          client,
          Bucket,
          Key,
          guardFor(cleanup, "ListMultipartUploads"),
        )) {
          if (upload.Key !== Key || !upload.UploadId) continue;
          const problem = await discardUpload(
            client,
            { Bucket, Key, UploadId: upload.UploadId },
            cleanup,
            true,
          );
          if (problem !== undefined) remains = { uploadId: upload.UploadId, problem };
        }
      } catch {
        // nothing we can name
      }
    }
    if (remains)
      throw leftBehind(original, { bucket: Bucket, objectKey: Key, startedAt, where, details, ...remains });
    throw original;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    pool.length = 0;
  }
}

interface Cleanup {
  idleMs: number;
  where: string;
  details: { key: string };
}

const guardFor = (cleanup: Cleanup, what: string): RequestGuard => ({
  idleMs: cleanup.idleMs,
  code: "SINK_WRITE_FAILED",
  what: `${cleanup.where}: ${what}`,
  details: cleanup.details,
});

/** The error of a write that failed and whose multipart upload may still be open. */
function leftBehind(
  original: unknown,
  o: {
    bucket: string;
    objectKey: string;
    uploadId: string;
    problem: unknown;
    startedAt: Date;
    where: string;
    details: { key: string };
  },
): StowageError {
  const reason = o.problem instanceof Error ? o.problem.message : String(o.problem);
  const first = original instanceof Error ? original.message : String(original);
  const leftover: Leftover = {
    kind: "multipart-upload",
    key: o.details.key,
    id: o.uploadId,
    startedAt: o.startedAt,
  };
  return new StowageError(
    isStowageError(original) ? original.code : "SINK_WRITE_FAILED",
    `${o.where}: ${first}; and multipart upload ${o.uploadId} of s3://${o.bucket}/${o.objectKey} may remain, its parts costing storage, because aborting it failed (${reason}): remove it with the sink's removeLeftovers(error.details.leftovers) or AbortMultipartUpload, and let a bucket lifecycle rule with AbortIncompleteMultipartUpload catch any other`,
    {
      cause: original,
      details: {
        ...(isStowageError(original) ? original.details : {}),
        ...o.details,
        uploadId: o.uploadId,
        openUpload: { bucket: o.bucket, key: o.objectKey, uploadId: o.uploadId },
        leftovers: [leftover],
        abortError: reason,
      },
    },
  );
}

const isGone = (e: unknown) => errorName(e) === "NoSuchUpload" || httpStatus(e) === 404;
const isUnsupported = (e: unknown) =>
  [405, 501].includes(httpStatus(e) ?? 0) ||
  ["NotImplemented", "MethodNotAllowed"].includes(errorName(e) ?? "");

/** Every open multipart upload under `prefix` (ListMultipartUploads, paged). */
export async function* listUploads(
  client: S3Client,
  bucket: string,
  prefix: string,
  guard: RequestGuard,
): AsyncIterable<NonNullable<ListMultipartUploadsCommandOutput["Uploads"]>[number]> {
  const sdk = await s3Sdk();
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    throwIfAborted(guard.signal, guard.what);
    const page = await guardedSend<ListMultipartUploadsCommandOutput>(
      client,
      new sdk.ListMultipartUploadsCommand({
        Bucket: bucket,
        ...(prefix ? { Prefix: prefix } : {}),
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
      }),
      guard,
    );
    yield* page.Uploads ?? [];
    if (!page.IsTruncated) return;
    if (page.NextKeyMarker === keyMarker && page.NextUploadIdMarker === uploadIdMarker) return; // no progress
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}

/**
 * Whether the upload is still there: ListParts shows parts, or ListMultipartUploads lists it (S3
 * may answer NoSuchUpload to ListParts after an abort while a part that arrived late still sits in
 * the bucket, listed). A store that has neither call leaves us trusting the abort's answer.
 */
async function uploadRemains(
  client: S3Client,
  target: { Bucket: string; Key: string; UploadId: string },
  cleanup: Cleanup,
): Promise<boolean> {
  const sdk = await s3Sdk();
  try {
    const parts = await guardedSend<ListPartsCommandOutput>(
      client,
      new sdk.ListPartsCommand(target),
      guardFor(cleanup, "ListParts"),
    );
    if ((parts.Parts ?? []).length > 0) return true;
  } catch (error) {
    if (!isGone(error) && !isUnsupported(error)) throw error;
  }
  try {
    for await (const upload of listUploads(
      client,
      target.Bucket,
      target.Key,
      guardFor(cleanup, "ListMultipartUploads"),
    )) {
      if (upload.UploadId === target.UploadId) return true;
    }
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  }
  return false;
}

/**
 * Aborts a multipart upload and makes sure it is gone, aborting again while it remains (a part
 * still arriving may land after an abort), at most {@link ABORT_ATTEMPTS} times. When a part
 * request had to be cancelled (`raced`), a clean check is repeated once after {@link SETTLE_MS}.
 * Returns the problem if the upload could not be shown gone, undefined when it is.
 */
export async function discardUpload(
  client: S3Client,
  target: { Bucket: string; Key: string; UploadId: string },
  cleanup: Cleanup,
  raced: boolean,
): Promise<unknown> {
  const sdk = await s3Sdk();
  let lastProblem: unknown;
  let abort = true;
  let recheck = raced;
  for (let attempt = 0; attempt < ABORT_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(abort ? 100 * 2 ** (attempt - 1) : SETTLE_MS);
    if (abort) {
      try {
        await guardedSend<AbortMultipartUploadCommandOutput>(
          client,
          new sdk.AbortMultipartUploadCommand(target),
          guardFor(cleanup, "AbortMultipartUpload"),
        );
      } catch (error) {
        if (!isGone(error)) {
          lastProblem = error;
          continue;
        }
      }
    }
    try {
      if (await uploadRemains(client, target, cleanup)) {
        lastProblem = new Error(`the upload was still there after an abort (attempt ${attempt + 1})`);
        abort = true;
        continue;
      }
    } catch (error) {
      lastProblem = error;
      abort = true;
      continue;
    }
    if (!recheck) return undefined;
    recheck = false;
    abort = false;
  }
  return lastProblem ?? new Error(`the upload was still there after ${ABORT_ATTEMPTS} aborts`);
}
