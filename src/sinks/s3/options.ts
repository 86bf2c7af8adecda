import type { S3Client } from "@aws-sdk/client-s3";
import type { z } from "zod";
import { durationSchema, lazySchema, parseDuration } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { S3_LIMITS } from "./part-size.js";

const MiB = 1024 * 1024;

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
export const s3CommonOptionsSchema = lazySchema((z) =>
  z.object({
    /**
     * A ready `S3Client` from `@aws-sdk/client-s3`: credentials, region, endpoint, retries and
     * checksum settings are yours (see `s3Sink` for what S3-compatible stores need).
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
     * double every 1,000 parts (see `partSizeFor`). @default 8 MiB
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
     * Reads: the bytes one ranged GET asks for (1-64 MiB). A GET sent ahead is not read until its
     * turn: its bytes wait in the socket, not in memory, so a larger range costs no memory; it saves
     * requests (each costs about 1.5 ms of CPU in the SDK, and S3 bills per GET). @default 16 MiB
     */
    readPartSize: z
      .number()
      .int()
      .min(MiB, "readPartSize is at least 1 MiB (1048576)")
      .max(64 * MiB, "readPartSize is at most 64 MiB")
      .default(16 * MiB),
    /**
     * Reads: ranged GETs in flight at once; only the one whose turn it is is read, the others wait
     * in their sockets (the kernel's receive buffers read ahead), so memory does not grow with it.
     * @default 6
     */
    readConcurrency: z.number().int().min(1).max(32).default(6),
    /**
     * Reads: how many times one range may be asked again after its connection broke (a reset, a body
     * cut short, a 5xx), from its first byte not yet received, before the read fails. @default 5
     */
    readResumes: z.number().int().min(0).max(100).default(5),
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
  }),
);

export const kmsCheck = (
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

/** The zod schema of {@link S3SinkOptions}, which parses the options at the boundary. */
export const s3SinkOptionsSchema = lazySchema((z) =>
  s3CommonOptionsSchema
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
    .superRefine(kmsCheck),
);
/** Options an S3 sink and a glacier sink share. */
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
   * Reads: the bytes one ranged GET asks for (1-64 MiB). A GET sent ahead is not read until its
   * turn: its bytes wait in the socket, not in memory, so a larger range costs no memory; it saves
   * requests (each costs about 1.5 ms of CPU in the SDK, and S3 bills per GET). @default 16 MiB
   */
  readPartSize?: number;
  /**
   * Reads: ranged GETs in flight at once; only the one whose turn it is is read, the others wait
   * in their sockets (the kernel's receive buffers read ahead), so memory does not grow with it.
   * @default 6
   */
  readConcurrency?: number;
  /**
   * Reads: how many times one range may be asked again after its connection broke (a reset, a body
   * cut short, a 5xx), from its first byte not yet received, before the read fails. @default 5
   */
  readResumes?: number;
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
  objectLock?: {
    /** S3 Object Lock's retention mode: COMPLIANCE cannot be shortened, even by the root user. */
    mode: "GOVERNANCE" | "COMPLIANCE";
    /** A duration: how long each object stays locked after it is written. */
    retainFor: string;
  };
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
