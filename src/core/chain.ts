/**
 * The job's chain: each signed manifest names its predecessor on the same sink (`previous`: id and
 * {@link manifestDigest}), so a backup deleted from the middle or a manifest rewritten afterwards
 * shows (`validateBackups` with `chain: true`). Object Lock protects against deletion; this
 * detects it.
 */
import { readManifest, writeManifest } from "./catalog.js";
import { isStowageError, wrapError } from "./errors.js";
import { MANIFEST_SUFFIX, type Manifest } from "./manifest.js";
import { manifestDigest, type Signer } from "./signing.js";
import type { Sink } from "./types.js";

/** Manifests tried, newest first, when the newest predecessor does not read or parse. */
const MAX_TRIES = 3;

/**
 * The prefixes to list, narrowest first: the backup's day, month and year, then the whole job.
 * Keys are `<job>/<yyyy>/<mm>/<dd>/<id>…` and ids sort by time, so the first prefix that holds an
 * older manifest holds the newest older one.
 */
function prefixesFor(job: string, id: string): string[] {
  const [y, m, d] = [id.slice(0, 4), id.slice(4, 6), id.slice(6, 8)];
  return [`${job}/${y}/${m}/${d}/`, `${job}/${y}/${m}/`, `${job}/${y}/`, `${job}/`];
}

/**
 * The job's newest manifest on `sink` older than `id`, as `previous` records it, or `undefined`
 * for the first backup. Cost: one LIST of the backup's day (a job that runs daily or more often
 * finds its predecessor there or on the day before's month listing), widening to the month, the
 * year and the whole job only when the narrower listing holds no older manifest, plus one GET. So
 * a frequent job never lists its whole history, and a rare one lists little because it has little.
 *
 * A predecessor that does not read or parse is skipped (up to three), so one damaged manifest does
 * not stop the job's backups; the skip shows as a gap in the chain.
 * @throws {SINK_READ_FAILED | ABORTED}
 */
export async function findPrevious(
  sink: Sink,
  job: string,
  id: string,
  signal?: AbortSignal,
): Promise<
  | {
      /** The previous backup's id. */
      id: string;
      /** SHA-256 of its manifest, which the next manifest records as its predecessor. */
      sha256: string;
    }
  | undefined
> {
  const own = `${job}/`;
  for (const prefix of prefixesFor(job, id)) {
    const older: string[] = [];
    try {
      for await (const info of sink.list(prefix, signal ? { signal } : {})) {
        if (!info.key.endsWith(MANIFEST_SUFFIX) || !info.key.startsWith(own)) continue;
        const name = info.key.slice(info.key.lastIndexOf("/") + 1);
        if (name.slice(0, id.length) < id) older.push(info.key);
      }
    } catch (error) {
      throw wrapError(error, "SINK_READ_FAILED", `finding the previous backup of ${job}`, { prefix }, signal);
    }
    if (older.length === 0) continue;
    // Newest first, by the id at the start of the file name.
    older.sort((a, b) => {
      const [na, nb] = [a.slice(a.lastIndexOf("/") + 1), b.slice(b.lastIndexOf("/") + 1)];
      return na < nb ? 1 : na > nb ? -1 : 0;
    });
    for (const key of older.slice(0, MAX_TRIES)) {
      let manifest: Manifest;
      try {
        manifest = await readManifest(sink, key, signal);
      } catch (error) {
        if (isStowageError(error, "ABORTED")) throw error;
        continue;
      }
      if (manifest.job === job) return { id: manifest.id, sha256: manifestDigest(manifest) };
    }
    return undefined;
  }
  return undefined;
}

/**
 * What backup, copy and rekey do last: with a signing key, record the job's predecessor on `sink`
 * (unless `keepPrevious`: a rekey stands in for the same backup, so its predecessor is unchanged)
 * and sign; then {@link writeManifest}. If anything fails, the artifact is deleted again, as
 * writeManifest does, so the sink is left as it was.
 * @returns the manifest as stored.
 * @throws {SINK_READ_FAILED | SINK_WRITE_FAILED | ABORTED}
 */
export async function writeSignedManifest(
  sink: Sink,
  manifest: Manifest,
  signer: Signer | undefined,
  options: { signal?: AbortSignal; what: string; details?: Record<string, unknown>; keepPrevious?: boolean },
): Promise<Manifest> {
  let stored = manifest;
  if (signer) {
    const { signal } = options;
    try {
      const { previous: kept, signature: _old, ...rest } = manifest;
      const previous = options.keepPrevious
        ? kept
        : await findPrevious(sink, manifest.job, manifest.id, signal);
      stored = signer.sign({ ...rest, ...(previous ? { previous } : {}) } as Manifest);
    } catch (error) {
      await sink.delete([manifest.artifact.key]).catch(() => undefined);
      throw wrapError(
        error,
        "SINK_READ_FAILED",
        `${options.what}: signing the manifest failed`,
        options.details ?? {},
        signal,
      );
    }
  }
  await writeManifest(sink, stored, options);
  return stored;
}
