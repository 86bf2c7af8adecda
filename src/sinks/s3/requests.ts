import { Readable } from "node:stream";
import type { S3Client } from "@aws-sdk/client-s3";
import type { MiddlewareStack } from "@smithy/types";
import { StowageError, type StowageErrorCode } from "../../core/errors.js";

/** The S3 error's name ("NoSuchUpload", "AccessDenied"...), if it has one. */
export const errorName = (e: unknown) => (e as { name?: string } | null)?.name;
/** The HTTP status an SDK error came back with, if any. */
export const httpStatus = (e: unknown) =>
  (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;

/** How one request is watched: how long it may go without a byte moving, and what to call it. */
export interface RequestGuard {
  /** No bytes moving (sent or received) for this long fails the request. */
  idleMs: number;
  /** The caller's signal: cancels the request at once. */
  signal?: AbortSignal | undefined;
  /** The error code a stalled request fails with (SINK_WRITE_FAILED or SINK_READ_FAILED). */
  code: StowageErrorCode;
  /** e.g. "s3 sink: writing db/…: UploadPart 3". */
  what: string;
  details?: Record<string, unknown>;
}

/** The error a request that stalled fails with: `details.reason` is "timeout". */
export function idleTimeoutError(guard: RequestGuard, cause?: unknown): StowageError {
  return new StowageError(
    guard.code,
    `${guard.what}: the server sent and took nothing for ${guard.idleMs} ms (idleTimeout), so the request was given up`,
    { cause, details: { ...guard.details, reason: "timeout", idleTimeoutMs: guard.idleMs } },
  );
}

const PROGRESS_CHUNK = 64 * 1024;

/**
 * Sends a Buffer body as a stream of 64 KiB pieces, calling `onProgress` as the socket takes each
 * one, so a request that stops moving can be told from one that is slow. Added as the innermost
 * middleware, after signing and checksums have seen the Buffer, so the bytes on the wire (and the
 * Content-Length) are the same; each retry gets a fresh stream.
 */
function reportBodyProgress(command: { middlewareStack: unknown }, onProgress: () => void): void {
  const stack = command.middlewareStack as MiddlewareStack<object, object>;
  stack.add(
    (next) => (args) => {
      const request = args.request as { body?: unknown } | undefined;
      const body = request?.body;
      if (!request || !(body instanceof Uint8Array) || body.byteLength <= PROGRESS_CHUNK) return next(args);
      const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      let at = 0;
      const stream = new Readable({
        highWaterMark: PROGRESS_CHUNK,
        read() {
          onProgress();
          if (at >= bytes.length) {
            this.push(null);
            return;
          }
          const end = Math.min(at + PROGRESS_CHUNK, bytes.length);
          this.push(bytes.subarray(at, end));
          at = end;
        },
      });
      const copy = Object.assign(Object.create(Object.getPrototypeOf(request)), request, { body: stream });
      return next({ ...args, request: copy });
    },
    { step: "deserialize", priority: "low", name: "stowageBodyProgress" },
  );
}

/**
 * `client.send(command)` that fails when no byte has moved for `guard.idleMs` (an S3 server that
 * accepts a connection and never answers would otherwise leave the caller waiting forever), and
 * that the caller's signal cancels. A stalled request fails with {@link idleTimeoutError}; a
 * cancelled one with the SDK's AbortError.
 */
export async function guardedSend<T>(
  client: S3Client,
  command: { middlewareStack: unknown },
  guard: RequestGuard,
): Promise<T> {
  const controller = new AbortController();
  const { signal } = guard;
  const onAbort = () => controller.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  let stalled: StowageError | undefined;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = idleTimeoutError(guard);
      controller.abort(stalled);
    }, guard.idleMs);
  };
  reportBodyProgress(command, arm);
  arm();
  try {
    // biome-ignore lint/suspicious/noExplicitAny: every S3 command goes through this one call
    return (await client.send(command as any, { abortSignal: controller.signal })) as T;
  } catch (error) {
    if (stalled) throw idleTimeoutError(guard, error);
    throw error;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * A response body that fails with {@link idleTimeoutError} when the reader is waiting for bytes and
 * none arrive for `guard.idleMs`. Time the reader spends not asking (a slow restore target) does
 * not count: the clock runs only while a read is pending. A body that ends before `expectedBytes`
 * (a connection closed early can look like a clean end) fails too, with `details.reason:
 * "truncated"`, so a cut read is not mistaken for corrupt data.
 */
export function idleGuardedBody(body: Readable, guard: RequestGuard, expectedBytes?: number): Readable {
  async function* guarded() {
    const chunks = body[Symbol.asyncIterator]();
    let received = 0;
    try {
      for (;;) {
        let timer: NodeJS.Timeout | undefined;
        const waiting = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(idleTimeoutError(guard)), guard.idleMs);
        });
        let next: IteratorResult<unknown>;
        try {
          next = await Promise.race([chunks.next(), waiting]);
        } finally {
          clearTimeout(timer);
        }
        if (next.done) {
          if (expectedBytes !== undefined && received < expectedBytes) {
            throw new StowageError(
              guard.code,
              `${guard.what}: the connection ended after ${received} of ${expectedBytes} bytes`,
              { details: { ...guard.details, reason: "truncated", received, expected: expectedBytes } },
            );
          }
          return;
        }
        received += (next.value as Buffer).length;
        yield next.value as Buffer;
      }
    } finally {
      // Ended, failed, stalled or dropped by the reader: the socket goes either way.
      if (!body.readableEnded) body.destroy();
    }
  }
  return Readable.from(guarded(), { objectMode: false });
}
