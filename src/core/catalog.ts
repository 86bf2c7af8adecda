import { Readable } from "node:stream";
import { eachConcurrently } from "./each-concurrently.js";
import { isStowageError, StowageError, throwIfAborted, wrapError } from "./errors.js";
import {
  MANIFEST_SUFFIX,
  type Manifest,
  manifestKeyFor,
  parseManifest,
  serializeManifest,
} from "./manifest.js";
import { assertSigned, verifyKeyring } from "./signing.js";
import { readAll } from "./streams.js";
import type { ObjectInfo, Sink } from "./types.js";

/** Options of {@link listManifests}. */
export interface ListManifestsOptions {
  /** Only this job's manifests. */
  job?: string;
  /** Aborts the listing. */
  signal?: AbortSignal;
  /** Manifests read at once. @default 8 */
  concurrency?: number;
  /**
   * Manifests read by earlier calls on the same sink, for a caller that lists again and again (a
   * job every few minutes): the listing is fresh each time, but a manifest whose key, size and
   * modification time are unchanged is not read again. A manifest is written once and never
   * changed in place. Entries of keys that are gone are dropped, so it holds at most what the
   * sink lists. Create it with `new Map()` and keep one per sink.
   */
  cache?: ManifestCache;
  /**
   * Public keys (`stowage-verify1:…`) that may have signed the manifests. With them, a manifest
   * that is unsigned or whose signature does not check goes to `invalid` with `SIGNATURE_MISSING`
   * or `SIGNATURE_INVALID`, never to `manifests`. @default no signature check
   */
  verifyKeys?: string | readonly string[];
}

/** See {@link ListManifestsOptions.cache}. */
export type ManifestCache = Map<
  string,
  {
    /** The manifest object's size in bytes when it was read. */
    size: number;
    /** Its last-modified time then, in epoch milliseconds. */
    modified: number;
    /** The parsed manifest, reused while size and time stay the same. */
    manifest: Manifest;
  }
>;

/** What {@link listManifests} found: the manifests it could read, and those it could not. */
export interface ManifestListing {
  /** Valid manifests, oldest first (by id, which sorts by start time). */
  manifests: Manifest[];
  /** Manifests that could not be read or parsed: reported, never silently dropped. */
  invalid: Array<{
    /** The manifest's key. */
    key: string;
    /** Why it could not be read (`MANIFEST_INVALID`, `NOT_FOUND`…). */
    error: StowageError;
  }>;
}

const MAX_MANIFEST_BYTES = 4 << 20;

/** Reads and parses one manifest object. @throws {NOT_FOUND | MANIFEST_INVALID | SINK_READ_FAILED} */
export async function readManifest(sink: Sink, manifestKey: string, signal?: AbortSignal): Promise<Manifest> {
  let text: string;
  try {
    text = (
      await readAll(await sink.read(manifestKey, signal ? { signal } : {}), MAX_MANIFEST_BYTES)
    ).toString("utf8");
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `reading manifest ${manifestKey}`,
      { key: manifestKey },
      signal,
    );
  }
  const manifest = parseManifest(text, `manifest ${manifestKey}`);
  if (`${manifest.artifact.key}${MANIFEST_SUFFIX}` !== manifestKey) {
    throw new StowageError(
      "MANIFEST_INVALID",
      `manifest ${manifestKey}: names artifact ${manifest.artifact.key}, which is not the artifact beside it`,
      {
        details: {
          key: manifestKey,
          issues: [{ path: "artifact.key", problem: "does not match its location" }],
        },
      },
    );
  }
  return manifest;
}

/**
 * Reads and parses every manifest in a sink (or one job's). Invalid ones are returned in
 * `invalid` with a `MANIFEST_INVALID` (or read) error, so a caller can report them.
 *
 * @throws {SINK_READ_FAILED} when the listing itself fails; {ABORTED} when `signal` fires.
 * @example const { manifests, invalid } = await listManifests(sink, { job: "app-db" });
 */
export async function listManifests(
  sink: Sink,
  options: ListManifestsOptions = {},
): Promise<ManifestListing> {
  return (await listCatalog(sink, options)).listing;
}

/**
 * {@link listManifests}, and every object the sink listed under the prefix (artifacts too), for a
 * caller that needs both — retention's orphan sweep — and should not list the sink twice.
 * @internal
 */
export async function listCatalog(
  sink: Sink,
  options: ListManifestsOptions = {},
): Promise<{ listing: ManifestListing; prefix: string; objects: ObjectInfo[] }> {
  const { signal, cache } = options;
  const ring = verifyKeyring(options.verifyKeys);
  const prefix = options.job ? `${options.job}/` : "";
  const objects: ObjectInfo[] = [];
  const listed: ObjectInfo[] = [];
  try {
    for await (const info of sink.list(prefix, signal ? { signal } : {})) {
      objects.push(info);
      if (info.key.endsWith(MANIFEST_SUFFIX)) listed.push(info);
    }
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `listing ${sink.kind} sink under "${prefix}"`,
      { prefix },
      signal,
    );
  }
  if (cache) {
    const seen = new Set(listed.map((info) => info.key));
    for (const key of cache.keys()) if (key.startsWith(prefix) && !seen.has(key)) cache.delete(key);
  }

  const listing: ManifestListing = { manifests: [], invalid: [] };
  await eachConcurrently(listed, options.concurrency ?? 8, async (info) => {
    const key = info.key;
    const modified = info.lastModified.getTime();
    const hit = cache?.get(key);
    try {
      let manifest: Manifest;
      if (hit && hit.size === info.size && hit.modified === modified) {
        manifest = hit.manifest;
      } else {
        manifest = await readManifest(sink, key, signal);
        cache?.set(key, { size: info.size, modified, manifest });
      }
      assertSigned(manifest, ring, "listManifests");
      listing.manifests.push(manifest);
    } catch (error) {
      if (isStowageError(error, "ABORTED")) throw error;
      if (!isStowageError(error, "SIGNATURE_MISSING") && !isStowageError(error, "SIGNATURE_INVALID")) {
        cache?.delete(key);
      }
      listing.invalid.push({
        key,
        error: wrapError(error, "MANIFEST_INVALID", `manifest ${key}`, { key }),
      });
    }
  });
  listing.manifests.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  listing.invalid.sort((a, b) => (a.key < b.key ? -1 : 1));
  return { listing, prefix, objects };
}

/**
 * The last step of every write of a backup (backup, copy, rekey): stores the manifest beside its
 * artifact. Without its manifest an artifact is not a backup, so if this fails the artifact is
 * deleted again and the sink is left as it was.
 *
 * @throws {SINK_WRITE_FAILED} naming `what`; {ABORTED} when `signal` fires.
 */
export async function writeManifest(
  sink: Sink,
  manifest: Manifest,
  options: { signal?: AbortSignal; what: string; details?: Record<string, unknown> },
): Promise<void> {
  const { signal, what } = options;
  const key = manifest.artifact.key;
  try {
    throwIfAborted(signal, what);
    await sink.write(manifestKeyFor(key), Readable.from([serializeManifest(manifest)]), {
      ...(signal ? { signal } : {}),
      contentType: "application/json",
    });
  } catch (error) {
    await sink.delete([key]).catch(() => undefined);
    throw wrapError(
      error,
      "SINK_WRITE_FAILED",
      `${what}: writing the manifest failed`,
      options.details ?? { key },
      signal,
    );
  }
}
