import type { Stream } from "node:stream";
import { type StowageError, type StowageErrorCode, wrapError } from "./errors.js";

/**
 * Remembers which stage of a pipeline failed first. When one stage errors, `pipeline` destroys
 * the others with the same error, so the first `'error'` event names the origin.
 */
export class FirstFailure {
  first: { code: StowageErrorCode; what: string; error: unknown } | undefined;

  /** Attributes the stream's errors to `code` unless an earlier stage already failed. */
  watch(stream: Stream, code: StowageErrorCode, what: string): void {
    stream.on("error", (error: unknown) => this.note(code, what, error));
  }

  note(code: StowageErrorCode, what: string, error: unknown): void {
    this.first ??= { code, what, error };
  }

  /** The error to throw: the first stage's, wrapped once; ABORTED when the signal fired. */
  toError(
    fallback: { code: StowageErrorCode; what: string; error: unknown },
    details: Record<string, unknown>,
    signal?: AbortSignal,
  ): StowageError {
    const { code, what, error } = this.first ?? fallback;
    return wrapError(error, code, what, details, signal);
  }
}
