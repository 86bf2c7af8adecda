/**
 * Every error stowage throws is a {@link StowageError} with a stable string `code`.
 * Tests and callers branch on `code`, never on message text.
 */
export type StowageErrorCode =
  | "CONFIG_INVALID"
  | "SOURCE_FAILED"
  | "SOURCE_VALIDATION_FAILED"
  /** A source found nothing to back up (no file matched) and was not told that nothing is fine. */
  | "SOURCE_EMPTY"
  | "TRANSFORM_FAILED"
  | "SINK_WRITE_FAILED"
  | "SINK_READ_FAILED"
  | "SINK_DELETE_FAILED"
  | "DECRYPT_FAILED"
  | "INTEGRITY_MISMATCH"
  | "MANIFEST_INVALID"
  | "NOT_FOUND"
  | "OBJECT_ARCHIVED"
  | "RESTORE_FAILED"
  | "RETENTION_REFUSED"
  | "UNSUPPORTED"
  | "LOCK_LOST"
  | "LOCK_FAILED"
  | "ABORTED"
  /** A manifest checked against `verifyKeys` carries no signature. */
  | "SIGNATURE_MISSING"
  /** A manifest's signature is by an unknown key, or a signed field was changed. */
  | "SIGNATURE_INVALID";

const BRAND = Symbol.for("stowage.error");

/** Options of the {@link StowageError} constructor. */
export interface StowageErrorOptions {
  /** The error this one wraps (an SDK's, a child process's), kept for logs and debugging. */
  cause?: unknown;
  /** Structured, secret-free facts about the failure (the key, the stage, the option). */
  details?: Record<string, unknown>;
}

/**
 * The one error root. `cause` keeps the original error; `details` carries secret-free facts.
 *
 * @example
 * try { await backup(opts) } catch (e) { if (isStowageError(e, "ABORTED")) ... }
 */
export class StowageError extends Error {
  /** A stable code to branch on (`CONFIG_INVALID`, `INTEGRITY_MISMATCH`…); messages may change. */
  readonly code: StowageErrorCode;
  /** Facts about the failure, never a secret (`issues` for CONFIG_INVALID, `package` for UNSUPPORTED…). */
  readonly details: Record<string, unknown>;
  /** Marks a stowage error across copies of the package; see {@link isStowageError}. */
  readonly [BRAND] = true;

  constructor(code: StowageErrorCode, message: string, options: StowageErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StowageError";
    this.code = code;
    this.details = options.details ?? {};
  }
}

/**
 * True for any stowage error, also one thrown by another copy of the package
 * (the brand is a global symbol, not `instanceof`). With `code`, also checks the code.
 */
export function isStowageError(value: unknown, code?: StowageErrorCode): value is StowageError {
  if (typeof value !== "object" || value === null) return false;
  if ((value as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (value as StowageError).code === code;
}

/** True for the errors Node and the web platform raise when an AbortSignal fires. */
export function isAbortError(value: unknown): boolean {
  if (isStowageError(value, "ABORTED")) return true;
  const name = (value as { name?: unknown } | null)?.name;
  const code = (value as { code?: unknown } | null)?.code;
  return name === "AbortError" || code === "ABORT_ERR";
}

/**
 * Wraps an adapter's error once, at the boundary: a StowageError passes through untouched
 * (it already says what failed), an abort becomes ABORTED, anything else gets `code`.
 */
export function wrapError(
  error: unknown,
  code: StowageErrorCode,
  message: string,
  details: Record<string, unknown> = {},
  signal?: AbortSignal,
): StowageError {
  if (isStowageError(error)) return error;
  if (signal?.aborted || isAbortError(error)) {
    return new StowageError("ABORTED", `${message}: aborted`, { cause: error, details });
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new StowageError(code, `${message}: ${reason}`, { cause: error, details });
}

/** Throws ABORTED if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) {
    throw new StowageError("ABORTED", `${what}: aborted`, { cause: signal.reason });
  }
}

/** A missing object, thrown by sinks so that the core can tell "absent" from "broken". */
export function notFound(key: string, where: string): StowageError {
  return new StowageError("NOT_FOUND", `${where}: no object at key "${key}"`, { details: { key } });
}
