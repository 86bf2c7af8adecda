import type { Duplex, Readable, Stream } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isAbortError, isStowageError, StowageError, type StowageErrorCode, wrapError } from "./errors.js";
import { settled } from "./streams.js";
import type { Sink, WriteOptions, WrittenObject } from "./types.js";

type Failure = { code: StowageErrorCode; what: string; error: unknown };

/**
 * An error that says a stream was stopped, not why: an AbortError (a consumer that left its
 * `for await` early destroys the stream with one; `pipeline` passes it to every stage) or a
 * premature close. It is the consequence of a failure elsewhere, or of the caller's abort.
 */
const isStopped = (error: unknown): boolean =>
  isAbortError(error) || (error as { code?: unknown } | null)?.code === "ERR_STREAM_PREMATURE_CLOSE";

/**
 * Remembers which stage of a pipeline failed first. When one stage errors, `pipeline` destroys
 * the others with the same error, so the first `'error'` event names the origin. A stage that was
 * merely stopped (see {@link isStopped}) names no origin: a sink that fails mid-write destroys its
 * body before its own promise rejects, and that rejection, not the stopped body, says what failed.
 */
export class FirstFailure {
  /** What was noted, in order. */
  private readonly noted: Failure[] = [];
  /** The consumer's failure, when it stopped reading before any stage failed for a reason. */
  private consumer: Failure | undefined;

  /** Attributes the stream's errors to `code` unless an earlier stage already failed. */
  watch(stream: Stream, code: StowageErrorCode, what: string): void {
    stream.on("error", (error: unknown) => this.note(code, what, error));
  }

  note(code: StowageErrorCode, what: string, error: unknown): void {
    this.noted.push({ code, what, error });
  }

  /** How many failures were noted so far: a point in time for {@link noteConsumer}. */
  get count(): number {
    return this.noted.length;
  }

  /**
   * Notes the failure of the pipeline's consumer (the sink). When every stage noted before it
   * stopped reading (`stoppedAt`, by default now) was only stopped, the consumer stopped first, so
   * its failure is the origin, whatever the stages report while they are torn down after it.
   */
  noteConsumer(code: StowageErrorCode, what: string, error: unknown, stoppedAt = this.noted.length): void {
    if (this.noted.slice(0, stoppedAt).every((f) => isStopped(f.error))) {
      this.consumer ??= { code, what, error };
    }
    this.noted.push({ code, what, error });
  }

  /**
   * The error to throw, wrapped once. When the caller's signal fired: ABORTED (unless the first
   * failure was already a StowageError). Otherwise the first stage that failed for a reason of its
   * own, else `fallback` (e.g. the sink's rejection), and never ABORTED: a stage that was only
   * stopped is reported under its own stage's code.
   */
  toError(fallback: Failure, details: Record<string, unknown>, signal?: AbortSignal): StowageError {
    if (signal?.aborted) {
      const { code, what, error } = this.noted[0] ?? fallback;
      return wrapError(error, code, what, details, signal);
    }
    const { code, what, error } =
      (this.consumer && !isStopped(this.consumer.error) ? this.consumer : undefined) ??
      this.noted.find((f) => !isStopped(f.error)) ??
      (isStopped(fallback.error) ? undefined : fallback) ??
      this.noted[0] ??
      fallback;
    if (isStopped(error)) {
      return new StowageError(code, `${what}: stopped before the end`, { cause: error, details });
    }
    return wrapError(error, code, what, details, signal);
  }
}

export interface TransferOptions {
  /** The bytes in, then the stages they pass through; the sink reads the last one. */
  streams: [Readable, ...Duplex[]];
  sink: Sink;
  key: string;
  /** Passed to `sink.write`; its signal also stops the pipeline. */
  write: WriteOptions;
  /** The failure record the caller's stages are already watched by. */
  failure: FirstFailure;
  /** Names the sink's side in errors, e.g. "backup db: s3 sink failed writing db/…". */
  writing: string;
  /** What to call a failure no stage claimed when the sink did not fail (e.g. SOURCE_FAILED). */
  unclaimed: { code: StowageErrorCode; what: string };
  details: Record<string, unknown>;
  /** The caller's signal, so an abort is reported as ABORTED. */
  signal?: AbortSignal;
}

/**
 * Streams bytes through their stages into `sink.write(key)`, all or nothing: the one mechanism
 * behind backup, copy and rekey. On failure the input is destroyed and waited for (so a source's
 * process or handle is released), an object a misbehaving sink committed anyway is deleted, and
 * the first stage that failed names the error.
 */
export async function transfer(options: TransferOptions): Promise<WrittenObject> {
  const { streams, sink, key, failure, writing: what } = options;
  const input = streams[0];
  const body = streams.at(-1) as Readable;
  failure.watch(body, "SINK_WRITE_FAILED", what);
  // When the body closes before its end, the sink stopped reading (or a stage failed first).
  let stoppedAt: number | undefined;
  body.once("close", () => {
    if (!body.readableEnded) stoppedAt = failure.count;
  });
  const flowing = pipeline(streams, options.write.signal ? { signal: options.write.signal } : {});
  const writing = sink.write(key, body, options.write).catch((error: unknown) => {
    failure.noteConsumer("SINK_WRITE_FAILED", what, error, stoppedAt);
    body.destroy(error instanceof Error ? error : new Error(String(error)));
    throw error;
  });
  const [flowed, written] = await Promise.allSettled([flowing, writing]);
  if (flowed.status === "fulfilled" && written.status === "fulfilled") return written.value;
  // pipeline has destroyed the input already; wait until it has released what it holds.
  input.destroy();
  await settled(input);
  // A sink resolves only after the body ends, so one that resolved broke its contract: take the
  // object away rather than leave half of it behind.
  if (written.status === "fulfilled") {
    await sink.delete([key]).catch(() => undefined);
    if (stoppedAt !== undefined) {
      const early = new Error(`the ${sink.kind} sink stopped reading ${key} before its end`);
      failure.noteConsumer("SINK_WRITE_FAILED", what, early, stoppedAt);
    }
  }
  const fallback =
    written.status === "rejected"
      ? { code: "SINK_WRITE_FAILED" as const, what, error: written.reason }
      : { ...options.unclaimed, error: (flowed as PromiseRejectedResult).reason };
  const error = failure.toError(fallback, options.details, options.signal);
  throw written.status === "rejected" ? withLeftovers(error, written.reason) : error;
}

/**
 * Whichever stage failed first names the error, but a sink that then failed to clean up (an S3
 * multipart upload it could not abort) knows what the caller must act on. A sink says so by
 * rejecting with a StowageError whose `details.leftovers` is not empty; its details then join the
 * reported error's (the reported error's own win) and its message is appended, so the leftovers
 * and their ids (e.g. `details.openUpload`) reach the caller.
 */
function withLeftovers(reported: StowageError, sinkError: unknown): StowageError {
  if (reported === sinkError || !isStowageError(sinkError)) return reported;
  const leftovers = sinkError.details.leftovers;
  if (!Array.isArray(leftovers) || leftovers.length === 0) return reported;
  // A fresh details object: the reported error's may be shared with the caller's other errors.
  (reported as { details: Record<string, unknown> }).details = { ...sinkError.details, ...reported.details };
  reported.message = `${reported.message} (and ${sinkError.message})`;
  return reported;
}
