import { type Duplex, Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BlockCheck } from "./blocks.js";
import { decodersFor, keyList } from "./codecs.js";
import { isStowageError, StowageError, type StowageErrorCode, throwIfAborted, wrapError } from "./errors.js";
import { FirstFailure } from "./failure.js";
import { type Manifest, parseManifest } from "./manifest.js";
import { ProgressCounter, type ProgressListener } from "./progress.js";
import { assertSigned, verifyKeyring } from "./signing.js";
import { type ByteCap, digestError, ExpectDigest, HashCounter } from "./streams.js";
import type { BackupIdentity, Decoder, DecryptionKey, Sink } from "./types.js";

/** The backup a manifest describes, which a bound (format 3) artifact must name. */
const identityOf = (manifest: Manifest): BackupIdentity => ({ job: manifest.job, id: manifest.id });

/** Options of {@link restore}. */
export interface RestoreOptions {
  /** The sink that holds the artifact. */
  sink: Sink;
  /** The backup to restore, as `listManifests` or `backup` returned it. */
  manifest: Manifest;
  /** Keys for encrypted artifacts: raw keys (matched by fingerprint) and/or passphrases. */
  keys?: DecryptionKey | readonly DecryptionKey[];
  /** Your own transforms, or just their decoders, for manifests that name them; not the built-ins. */
  transforms?: readonly Decoder[];
  /**
   * Re-read and hash the artifact before releasing any byte. Encrypted artifacts authenticate
   * every chunk as they stream, and unencrypted ones whose manifest has `artifact.blocks` are
   * checked block by block as they stream (nothing of a block is released before it matches), so
   * this defaults to on only for unencrypted artifacts without blocks (manifests written before
   * blocks existed), whose corruption would otherwise be found only at the end.
   * @default true when the manifest has neither an encryption transform nor `artifact.blocks`
   */
  verifyFirst?: boolean;
  /**
   * Public keys (`stowage-verify1:…`) that may have signed the manifest. With them, an unsigned
   * manifest or one whose signature does not check is refused before the artifact is read.
   * @default no signature check
   */
  verifyKeys?: string | readonly string[];
  /** Aborts the restore; the stream then fails with code `ABORTED`. */
  signal?: AbortSignal;
  /**
   * Progress, as `backup` reports it: `bytesRead` stored bytes read from the sink, `bytesWritten`
   * plain bytes released on the stream (`manifest.artifact.bytes` and `manifest.content.bytes`
   * are the totals). `done` comes once the last byte is out and checked.
   */
  onProgress?: ProgressListener;
}

const mismatch =
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
const sizeCap = (which: "stored" | "plain", manifest: Manifest): ByteCap => {
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

const sameDigest = (a: { bytes: number; sha256: string }, b: { bytes: number; sha256: string }) =>
  a.bytes === b.bytes && a.sha256 === b.sha256;

/** Verify's findings that say the artifact could not be read, not that it is damaged. */
const READ_PROBLEMS: ReadonlySet<string> = new Set(["NOT_FOUND", "OBJECT_ARCHIVED", "SINK_READ_FAILED"]);

/** The manifest of each stream {@link restore} returned, so a consumer can learn its sizes. */
const restoredFrom = new WeakMap<Readable, Manifest>();

/**
 * The manifest a stream returned by {@link restore} comes from, or `undefined` for any other
 * stream. `extractTar` uses it to default its byte limit to the declared plain size.
 */
export function restoredManifest(stream: Readable): Manifest | undefined {
  return restoredFrom.get(stream);
}

/**
 * The plain bytes of a backup: reads the artifact and undoes the manifest's transforms, last
 * first, checking the stored and plain SHA-256 and sizes as they stream. A mismatch or failed
 * authentication errors the stream (`INTEGRITY_MISMATCH`, `DECRYPT_FAILED`); destroying the
 * returned stream releases the sink's read. Sizes are enforced while streaming: the stream fails
 * as soon as the stored bytes pass `artifact.bytes` or the plain bytes pass `content.bytes`
 * (`INTEGRITY_MISMATCH`, `details.reason: "too-long"`), before the excess is released, so a
 * decompression bomb cannot fill a disk. The stream carries its manifest (see
 * {@link restoredManifest}), and `extractTar` limits itself to the declared plain size.
 *
 * @throws {NOT_FOUND} the artifact is missing. {@link StowageError} codes arrive on the stream too.
 * @throws {MANIFEST_INVALID} a manifest that does not parse, e.g. an unsafe `artifact.key`.
 * @throws {CONFIG_INVALID} a `keys` entry of the wrong shape (a bare string or Buffer), named
 *   `keys[i]` and never quoted.
 * @throws {INTEGRITY_MISMATCH} with `verifyFirst`, before any byte is released.
 * @example
 * await pipeline(await restore({ sink, manifest, keys: [{ key }] }), createWriteStream("db.sql"));
 */
export async function restore(options: RestoreOptions): Promise<Readable> {
  const manifest = parseManifest(options.manifest, "restore: manifest");
  const { sink, signal } = options;
  const keys = keyList(options.keys, "restore");
  assertSigned(manifest, verifyKeyring(options.verifyKeys), "restore");
  const encrypted = manifest.transforms.some((t) => t.role === "encryption");
  throwIfAborted(signal, "restore");

  const blocks = encrypted ? undefined : manifest.artifact.blocks;
  // Each byte is hashed once where the hashes would cover the same bytes. With `blocks`, every
  // stored byte is checked against the manifest's block digests before it is released, and those
  // digests come from the same manifest as `artifact.sha256` (signed with it, when signed): a whole-
  // artifact SHA-256 on top proves nothing more, so the stored bytes are only counted and capped.
  // With no transforms too, the plain bytes are the stored bytes, and the manifest must say so.
  const checkedByBlock = blocks !== undefined;
  const plainIsStored = checkedByBlock && manifest.transforms.length === 0;
  if (plainIsStored && !sameDigest(manifest.content, manifest.artifact)) {
    throw mismatch("plain", manifest)({ bytes: manifest.artifact.bytes, sha256: manifest.artifact.sha256 });
  }
  if (options.verifyFirst ?? (!encrypted && !blocks)) {
    const report = await verify({
      sink,
      manifest,
      ...(signal ? { signal } : {}),
      ...(options.verifyKeys ? { verifyKeys: options.verifyKeys } : {}),
      decode: false,
    });
    if (!report.ok) {
      const problem = report.problems[0]!;
      throw new StowageError(
        // A read that failed keeps its code (an archived artifact needs a restore request; wrong
        // credentials or a cut connection are no damage to the backup); only bytes that do not
        // match the manifest are INTEGRITY_MISMATCH.
        READ_PROBLEMS.has(problem.code) ? (problem.code as StowageErrorCode) : "INTEGRITY_MISMATCH",
        `restore: ${problem.message}`,
        { details: { key: manifest.artifact.key, report } },
      );
    }
  }

  const decoders = await decodersFor(manifest.transforms, keys, options.transforms, identityOf(manifest));
  const raw = await readArtifact(sink, manifest, signal);
  const failure = new FirstFailure();
  const key = manifest.artifact.key;
  failure.watch(raw, "SINK_READ_FAILED", `restore: reading ${key} failed`);
  for (const [i, decoder] of decoders.entries()) {
    const name = manifest.transforms.at(-1 - i)?.name;
    failure.watch(decoder, "TRANSFORM_FAILED", `restore: decoding ${key} (${name}) failed`);
  }
  // The stored digest is settled at the very end, once the decoders have seen every chunk.
  const progress = new ProgressCounter(options.onProgress);
  const storedHash = new HashCounter(progress.read, sizeCap("stored", manifest), !checkedByBlock);
  const plainCheck = new ExpectDigest(
    manifest.content,
    mismatch("plain", manifest),
    () => digestError(storedHash, manifest.artifact, mismatch("stored", manifest)),
    sizeCap("plain", manifest),
    !plainIsStored,
  );
  const blockCheck = blocks ? [new BlockCheck(blocks, key)] : [];
  const flowing = pipeline(
    [raw, storedHash, ...blockCheck, ...decoders, plainCheck],
    signal ? { signal } : {},
  );
  flowing.catch(() => undefined); // the error is surfaced through the generator below

  async function* plaintext(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of plainCheck) {
        yield chunk as Buffer;
        progress.written(plainCheck.bytes);
      }
      await flowing;
      progress.done();
    } catch (error) {
      throw failure.toError({ code: "RESTORE_FAILED", what: `restore: ${key}`, error }, { key }, signal);
    }
  }
  const stream = Readable.from(plaintext(), { objectMode: false, highWaterMark: 1 << 20 });
  restoredFrom.set(stream, manifest);
  return stream;
}

async function readArtifact(sink: Sink, manifest: Manifest, signal?: AbortSignal): Promise<Readable> {
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
