import type { Readable } from "node:stream";
import type { GetObjectCommandOutput, HeadObjectCommandOutput, S3Client } from "@aws-sdk/client-s3";
import { isStowageError, StowageError } from "../../core/errors.js";
import { RangeStream } from "./range-stream.js";
import { guardedSend, httpStatus, type RequestGuard } from "./requests.js";
import { s3Sdk } from "./sdk.js";

/** How a read is split into ranged GETs. */
export interface RangedReadOptions {
  client: S3Client;
  bucket: string;
  Key: string;
  /** Bytes a GET asks for (the last one may be shorter). */
  partSize: number;
  /** GETs in flight at once; each holds its range in memory until it is passed on. */
  concurrency: number;
  /** How many times one range may be resumed after its connection broke, before the read fails. */
  resumes: number;
  guard: RequestGuard;
  /** Told of each resumption (tests and logs): the range and the offset it resumed from. */
  onResume?: (info: { start: number; end: number; from: number; cause: unknown }) => void;
}

/**
 * Whether a failed GET is worth resuming: the connection broke or the server failed (5xx after the
 * SDK's own retries). Not the caller's abort, an idle timeout (a stalled server would be waited on
 * again and again), or an answer in 4xx (missing, denied, or the object changed: If-Match failed).
 */
function resumable(error: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted) return false;
  if (isStowageError(error)) return error.details?.reason !== "timeout";
  const status = httpStatus(error);
  return status === undefined || status >= 500;
}

/**
 * Reads an object as ranged GETs, `concurrency` at a time, and streams the ranges in order:
 * HeadObject gives the size and ETag; every GET carries `If-Match` with that ETag (and its answer's
 * ETag is compared too, for stores that ignore the header), so an object replaced mid-read fails
 * the read (`details.reason: "changed"`) instead of mixing two versions. A range whose connection breaks (reset, cut short,
 * a 5xx) is asked again from its first byte not yet received, up to `resumes` times; bytes already
 * received are passed on, not fetched again. Memory: the GETs ahead of the one being read are sent
 * but their bodies are left in their sockets (the kernel's receive buffers read ahead, TCP flow
 * control holds the rest at the server), so the process holds {@link RangeStream}'s 256 KiB and
 * one socket chunk, plus what the consumer holds. The caller checks what it reads (restore checks
 * each block or chunk before it releases it); this only moves bytes.
 *
 * @returns the object's bytes; `undefined` for an empty object (S3 answers 416 to a range of
 *   nothing) or one without an ETag, which the caller reads with one plain GET.
 */
export async function rangedRead(options: RangedReadOptions): Promise<Readable | undefined> {
  const { client, bucket, Key, partSize, guard } = options;
  const sdk = await s3Sdk();
  const controller = new AbortController();
  const stop = () => controller.abort(guard.signal?.reason);
  if (guard.signal?.aborted) stop();
  else guard.signal?.addEventListener("abort", stop, { once: true });
  const inner: RequestGuard = { ...guard, signal: controller.signal };
  const get = (start: number, end: number, etag: string) =>
    guardedSend<GetObjectCommandOutput>(
      client,
      new sdk.GetObjectCommand({
        Bucket: bucket,
        Key,
        Range: `bytes=${start}-${end}`,
        IfMatch: etag,
      }),
      { ...inner, what: `${guard.what} (bytes ${start}-${end})` },
    );

  let head: HeadObjectCommandOutput;
  try {
    head = await guardedSend<HeadObjectCommandOutput>(
      client,
      new sdk.HeadObjectCommand({ Bucket: bucket, Key }),
      guard,
    );
  } catch (error) {
    guard.signal?.removeEventListener("abort", stop);
    throw error;
  }
  const etag = head.ETag;
  if (!head.ContentLength || etag === undefined) {
    guard.signal?.removeEventListener("abort", stop);
    return undefined;
  }
  const total = head.ContentLength;
  const version: string = etag;
  // The first range's answer is awaited here, so that what a GET refuses (an archived object, a
  // missing one, a server that never answers) rejects the read itself, as a plain GET would.
  let first: GetObjectCommandOutput;
  try {
    first = await get(0, Math.min(partSize, total) - 1, etag);
  } catch (error) {
    guard.signal?.removeEventListener("abort", stop);
    throw error;
  }

  const changed = (now: string | undefined, cause?: unknown) =>
    new StowageError(
      "SINK_READ_FAILED",
      `${guard.what}: the object changed during the read (its ETag was ${etag}${now ? `, is ${now}` : ""})`,
      { cause, details: { ...guard.details, reason: "changed" } },
    );
  return new RangeStream(
    {
      total,
      partSize,
      concurrency: options.concurrency,
      resumes: options.resumes,
      etag: version,
      get: (start, end) => get(start, end, version),
      changed,
      resumable: (error) => resumable(error, guard.signal),
      abort: () => controller.abort(),
      release: () => guard.signal?.removeEventListener("abort", stop),
      guard: inner,
      onResume: options.onResume,
    },
    first,
  );
}
