import { z } from "zod";
import { StowageError } from "./errors.js";
import { unsafeKeyProblem } from "./keys.js";

/** The manifest schema versions this build reads. Written manifests use the last one. */
export const SUPPORTED_MANIFEST_VERSIONS = [1] as const;
export const MANIFEST_VERSION = 1;
/** Manifests live beside their artifact under this suffix. */
export const MANIFEST_SUFFIX = ".manifest.json";

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "expected a lowercase hex SHA-256");
const isoTime = z.iso.datetime({ offset: true });
const byteCount = z.number().int().nonnegative();

/**
 * One transform stage as the manifest records it. `name` picks the decoder; the other fields are
 * the stage's own (gzip: `level`; aes-256-gcm: `formatVersion`, `chunkSize`, `recipients` as
 * `{ type, id? }` fingerprints, and `keyId` for a single raw key; see docs/FORMAT.md).
 */
export const transformRecordSchema = z.looseObject({
  name: z.string().min(1),
  role: z.enum(["compression", "encryption", "other"]),
});
export type TransformRecord = z.infer<typeof transformRecordSchema>;

/** A backup's place in a chain of incrementals; see {@link manifestSchema}'s `chain`. */
export const chainRecordSchema = z
  .object({
    /** `full` stands alone; `differential` depends on a full; `incremental` on any earlier link. */
    kind: z.enum(["full", "differential", "incremental"]),
    /** The backup this one depends on (absent for a full): restore needs it, retention keeps it. */
    parent: z.object({ id: z.string().min(1), key: z.string().min(1) }).optional(),
    /**
     * Where the file index is: a member of the artifact itself (its last tar member, named here),
     * so it is encrypted like the artifact and copied, kept and deleted with it. `sha256` is of the
     * index's plain bytes, `entries` the paths it lists.
     */
    index: z.object({ member: z.string().min(1), entries: byteCount, sha256: sha256Hex }),
  })
  .refine((c) => (c.kind === "full") === (c.parent === undefined), {
    message: "a full has no parent; a differential or incremental names one",
    path: ["parent"],
  });
export type ChainRecord = z.infer<typeof chainRecordSchema>;

/** Label keys are short identifiers; values are free text. */
export const labelsSchema = z.record(
  z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/, "label keys are 1-63 of [A-Za-z0-9._/-]"),
  z.string().max(1024),
);

/**
 * The manifest: the single definition of what a backup is. Every manifest read back is parsed
 * by this schema; the TypeScript type is inferred from it.
 */
export const manifestSchema = z.object({
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
  artifact: z.object({
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
   * Optional (absent on a standalone backup): the backup's kind and, for a differential or an
   * incremental, the parent it depends on. Written by sources that back up only what changed
   * (`directorySource` with `incremental`).
   */
  chain: chainRecordSchema.optional(),
  generator: z.object({ name: z.string(), version: z.string() }),
});
export type Manifest = z.infer<typeof manifestSchema>;

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
      { details: { issues: [{ field: "version", problem: "unsupported version" }] } },
    );
  }
  const result = manifestSchema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue) => ({
    field: issue.path.map(String).join(".") || "(root)",
    problem: issue.message,
  }));
  const list = issues
    .slice(0, 5)
    .map((i) => `${i.field}: ${i.problem}`)
    .join("; ");
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
