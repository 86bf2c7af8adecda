import { finished, Readable } from "node:stream";
import type { GetObjectCommandOutput } from "@aws-sdk/client-s3";
import { isStowageError, StowageError } from "../../core/errors.js";
import { errorName, httpStatus, idleTimeoutError, type RequestGuard } from "./requests.js";

/** What {@link RangeStream} needs to fetch an object's ranges. */
export interface RangePlan {
  /** The object's size (from HeadObject). */
  total: number;
  partSize: number;
  /** GETs in flight at once, the one being read included. */
  concurrency: number;
  /** How many times one range may be resumed after its connection broke. */
  resumes: number;
  /** The ETag every answer must carry. */
  etag: string;
  /** A ranged GET (with If-Match), bytes `start`..`end` inclusive. */
  get(start: number, end: number): Promise<GetObjectCommandOutput>;
  /** The error for an object replaced mid-read. */
  changed(now: string | undefined, cause?: unknown): StowageError;
  /** Whether a failed GET or body is worth resuming. */
  resumable(error: unknown): boolean;
  /** Cancels every GET still in flight. */
  abort(): void;
  /** Called once the stream is closed, however it ended. */
  release(): void;
  guard: RequestGuard;
  onResume?: ((info: { start: number; end: number; from: number; cause: unknown }) => void) | undefined;
}

/** One range of the object: its GET (sent ahead of its turn) and how far its reading got. */
interface Range {
  start: number;
  end: number;
  answer: Promise<GetObjectCommandOutput> | undefined;
  got: number;
  resumed: number;
}

/**
 * Bytes the stream buffers ahead of its consumer. Small on purpose: every byte of the object
 * arrives in a fresh socket buffer, and the shorter each one lives, the fewer survive a young-
 * generation collection into the old generation, where only a full collection frees them.
 */
const BUFFERED = 256 * 1024;

/**
 * The object's bytes in order, read range by range from the ranged GETs sent ahead. Each chunk the
 * socket gives is passed on as it came (no copy, no async iteration in between, which would join
 * the chunks buffered into a new buffer); when the consumer is full the body is paused, so the
 * GETs ahead and the one being read wait in their sockets and TCP flow control holds the rest at
 * the server. A broken range is asked again from its first byte not yet passed on.
 */
export class RangeStream extends Readable {
  private readonly queue: Range[] = [];
  /** First byte not yet given a range. */
  private next = 0;
  private current: Range | undefined;
  private body: Readable | undefined;
  private detachBody: (() => void) | undefined;
  /** The consumer asked for more and no push has said "full" since. */
  private wanting = false;
  /** A GET of the current range is awaited, or a resumption is waiting for its delay. */
  private pending = false;
  private idle: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly plan: RangePlan,
    first: GetObjectCommandOutput,
  ) {
    super({ highWaterMark: BUFFERED });
    this.enqueue(Promise.resolve(first));
  }

  override _read(): void {
    this.wanting = true;
    if (this.body) {
      if (this.body.isPaused()) {
        this.body.resume();
        this.armIdle();
      }
      return;
    }
    if (!this.pending) this.advance();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.idle);
    clearTimeout(this.retry);
    this.letGo();
    // Done, failed, or dropped by the consumer: cancel what is still in flight, and close the
    // bodies of answers that arrived but were never read.
    if (this.queue.length > 0 || this.next < this.plan.total || this.pending) this.plan.abort();
    for (const { answer } of this.queue.splice(0)) {
      answer?.then(
        (out) => (out.Body as Readable | undefined)?.destroy?.(),
        () => undefined,
      );
    }
    this.plan.release();
    callback(error);
  }

  private enqueue(answer?: Promise<GetObjectCommandOutput>): void {
    const start = this.next;
    const end = Math.min(start + this.plan.partSize, this.plan.total) - 1;
    this.next = end + 1;
    const sent = answer ?? this.plan.get(start, end);
    sent.catch(() => undefined); // awaited in order; a later one may fail first
    this.queue.push({ start, end, answer: sent, got: 0, resumed: 0 });
  }

  /** Starts the next range (sending the GETs ahead first), or ends the stream after the last. */
  private advance(): void {
    while (this.queue.length < this.plan.concurrency && this.next < this.plan.total) this.enqueue();
    const range = this.queue.shift();
    if (!range) {
      this.push(null);
      return;
    }
    this.current = range;
    this.open(range);
  }

  /** Waits for the range's answer (sent ahead, or sent now from its first byte not yet received). */
  private open(range: Range): void {
    const answer = range.answer ?? this.plan.get(range.start + range.got, range.end);
    range.answer = undefined;
    this.pending = true;
    answer.then(
      (out) => {
        this.pending = false;
        const body = out.Body;
        if (this.destroyed) {
          (body as Readable | undefined)?.destroy?.();
          return;
        }
        if (!(body instanceof Readable)) {
          this.fail(range, new Error("GetObject returned no Node stream"));
          return;
        }
        // If-Match asks the server to refuse another version; not every S3-compatible store does.
        if (out.ETag !== undefined && out.ETag !== this.plan.etag) {
          body.destroy();
          this.destroy(this.plan.changed(out.ETag));
          return;
        }
        this.attach(range, body);
      },
      (error: unknown) => {
        this.pending = false;
        if (!this.destroyed) this.fail(range, error);
      },
    );
  }

  private attach(range: Range, body: Readable): void {
    const length = range.end - range.start + 1;
    const { guard } = this.plan;
    this.body = body;
    const onData = (chunk: Buffer) => {
      if (range.got + chunk.length > length) {
        this.letGo();
        this.destroy(
          new StowageError("SINK_READ_FAILED", `${guard.what}: the server sent more than asked`, {
            details: { ...guard.details, reason: "too-long", start: range.start, end: range.end },
          }),
        );
        return;
      }
      range.got += chunk.length;
      this.idle?.refresh();
      if (!this.push(chunk)) {
        this.wanting = false;
        body.pause();
        clearTimeout(this.idle);
      }
    };
    body.on("data", onData);
    const stopWatching = finished(body, { writable: false }, (error) => {
      if (this.body !== body) return;
      this.letGo();
      if (this.destroyed) return;
      if (!error && range.got === length) {
        this.current = undefined;
        if (this.wanting) this.advance();
        return;
      }
      this.fail(
        range,
        error ??
          new StowageError(
            "SINK_READ_FAILED",
            `${guard.what}: the connection ended after ${range.got} of ${length} bytes of bytes ${range.start}-${range.end}`,
            {
              details: {
                ...guard.details,
                reason: "truncated",
                start: range.start,
                end: range.end,
                received: range.got,
              },
            },
          ),
      );
    });
    this.detachBody = () => {
      body.off("data", onData);
      stopWatching();
    };
    if (this.wanting) this.armIdle();
    else body.pause();
  }

  /** The clock runs only while the consumer waits for bytes: a slow consumer is no stalled server. */
  private armIdle(): void {
    clearTimeout(this.idle);
    const range = this.current;
    this.idle = setTimeout(() => {
      if (range) this.fail(range, idleTimeoutError(this.plan.guard));
    }, this.plan.guard.idleMs);
  }

  /** Lets go of the body being read (closing its connection if it did not end). */
  private letGo(): void {
    clearTimeout(this.idle);
    const body = this.body;
    this.detachBody?.();
    this.detachBody = undefined;
    this.body = undefined;
    if (body && !body.readableEnded) body.destroy();
  }

  /** A range's GET or body failed: resume it from its first byte not yet received, or fail. */
  private fail(range: Range, error: unknown): void {
    this.letGo();
    if (httpStatus(error) === 412 || errorName(error) === "PreconditionFailed") {
      this.destroy(this.plan.changed(undefined, error));
      return;
    }
    const reason = isStowageError(error, "SINK_READ_FAILED") ? error.details?.reason : undefined;
    const final = reason === "too-long" || reason === "changed";
    if (final || !this.plan.resumable(error) || range.resumed >= this.plan.resumes) {
      this.destroy(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    range.resumed += 1;
    this.plan.onResume?.({ start: range.start, end: range.end, from: range.start + range.got, cause: error });
    this.pending = true;
    this.retry = setTimeout(() => {
      this.pending = false;
      if (!this.destroyed) this.open(range);
    }, 50 * range.resumed);
  }
}
