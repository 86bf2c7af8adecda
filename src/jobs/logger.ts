/**
 * The logging seam of jobs, the scheduler and drills: the subset of pino's interface stowage
 * calls, so a pino logger (or anything shaped like it) can be passed as it is. Every call is
 * `(fields, message)`; fields hold job names, keys, sizes, durations and error codes — never a
 * secret.
 */
export interface Logger {
  /** Detail for diagnosing a run; off in most deployments. */
  debug(fields: Record<string, unknown>, message?: string): void;
  /** A run's milestones: backup started, lock taken, retention applied, progress. */
  info(fields: Record<string, unknown>, message?: string): void;
  /** Something went wrong that did not fail the run yet (e.g. a lock renewal failed). */
  warn(fields: Record<string, unknown>, message?: string): void;
  /** A job or step that failed; `fields.code` holds its StowageError code. */
  error(fields: Record<string, unknown>, message?: string): void;
}

const noop = (): void => undefined;

/** The default: says nothing. */
export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });

/** True for an object with the four methods stowage calls. */
export function isLogger(value: unknown): value is Logger {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return ["debug", "info", "warn", "error"].every((m) => typeof v[m] === "function");
}
