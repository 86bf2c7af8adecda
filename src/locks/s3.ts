/**
 * `stowage/locks/s3`: a {@link Lock} on one small S3 object per lock name, written only with
 * conditional PUTs: `If-None-Match: *` creates it when absent, `If-Match: <ETag>` replaces exactly
 * the version that was read. Of replicas racing on one version, S3 lets one write win and answers
 * the others 412 Precondition Failed, so the object is a compare-and-swap register.
 */
import type { S3Client } from "@aws-sdk/client-s3";
import type { z } from "zod";
import {
  type AcquireOptions,
  checkAcquire,
  type Lease,
  type Lock,
  lockFailed,
  trackedLease,
} from "../core/lock.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { errorName, httpStatus } from "../sinks/s3/requests.js";
import { s3Sdk } from "../sinks/s3/sdk.js";

const isS3Client = (v: unknown): v is S3Client =>
  typeof v === "object" && v !== null && typeof (v as S3Client).send === "function";

/** The zod schema of {@link S3LockOptions}, which parses the options at the boundary. */
export const s3LockOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * A ready `S3Client` from `@aws-sdk/client-s3` of a version whose PutObject takes `IfMatch` and
       * `IfNoneMatch` (late 2024 on), against a store that honours them (AWS S3 does since 2024).
       */
      client: z.custom<S3Client>(isS3Client, "expected an S3Client from @aws-sdk/client-s3"),
      bucket: z.string().min(3).max(63),
      /** Lease objects are `<prefix><name>.lease.json`. @default "stowage-locks/" */
      prefix: z.string().max(512).default("stowage-locks/"),
    })
    .strict(),
);
/** What {@link s3Lock} takes: the S3 client, the bucket and the lease objects' key prefix. */
export interface S3LockOptions {
  /**
   * A ready `S3Client` from `@aws-sdk/client-s3` of a version whose PutObject takes `IfMatch` and
   * `IfNoneMatch` (late 2024 on), against a store that honours them (AWS S3 does since 2024).
   */
  client: S3Client;
  /** The bucket the lease objects live in. */
  bucket: string;
  /** Lease objects are `<prefix><name>.lease.json`. @default "stowage-locks/" */
  prefix?: string;
}
type _S3LockOptionsAgrees = Assert<Agrees<S3LockOptions, z.input<typeof s3LockOptionsSchema>>>;

/** The lease object's body. */
interface Record_ {
  /** Absent once released. */
  holder?: string;
  /** The fencing token: raised by every take-over. */
  token: number;
  /** When the lease runs out unrenewed (ms since the epoch, on the holder's clock). */
  expiresAt: number;
}

const isRecord = (v: unknown): v is Record_ =>
  typeof v === "object" &&
  v !== null &&
  Number.isInteger((v as Record_).token) &&
  typeof (v as Record_).expiresAt === "number";

/** 412 (or 409 ConditionalRequestConflict, which S3 answers to concurrent conditional writes). */
const lostRace = (error: unknown) =>
  httpStatus(error) === 412 ||
  httpStatus(error) === 409 ||
  errorName(error) === "PreconditionFailed" ||
  errorName(error) === "ConditionalRequestConflict";
const isMissing = (error: unknown) => httpStatus(error) === 404 || errorName(error) === "NoSuchKey";

/**
 * A lock whose leases are JSON objects `<prefix><name>.lease.json` in `bucket`, holding the holder,
 * the fencing token and the expiry. A free (absent or released) or expired lease is taken with a
 * conditional PUT on the version that was read; renewing rewrites it on its own last ETag, so a
 * holder whose lease was taken over finds out at its next renewal. The objects stay when released
 * (the token counts on). Expiry is read on each replica's clock: keep them in sync (NTP). Loads the
 * optional peer `@aws-sdk/client-s3`.
 *
 * @throws {CONFIG_INVALID} naming each bad option.
 * @example
 * startScheduler(jobs, { lock: s3Lock({ client: new S3Client({}), bucket: "backups", prefix: "locks/" }) });
 */
export function s3Lock(options: S3LockOptions): Lock {
  const opts = parseOptions(s3LockOptionsSchema, options, "s3Lock");
  const { client, bucket } = opts;

  const put = async (
    key: string,
    body: Record_,
    condition: { IfMatch: string } | { IfNoneMatch: "*" },
    signal?: AbortSignal,
  ) => {
    const sdk = await s3Sdk("s3Lock");
    const out = await client.send(
      new sdk.PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: JSON.stringify(body),
        ContentType: "application/json",
        ...condition,
      }),
      signal ? { abortSignal: signal } : {},
    );
    if (!out.ETag) throw new Error(`PutObject ${key} answered no ETag`);
    return out.ETag;
  };

  return {
    kind: "s3",
    async acquire(name: string, acquire: AcquireOptions): Promise<Lease | undefined> {
      checkAcquire("s3", name, acquire);
      const { ttlMs, holder, signal } = acquire;
      const key = `${opts.prefix}${name}.lease.json`;
      const started = performance.now();
      let etag: string;
      let token: number;
      try {
        const sdk = await s3Sdk("s3Lock");
        let current: { record: Record_; etag: string } | undefined;
        try {
          const out = await client.send(
            new sdk.GetObjectCommand({ Bucket: bucket, Key: key }),
            signal ? { abortSignal: signal } : {},
          );
          const text = (await out.Body?.transformToString("utf8")) ?? "";
          const parsed: unknown = JSON.parse(text);
          if (!isRecord(parsed) || !out.ETag) throw new Error(`${key} is not a lease object`);
          current = { record: parsed, etag: out.ETag };
        } catch (error) {
          if (!isMissing(error)) throw error;
        }
        const now = Date.now();
        if (current?.record.holder && current.record.expiresAt > now) return undefined;
        token = (current?.record.token ?? 0) + 1;
        const record = { holder, token, expiresAt: now + ttlMs };
        etag = await put(key, record, current ? { IfMatch: current.etag } : { IfNoneMatch: "*" }, signal);
      } catch (error) {
        if (lostRace(error)) return undefined;
        throw lockFailed("s3", name, `taking s3://${bucket}/${key}`, error);
      }
      const rewrite = async (record: Record_, s?: AbortSignal): Promise<boolean> => {
        try {
          etag = await put(key, record, { IfMatch: etag }, s);
          return true;
        } catch (error) {
          if (lostRace(error) || isMissing(error)) return false;
          throw error;
        }
      };
      return trackedLease(
        { name, holder, fencingToken: token, ttlMs, kind: "s3" },
        {
          renew: (s) => rewrite({ holder, token, expiresAt: Date.now() + ttlMs }, s),
          release: async (s) => {
            await rewrite({ token, expiresAt: 0 }, s);
          },
        },
        started,
      );
    },
  };
}
