import type { Readable } from "node:stream";
import { writeSignedManifest } from "./chain.js";
import { StowageError, throwIfAborted, wrapError } from "./errors.js";
import { FirstFailure, transfer } from "./failure.js";
import { type Manifest, parseManifest } from "./manifest.js";
import { ProgressCounter, type ProgressListener } from "./progress.js";
import { signerFrom } from "./signing.js";
import { ExpectDigest } from "./streams.js";
import type { Sink } from "./types.js";

/** Options of {@link copyBackup}. */
export interface CopyBackupOptions {
  /** The backup to copy, as read from `from` (e.g. by `listManifests`). */
  manifest: Manifest;
  /** The sink that holds the backup. */
  from: Sink;
  /** The sink to copy it into. */
  to: Sink;
  /** A storage class `to` offers (its `capabilities.storageClasses`); else the sink's default. */
  storageClass?: string | undefined;
  /** Aborts the copy; it then rejects with code `ABORTED` and leaves nothing at `to`. */
  signal?: AbortSignal | undefined;
  /**
   * Signs the copy's manifest, whose `previous` names the job's previous backup on `to`. Without
   * it a signed manifest is stored unsigned (its sink and location change, so the old signature
   * could not hold). @default unsigned
   */
  signingKey?: string | undefined;
  /**
   * Progress, as `backup` reports it: `bytesRead` bytes read from `from`, `bytesWritten` bytes
   * handed to `to` (`manifest.artifact.bytes` is the total). `done` comes once the copy's manifest
   * is written.
   */
  onProgress?: ProgressListener | undefined;
}

/**
 * Copies one backup from one sink to another (filesystem → S3 offsite → Glacier archive…): streams
 * the artifact across with bounded memory, checks its size and SHA-256 against the manifest while
 * it flows, and writes the manifest last, with the new sink, location and storage class (and the
 * later of the old hold and the destination's lock as `retainUntil`). The key stays the same.
 *
 * All or nothing at the destination: a byte that does not match, a read or write failure, or an
 * abort fails the artifact's write before it commits, so neither artifact nor manifest is left.
 *
 * @returns the manifest now stored at `to`.
 * @throws {CONFIG_INVALID} `from` and `to` are the same sink, or `to` does not offer `storageClass`.
 * @throws {INTEGRITY_MISMATCH} the bytes read do not match the manifest (nothing is written).
 * @throws {SINK_READ_FAILED | NOT_FOUND | OBJECT_ARCHIVED} reading from `from` failed (an archived
 *   artifact must be restored first).
 * @throws {SINK_WRITE_FAILED} writing to `to` failed. {ABORTED} when `signal` fires.
 * @example
 * const { manifests } = await listManifests(local, { job: "app-db" });
 * await copyBackup({ manifest: manifests.at(-1)!, from: local, to: offsite });
 */
export async function copyBackup(options: CopyBackupOptions): Promise<Manifest> {
  const { from, to, signal, storageClass } = options;
  const manifest = parseManifest(options.manifest, "copyBackup: manifest");
  const key = manifest.artifact.key;
  const details = { key, from: from.kind, to: to.kind };
  if (from === to) {
    throw new StowageError("CONFIG_INVALID", "copyBackup: from and to are the same sink", {
      details: { ...details, issues: [{ path: "to", problem: "same sink as from" }] },
    });
  }
  if (storageClass !== undefined && !to.capabilities.storageClasses?.includes(storageClass)) {
    throw new StowageError(
      "CONFIG_INVALID",
      `copyBackup: the ${to.kind} sink does not offer storage class ${storageClass}`,
      { details: { ...details, issues: [{ path: "storageClass", problem: "not offered by the sink" }] } },
    );
  }
  const signer = options.signingKey === undefined ? undefined : signerFrom(options.signingKey);
  throwIfAborted(signal, "copyBackup");

  let raw: Readable;
  try {
    raw = await from.read(key, signal ? { signal } : {});
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `copyBackup: reading ${key} from ${from.kind}`,
      details,
      signal,
    );
  }

  const progress = new ProgressCounter(options.onProgress);
  const failure = new FirstFailure();
  const check = new ExpectDigest(
    manifest.artifact,
    (actual) =>
      new StowageError(
        "INTEGRITY_MISMATCH",
        `copyBackup: ${key} in ${from.kind} does not match its manifest (expected ${manifest.artifact.bytes} B ${manifest.artifact.sha256.slice(0, 12)}…, got ${actual.bytes} B ${actual.sha256.slice(0, 12)}…); nothing was written to ${to.kind}`,
        {
          details: {
            ...details,
            expected: { bytes: manifest.artifact.bytes, sha256: manifest.artifact.sha256 },
            actual,
          },
        },
      ),
  );
  failure.watch(raw, "SINK_READ_FAILED", `copyBackup: reading ${key} from ${from.kind}`);

  const written = await transfer({
    streams: [raw, ...progress.meter("read"), check, ...progress.meter("written")],
    sink: to,
    key,
    write: {
      ...(signal ? { signal } : {}),
      contentType: "application/octet-stream",
      ...(storageClass !== undefined ? { storageClass } : {}),
    },
    failure,
    writing: `copyBackup: writing ${key} to ${to.kind}`,
    unclaimed: { code: "SINK_WRITE_FAILED", what: `copyBackup: copying ${key} to ${to.kind}` },
    details,
    ...(signal ? { signal } : {}),
  });

  const { storageClass: _previous, ...artifact } = manifest.artifact;
  const lockedUntil = written.retainUntil?.toISOString();
  const retainUntil =
    lockedUntil && (!manifest.retainUntil || Date.parse(lockedUntil) > Date.parse(manifest.retainUntil))
      ? lockedUntil
      : manifest.retainUntil;
  const newClass = written.storageClass ?? storageClass;
  const { signature: _signature, previous: _chain, ...unsigned } = manifest;
  const copied: Manifest = {
    ...unsigned,
    artifact: {
      ...artifact,
      sink: to.kind,
      location: written.location,
      ...(newClass ? { storageClass: newClass } : {}),
    },
    ...(retainUntil ? { retainUntil } : {}),
  };
  const stored = await writeSignedManifest(to, copied, signer, {
    ...(signal ? { signal } : {}),
    what: `copyBackup of ${key} to ${to.kind}`,
    details,
  });
  progress.done();
  return stored;
}
