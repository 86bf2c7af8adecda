import { type Duplex, type Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { decodersFor, keyList } from "./codecs.js";
import { isStowageError, type StowageError, wrapError } from "./errors.js";
import { type Manifest, parseManifest } from "./manifest.js";
import { ProgressCounter, type ProgressListener } from "./progress.js";
import { identityOf, mismatch, readArtifact, sizeCap } from "./restore-read.js";
import { assertSigned, verifyKeyring } from "./signing.js";
import { HashCounter } from "./streams.js";
import type { Decoder, DecryptionKey, Sink } from "./types.js";

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** The sink that holds the artifact. */
  sink: Sink;
  /** The backup to verify. */
  manifest: Manifest;
  /** With keys (or for an unencrypted artifact), also decode and check the plain bytes. */
  keys?: DecryptionKey | readonly DecryptionKey[];
  /** Your own transforms, or just their decoders, for manifests that name them; not the built-ins. */
  transforms?: readonly Decoder[];
  /** Set false to check only the stored bytes even where decoding is possible. @default true */
  decode?: boolean;
  /** As for {@link restore}: a manifest that fails them is reported, and its artifact not read. */
  verifyKeys?: string | readonly string[];
  /** Aborts the verification; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /**
   * Progress, as `backup` reports it: `bytesRead` stored bytes read, `bytesWritten` plain bytes
   * decoded and checked (0 when not decoding). `done` comes once every byte is checked.
   */
  onProgress?: ProgressListener;
}

/** Bytes and their SHA-256, as the manifest records them and as they were read. */
export interface DigestCheck {
  /** What the manifest records. */
  expected: {
    /** Size in bytes. */
    bytes: number;
    /** SHA-256, hex. */
    sha256: string;
  };
  /** What was read; absent when reading failed. */
  actual?: {
    /** Size in bytes. */
    bytes: number;
    /** SHA-256, hex. */
    sha256: string;
  };
  /** Whether the two agree. */
  ok: boolean;
}

/** What {@link verify} found. */
export interface VerifyReport {
  /** True when every check passed. */
  ok: boolean;
  /** The artifact's key. */
  key: string;
  /** The backup's job. */
  job: string;
  /** The backup's id. */
  id: string;
  /** The artifact as stored: size and SHA-256 against the manifest. */
  stored: DigestCheck;
  /** The plain bytes after decrypting and decompressing (a trial restore); absent when not decoded. */
  plain?: DigestCheck;
  /** What was wrong, by code (`INTEGRITY_MISMATCH`, `DECRYPT_FAILED`…). */
  problems: Array<{
    /** The error code. */
    code: string;
    /** A sentence for people. */
    message: string;
  }>;
}

/**
 * Re-reads an artifact and checks it against its manifest: the stored size and SHA-256, and with
 * keys (or when nothing is encrypted) a trial restore that decrypts, decompresses and checks the
 * plain size and SHA-256. It reports mismatches; it does not throw them.
 *
 * Reading stops as soon as either side is longer than the manifest says.
 *
 * @throws {ABORTED} when `signal` fires; {MANIFEST_INVALID} for a manifest that does not parse;
 *   {CONFIG_INVALID} for a `keys` entry of the wrong shape.
 * @example const report = await verify({ sink, manifest, keys: [{ key }] }); if (!report.ok) alert(report.problems)
 */
export async function verify(options: VerifyOptions): Promise<VerifyReport> {
  const manifest = parseManifest(options.manifest, "verify: manifest");
  const { sink, signal } = options;
  const keys = keyList(options.keys, "verify");
  const ring = verifyKeyring(options.verifyKeys);
  const encrypted = manifest.transforms.some((t) => t.role === "encryption");
  const decode = (options.decode ?? true) && (!encrypted || keys.length > 0);
  const key = manifest.artifact.key;
  const report: VerifyReport = {
    ok: false,
    key,
    job: manifest.job,
    id: manifest.id,
    stored: { expected: { bytes: manifest.artifact.bytes, sha256: manifest.artifact.sha256 }, ok: false },
    ...(decode
      ? { plain: { expected: { bytes: manifest.content.bytes, sha256: manifest.content.sha256 }, ok: false } }
      : {}),
    problems: [],
  };
  const problem = (code: string, message: string) => report.problems.push({ code, message });
  try {
    assertSigned(manifest, ring, "verify");
  } catch (error) {
    // A manifest that is not vouched for says nothing about its artifact: reading it proves nothing.
    problem((error as StowageError).code, (error as Error).message);
    return report;
  }

  let raw: Readable;
  try {
    raw = await readArtifact(sink, manifest, signal);
  } catch (error) {
    if (isStowageError(error, "ABORTED")) throw error;
    problem(isStowageError(error) ? error.code : "SINK_READ_FAILED", (error as Error).message);
    return report;
  }

  const progress = new ProgressCounter(options.onProgress);
  const storedHash = new HashCounter(progress.read, sizeCap("stored", manifest));
  const plainHash = new HashCounter(progress.written, sizeCap("plain", manifest));
  const stages: Duplex[] = [storedHash];
  if (decode) {
    try {
      stages.push(
        ...(await decodersFor(manifest.transforms, keys, options.transforms, identityOf(manifest))),
        plainHash,
      );
    } catch (error) {
      raw.destroy();
      if (isStowageError(error, "ABORTED")) throw error;
      problem(isStowageError(error) ? error.code : "TRANSFORM_FAILED", (error as Error).message);
      return report;
    }
  }
  const discard = new Writable({ highWaterMark: 1 << 20, write: (_chunk, _enc, cb) => cb() });
  let streamFailed = false;
  try {
    await pipeline([raw, ...stages, discard], signal ? { signal } : {});
  } catch (error) {
    if (signal?.aborted) throw wrapError(error, "ABORTED", `verify ${key}`, { key }, signal);
    streamFailed = true;
    const wrapped = wrapError(error, decode ? "TRANSFORM_FAILED" : "SINK_READ_FAILED", `verify ${key}`, {
      key,
    });
    problem(wrapped.code, wrapped.message);
  }

  if (streamFailed && decode) {
    // A trial restore that broke read only part of the artifact. Re-read the stored bytes alone
    // to tell damage in storage (the usual cause) from a decoding problem.
    const storedOnly = await verify({ ...options, manifest, decode: false, onProgress: undefined });
    report.stored = storedOnly.stored;
    report.problems.unshift(...storedOnly.problems);
    report.ok = false;
    return report;
  }
  const storedActual = { bytes: storedHash.bytes, sha256: storedHash.digest() };
  report.stored.actual = storedActual;
  report.stored.ok =
    storedActual.bytes === manifest.artifact.bytes && storedActual.sha256 === manifest.artifact.sha256;
  // After a read or decode error the hashes cover only part of the artifact; that error is the finding.
  if (!report.stored.ok && !streamFailed) {
    problem("INTEGRITY_MISMATCH", mismatch("stored", manifest)(storedActual).message);
  }
  if (report.plain) {
    const plainActual = { bytes: plainHash.bytes, sha256: plainHash.digest() };
    report.plain.actual = plainActual;
    report.plain.ok =
      plainActual.bytes === manifest.content.bytes && plainActual.sha256 === manifest.content.sha256;
    if (!report.plain.ok && !streamFailed && report.stored.ok) {
      problem("INTEGRITY_MISMATCH", mismatch("plain", manifest)(plainActual).message);
    }
  }
  report.ok = report.problems.length === 0 && report.stored.ok && (report.plain?.ok ?? true);
  if (!streamFailed) progress.done();
  return report;
}
