import { Readable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import type { GetObjectCommandOutput, HeadObjectCommandOutput, S3Client } from "@aws-sdk/client-s3";
import { isStowageError, StowageError } from "../../core/errors.js";
import { errorName, guardedSend, httpStatus, idleGuardedBody, type RequestGuard } from "./requests.js";
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
 * control holds the rest at the server), so the process holds about one socket chunk of the
 * read at a time, plus what the consumer holds. The caller checks what it reads (restore checks each block or chunk before it
 * releases it); this only moves bytes.
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

  /**
   * One range as the socket gives it, resumed from its first byte not yet received when the
   * connection breaks. `opening` is its GET, sent ahead of time: the answer's body is not read
   * until the range's turn comes, so the bytes read ahead wait in the kernel's socket buffer (TCP
   * flow control stops the server there), not in this process. Holding them here, they outlived
   * V8's young generation and stayed until a full collection: ~64 MiB of garbage on top of
   * `concurrency × partSize`, 160-185 MiB of RSS for a restore.
   */
  async function* rangeChunks(
    start: number,
    end: number,
    opening: Promise<GetObjectCommandOutput>,
  ): AsyncGenerator<Buffer> {
    const length = end - start + 1;
    let got = 0;
    let resumed = 0;
    let stream: Readable | undefined;
    let answer: Promise<GetObjectCommandOutput> | undefined = opening;
    for (;;) {
      try {
        if (!stream) {
          const out: GetObjectCommandOutput = await (answer ?? get(start + got, end, version));
          answer = undefined;
          const body = out.Body;
          if (!(body instanceof Readable)) throw new Error("GetObject returned no Node stream");
          stream = body;
          // If-Match asks the server to refuse another version; not every S3-compatible store does.
          if (out.ETag !== undefined && out.ETag !== etag) throw changed(out.ETag);
        }
        for await (const chunk of idleGuardedBody(stream, inner)) {
          const piece = chunk as Buffer;
          if (got + piece.length > length) {
            throw new StowageError("SINK_READ_FAILED", `${guard.what}: the server sent more than asked`, {
              details: { ...guard.details, reason: "too-long", start, end },
            });
          }
          got += piece.length;
          yield piece;
        }
        if (got === length) return;
        throw new StowageError(
          "SINK_READ_FAILED",
          `${guard.what}: the connection ended after ${got} of ${length} bytes of bytes ${start}-${end}`,
          { details: { ...guard.details, reason: "truncated", start, end, received: got } },
        );
      } catch (error) {
        stream?.destroy();
        stream = undefined;
        answer = undefined;
        if (httpStatus(error) === 412 || errorName(error) === "PreconditionFailed")
          throw changed(undefined, error);
        const reason = isStowageError(error, "SINK_READ_FAILED") ? error.details?.reason : undefined;
        if (reason === "too-long" || reason === "changed") throw error;
        if (!resumable(error, guard.signal) || resumed >= options.resumes) throw error;
        resumed += 1;
        options.onResume?.({ start, end, from: start + got, cause: error });
        await delay(50 * resumed, undefined, { signal: controller.signal });
      }
    }
  }

  let started = false;
  async function* ranges(): AsyncGenerator<Buffer> {
    started = true;
    const queue: Array<{ start: number; end: number; opening: Promise<GetObjectCommandOutput> }> = [];
    let next = 0;
    const enqueue = (opened?: GetObjectCommandOutput) => {
      const start = next;
      const end = Math.min(start + partSize, total) - 1;
      next = end + 1;
      const opening = opened ? Promise.resolve(opened) : get(start, end, version);
      opening.catch(() => undefined); // awaited in order below; a later one may fail first
      queue.push({ start, end, opening });
    };
    try {
      enqueue(first);
      for (;;) {
        while (queue.length < options.concurrency && next < total) enqueue();
        const head = queue.shift();
        if (!head) return;
        yield* rangeChunks(head.start, head.end, head.opening);
      }
    } finally {
      // Done, failed, or dropped by the consumer: cancel what is still in flight, and close the
      // bodies of answers that arrived but were never read.
      if (queue.length > 0 || next < total) controller.abort();
      for (const { opening } of queue) {
        opening.then(
          (out) => (out.Body as Readable | undefined)?.destroy?.(),
          () => undefined,
        );
      }
      await Promise.allSettled(queue.map((q) => q.opening));
      guard.signal?.removeEventListener("abort", stop);
    }
  }
  const out = Readable.from(ranges(), { objectMode: false, highWaterMark: 1 << 20 });
  out.once("close", () => {
    // Dropped before the first read: the generator never ran, so release the first answer here.
    if (started) return;
    (first.Body as Readable | undefined)?.destroy?.();
    guard.signal?.removeEventListener("abort", stop);
  });
  return out;
}
