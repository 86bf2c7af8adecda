import type { Readable } from "node:stream";
import type {
  DeleteObjectsCommandOutput,
  HeadObjectCommandOutput,
  ListObjectsV2CommandOutput,
  PutObjectCommandInput,
  S3Client,
} from "@aws-sdk/client-s3";
import type { z } from "zod";
import { StowageError, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { MANIFEST_SUFFIX } from "../core/manifest.js";
import { parseDuration, parseOptions } from "../core/options.js";
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
import { abortLeftovers } from "./s3/leftovers.js";
import {
  S3_STORAGE_CLASSES,
  type S3SinkOptions,
  type s3CommonOptionsSchema,
  s3SinkOptionsSchema,
} from "./s3/options.js";
import { readObject } from "./s3/read.js";
import { errorName, guardedSend, httpStatus, type RequestGuard } from "./s3/requests.js";
import { s3Sdk } from "./s3/sdk.js";
import { listUploads, putStream } from "./s3/upload.js";

export {
  COLD_STORAGE_CLASSES,
  S3_STORAGE_CLASSES,
  type S3CommonOptions,
  type S3SinkOptions,
  s3CommonOptionsSchema,
  s3SinkOptionsSchema,
} from "./s3/options.js";
export { largestBackupBytes, PARTS_PER_STEP, partSizeFor, S3_LIMITS } from "./s3/upload.js";

/** What an S3-backed sink exposes beyond {@link Sink}. */
export interface S3Sink extends Sink {
  /** The client the sink was made with. */
  readonly client: S3Client;
  /** The bucket artifacts are written to. */
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
            { details: { key, issues: [{ path: "storageClass", problem: "not offered by the sink" }] } },
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
      return readObject({
        client,
        bucket,
        key,
        Key,
        where,
        partSize: opts.readPartSize,
        concurrency: opts.readConcurrency,
        resumes: opts.readResumes,
        guard: reading(`reading ${key}`, key, options.signal),
        signal: options.signal,
      });
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
    removeLeftovers: (leftovers: readonly Leftover[], options: ReadOptions = {}) =>
      abortLeftovers({ client, bucket, where, idleMs, objectKey }, leftovers, options.signal),

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
 * with the part size after that. A read sends `readConcurrency` GETs ahead but reads only the
 * body of the range whose turn it is: the rest wait in the kernel's socket buffers, not in the
 * process, so a read holds 256 KiB and one socket chunk (64 KiB) ahead of its consumer, plus what
 * the consumer holds; a consumer that stops reading pauses the socket.
 *
 * **Reads** are ranged GETs of `readPartSize`, `readConcurrency` at a time, streamed in order; all
 * but the first carry `If-Match` with the object's ETag, so an object replaced mid-read fails the
 * read (`details.reason: "changed"`). A range whose connection breaks (reset, cut short, 5xx) is
 * asked again from its first byte not yet received, up to `readResumes` times, instead of starting
 * the read over. `restore()` checks every block (unencrypted artifacts, `artifact.blocks`) or
 * chunk (encrypted) before it releases a byte, so the artifact is read once.
 *
 * **Manifests** go to STANDARD whatever `storageClass` says. `stat` is HeadObject, `list` a paginated ListObjectsV2, `delete` DeleteObjects in batches of 1,000
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
 * @default storageClass "STANDARD", partSize 8 MiB, queueSize 4, idleTimeout "60s", prefix "",
 *   readPartSize 16 MiB, readConcurrency 6, readResumes 5
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
