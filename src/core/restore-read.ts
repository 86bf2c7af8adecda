import type { Readable } from "node:stream";
import { StowageError, wrapError } from "./errors.js";
import type { Manifest } from "./manifest.js";
import type { ByteCap } from "./streams.js";
import type { BackupIdentity, Sink } from "./types.js";

/** The backup a manifest describes, which a bound (format 3) artifact must name. */
export const identityOf = (manifest: Manifest): BackupIdentity => ({ job: manifest.job, id: manifest.id });

export const mismatch =
  (which: "stored" | "plain", manifest: Manifest) => (actual: { bytes: number; sha256: string }) => {
    const expected = which === "stored" ? manifest.artifact : manifest.content;
    return new StowageError(
      "INTEGRITY_MISMATCH",
      `${manifest.artifact.key}: ${which} bytes do not match the manifest (expected ${expected.bytes} B ${expected.sha256.slice(0, 12)}…, got ${actual.bytes} B${actual.sha256 ? ` ${actual.sha256.slice(0, 12)}…` : ""})`,
      {
        details: {
          key: manifest.artifact.key,
          which,
          expected: { bytes: expected.bytes, sha256: expected.sha256 },
          actual,
        },
      },
    );
  };

/**
 * The cap that stops a stream as soon as it is longer than the manifest says: a decompression
 * bomb or an artifact with bytes appended never releases (or fills a disk with) more than declared.
 */
export const sizeCap = (which: "stored" | "plain", manifest: Manifest): ByteCap => {
  const expected = which === "stored" ? manifest.artifact : manifest.content;
  const key = manifest.artifact.key;
  return {
    bytes: expected.bytes,
    error: (seen) =>
      new StowageError(
        "INTEGRITY_MISMATCH",
        `${key}: ${which} bytes exceed the manifest's ${expected.bytes} B (${seen} B and more); stopped there`,
        {
          details: {
            key,
            which,
            reason: "too-long",
            expected: { bytes: expected.bytes, sha256: expected.sha256 },
            actual: { bytes: seen },
          },
        },
      ),
  };
};

export const sameDigest = (a: { bytes: number; sha256: string }, b: { bytes: number; sha256: string }) =>
  a.bytes === b.bytes && a.sha256 === b.sha256;

/** Verify's findings that say the artifact could not be read, not that it is damaged. */
export const READ_PROBLEMS: ReadonlySet<string> = new Set([
  "NOT_FOUND",
  "OBJECT_ARCHIVED",
  "SINK_READ_FAILED",
]);

export async function readArtifact(sink: Sink, manifest: Manifest, signal?: AbortSignal): Promise<Readable> {
  try {
    return await sink.read(manifest.artifact.key, signal ? { signal } : {});
  } catch (error) {
    throw wrapError(
      error,
      "SINK_READ_FAILED",
      `reading ${manifest.artifact.key} from ${sink.kind}`,
      {
        key: manifest.artifact.key,
      },
      signal,
    );
  }
}
