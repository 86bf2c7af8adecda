import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BlockCheck } from "./blocks.js";
import { decodersFor, keyList } from "./codecs.js";
import { StowageError, type StowageErrorCode, throwIfAborted } from "./errors.js";
import { FirstFailure } from "./failure.js";
import { type Manifest, parseManifest } from "./manifest.js";
import { ProgressCounter, type ProgressListener } from "./progress.js";
import { identityOf, mismatch, READ_PROBLEMS, readArtifact, sameDigest, sizeCap } from "./restore-read.js";
import { verify } from "./restore-verify.js";
import { assertSigned, verifyKeyring } from "./signing.js";
import { digestError, ExpectDigest, HashCounter } from "./streams.js";
import type { Decoder, DecryptionKey, Sink } from "./types.js";

export { type DigestCheck, type VerifyOptions, type VerifyReport, verify } from "./restore-verify.js";

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

/**
 * Whether every stored byte reaches the built-in AES-256-GCM decryptor first, which authenticates
 * all of them before any is released: the header by its MAC (every version has one, keyed by the
 * data key), each chunk by its tag, with its index and the last-chunk flag in its nonce, so bytes
 * changed, cut, reordered or appended fail there (`DECRYPT_FAILED`). A SHA-256 of the stored bytes
 * on top releases nothing later and catches nothing more that matters to a restore: another
 * artifact sealed under the same key is refused by a version-3 header's identity, and in any case
 * by the plain SHA-256 and size, which are still checked. So such a restore only counts and caps
 * the stored bytes. `verify` still hashes them: there, matching the manifest is the question asked,
 * and without keys it is the only check there is. A caller's own "aes-256-gcm" decoder is not ours.
 */
function authenticatedFirst(manifest: Manifest, own: readonly Decoder[] = []): boolean {
  const outer = manifest.transforms.at(-1);
  return (
    outer?.name === "aes-256-gcm" && outer.role === "encryption" && !own.some((d) => d.name === outer.name)
  );
}

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
  const storedHash = new HashCounter(
    progress.read,
    sizeCap("stored", manifest),
    !checkedByBlock && !authenticatedFirst(manifest, options.transforms),
  );
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
  flowing.catch(() => undefined); // the error is surfaced on the returned stream (see released)

  const stream = released(plainCheck, flowing, {
    written: () => progress.written(plainCheck.bytes),
    done: () => progress.done(),
    failed: (error) =>
      failure.toError({ code: "RESTORE_FAILED", what: `restore: ${key}`, error }, { key }, signal),
  });
  restoredFrom.set(stream, manifest);
  return stream;
}

/**
 * The stream {@link restore} returns: the last stage's chunks as they come, one push each, paused
 * while the consumer is full. Read in flowing mode on purpose: an async iterator (`for await`)
 * takes everything buffered at once, and joining those chunks costs a copy of every byte and one
 * more buffer for the collector. The pipeline's failure becomes this stream's error, as a
 * {@link StowageError}; destroying this stream tears the pipeline (and the sink's read) down.
 */
function released(
  last: Readable,
  flowing: Promise<void>,
  on: { written(): void; done(): void; failed(error: unknown): Error },
): Readable {
  const out = new Readable({
    highWaterMark: 1 << 20,
    read() {
      last.resume();
    },
    destroy(error, callback) {
      last.destroy();
      callback(error);
    },
  });
  last.on("data", (chunk: Buffer) => {
    if (!out.push(chunk)) last.pause();
    on.written();
  });
  // The pipeline settles when the last stage has flushed, which may be before its last chunks
  // have been taken from it: the end waits for both.
  const ended = new Promise<void>((resolve) => last.once("end", resolve));
  flowing
    .then(() => ended)
    .then(
      () => {
        on.done();
        out.push(null);
      },
      (error: unknown) => out.destroy(on.failed(error)),
    );
  return out;
}
