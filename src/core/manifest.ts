import type { z } from "zod";
import { type ArtifactBlocks, artifactBlocksSchema, blocksMatchSize } from "./blocks.js";
import { StowageError } from "./errors.js";
import { issuesFrom, listIssues } from "./issues.js";
import { unsafeKeyProblem } from "./keys.js";
import { type LeaseRecord, leaseRecordSchema } from "./lock.js";
import { lazySchema } from "./options.js";
import type { Agrees, Assert } from "./type-checks.js";

/** The manifest schema versions this build reads. Written manifests use the last one. */
export const SUPPORTED_MANIFEST_VERSIONS = [1] as const;
/** The manifest format version this library writes. */
export const MANIFEST_VERSION = 1;
/** Manifests live beside their artifact under this suffix. */
export const MANIFEST_SUFFIX = ".manifest.json";

const sha256Hex = lazySchema((z) => z.string().regex(/^[0-9a-f]{64}$/, "expected a lowercase hex SHA-256"));
const isoTime = lazySchema((z) => z.iso.datetime({ offset: true }));
const byteCount = lazySchema((z) => z.number().int().nonnegative());

/**
 * One transform stage as the manifest records it. `name` picks the decoder; the other fields are
 * the stage's own (gzip: `level`; aes-256-gcm: `formatVersion`, `chunkSize`, `recipients` as
 * `{ type, id? }` fingerprints, and `keyId` for a single raw key; see docs/FORMAT.md).
 */
export const transformRecordSchema = lazySchema((z) =>
  z.looseObject({
    name: z.string().min(1),
    role: z.enum(["compression", "encryption", "other"]),
  }),
);
/** What a manifest records of one transform: enough to reverse it (level, cipher, key id, chunk size). */
export interface TransformRecord {
  /** The transform's name (`"gzip"`, `"aes-256-gcm"`…): it picks the decoder. */
  name: string;
  /** What the stage does; validation rules look for an `encryption` or `compression` stage. */
  role: "compression" | "encryption" | "other";
  /** The stage's own parameters, as its `describe()` returned them. */
  [field: string]: unknown;
}
// Assignable both ways (the keys of an index signature differ only in `number`, which JSON has not).
type TransformRecordOutput = z.output<typeof transformRecordSchema>;
type _TransformRecordAgrees = Assert<
  [TransformRecord] extends [TransformRecordOutput]
    ? [TransformRecordOutput] extends [TransformRecord]
      ? true
      : false
    : false
>;

/** A backup's place in a chain of incrementals; see {@link manifestSchema}'s `chain`. */
export const chainRecordSchema = lazySchema((z) =>
  z
    .object({
      /** `full` stands alone; `differential` depends on a full; `incremental` on any earlier link. */
      kind: z.enum(["full", "differential", "incremental"]),
      /** The backup this one depends on (absent for a full): restore needs it, retention keeps it. */
      parent: z
        .object({
          /** The parent backup's id. */
          id: z.string().min(1),
          /** The parent's artifact key. */
          key: z.string().min(1),
        })
        .optional(),
      /**
       * Where the file index is: a member of the artifact itself (its last tar member, named here),
       * so it is encrypted like the artifact and copied, kept and deleted with it. `sha256` is of the
       * index's plain bytes, `entries` the paths it lists.
       */
      index: z.object({
        /** The tar member's name. */
        member: z.string().min(1),
        /** Paths the index lists. */
        entries: byteCount,
        /** SHA-256 of the index's plain bytes, hex. */
        sha256: sha256Hex,
      }),
    })
    .refine((c) => (c.kind === "full") === (c.parent === undefined), {
      message: "a full has no parent; a differential or incremental names one",
      path: ["parent"],
    }),
);
/** Where a backup stands in its chain (full, differential, incremental), as its manifest records it. */
export type ChainRecord = z.infer<typeof chainRecordSchema>;

/** Label keys are short identifiers; values are free text. */
export const labelsSchema = lazySchema((z) =>
  z.record(
    z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/, "label keys are 1-63 of [A-Za-z0-9._/-]"),
    z.string().max(1024),
  ),
);

/**
 * The manifest: the single definition of what a backup is. Every manifest read back is parsed
 * by this schema; the TypeScript type is inferred from it.
 */
export const manifestSchema = lazySchema((z) =>
  z.object({
    /** Schema version; see {@link SUPPORTED_MANIFEST_VERSIONS}. */
    version: z.literal(1),
    /** Time-sortable id, unique per job: `20261122T034924123Z-1a2b3c4d`. */
    id: z.string().regex(/^\d{8}T\d{9}Z-[0-9a-f]{8}$/),
    job: z.string().min(1),
    startedAt: isoTime,
    finishedAt: isoTime,
    source: z.object({
      kind: z.string().min(1),
      name: z.string(),
      details: z.record(z.string(), z.unknown()),
    }),
    artifact: z
      .object({
        sink: z.string().min(1),
        /** Relative to the sink's root; an absolute key or one with `..` makes the manifest invalid. */
        key: z.string().superRefine((key, ctx) => {
          const problem = unsafeKeyProblem(key);
          if (problem) ctx.addIssue({ code: "custom", message: `unsafe key: ${problem}` });
        }),
        location: z.string().min(1),
        bytes: byteCount,
        sha256: sha256Hex,
        storageClass: z.string().optional(),
        /**
         * Unencrypted artifacts: the SHA-256 of each fixed-size block of the stored bytes, so a restore
         * checks each block before releasing it and reads the artifact once (see core/blocks.ts).
         */
        blocks: artifactBlocksSchema.optional(),
      })
      .refine((a) => !a.blocks || blocksMatchSize(a.blocks, a.bytes), {
        path: ["blocks"],
        message: "names a different number of blocks than the artifact's bytes make",
      }),
    content: z.object({
      bytes: byteCount,
      sha256: sha256Hex,
      contentType: z.string().min(1),
    }),
    /** In the order they were applied on the way in; restore undoes them last to first. */
    transforms: z.array(transformRecordSchema),
    labels: labelsSchema,
    /** A hold: retention keeps the backup until this time whatever the policy says. */
    retainUntil: isoTime.optional(),
    /**
     * The lease the backup was committed under, when its job ran on a lock (replicas): the lock's
     * kind and name, the holder (replica) and the fencing token, checked just before the commit.
     */
    lease: leaseRecordSchema.optional(),
    /**
     * Optional (absent on a standalone backup): the backup's kind and, for a differential or an
     * incremental, the parent it depends on. Written by sources that back up only what changed
     * (`directorySource` with `incremental`).
     */
    chain: chainRecordSchema.optional(),
    generator: z.object({ name: z.string(), version: z.string() }),
    // --- Signed manifests and the job's chain (docs/FORMAT.md, "Manifest signatures"). ---
    /**
     * The job's previous manifest on this sink when this one was written: its id and the SHA-256 of
     * its canonical encoding (`manifestDigest`). Recorded by signed backups; absent for the first.
     */
    previous: z.object({ id: z.string().min(1), sha256: sha256Hex }).optional(),
    /** Ed25519 over the canonical encoding of every other field; see `assertSigned`. */
    signature: z
      .object({
        algorithm: z.literal("ed25519"),
        keyId: z.string().regex(/^[0-9a-f]{16}$/),
        value: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, "64 bytes of base64"),
      })
      .optional(),
  }),
);
/** A backup as its manifest describes it (see {@link manifestSchema}). */
export interface Manifest {
  /** Schema version; see {@link SUPPORTED_MANIFEST_VERSIONS}. */
  version: 1;
  /** Time-sortable id, unique per job: `20261122T034924123Z-1a2b3c4d`. */
  id: string;
  /** The job name: the first segment of the artifact's key. */
  job: string;
  /** When the backup started (ISO 8601 with offset); retention and RPO count from here. */
  startedAt: string;
  /** When the artifact and its manifest were committed (ISO 8601 with offset). */
  finishedAt: string;
  /** What was backed up. */
  source: ManifestSource;
  /** The stored bytes: where, how many, their SHA-256. */
  artifact: ManifestArtifact;
  /** The plain bytes (after undoing every transform): how many, their SHA-256, their type. */
  content: ManifestContent;
  /** In the order they were applied on the way in; restore undoes them last to first. */
  transforms: TransformRecord[];
  /** Free string labels given to `backup()`. */
  labels: Record<string, string>;
  /** A hold: retention keeps the backup until this time whatever the policy says. */
  retainUntil?: string;
  /** The program that wrote the manifest. */
  generator: {
    /** `"stowage"`. */
    name: string;
    /** Its version. */
    version: string;
  };
  /**
   * The lease the backup was committed under, when its job ran on a lock (replicas): the lock's
   * kind and name, the holder (replica) and the fencing token, checked just before the commit.
   */
  lease?: LeaseRecord;
  /**
   * The backup's place in a chain of incrementals (absent on a standalone backup): its kind and,
   * for a differential or an incremental, the parent it depends on. Written by sources that back
   * up only what changed (`directorySource` with `incremental`).
   */
  chain?: ChainRecord;
  /**
   * The job's previous manifest on this sink when this one was written: its id and the SHA-256 of
   * its canonical encoding. Recorded by signed backups; absent for the first.
   */
  previous?: {
    /** The predecessor's id. */
    id: string;
    /** SHA-256 of the predecessor's canonical encoding, lowercase hex. */
    sha256: string;
  };
  /** Ed25519 over the canonical encoding of every other field (docs/FORMAT.md). */
  signature?: {
    /** Always `"ed25519"`. */
    algorithm: "ed25519";
    /** The signing key's id: 16 lowercase hex digits. */
    keyId: string;
    /** The 64-byte signature, base64. */
    value: string;
  };
}
type _ManifestAgrees = Assert<Agrees<Manifest, z.output<typeof manifestSchema>>>;

/** The source of a backup, as its manifest records it. */
export interface ManifestSource {
  /** The source's kind, e.g. `"postgres"`, `"directory"`, `"kubernetes"`. */
  kind: string;
  /** Its logical name (a database, a folder, a cluster). */
  name: string;
  /** What the source reported about the run (its `details()`), e.g. the server version. */
  details: Record<string, unknown>;
}

/** The artifact of a backup, as its manifest records it. */
export interface ManifestArtifact {
  /** The kind of sink that holds it (`"filesystem"`, `"s3"`…). */
  sink: string;
  /** Relative to the sink's root; an absolute key or one with `..` makes the manifest invalid. */
  key: string;
  /** Where the sink put it, for people: a path or an `s3://` URL. */
  location: string;
  /** Stored size in bytes. */
  bytes: number;
  /** SHA-256 of the stored bytes, lowercase hex. */
  sha256: string;
  /** The storage class it was written with, where the sink has classes. */
  storageClass?: string;
  /**
   * One SHA-256 per block of the stored bytes, for unencrypted artifacts: restore checks each block
   * before releasing any of it and reads the artifact once (docs/FORMAT.md).
   */
  blocks?: ArtifactBlocks;
}

/** The plain content of a backup, as its manifest records it. */
export interface ManifestContent {
  /** Plain size in bytes. */
  bytes: number;
  /** SHA-256 of the plain bytes, lowercase hex. */
  sha256: string;
  /** The source's media type, e.g. `"application/sql"`, `"application/x-tar"`. */
  contentType: string;
}

/**
 * Parses a manifest from JSON text or a value.
 * @throws {MANIFEST_INVALID} naming the first fields that do not match, with `details.issues`.
 */
export function parseManifest(input: string | unknown, where = "manifest"): Manifest {
  let value: unknown = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (error) {
      throw new StowageError("MANIFEST_INVALID", `${where}: not JSON`, { cause: error });
    }
  }
  const version = (value as { version?: unknown } | null)?.version;
  if (typeof version === "number" && !(SUPPORTED_MANIFEST_VERSIONS as readonly number[]).includes(version)) {
    throw new StowageError(
      "MANIFEST_INVALID",
      `${where}: manifest version ${version} is not supported by this stowage (reads ${SUPPORTED_MANIFEST_VERSIONS.join(", ")})`,
      { details: { issues: [{ path: "version", problem: "unsupported version" }] } },
    );
  }
  const result = manifestSchema.safeParse(value);
  if (result.success) return result.data;
  const issues = issuesFrom(result.error.issues, "(root)");
  const list = listIssues(issues.slice(0, 5));
  throw new StowageError("MANIFEST_INVALID", `${where}: ${list}`, { details: { issues } });
}

/** The key of the manifest that belongs to an artifact key. */
export function manifestKeyFor(artifactKey: string): string {
  return artifactKey + MANIFEST_SUFFIX;
}

/** Serialises a manifest the way stowage stores it (validated, stable two-space JSON). */
export function serializeManifest(manifest: Manifest): Buffer {
  return Buffer.from(`${JSON.stringify(manifestSchema.parse(manifest), null, 2)}\n`, "utf8");
}
