import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import { isAbortError, StowageError, throwIfAborted, wrapError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "../core/manifest.js";
import { durationSchema, lazySchema, parseDuration, parseOptions, signalSchema } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import { s3Sdk } from "./s3/sdk.js";
import type { S3CommonOptions } from "./s3.js";
import { buildS3Sink, COLD_STORAGE_CLASSES, type S3Sink, s3CommonOptionsSchema } from "./s3.js";

/** Archive classes a glacier sink writes artifacts to. */
export const GLACIER_STORAGE_CLASSES = ["GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"] as const;
/** One of {@link GLACIER_STORAGE_CLASSES}. */
export type GlacierStorageClass = (typeof GLACIER_STORAGE_CLASSES)[number];

/** The zod schema of {@link GlacierSinkOptions}, which parses the options at the boundary. */
export const glacierSinkOptionsSchema = lazySchema((z) =>
  s3CommonOptionsSchema
    .extend({
      /**
       * Where artifacts go. GLACIER (Flexible Retrieval) and DEEP_ARCHIVE must be restored before
       * a read (minutes to 48 hours); GLACIER_IR (Instant Retrieval) reads at once.
       * @default "GLACIER"
       */
      storageClass: z.enum(GLACIER_STORAGE_CLASSES).default("GLACIER"),
    })
    .strict(),
);
/** Options of {@link glacierSink}: those of an S3 sink, with an archive storage class. */
export interface GlacierSinkOptions extends S3CommonOptions {
  /**
   * Where artifacts go. GLACIER (Flexible Retrieval) and DEEP_ARCHIVE must be restored before
   * a read (minutes to 48 hours); GLACIER_IR (Instant Retrieval) reads at once.
   * @default "GLACIER"
   */
  storageClass?: "GLACIER_IR" | "GLACIER" | "DEEP_ARCHIVE";
}
type _GlacierSinkOptionsAgrees = Assert<Agrees<GlacierSinkOptions, z.input<typeof glacierSinkOptionsSchema>>>;

/** Where an archived artifact stands, from HeadObject's `x-amz-restore` header. */
export type RestoreStatus =
  /** Not in an archive class (STANDARD, GLACIER_IR...): readable now. */
  | {
      /** Readable now. */
      state: "immediate";
      /** The object's storage class. */
      storageClass: string;
    }
  /** Archived and no restore requested (or the restored copy has expired). */
  | {
      /** Archived; a restore must be requested. */
      state: "archived";
      /** The object's storage class. */
      storageClass: string;
    }
  /** A restore is running (`ongoing-request="true"`). */
  | {
      /** A restore is running. */
      state: "in-progress";
      /** The object's storage class. */
      storageClass: string;
    }
  /** A restored copy is readable until `expiresAt` (`ongoing-request="false", expiry-date="…"`). */
  | {
      /** A restored copy is readable. */
      state: "available";
      /** The object's storage class. */
      storageClass: string;
      /** When the restored copy expires. */
      expiresAt: Date;
    };

/** The zod schema of {@link RequestRestoreOptions}, which parses the options at the boundary. */
export const requestRestoreOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** How long the restored copy stays readable. @default 7 */
      days: z.number().int().min(1).max(36_500).default(7),
      /**
       * Retrieval speed and price: Expedited (1–5 min, GLACIER only), Standard (3–5 h; 12 h for
       * DEEP_ARCHIVE), Bulk (5–12 h; 48 h for DEEP_ARCHIVE). @default "Standard"
       */
      tier: z.enum(["Standard", "Bulk", "Expedited"]).default("Standard"),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** Options of {@link GlacierSink.requestRestore}. */
export interface RequestRestoreOptions {
  /** How long the restored copy stays readable. @default 7 */
  days?: number;
  /**
   * Retrieval speed and price: Expedited (1–5 min, GLACIER only), Standard (3–5 h; 12 h for
   * DEEP_ARCHIVE), Bulk (5–12 h; 48 h for DEEP_ARCHIVE). @default "Standard"
   */
  tier?: "Standard" | "Bulk" | "Expedited";
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RequestRestoreOptionsAgrees = Assert<
  Agrees<RequestRestoreOptions, z.input<typeof requestRestoreOptionsSchema>>
>;

/** The zod schema of {@link WaitForRestoreOptions}, which parses the options at the boundary. */
export const waitForRestoreOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** Time between HeadObject polls: milliseconds or a duration such as "5m". @default "5m" */
      pollInterval: z.union([z.number().int().positive(), durationSchema]).default("5m"),
      signal: signalSchema.optional(),
    })
    .strict(),
);
/** Options of {@link GlacierSink.waitForRestore}. */
export interface WaitForRestoreOptions {
  /** Time between HeadObject polls: milliseconds or a duration such as "5m". @default "5m" */
  pollInterval?: string | number;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _WaitForRestoreOptionsAgrees = Assert<
  Agrees<WaitForRestoreOptions, z.input<typeof waitForRestoreOptionsSchema>>
>;

/** What {@link GlacierSink.requestRestore} found or started. */
export type RestoreRequestResult =
  /** The object is readable without a restore. */
  | "not-needed"
  /** S3 accepted the request (202): the restore has started. */
  | "requested"
  /** A restore was already running (409 RestoreAlreadyInProgress). */
  | "in-progress"
  /** A restored copy exists (200); its expiry was moved to `days` from now. */
  | "available";

export interface GlacierSink extends S3Sink {
  /**
   * Asks S3 to restore the manifest's artifact for `days` at `tier`. Asking again while it runs,
   * or after it finished, is not an error (see {@link RestoreRequestResult}).
   * @throws {RESTORE_FAILED} S3 refused (e.g. Expedited for DEEP_ARCHIVE); {NOT_FOUND} no artifact.
   */
  requestRestore(manifest: Manifest, options?: RequestRestoreOptions): Promise<RestoreRequestResult>;
  /** Reads the artifact's restore state with one HeadObject. @throws {NOT_FOUND} */
  restoreStatus(manifest: Manifest, options?: { signal?: AbortSignal }): Promise<RestoreStatus>;
  /**
   * Polls {@link restoreStatus} until the artifact is readable, and returns that status.
   * @throws {RESTORE_FAILED} no restore was requested (or its copy expired); {ABORTED} on `signal`.
   */
  waitForRestore(manifest: Manifest, options?: WaitForRestoreOptions): Promise<RestoreStatus>;
}

/**
 * Parses S3's `x-amz-restore` header (`ongoing-request="true"`, or `ongoing-request="false",
 * expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`); undefined when absent or unreadable.
 */
export function parseRestoreHeader(header: string | undefined):
  | {
      /** A restore is running. */
      ongoing: true;
    }
  | {
      /** The restore has finished. */
      ongoing: false;
      /** When the restored copy expires. */
      expiresAt: Date;
    }
  | undefined {
  if (!header) return undefined;
  const ongoing = /ongoing-request\s*=\s*"(true|false)"/i.exec(header)?.[1]?.toLowerCase();
  if (ongoing === "true") return { ongoing: true };
  if (ongoing !== "false") return undefined;
  const expiry = /expiry-date\s*=\s*"([^"]+)"/i.exec(header)?.[1];
  const expiresAt = expiry ? new Date(expiry) : undefined;
  return expiresAt && !Number.isNaN(expiresAt.getTime()) ? { ongoing: false, expiresAt } : undefined;
}

const errorName = (e: unknown) => (e as { name?: string } | null)?.name;
const httpStatus = (e: unknown) =>
  (e as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
const isCold = (storageClass: string) => (COLD_STORAGE_CLASSES as readonly string[]).includes(storageClass);

/**
 * Archives artifacts in S3 Glacier (Flexible Retrieval, Deep Archive or Instant Retrieval) while
 * their **manifests stay in STANDARD**, so listing, validation and retention planning never need a
 * restore. Everything else is `s3Sink`'s (multipart streaming, bounded memory, Object Lock,
 * checksums advice for S3-compatible stores).
 *
 * Reading an artifact in GLACIER or DEEP_ARCHIVE takes a restore first: `read` (and so `restore()`
 * and `verify()`) fails with `OBJECT_ARCHIVED` until then. The workflow:
 * `await sink.requestRestore(manifest, { days: 3, tier: "Bulk" })`, then
 * `await sink.waitForRestore(manifest, { pollInterval: "15m" })`, then `restore(...)` as usual.
 * Mind Glacier's minimum storage durations (90 days GLACIER, 180 DEEP_ARCHIVE) in retention policies.
 *
 * @default storageClass "GLACIER", partSize 8 MiB, queueSize 4
 * @throws {CONFIG_INVALID} for a bad option (each named) when called.
 * @throws {OBJECT_ARCHIVED} from `read` of an artifact that is not restored.
 * @example
 * import { glacierSink } from "stowage/sinks/glacier";
 * const archive = glacierSink({ client: new S3Client({}), bucket: "acme-archive", storageClass: "DEEP_ARCHIVE" });
 * await copyBackup({ manifest, from: offsite, to: archive });
 */
export function glacierSink(options: GlacierSinkOptions): GlacierSink {
  const opts = parseOptions(glacierSinkOptionsSchema, options, "glacierSink");
  const configured = opts.storageClass;
  const sink = buildS3Sink(opts, {
    kind: "glacier",
    capabilities:
      configured === "GLACIER_IR"
        ? { storageClasses: ["GLACIER_IR"], readLatency: "immediate", delete: true }
        : { storageClasses: GLACIER_STORAGE_CLASSES, readLatency: "hours", delete: true },
    classFor: (key, requested) => (key.endsWith(MANIFEST_SUFFIX) ? "STANDARD" : (requested ?? configured)),
  });
  const where = "glacier sink";

  const head = async (manifest: Manifest, signal?: AbortSignal) => {
    const key = manifest.artifact.key;
    try {
      return await sink.client.send(
        new (await s3Sdk()).HeadObjectCommand({ Bucket: sink.bucket, Key: sink.objectKey(key) }),
        signal ? { abortSignal: signal } : {},
      );
    } catch (error) {
      if (errorName(error) === "NotFound" || httpStatus(error) === 404) {
        throw new StowageError("NOT_FOUND", `${where}: no object at key "${key}"`, { details: { key } });
      }
      throw wrapError(error, "SINK_READ_FAILED", `${where}: HeadObject of ${key}`, { key }, signal);
    }
  };

  const restoreStatus = async (manifest: Manifest, options: { signal?: AbortSignal } = {}) => {
    const out = await head(manifest, options.signal);
    const storageClass = out.StorageClass ?? "STANDARD";
    // Intelligent-Tiering's archive tiers need a restore too; they say so in ArchiveStatus.
    if (!isCold(storageClass) && !out.ArchiveStatus) return { state: "immediate", storageClass } as const;
    const restore = parseRestoreHeader(out.Restore);
    if (!restore) return { state: "archived", storageClass } as const;
    if (restore.ongoing) return { state: "in-progress", storageClass } as const;
    if (restore.expiresAt.getTime() <= Date.now()) return { state: "archived", storageClass } as const;
    return { state: "available", storageClass, expiresAt: restore.expiresAt } as const;
  };

  return {
    ...sink,
    restoreStatus,

    async requestRestore(manifest, options = {}) {
      const opts = parseOptions(requestRestoreOptionsSchema, options, "requestRestore");
      const key = manifest.artifact.key;
      throwIfAborted(opts.signal, `${where}: restoring ${key}`);
      const status = await restoreStatus(manifest, opts.signal ? { signal: opts.signal } : {});
      if (status.state === "immediate") return "not-needed";
      try {
        const out = await sink.client.send(
          new (await s3Sdk()).RestoreObjectCommand({
            Bucket: sink.bucket,
            Key: sink.objectKey(key),
            RestoreRequest: { Days: opts.days, GlacierJobParameters: { Tier: opts.tier } },
          }),
          opts.signal ? { abortSignal: opts.signal } : {},
        );
        return out.$metadata.httpStatusCode === 200 ? "available" : "requested";
      } catch (error) {
        if (errorName(error) === "RestoreAlreadyInProgress" || httpStatus(error) === 409)
          return "in-progress";
        if (opts.signal?.aborted || isAbortError(error)) {
          throw wrapError(error, "ABORTED", `${where}: restoring ${key}`, { key }, opts.signal);
        }
        throw wrapError(error, "RESTORE_FAILED", `${where}: S3 refused to restore ${key}`, {
          key,
          tier: opts.tier,
          storageClass: status.storageClass,
        });
      }
    },

    async waitForRestore(manifest, options = {}) {
      const opts = parseOptions(waitForRestoreOptionsSchema, options, "waitForRestore");
      const interval =
        typeof opts.pollInterval === "number"
          ? opts.pollInterval
          : parseDuration(opts.pollInterval, "pollInterval");
      const key = manifest.artifact.key;
      for (;;) {
        throwIfAborted(opts.signal, `${where}: waiting for the restore of ${key}`);
        const status = await restoreStatus(manifest, opts.signal ? { signal: opts.signal } : {});
        if (status.state === "available" || status.state === "immediate") return status;
        if (status.state === "archived") {
          throw new StowageError(
            "RESTORE_FAILED",
            `${where}: no restore of ${key} is running (none was requested, or its copy expired): call requestRestore first`,
            { details: { key, storageClass: status.storageClass } },
          );
        }
        try {
          await sleep(interval, undefined, opts.signal ? { signal: opts.signal } : {});
        } catch (error) {
          throw wrapError(
            error,
            "ABORTED",
            `${where}: waiting for the restore of ${key}`,
            { key },
            opts.signal,
          );
        }
      }
    },
  };
}

/** {@link GlacierSink.requestRestore} as a function. */
export function requestRestore(
  sink: GlacierSink,
  manifest: Manifest,
  options?: RequestRestoreOptions,
): Promise<RestoreRequestResult> {
  return sink.requestRestore(manifest, options);
}

/** {@link GlacierSink.restoreStatus} as a function. */
export function restoreStatus(
  sink: GlacierSink,
  manifest: Manifest,
  options?: { signal?: AbortSignal },
): Promise<RestoreStatus> {
  return sink.restoreStatus(manifest, options);
}

/** {@link GlacierSink.waitForRestore} as a function. */
export function waitForRestore(
  sink: GlacierSink,
  manifest: Manifest,
  options?: WaitForRestoreOptions,
): Promise<RestoreStatus> {
  return sink.waitForRestore(manifest, options);
}
