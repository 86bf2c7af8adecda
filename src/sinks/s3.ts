import { createHash } from "node:crypto";
import { addAbortSignal, Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  type CompletedPart,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  type PutObjectCommandInput,
  type S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import type { MiddlewareStack } from "@smithy/types";
import { z } from "zod";
import { isStowageError, notFound, StowageError, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { MANIFEST_SUFFIX } from "../core/manifest.js";
import { durationSchema, parseDuration, parseOptions } from "../core/options.js";
import type {
  ObjectInfo,
  ReadOptions,
  Sink,
  SinkCapabilities,
  WriteOptions,
  WrittenObject,
} from "../core/types.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** S3's limits on multipart uploads. */
export const S3_LIMITS = {
  maxParts: 10_000,
  minPartSize: 5 * MiB,
  maxPartSize: 5 * GiB,
  maxObjectSize: 5 * 1024 * GiB,
} as const;

/** The part size doubles after every this many parts (see {@link partSizeFor}). */
export const PARTS_PER_STEP = 1_000;

/**
 * The size of part `partNumber` (1-based) of an upload that started with `partSize`: the
 * configured size for parts 1–1,000, twice that for 1,001–2,000, and so on, capped at S3's 5 GiB.
 * The length of a stream is unknown when its upload starts; this schedule lets any stream of up to
 * {@link largestBackupBytes} fit in S3's 10,000 parts while small backups keep small parts (and
 * little memory).
 */
export function partSizeFor(partNumber: number, partSize: number): number {
  const step = Math.floor((partNumber - 1) / PARTS_PER_STEP);
  return Math.min(S3_LIMITS.maxPartSize, partSize * 2 ** step);
}

/**
 * The largest backup an S3 sink with this `partSize` can store: the sum of its 10,000 part sizes
 * (see {@link partSizeFor}), at most S3's 5 TiB object limit. With 5 MiB parts that is about
 * 4.9 TiB; from 6 MiB up, S3's own 5 TiB limit is the bound.
 */
export function largestBackupBytes(partSize: number): number {
  let total = 0;
  for (let step = 0; step < S3_LIMITS.maxParts / PARTS_PER_STEP; step++) {
    total += PARTS_PER_STEP * partSizeFor(step * PARTS_PER_STEP + 1, partSize);
  }
  return Math.min(total, S3_LIMITS.maxObjectSize);
}

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
export type S3SinkOptions = z.input<typeof s3SinkOptionsSchema>;

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

const errorName = (e: unknown) => (e as { name?: string } | null)?.name;
const httpStatus = (e: unknown) =>
  (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;

/**
 * A part's bytes. Small objects (manifests) stay a list of the chunks that arrived; past 1 MiB
 * the part gets one buffer of its full size, filled in place, so a part costs its size once.
 */
class PartBuffer {
  private chunks: Buffer[] = [];
  private buffer: Buffer | undefined;
  length = 0;

  constructor(
    readonly capacity: number,
    private readonly allocate: (size: number) => Buffer,
  ) {}

  /** Takes what fits of `chunk`; returns how many bytes it took. */
  take(chunk: Buffer): number {
    const n = Math.min(chunk.length, this.capacity - this.length);
    const piece = n === chunk.length ? chunk : chunk.subarray(0, n);
    if (!this.buffer && this.length + n > MiB) {
      this.buffer = this.allocate(this.capacity);
      let at = 0;
      for (const c of this.chunks) at += c.copy(this.buffer, at);
      this.chunks = [];
    }
    if (this.buffer) piece.copy(this.buffer, this.length);
    else this.chunks.push(piece);
    this.length += n;
    return n;
  }

  get full(): boolean {
    return this.length === this.capacity;
  }

  bytes(): Buffer {
    return this.buffer ? this.buffer.subarray(0, this.length) : Buffer.concat(this.chunks, this.length);
  }

  /** The full-size buffer, for reuse by a later part of the same size. */
  release(): Buffer | undefined {
    const b = this.buffer;
    this.buffer = undefined;
    this.chunks = [];
    return b;
  }
}

interface UploadSettings {
  partSize: number;
  queueSize: number;
  contentMd5: boolean;
  signal?: AbortSignal | undefined;
  where: string;
}

const md5 = (b: Buffer) => createHash("md5").update(b).digest("base64");

/**
 * Sends a command's body without `Expect: 100-continue`. The SDK adds that header to every body
 * of 2 MiB or more and then sends the request on a fresh, non-keep-alive connection (Node cannot
 * reuse a socket whose body was never sent), so a multipart upload would pay a TCP connection, a
 * TLS handshake and a round trip for every part. Our bodies are Buffers held in memory, so a
 * request the server refuses costs at most one part's bytes and is retried from memory; measured
 * against the local S3 server, the header cost about 15% of upload throughput. The client's own
 * settings are untouched: this applies to the sink's commands only.
 */
function withoutExpectContinue<C extends UploadPartCommand | PutObjectCommand>(command: C): C {
  const stack = command.middlewareStack as MiddlewareStack<object, object>;
  stack.add(
    (next) => (args) => {
      const { headers } = args.request as { headers?: Record<string, string> };
      if (headers) {
        delete headers.Expect;
        delete headers.expect;
      }
      return next(args);
    },
    // After the S3 client's own addExpectContinueMiddleware (build step, normal priority).
    { step: "build", priority: "low", name: "stowageWithoutExpectContinue" },
  );
  return command;
}

/**
 * Streams `body` into one object. A body that ends within the first part is one PutObject of a
 * Buffer of known length; anything longer is a multipart upload with at most `queueSize` parts in
 * memory, completed only after the body has ended. On any failure the in-flight parts are
 * cancelled, the upload is aborted (and checked with ListParts), and the first error is thrown.
 */
async function putStream(
  client: S3Client,
  params: PutObjectCommandInput,
  body: Readable,
  settings: UploadSettings,
): Promise<void> {
  const { signal, where } = settings;
  const { Bucket, Key } = params;
  const partsController = new AbortController();
  let failure: { error: unknown } | undefined;
  const fail = (error: unknown) => {
    if (failure) return;
    failure = { error };
    partsController.abort(error);
    // Errors the body with the sink's error first, so the pipeline feeding it blames the sink,
    // not a "premature close" of the source.
    if (!body.destroyed) body.destroy(error instanceof Error ? error : new Error(String(error)));
  };
  // Read through functions: the failure is set from callbacks, which TypeScript's narrowing cannot see.
  const failed = () => failure;
  const throwIfFailed = () => {
    const f = failed();
    if (f) throw f.error;
  };
  const onAbort = () =>
    fail(new StowageError("ABORTED", `${where}: aborted`, { cause: signal?.reason, details: { key: Key } }));
  signal?.addEventListener("abort", onAbort, { once: true });

  const pool: Buffer[] = [];
  const allocate = (size: number) => {
    const i = pool.findIndex((b) => b.length === size);
    return i >= 0 ? pool.splice(i, 1)[0]! : Buffer.allocUnsafe(size);
  };
  let partNumber = 1;
  let part = new PartBuffer(partSizeFor(1, settings.partSize), allocate);
  let uploadId: string | undefined;
  const inflight = new Set<Promise<void>>();
  const completed: CompletedPart[] = [];
  const iterator = body[Symbol.asyncIterator]();
  const common = {
    Bucket,
    Key,
    ...(params.SSECustomerAlgorithm ? { SSECustomerAlgorithm: params.SSECustomerAlgorithm } : {}),
  };

  const dispatch = (buffer: PartBuffer, number: number) => {
    const bytes = buffer.bytes();
    const sending = client
      .send(
        withoutExpectContinue(
          new UploadPartCommand({
            ...common,
            UploadId: uploadId,
            PartNumber: number,
            Body: bytes,
            ContentLength: bytes.length,
            ...(settings.contentMd5 ? { ContentMD5: md5(bytes) } : {}),
          }),
        ),
        { abortSignal: partsController.signal },
      )
      .then(
        (out) => {
          if (!out.ETag) throw new Error(`part ${number} came back without an ETag`);
          completed.push({
            PartNumber: number,
            ETag: out.ETag,
            ...(out.ChecksumCRC32 ? { ChecksumCRC32: out.ChecksumCRC32 } : {}),
            ...(out.ChecksumCRC32C ? { ChecksumCRC32C: out.ChecksumCRC32C } : {}),
            ...(out.ChecksumCRC64NVME ? { ChecksumCRC64NVME: out.ChecksumCRC64NVME } : {}),
            ...(out.ChecksumSHA1 ? { ChecksumSHA1: out.ChecksumSHA1 } : {}),
            ...(out.ChecksumSHA256 ? { ChecksumSHA256: out.ChecksumSHA256 } : {}),
          });
          const freed = buffer.release();
          if (freed && pool.length < settings.queueSize) pool.push(freed);
        },
        (error: unknown) => fail(error),
      )
      .finally(() => inflight.delete(sending));
    inflight.add(sending);
  };

  /** Hands the full part to S3 and starts the next; waits while `queueSize` parts are held. */
  const nextPart = async () => {
    if (uploadId === undefined) {
      const created = await client.send(new CreateMultipartUploadCommand(params), {
        abortSignal: partsController.signal,
      });
      if (!created.UploadId) throw new Error("CreateMultipartUpload returned no UploadId");
      uploadId = created.UploadId;
    }
    if (partNumber >= S3_LIMITS.maxParts) {
      throw new StowageError(
        "SINK_WRITE_FAILED",
        `${where}: the backup is larger than ${largestBackupBytes(settings.partSize)} bytes, the most ${S3_LIMITS.maxParts} parts starting at partSize ${settings.partSize} can hold; raise partSize`,
        { details: { key: Key, partSize: settings.partSize } },
      );
    }
    dispatch(part, partNumber);
    partNumber += 1;
    while (inflight.size >= settings.queueSize && !failed()) await Promise.race(inflight);
    throwIfFailed();
    part = new PartBuffer(partSizeFor(partNumber, settings.partSize), allocate);
  };

  try {
    throwIfAborted(signal, where);
    for (;;) {
      const next = await iterator.next();
      throwIfFailed();
      if (next.done) break;
      let chunk: Buffer = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
      while (chunk.length > 0) {
        chunk = chunk.subarray(part.take(chunk));
        if (part.full) await nextPart();
      }
    }
    if (uploadId === undefined) {
      // The whole body fitted in one part: one PutObject of a Buffer of known length.
      const bytes = part.bytes();
      await client.send(
        withoutExpectContinue(
          new PutObjectCommand({
            ...params,
            Body: bytes,
            ContentLength: bytes.length,
            ...(settings.contentMd5 ? { ContentMD5: md5(bytes) } : {}),
          }),
        ),
        { abortSignal: partsController.signal },
      );
      return;
    }
    if (part.length > 0) dispatch(part, partNumber);
    while (inflight.size > 0) await Promise.race(inflight);
    throwIfFailed();
    throwIfAborted(signal, where);
    completed.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    await client.send(
      new CompleteMultipartUploadCommand({
        ...common,
        UploadId: uploadId,
        MultipartUpload: { Parts: completed },
      }),
      { abortSignal: partsController.signal },
    );
    uploadId = undefined; // committed: nothing to abort
  } catch (error) {
    fail(error);
    await iterator.return?.().catch(() => undefined);
    await Promise.allSettled([...inflight]);
    const original = failed()?.error ?? error;
    if (uploadId !== undefined) {
      const abortError = await abortUpload(client, { Bucket, Key, UploadId: uploadId });
      if (abortError !== undefined) {
        throw new StowageError(
          "SINK_WRITE_FAILED",
          `${where}: the upload failed, and aborting multipart upload ${uploadId} failed too, so its parts may remain (abort it, or let a lifecycle rule do so)`,
          {
            cause: original,
            details: {
              key: Key,
              uploadId,
              abortError: abortError instanceof Error ? abortError.message : String(abortError),
            },
          },
        );
      }
    }
    throw original;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    pool.length = 0;
  }
}

/**
 * Aborts a multipart upload, then (as S3 advises, since a part still arriving may land after the
 * abort) checks with ListParts that no part is left, aborting again if one is. Returns the error
 * if the upload could not be aborted, undefined when it is gone.
 */
async function abortUpload(
  client: S3Client,
  target: { Bucket: string | undefined; Key: string | undefined; UploadId: string },
): Promise<unknown> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await client.send(new AbortMultipartUploadCommand(target));
    } catch (error) {
      if (errorName(error) !== "NoSuchUpload" && httpStatus(error) !== 404) {
        lastError = error;
        continue;
      }
    }
    try {
      const parts = await client.send(new ListPartsCommand(target));
      if ((parts.Parts ?? []).length === 0) return undefined;
      lastError = new Error(`${parts.Parts?.length} parts remain after the abort`);
    } catch {
      // NoSuchUpload is the answer we want; a store without ListParts leaves us trusting the abort.
      return undefined;
    }
    await new Promise((r) => setTimeout(r, 200 * (attempt + 1)));
  }
  return lastError;
}

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
        signal: options.signal,
        where: `${where}: writing ${key}`,
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
      try {
        const out = await client.send(
          new GetObjectCommand({ Bucket: bucket, Key }),
          options.signal ? { abortSignal: options.signal } : {},
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
        return options.signal ? addAbortSignal(options.signal, body) : body;
      } catch (error) {
        if (isStowageError(error)) throw error;
        throw readError(error, key, Key, where);
      }
    },

    async stat(key: string, options: ReadOptions = {}): Promise<ObjectInfo | undefined> {
      const Key = objectKey(key);
      try {
        const out = await client.send(
          new HeadObjectCommand({ Bucket: bucket, Key }),
          options.signal ? { abortSignal: options.signal } : {},
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
        const page = await client.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: prefix + listPrefix,
            ...(token ? { ContinuationToken: token } : {}),
          }),
          options.signal ? { abortSignal: options.signal } : {},
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

    async delete(keys: readonly string[], options: ReadOptions = {}): Promise<void> {
      const objectKeys = keys.map(objectKey);
      const errors: Array<{ key: string; code: string; message: string }> = [];
      for (let i = 0; i < objectKeys.length; i += 1000) {
        throwIfAborted(options.signal, `${where}: deleting`);
        const batch = objectKeys.slice(i, i + 1000);
        const out = await client.send(
          new DeleteObjectsCommand({
            Bucket: bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
          options.signal ? { abortSignal: options.signal } : {},
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
 * A failure or abort at any byte cancels the parts in flight, aborts the upload (checked with
 * ListParts), and throws the original error; nothing is left under the key.
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
 * @default storageClass "STANDARD", partSize 8 MiB, queueSize 4, prefix ""
 * @throws {CONFIG_INVALID} for a bad option (each named) when called; for a key with `..`, an
 *   absolute path or a control character before any request.
 * @throws {NOT_FOUND} from `read` of a missing key; {OBJECT_ARCHIVED} from `read` of an object in
 *   GLACIER / DEEP_ARCHIVE (e.g. moved there by a lifecycle rule) that is not restored.
 * @throws {SINK_DELETE_FAILED} from `delete`, listing every key that was not deleted.
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
