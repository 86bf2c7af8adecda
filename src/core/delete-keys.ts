/** Batched deletion that tells which keys failed: shared by backup and WAL retention. */
import { isAbortError, type StowageError, throwIfAborted, wrapError } from "./errors.js";
import type { Sink } from "./types.js";

/**
 * Deletes keys in one call; if it fails, key by key, to tell which failed (one undeletable object,
 * an S3 Object Lock or a permission, then fails only itself). Aborts are thrown as `ABORTED`.
 * @param where the operation, for messages (`"applyRetention"`).
 */
export async function deleteKeys(
  sink: Sink,
  keys: string[],
  signal: AbortSignal | undefined,
  where: string,
): Promise<Map<string, StowageError>> {
  const failed = new Map<string, StowageError>();
  if (keys.length === 0) return failed;
  const attempt = async (batch: string[]) => {
    throwIfAborted(signal, where);
    try {
      await sink.delete(batch, signal ? { signal } : {});
      return undefined;
    } catch (error) {
      if (signal?.aborted || isAbortError(error)) {
        throw wrapError(error, "ABORTED", `${where}: deleting from ${sink.kind} sink`, {}, signal);
      }
      return wrapError(
        error,
        "SINK_DELETE_FAILED",
        `${where}: deleting ${batch.length === 1 ? batch[0] : `${batch.length} keys`} from ${sink.kind} sink`,
        { keys: batch.slice(0, 10) },
      );
    }
  };
  const error = await attempt(keys);
  if (!error) return failed;
  if (keys.length === 1) {
    failed.set(keys[0]!, error);
    return failed;
  }
  for (const key of keys) {
    const one = await attempt([key]);
    if (one) failed.set(key, one);
  }
  return failed;
}
