import type { S3Client } from "@aws-sdk/client-s3";
import { StowageError, throwIfAborted, wrapError } from "../../core/errors.js";
import type { Leftover } from "../../core/types.js";
import { errorName, guardedSend, httpStatus } from "./requests.js";
import { s3Sdk } from "./sdk.js";

/** What {@link abortLeftovers} needs of its sink. */
export interface LeftoverContext {
  client: S3Client;
  bucket: string;
  /** e.g. "s3 sink". */
  where: string;
  idleMs: number;
  objectKey(key: string): string;
}

/**
 * A sink's `removeLeftovers`: aborts the multipart uploads `leftovers` reported (one already gone
 * counts as removed).
 * @throws {CONFIG_INVALID} for a leftover of another kind, before any request.
 * @throws {SINK_DELETE_FAILED} listing every upload that could not be aborted.
 */
export async function abortLeftovers(
  sink: LeftoverContext,
  leftovers: readonly Leftover[],
  signal?: AbortSignal,
): Promise<void> {
  const { client, bucket, where, idleMs, objectKey } = sink;
  const foreign = leftovers.filter((l) => l.kind !== "multipart-upload");
  if (foreign.length > 0) {
    throw new StowageError(
      "CONFIG_INVALID",
      `${where}: removeLeftovers takes multipart uploads only, not ${foreign[0]!.kind}`,
      { details: { issues: [{ path: "leftovers", problem: `kind ${foreign[0]!.kind}` }] } },
    );
  }
  const targets = leftovers.map((l) => ({ leftover: l, Key: objectKey(l.key) }));
  const errors: Array<{ key: string; uploadId: string; code: string; message: string }> = [];
  for (const { leftover, Key } of targets) {
    throwIfAborted(signal, `${where}: removing leftovers`);
    try {
      await guardedSend(
        client,
        new (await s3Sdk()).AbortMultipartUploadCommand({ Bucket: bucket, Key, UploadId: leftover.id }),
        {
          idleMs,
          signal: signal,
          code: "SINK_DELETE_FAILED",
          what: `${where}: aborting multipart upload ${leftover.id} of ${leftover.key}`,
          details: { key: leftover.key, uploadId: leftover.id },
        },
      );
    } catch (error) {
      if (errorName(error) === "NoSuchUpload" || httpStatus(error) === 404) continue;
      if (signal?.aborted) {
        throw wrapError(error, "SINK_DELETE_FAILED", `${where}: removing leftovers`, {}, signal);
      }
      errors.push({
        key: leftover.key,
        uploadId: leftover.id,
        code: errorName(error) ?? "Error",
        message: error instanceof Error ? error.message : String(error),
      });
    }
  }
  if (errors.length > 0) {
    const first = errors[0]!;
    throw new StowageError(
      "SINK_DELETE_FAILED",
      `${where}: ${errors.length} of ${leftovers.length} multipart uploads were not aborted (first: ${first.key}, upload ${first.uploadId}: ${first.code})`,
      { details: { errors } },
    );
  }
}
