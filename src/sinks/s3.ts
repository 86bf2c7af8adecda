import { addAbortSignal, Readable } from "node:stream";
import type {
  DeleteObjectsCommandOutput,
  GetObjectCommandOutput,
  HeadObjectCommandOutput,
  ListObjectsV2CommandOutput,
  PutObjectCommandInput,
  S3Client,
} from "@aws-sdk/client-s3";
import { z } from "zod";
import { isStowageError, notFound, StowageError, throwIfAborted, wrapError } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { MANIFEST_SUFFIX } from "../core/manifest.js";
import { durationSchema, parseDuration, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type {
  Leftover,
  LeftoverOptions,
  ObjectInfo,
  ReadOptions,
  Sink,
  SinkCapabilities,
  WriteOptions,
  WrittenObject,
} from "../core/types.js";
import { errorName, guardedSend, httpStatus, idleGuardedBody, type RequestGuard } from "./s3/requests.js";
import { s3Sdk } from "./s3/sdk.js";
import { listUploads, putStream, S3_LIMITS } from "./s3/upload.js";

const MiB = 1024 * 1024;

export { largestBackupBytes, PARTS_PER_STEP, partSizeFor, S3_LIMITS } from "./s3/upload.js";

/** Storage classes an object can be read from at once (no restore request). */
export const S3_STORAGE_CLASSES = [
  "STANDARD",
  "STANDARD_IA",
  "ONEZONE_IA",
  "INTELLIGENT_TIERING",
  "GLACIER_IR",
  "REDUCED_REDUNDANCY",
] as const;
/** Storage classes whose objects must be restored (hours) before they can be read. */
export const COLD_STORAGE_CLASSES = ["GLACIER", "DEEP_ARCHIVE"] as const;

const isS3Client = (v: unknown): v is S3Client =>
  typeof v === "object" && v !== null && typeof (v as S3Client).send === "function";

/** Options shared by {@link s3Sink} and `glacierSink`. */
export const s3CommonOptionsSchema = z.object({
  /**
   * A ready `S3Client` from `@aws-sdk/client-s3`: credentials, region, endpoint, retries and
   * checksum settings are yours (see {@link s3Sink} for what S3-compatible stores need).
   */
  client: z.custom<S3Client>(isS3Client, "expected an S3Client from @aws-sdk/client-s3"),
  bucket: z
    .string()
    .min(1, "name the bucket")
    .regex(/^[^/]+$/, "a bucket name has no '/'"),
  /** Put every key under this prefix; a "/" is added when missing. @default "" */
  prefix: z
    .string()
    .default("")
    .refine((p) => !p.startsWith("/"), "a prefix does not start with '/'"),
  serverSideEncryption: z.enum(["AES256", "aws:kms", "aws:kms:dsse"]).optional(),
  /** The KMS key for `serverSideEncryption: "aws:kms"`; never logged. */
  kmsKeyId: z.string().min(1).optional(),
  /** Object tags set on each artifact and manifest. */
  tags: z.record(z.string().min(1).max(128), z.string().max(256)).optional(),
  /**
   * Size of the first 1,000 parts of a multipart upload, in bytes (5 MiB–5 GiB); later parts
   * double every 1,000 parts (see {@link partSizeFor}). @default 8 MiB
   */
  partSize: z
    .number()
    .int()
    .min(S3_LIMITS.minPartSize, "partSize is at least 5 MiB (5242880), S3's smallest part")
    .max(S3_LIMITS.maxPartSize, "partSize is at most 5 GiB, S3's largest part")
    .default(8 * MiB),
  /** Parts held in memory at once (being filled or uploading). @default 4 */
  queueSize: z.number().int().min(1).max(64).default(4),
  /**
   * How long a request to S3 may go without a byte moving (sent or received) before it is given up:
   * milliseconds or a duration ("60s", "5m"). A server that accepts a connection and never answers
   * then fails the write with SINK_WRITE_FAILED (a read with SINK_READ_FAILED) and
   * `details.reason: "timeout"`, instead of leaving `backup()` waiting forever. A slow link is not
   * idle; a restore target that reads slowly does not count either. @default "60s"
   */
  idleTimeout: z
    .union([z.number().int().positive(), durationSchema])
    .default("60s")
    .refine((v) => typeof v === "number" || parseDuration(v) > 0, "a timeout longer than 0"),
  /**
   * S3 Object Lock on each artifact and its manifest: `mode` and how long from the write
   * (`retainFor`: "30d", "1y"...). The bucket must have Object Lock enabled. The lock's date is
   * returned as `retainUntil`, which `backup()` records in the manifest so retention keeps it.
   */
  objectLock: z
    .object({
      mode: z.enum(["GOVERNANCE", "COMPLIANCE"]),
      retainFor: durationSchema,
    })
    .strict()
    .optional(),
});

const kmsCheck = (
  opts: { serverSideEncryption?: string | undefined; kmsKeyId?: string | undefined },
  ctx: z.RefinementCtx,
) => {
  if (opts.kmsKeyId && !opts.serverSideEncryption?.startsWith("aws:kms")) {
    ctx.addIssue({
      code: "custom",
      path: ["kmsKeyId"],
      message: 'kmsKeyId needs serverSideEncryption "aws:kms" or "aws:kms:dsse"',
    });
  }
};

export const s3SinkOptionsSchema = s3CommonOptionsSchema
  .extend({
    /**
     * Storage class of artifacts. Manifests always go to STANDARD (small, read by every listing).
     * GLACIER and DEEP_ARCHIVE need a restore before a read: use `glacierSink` for them.
     * @default "STANDARD"
     */
    storageClass: z
      .enum(S3_STORAGE_CLASSES, {
        error: `one of ${S3_STORAGE_CLASSES.join(", ")} (for GLACIER or DEEP_ARCHIVE use glacierSink from "stowage/sinks/glacier")`,
      })
      .default("STANDARD"),
  })
  .strict()
  .superRefine(kmsCheck);
/** Options of the S3 sink and the Glacier sink. */
export interface S3CommonOptions {
  /**
   * A ready `S3Client` from `@aws-sdk/client-s3`: credentials, region, endpoint, retries and
   * checksum settings are yours (see `s3Sink` for what S3-compatible stores need).
   */
  client: S3Client;
  /** The bucket; it must exist. */
  bucket: string;
  /** Put every key under this prefix; a "/" is added when missing. @default "" */
  prefix?: string;
  /** Server-side encryption S3 applies to each object. @default the bucket's default */
  serverSideEncryption?: "AES256" | "aws:kms" | "aws:kms:dsse";
  /** The KMS key for `serverSideEncryption: "aws:kms"`; never logged. */
  kmsKeyId?: string;
  /** Object tags set on each artifact and manifest. */
  tags?: Record<string, string>;
  /**
   * Size of the first 1,000 parts of a multipart upload, in bytes (5 MiB–5 GiB); later parts
   * double every 1,000 parts (see `partSizeFor`). @default 8 MiB
   */
  partSize?: number;
  /** Parts held in memory at once (being filled or uploading). @default 4 */
  queueSize?: number;
  /**
   * How long a request to S3 may go without a byte moving (sent or received) before it is given up:
   * milliseconds or a duration ("60s", "5m"). A server that accepts a connection and never answers
   * then fails the write with SINK_WRITE_FAILED (a read with SINK_READ_FAILED) and
   * `details.reason: "timeout"`, instead of leaving `backup()` waiting forever. A slow link is not
   * idle; a restore target that reads slowly does not count either. @default "60s"
   */
  idleTimeout?: string | number;
  /**
   * S3 Object Lock on each artifact and its manifest: `mode` and how long from the write
   * (`retainFor`: "30d", "1y"...). The bucket must have Object Lock enabled. The lock's date is
   * returned as `retainUntil`, which `backup()` records in the manifest so retention keeps it.
   */
  objectLock?: { mode: "GOVERNANCE" | "COMPLIANCE"; retainFor: string };
}
type _S3CommonAgrees = Assert<Agrees<S3CommonOptions, z.input<typeof s3CommonOptionsSchema>>>;

/** Options of {@link s3Sink}. */
export interface S3SinkOptions extends S3CommonOptions {
  /**
   * Storage class of artifacts. Manifests always go to STANDARD (small, read by every listing).
   * GLACIER and DEEP_ARCHIVE need a restore before a read: use `glacierSink` for them.
   * @default "STANDARD"
   */
  storageClass?:
    | "STANDARD"
    | "STANDARD_IA"
    | "ONEZONE_IA"
    | "INTELLIGENT_TIERING"
    | "GLACIER_IR"
    | "REDUCED_REDUNDANCY";
}
type _S3SinkOptionsAgrees = Assert<Agrees<S3SinkOptions, z.input<typeof s3SinkOptionsSchema>>>;

/** What an S3-backed sink exposes beyond {@link Sink}. */
export interface S3Sink extends Sink {
  readonly client: S3Client;
  readonly bucket: string;
  /** The prefix every key is stored under ("" or ending in "/"). */
  readonly prefix: string;
  /** The S3 object key of a sink key. */
  objectKey(key: string): string;
}

/** @internal How s3Sink and glacierSink differ. */
export interface S3SinkFlavour {
  kind: string;
  capabilities: SinkCapabilities;
  /** The class a key is written to, given what the write asked for. */
  classFor(key: string, requested: string | undefined): string;
}

type CommonOptions = z.output<typeof s3CommonOptionsSchema>;

/** Turns a GetObject failure into NOT_FOUND / OBJECT_ARCHIVED where it is one of those. */
function readError(error: unknown, key: string, objectKey: string, where: string): unknown {
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

/** @internal The S3 sink machinery; s3Sink and glacierSink differ only in `flavour`. */
export function buildS3Sink(opts: CommonOptions, flavour: S3SinkFlavour): S3Sink {
  const { client, bucket } = opts;
  const prefix = opts.prefix === "" || opts.prefix.endsWith("/") ? opts.prefix : `${opts.prefix}/`;
  const where = `${flavour.kind} sink`;
  const objectKey = (key: string) => {
    assertSafeKey(key, where);
    return prefix + key;
  };
  const tagging = opts.tags
    ? new URLSearchParams(Object.entries(opts.tags)).toString().replace(/\+/g, "%20")
    : undefined;
  const retainFor = opts.objectLock ? parseDuration(opts.objectLock.retainFor, "objectLock.retainFor") : 0;
  // A manifest's lock ends with its artifact's, so retention can delete both at the same time.
  const lockedArtifacts = new Map<string, Date>();
  const offered = flavour.capabilities.storageClasses ?? [];
  const idleMs = typeof opts.idleTimeout === "number" ? opts.idleTimeout : parseDuration(opts.idleTimeout);
  const reading = (what: string, key: string | undefined, signal?: AbortSignal): RequestGuard => ({
    idleMs,
    signal,
    code: "SINK_READ_FAILED",
    what: `${where}: ${what}`,
    details: key === undefined ? {} : { key },
  });

  return {
    kind: flavour.kind,
    capabilities: flavour.capabilities,
    client,
    bucket,
    prefix,
    objectKey,

    async write(key: string, body: Readable, options: WriteOptions = {}): Promise<WrittenObject> {
      let Key: string;
      try {
        Key = objectKey(key);
        if (options.storageClass !== undefined && !offered.includes(options.storageClass)) {
          throw new StowageError(
            "CONFIG_INVALID",
            `${where}: storage class ${options.storageClass} is not one of ${offered.join(", ")}`,
            { details: { key, issues: [{ option: "storageClass", problem: "not offered by the sink" }] } },
          );
        }
      } catch (error) {
        body.destroy();
        throw error;
      }
      const storageClass = flavour.classFor(key, options.storageClass);
      const isManifest = key.endsWith(MANIFEST_SUFFIX);
      let retainUntil: Date | undefined;
      if (opts.objectLock) {
        const artifactKey = isManifest ? key.slice(0, -MANIFEST_SUFFIX.length) : undefined;
        retainUntil =
          (artifactKey !== undefined ? lockedArtifacts.get(artifactKey) : undefined) ??
          // Whole seconds: S3 keeps the date to the second.
          new Date(Math.ceil((Date.now() + retainFor) / 1000) * 1000);
      }
      const params: PutObjectCommandInput = {
        Bucket: bucket,
        Key,
        StorageClass: storageClass as PutObjectCommandInput["StorageClass"],
        ...(options.contentType ? { ContentType: options.contentType } : {}),
        ...(options.metadata ? { Metadata: options.metadata } : {}),
        ...(opts.serverSideEncryption ? { ServerSideEncryption: opts.serverSideEncryption } : {}),
        ...(opts.kmsKeyId ? { SSEKMSKeyId: opts.kmsKeyId } : {}),
        ...(tagging ? { Tagging: tagging } : {}),
        ...(opts.objectLock && retainUntil
          ? { ObjectLockMode: opts.objectLock.mode, ObjectLockRetainUntilDate: retainUntil }
          : {}),
      };
      await putStream(client, params, body, {
        partSize: opts.partSize,
        queueSize: opts.queueSize,
        // S3 refuses Object Lock writes that carry no checksum; Content-MD5 works on every store.
        contentMd5: opts.objectLock !== undefined,
        idleMs,
        signal: options.signal,
        where: `${where}: writing ${key}`,
        key,
      });
      if (retainUntil) {
        if (isManifest) lockedArtifacts.delete(key.slice(0, -MANIFEST_SUFFIX.length));
        else lockedArtifacts.set(key, retainUntil);
      }
      return {
        key,
        location: `s3://${bucket}/${Key}`,
        storageClass,
        ...(retainUntil ? { retainUntil } : {}),
      };
    },

    async read(key: string, options: ReadOptions = {}): Promise<Readable> {
      const Key = objectKey(key);
      throwIfAborted(options.signal, `${where}: reading ${key}`);
      const guard = reading(`reading ${key}`, key, options.signal);
      try {
        const out = await guardedSend<GetObjectCommandOutput>(
          client,
          new (await s3Sdk()).GetObjectCommand({ Bucket: bucket, Key }),
          guard,
        );
        const body = out.Body;
        if (!(body instanceof Readable)) {
          throw new StowageError(
            "SINK_READ_FAILED",
            `${where}: GetObject of ${Key} returned no Node stream`,
            {
              details: { key },
            },
          );
        }
        const guarded = idleGuardedBody(body, guard, out.ContentLength);
        return options.signal ? addAbortSignal(options.signal, guarded) : guarded;
      } catch (error) {
        if (isStowageError(error)) throw error;
        throw readError(error, key, Key, where);
      }
    },

    async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo | undefined> {
      const Key = objectKey(key);
      try {
        const out = await guardedSend<HeadObjectCommandOutput>(
          client,
          new (await s3Sdk()).HeadObjectCommand({ Bucket: bucket, Key }),
          reading(`HeadObject of ${key}`, key, options.signal),
        );
        return {
          key,
          size: out.ContentLength ?? 0,
          lastModified: out.LastModified ?? new Date(0),
          // S3 leaves the header out for STANDARD.
          storageClass: out.StorageClass ?? "STANDARD",
        };
      } catch (error) {
        if (
          errorName(error) === "NotFound" ||
          errorName(error) === "NoSuchKey" ||
          httpStatus(error) === 404
        ) {
          return undefined;
        }
        throw error;
      }
    },

    async *list(listPrefix: string, options: ReadOptions = {}): AsyncIterable<ObjectInfo> {
      let token: string | undefined;
      do {
        throwIfAborted(options.signal, `${where}: listing ${listPrefix}`);
        const page = await guardedSend<ListObjectsV2CommandOutput>(
          client,
          new (await s3Sdk()).ListObjectsV2Command({
            Bucket: bucket,
            Prefix: prefix + listPrefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
          reading(`listing ${listPrefix}`, undefined, options.signal),
        );
        for (const o of page.Contents ?? []) {
          if (!o.Key?.startsWith(prefix)) continue;
          yield {
            key: o.Key.slice(prefix.length),
            size: o.Size ?? 0,
            lastModified: o.LastModified ?? new Date(0),
            ...(o.StorageClass ? { storageClass: o.StorageClass } : {}),
          };
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    },

    /**
     * The multipart uploads open under `listPrefix` that were initiated before `now - olderThanMs`
     * (ListMultipartUploads, paged): what a write that was killed, or whose abort failed, left.
     * S3 cannot tell a live upload from a dead one, hence the age.
     */
    async *leftovers(listPrefix: string, options: LeftoverOptions): AsyncIterable<Leftover> {
      const before = options.now.getTime() - options.olderThanMs;
      const guard = reading(`listing open multipart uploads under ${listPrefix}`, undefined, options.signal);
      for await (const upload of listUploads(client, bucket, prefix + listPrefix, guard)) {
        if (!upload.Key?.startsWith(prefix) || !upload.UploadId) continue;
        const startedAt = upload.Initiated ?? new Date(0);
        if (startedAt.getTime() > before) continue;
        yield {
          kind: "multipart-upload",
          key: upload.Key.slice(prefix.length),
          id: upload.UploadId,
          startedAt,
        };
      }
    },

    /**
     * Aborts the multipart uploads `leftovers` reported (one already gone counts as removed).
     * @throws {CONFIG_INVALID} for a leftover of another kind, before any request.
     * @throws {SINK_DELETE_FAILED} listing every upload that could not be aborted.
     */
    async removeLeftovers(leftovers: readonly Leftover[], options: ReadOptions = {}): Promise<void> {
      const foreign = leftovers.filter((l) => l.kind !== "multipart-upload");
      if (foreign.length > 0) {
        throw new StowageError(
          "CONFIG_INVALID",
          `${where}: removeLeftovers takes multipart uploads only, not ${foreign[0]!.kind}`,
          { details: { issues: [{ option: "leftovers", problem: `kind ${foreign[0]!.kind}` }] } },
        );
      }
      const targets = leftovers.map((l) => ({ leftover: l, Key: objectKey(l.key) }));
      const errors: Array<{ key: string; uploadId: string; code: string; message: string }> = [];
      for (const { leftover, Key } of targets) {
        throwIfAborted(options.signal, `${where}: removing leftovers`);
        try {
          await guardedSend(
            client,
            new (await s3Sdk()).AbortMultipartUploadCommand({ Bucket: bucket, Key, UploadId: leftover.id }),
            {
              idleMs,
              signal: options.signal,
              code: "SINK_DELETE_FAILED",
              what: `${where}: aborting multipart upload ${leftover.id} of ${leftover.key}`,
              details: { key: leftover.key, uploadId: leftover.id },
            },
          );
        } catch (error) {
          if (errorName(error) === "NoSuchUpload" || httpStatus(error) === 404) continue;
          if (options.signal?.aborted) {
            throw wrapError(error, "SINK_DELETE_FAILED", `${where}: removing leftovers`, {}, options.signal);
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
    },

    async delete(keys: readonly string[], options: ReadOptions = {}): Promise<void> {
      const objectKeys = keys.map(objectKey);
      const errors: Array<{ key: string; code: string; message: string }> = [];
      for (let i = 0; i < objectKeys.length; i += 1000) {
        throwIfAborted(options.signal, `${where}: deleting`);
        const batch = objectKeys.slice(i, i + 1000);
        const out = await guardedSend<DeleteObjectsCommandOutput>(
          client,
          new (await s3Sdk()).DeleteObjectsCommand({
            Bucket: bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
          {
            idleMs,
            signal: options.signal,
            code: "SINK_DELETE_FAILED",
            what: `${where}: deleting`,
            details: {},
          },
        );
        for (const e of out.Errors ?? []) {
          errors.push({
            key: (e.Key ?? "").slice(prefix.length),
            code: e.Code ?? "Unknown",
            message: e.Message ?? "",
          });
        }
      }
      for (const key of keys) lockedArtifacts.delete(key);
      if (errors.length > 0) {
        const first = errors[0]!;
        throw new StowageError(
          "SINK_DELETE_FAILED",
          `${where}: ${errors.length} of ${keys.length} keys were not deleted (first: ${first.key}: ${first.code})`,
          { details: { errors } },
        );
      }
    },
  };
}

/**
 * Stores each key as an S3 object (`s3://bucket/prefix/key`), through a client you configure.
 *
 * **Writes.** A body that ends within the first part is one PutObject of a Buffer of known length;
 * a longer one is a multipart upload (CreateMultipartUpload / UploadPart / Complete) completed only
 * after the body has ended — never a PutObject of a stream of unknown length. `@aws-sdk/lib-storage`'s
 * `Upload` fixes its part size up front, so a stream of unknown length could outgrow its 10,000
 * parts; this sink runs the same loop with a growing part size instead: `partSize` for parts
 * 1–1,000, doubling every 1,000 parts ({@link partSizeFor}), so the largest backup is
 * {@link largestBackupBytes}`(partSize)` (≈4.9 TiB at 5 MiB, S3's 5 TiB limit from 6 MiB).
 * A failure at any byte stops sending, waits for the parts already on their way (the caller's
 * abort cancels them instead), aborts the upload, and checks with ListParts and
 * ListMultipartUploads that it is gone, aborting again while it is not (AWS warns that a part
 * still arriving may be stored after an abort); then it throws the original error, and nothing
 * is left under the key. If the upload cannot be shown gone (the server is unreachable, the abort
 * is refused), the error says so: `details.openUpload` is `{ bucket, key, uploadId }` and
 * `details.leftovers` is what `removeLeftovers` takes; `backup()` and `copyBackup()` pass both on
 * whichever stage failed first. Add a bucket lifecycle rule with `AbortIncompleteMultipartUpload`
 * (e.g. after 7 days) for what a killed process leaves; `leftovers(prefix, { olderThanMs, now })`
 * lists open uploads older than that, and `removeLeftovers` aborts them.
 *
 * **Timeouts.** Every request fails after `idleTimeout` (60 s) without a byte moving, with
 * SINK_WRITE_FAILED (reads: SINK_READ_FAILED) and `details.reason: "timeout"`.
 *
 * **Memory.** At most `queueSize` parts are held at once (being filled or uploading): `queueSize ×
 * partSize` (32 MiB with the defaults) for backups up to `1,000 × partSize` (7.8 GiB), doubling
 * with the part size after that.
 *
 * **Manifests** go to STANDARD whatever `storageClass` says. `read` is a streaming GetObject,
 * `stat` HeadObject, `list` a paginated ListObjectsV2, `delete` DeleteObjects in batches of 1,000
 * (per-key failures, e.g. objects under Object Lock, are thrown together as SINK_DELETE_FAILED with
 * `details.errors`). A versioned bucket keeps old versions: deleting adds a delete marker.
 *
 * **Checksums and S3-compatible stores.** Since v3.729.0 the SDK defaults to
 * `requestChecksumCalculation: "WHEN_SUPPORTED"` and `responseChecksumValidation: "WHEN_SUPPORTED"`:
 * it adds a CRC32 (`x-amz-checksum-crc32`) to every PutObject/UploadPart, sends a *stream* body as
 * `aws-chunked` with a trailing checksum, and validates checksums on GetObject. Stores that do not
 * understand this may store the chunk framing inside the object (corrupt, while the SDK reports
 * success), reject the request, or reject DeleteObjects (which then carries a CRC32 instead of
 * Content-MD5). This sink only ever sends Buffers of known length, but other code sharing your client
 * may not. For MinIO, Ceph RGW, Cloudflare R2, s3rver and other S3-compatible stores, build the client
 * with `requestChecksumCalculation: "WHEN_REQUIRED"` and `responseChecksumValidation: "WHEN_REQUIRED"`,
 * plus `forcePathStyle: true` (MinIO, Ceph) and the store's endpoint and region (R2: `region: "auto"`).
 * stowage checks its own SHA-256 of every artifact at restore and verify, whatever the transport does.
 *
 * @default storageClass "STANDARD", partSize 8 MiB, queueSize 4, idleTimeout "60s", prefix ""
 * @throws {CONFIG_INVALID} for a bad option (each named) when called; for a key with `..`, an
 *   absolute path or a control character before any request.
 * @throws {NOT_FOUND} from `read` of a missing key; {OBJECT_ARCHIVED} from `read` of an object in
 *   GLACIER / DEEP_ARCHIVE (e.g. moved there by a lifecycle rule) that is not restored.
 * @throws {SINK_DELETE_FAILED} from `delete`, listing every key that was not deleted.
 * @throws {SINK_WRITE_FAILED | SINK_READ_FAILED} with `details.reason: "timeout"` when a request
 *   stalls for `idleTimeout`; from `write`, with `details.openUpload` when an upload may remain.
 * @example
 * import { S3Client } from "@aws-sdk/client-s3";
 * import { s3Sink } from "stowage/sinks/s3";
 * const sink = s3Sink({
 *   client: new S3Client({ region: "eu-west-1" }),
 *   bucket: "acme-backups", prefix: "prod/", storageClass: "STANDARD_IA",
 *   objectLock: { mode: "GOVERNANCE", retainFor: "30d" },
 * });
 */
export function s3Sink(options: S3SinkOptions): S3Sink {
  const opts = parseOptions(s3SinkOptionsSchema, options, "s3Sink");
  return buildS3Sink(opts, {
    kind: "s3",
    capabilities: { storageClasses: S3_STORAGE_CLASSES, readLatency: "immediate", delete: true },
    classFor: (key, requested) =>
      key.endsWith(MANIFEST_SUFFIX) ? "STANDARD" : (requested ?? opts.storageClass),
  });
}
