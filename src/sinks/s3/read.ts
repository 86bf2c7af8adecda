import { addAbortSignal, Readable } from "node:stream";
import type { GetObjectCommandOutput, S3Client } from "@aws-sdk/client-s3";
import { isStowageError, notFound, StowageError } from "../../core/errors.js";
import { rangedRead } from "./ranged-read.js";
import { errorName, guardedSend, httpStatus, idleGuardedBody, type RequestGuard } from "./requests.js";
import { s3Sdk } from "./sdk.js";

/** Turns a GetObject failure into NOT_FOUND / OBJECT_ARCHIVED where it is one of those. */
export function readError(error: unknown, key: string, objectKey: string, where: string): unknown {
  const name = errorName(error);
  if (name === "NoSuchKey" || name === "NotFound" || httpStatus(error) === 404) return notFound(key, where);
  if (name === "InvalidObjectState") {
    const storageClass = (error as { StorageClass?: string }).StorageClass;
    return new StowageError(
      "OBJECT_ARCHIVED",
      `${where}: ${objectKey} is archived${storageClass ? ` in ${storageClass}` : ""} and not restored: request a restore (glacierSink's requestRestore(manifest) or S3 RestoreObject), wait for it (waitForRestore), then read again`,
      { cause: error, details: { key, ...(storageClass ? { storageClass } : {}) } },
    );
  }
  return error;
}

/** What one read of an S3-backed sink needs. */
export interface ReadPlan {
  client: S3Client;
  bucket: string;
  /** The sink key (for errors) and the object key. */
  key: string;
  Key: string;
  /** e.g. "s3 sink". */
  where: string;
  partSize: number;
  concurrency: number;
  resumes: number;
  guard: RequestGuard;
  signal?: AbortSignal | undefined;
}

/**
 * A sink's `read`: ranged GETs in parallel, resumed where a connection broke (see
 * {@link rangedRead}); an empty object, or a server that ignores `Range`, as one GET.
 * @throws {NOT_FOUND | OBJECT_ARCHIVED | SINK_READ_FAILED}
 */
export async function readObject(plan: ReadPlan): Promise<Readable> {
  const { client, bucket, Key, key, where, guard, signal } = plan;
  try {
    const ranged = await rangedRead({
      client,
      bucket,
      Key,
      partSize: plan.partSize,
      concurrency: plan.concurrency,
      resumes: plan.resumes,
      guard,
    });
    const stream = ranged ?? (await wholeObject(client, bucket, Key, key, where, guard));
    return signal ? addAbortSignal(signal, stream) : stream;
  } catch (error) {
    if (isStowageError(error)) throw error;
    throw readError(error, key, Key, where);
  }
}

/** One GetObject of the whole object, as a guarded stream. */
async function wholeObject(
  client: S3Client,
  bucket: string,
  Key: string,
  key: string,
  where: string,
  guard: RequestGuard,
): Promise<Readable> {
  const out = await guardedSend<GetObjectCommandOutput>(
    client,
    new (await s3Sdk()).GetObjectCommand({ Bucket: bucket, Key }),
    guard,
  );
  if (!(out.Body instanceof Readable)) {
    throw new StowageError("SINK_READ_FAILED", `${where}: GetObject of ${Key} returned no Node stream`, {
      details: { key },
    });
  }
  return idleGuardedBody(out.Body, guard, out.ContentLength);
}
