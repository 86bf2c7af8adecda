import type {
  AbortMultipartUploadCommandOutput,
  ListMultipartUploadsCommandOutput,
  ListPartsCommandOutput,
  S3Client,
} from "@aws-sdk/client-s3";
import { isStowageError, StowageError, throwIfAborted } from "../../core/errors.js";
import type { Leftover } from "../../core/types.js";
import { errorName, guardedSend, httpStatus, type RequestGuard } from "./requests.js";
import { s3Sdk } from "./sdk.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How often a failed upload's abort is tried before it is reported as left behind. */
const ABORT_ATTEMPTS = 5;
/**
 * After an abort that raced a part request we had to cancel, how long to wait before looking
 * again: S3 may still store such a part after the abort was answered, re-creating the upload.
 */
const SETTLE_MS = 500;

export interface Cleanup {
  idleMs: number;
  where: string;
  details: { key: string };
}

export const guardFor = (cleanup: Cleanup, what: string): RequestGuard => ({
  idleMs: cleanup.idleMs,
  code: "SINK_WRITE_FAILED",
  what: `${cleanup.where}: ${what}`,
  details: cleanup.details,
});

/** The error of a write that failed and whose multipart upload may still be open. */
export function leftBehind(
  original: unknown,
  o: {
    bucket: string;
    objectKey: string;
    uploadId: string;
    problem: unknown;
    startedAt: Date;
    where: string;
    details: { key: string };
  },
): StowageError {
  const reason = o.problem instanceof Error ? o.problem.message : String(o.problem);
  const first = original instanceof Error ? original.message : String(original);
  const leftover: Leftover = {
    kind: "multipart-upload",
    key: o.details.key,
    id: o.uploadId,
    startedAt: o.startedAt,
  };
  return new StowageError(
    isStowageError(original) ? original.code : "SINK_WRITE_FAILED",
    `${o.where}: ${first}; and multipart upload ${o.uploadId} of s3://${o.bucket}/${o.objectKey} may remain, its parts costing storage, because aborting it failed (${reason}): remove it with the sink's removeLeftovers(error.details.leftovers) or AbortMultipartUpload, and let a bucket lifecycle rule with AbortIncompleteMultipartUpload catch any other`,
    {
      cause: original,
      details: {
        ...(isStowageError(original) ? original.details : {}),
        ...o.details,
        uploadId: o.uploadId,
        openUpload: { bucket: o.bucket, key: o.objectKey, uploadId: o.uploadId },
        leftovers: [leftover],
        abortError: reason,
      },
    },
  );
}

const isGone = (e: unknown) => errorName(e) === "NoSuchUpload" || httpStatus(e) === 404;
const isUnsupported = (e: unknown) =>
  [405, 501].includes(httpStatus(e) ?? 0) ||
  ["NotImplemented", "MethodNotAllowed"].includes(errorName(e) ?? "");

/** Every open multipart upload under `prefix` (ListMultipartUploads, paged). */
export async function* listUploads(
  client: S3Client,
  bucket: string,
  prefix: string,
  guard: RequestGuard,
): AsyncIterable<NonNullable<ListMultipartUploadsCommandOutput["Uploads"]>[number]> {
  const sdk = await s3Sdk();
  let keyMarker: string | undefined;
  let uploadIdMarker: string | undefined;
  for (;;) {
    throwIfAborted(guard.signal, guard.what);
    const page = await guardedSend<ListMultipartUploadsCommandOutput>(
      client,
      new sdk.ListMultipartUploadsCommand({
        Bucket: bucket,
        ...(prefix ? { Prefix: prefix } : {}),
        ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
        ...(uploadIdMarker !== undefined ? { UploadIdMarker: uploadIdMarker } : {}),
      }),
      guard,
    );
    yield* page.Uploads ?? [];
    if (!page.IsTruncated) return;
    if (page.NextKeyMarker === keyMarker && page.NextUploadIdMarker === uploadIdMarker) return; // no progress
    keyMarker = page.NextKeyMarker;
    uploadIdMarker = page.NextUploadIdMarker;
  }
}

/**
 * Whether the upload is still there: ListParts shows parts, or ListMultipartUploads lists it (S3
 * may answer NoSuchUpload to ListParts after an abort while a part that arrived late still sits in
 * the bucket, listed). A store that has neither call leaves us trusting the abort's answer.
 */
async function uploadRemains(
  client: S3Client,
  target: { Bucket: string; Key: string; UploadId: string },
  cleanup: Cleanup,
): Promise<boolean> {
  const sdk = await s3Sdk();
  try {
    const parts = await guardedSend<ListPartsCommandOutput>(
      client,
      new sdk.ListPartsCommand(target),
      guardFor(cleanup, "ListParts"),
    );
    if ((parts.Parts ?? []).length > 0) return true;
  } catch (error) {
    if (!isGone(error) && !isUnsupported(error)) throw error;
  }
  try {
    for await (const upload of listUploads(
      client,
      target.Bucket,
      target.Key,
      guardFor(cleanup, "ListMultipartUploads"),
    )) {
      if (upload.UploadId === target.UploadId) return true;
    }
  } catch (error) {
    if (!isUnsupported(error)) throw error;
  }
  return false;
}

/**
 * Aborts a multipart upload and makes sure it is gone, aborting again while it remains (a part
 * still arriving may land after an abort), at most {@link ABORT_ATTEMPTS} times. When a part
 * request had to be cancelled (`raced`), a clean check is repeated once after {@link SETTLE_MS}.
 * Returns the problem if the upload could not be shown gone, undefined when it is.
 */
export async function discardUpload(
  client: S3Client,
  target: { Bucket: string; Key: string; UploadId: string },
  cleanup: Cleanup,
  raced: boolean,
): Promise<unknown> {
  const sdk = await s3Sdk();
  let lastProblem: unknown;
  let abort = true;
  let recheck = raced;
  for (let attempt = 0; attempt < ABORT_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(abort ? 100 * 2 ** (attempt - 1) : SETTLE_MS);
    if (abort) {
      try {
        await guardedSend<AbortMultipartUploadCommandOutput>(
          client,
          new sdk.AbortMultipartUploadCommand(target),
          guardFor(cleanup, "AbortMultipartUpload"),
        );
      } catch (error) {
        if (!isGone(error)) {
          lastProblem = error;
          continue;
        }
      }
    }
    try {
      if (await uploadRemains(client, target, cleanup)) {
        lastProblem = new Error(`the upload was still there after an abort (attempt ${attempt + 1})`);
        abort = true;
        continue;
      }
    } catch (error) {
      lastProblem = error;
      abort = true;
      continue;
    }
    if (!recheck) return undefined;
    recheck = false;
    abort = false;
  }
  return lastProblem ?? new Error(`the upload was still there after ${ABORT_ATTEMPTS} aborts`);
}
