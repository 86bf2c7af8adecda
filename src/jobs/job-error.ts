import { isAbortError, isStowageError } from "../core/errors.js";
import type { JobError, JobStage } from "./cycle.js";

const messageOf = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** A failure of one stage of a job run, by stable code (ABORTED for an abort, else UNKNOWN). */
export function jobError(stage: JobStage, error: unknown, target?: string): JobError {
  return {
    stage,
    code: isStowageError(error) ? error.code : isAbortError(error) ? "ABORTED" : "UNKNOWN",
    message: messageOf(error),
    ...(target === undefined ? {} : { target }),
  };
}
