/**
 * `rekey`: the same backup for a new set of recipients. A new version-2 header goes in front of the
 * artifact's chunks, which depend on the data key alone (docs/FORMAT.md, "Version 2"), or the
 * chunks are re-sealed under a new data key; either way the content does not change.
 */

import type { Readable } from "node:stream";
import type { z } from "zod";
import { linkSignal } from "../../core/abort.js";
import { writeSignedManifest } from "../../core/chain.js";
import { keyList } from "../../core/codecs.js";
import { StowageError, throwIfAborted, wrapError } from "../../core/errors.js";
import { FirstFailure, transfer } from "../../core/failure.js";
import { artifactKey, assertSafeKey, newBackupId } from "../../core/keys.js";
import { type Manifest, manifestKeyFor, parseManifest, type TransformRecord } from "../../core/manifest.js";
import { lazySchema, parseOptions, signalSchema, sinkSchema } from "../../core/options.js";
import { ProgressCounter, type ProgressListener } from "../../core/progress.js";
import { signerFrom } from "../../core/signing.js";
import { ExpectDigest, HashCounter } from "../../core/streams.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { DecryptionKey, Sink } from "../../core/types.js";
import { createRekeyStream, type HeaderInfo } from "./chunks.js";
import { AES_FORMAT_VERSION } from "./format.js";
import { parseRecipients, type Recipient } from "./options.js";

/** The zod schema of {@link RekeyOptions}, which parses the options at the boundary. */
export const rekeyOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      /** The backup to rekey; parsed with the manifest schema. */
      manifest: z.unknown(),
      /** Keys that open the artifact now: `{ identity }`, `{ key }` or `{ passphrase }`. */
      identities: z.union([
        z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null),
        z.array(z.custom<DecryptionKey>((v) => typeof v === "object" && v !== null)).min(1),
      ]),
      /** Everyone who may decrypt the new artifact, as for `aes256gcm({ recipients })`. */
      recipients: z.array(z.unknown()).min(1, "give at least one recipient"),
      /** scrypt cost for passphrase recipients. @default { log2N: 15, r: 8, p: 1 } */
      scrypt: z.object({ log2N: z.number(), r: z.number(), p: z.number() }).strict().optional(),
      /**
       * Also draw a fresh data key and re-encrypt every chunk (the ciphertext changes). Without it
       * only the header changes, so a removed recipient who kept the old data key could still read
       * the new artifact's bytes; with it, not even that. Version-1 artifacts are always re-encrypted.
       * @default false
       */
      reencrypt: z.boolean().default(false),
      /**
       * Keep the old artifact and manifest. By default they are deleted once the new ones are
       * committed (and the new artifact's size checked), so a removed recipient loses access and
       * listings do not show the backup twice. Sinks that cannot delete always keep them.
       * @default false
       */
      keepOld: z.boolean().default(false),
      /**
       * Signs the new manifest (`generateSigningKey()`); it keeps the old one's `previous`, since it
       * stands in for the same backup. Without it the new manifest is unsigned: its artifact, id and
       * recipients change, so an old signature could not hold. @default unsigned
       */
      signingKey: z.string().optional(),
      signal: signalSchema.optional(),
      onProgress: z
        .custom<ProgressListener>((v) => typeof v === "function", "expected a function")
        .optional(),
    })
    .strict(),
);
/** Options of {@link rekey}. */
export interface RekeyOptions {
  /** The sink that holds the backup; the new artifact and manifest are written there too. */
  sink: Sink;
  /** The backup to rekey (from `listManifests` or `readManifest`). */
  manifest: Manifest;
  /** Keys that open the artifact now: `{ identity }`, `{ key }` or `{ passphrase }`. */
  identities: DecryptionKey | readonly DecryptionKey[];
  /** Everyone who may decrypt the new artifact, as for `aes256gcm({ recipients })`. */
  recipients: readonly Recipient[];
  /** scrypt cost for passphrase recipients. @default { log2N: 15, r: 8, p: 1 } */
  scrypt?: {
    /** log2 of scrypt's cost N (10-20). */
    log2N: number;
    /** scrypt's block size r (1-32). */
    r: number;
    /** scrypt's parallelism p (1-16); N·r ≤ 2^22 and N·r·p ≤ 2^24. */
    p: number;
  };
  /**
   * Also draw a fresh data key and re-encrypt every chunk (the ciphertext changes). Without it
   * only the header changes. Version-1 artifacts are always re-encrypted. @default false
   */
  reencrypt?: boolean;
  /** Keep the old artifact and manifest instead of deleting them once the new ones are committed. @default false */
  keepOld?: boolean;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
  /**
   * Signs the new manifest (`generateSigningKey()`); it keeps the old one's `previous`, since it
   * stands in for the same backup. Without it the new manifest is unsigned: its artifact, id and
   * recipients change, so an old signature could not hold. @default unsigned
   */
  signingKey?: string;
  /**
   * Progress, as `backup` reports it: `bytesRead` bytes of the old artifact read, `bytesWritten`
   * bytes of the new one handed to the sink. `done` comes once the new manifest is written.
   */
  onProgress?: ProgressListener;
}
// The schema takes `manifest`, `identities` and `recipients` loosely and checks them itself (they
// are typed here as a caller holds them, read-only arrays included); the rest agree exactly.
type Checked = "manifest" | "identities" | "recipients";
type _RekeyOptionsAgrees = Assert<
  Agrees<Omit<RekeyOptions, Checked>, Omit<z.input<typeof rekeyOptionsSchema>, Checked>>
>;
type _RekeyOptionsKeys = Assert<Agrees<keyof RekeyOptions, keyof z.input<typeof rekeyOptionsSchema>>>;

/**
 * Re-encrypts a backup for a new set of recipients without touching its content: rewraps the
 * artifact's data key in a new header and copies the encrypted chunks unchanged (each is
 * authenticated on the way), writes the result as a new artifact with a new manifest (new key and
 * id, new stored SHA-256; same content SHA-256, same times), and only then removes the old
 * artifact and manifest (unless `keepOld`). A failure at any byte leaves the sink as it was.
 *
 * The new id keeps the old backup's time (so retention and RPO see the same age) with a new
 * random suffix; the new aes-256-gcm record names the new recipients and `rekeyedFrom` (the old id).
 * The encryption must be the last transform (it is, with `[gzip(), aes256gcm(...)]`).
 *
 * @returns the new manifest.
 * @throws {CONFIG_INVALID} bad options or recipients (named, never echoed).
 * @throws {UNSUPPORTED} the manifest has no aes-256-gcm stage, or not as its last transform.
 * @throws {DECRYPT_FAILED} no identity opens the artifact (the message names its recipients), or a
 *   chunk fails authentication. `INTEGRITY_MISMATCH` when the stored bytes differ from the manifest.
 * @throws {SINK_READ_FAILED | SINK_WRITE_FAILED | NOT_FOUND | ABORTED}
 * @throws {SINK_DELETE_FAILED} the new backup was committed but the old one could not be removed
 *   (e.g. an object lock); `details.newManifest` is the new manifest.
 * @example
 * const next = await rekey({ sink, manifest, identities: [{ identity: OLD_IDENTITY }],
 *   recipients: [newPair.recipient, OFFLINE_RECOVERY_RECIPIENT] });
 */
export async function rekey(options: RekeyOptions): Promise<Manifest> {
  const opts = parseOptions(rekeyOptionsSchema, options, "rekey");
  const { sink, signal } = opts;
  const manifest = parseManifest(opts.manifest, "rekey: manifest");
  const { recipients, records } = parseRecipients(opts.recipients as Recipient[], opts.scrypt);
  const keys = keyList(opts.identities as DecryptionKey | DecryptionKey[], "rekey", "identities");
  const signer = opts.signingKey === undefined ? undefined : signerFrom(opts.signingKey);
  const old = manifest.artifact.key;
  const progress = new ProgressCounter(opts.onProgress);

  const aesAt = manifest.transforms.findIndex((t) => t.name === "aes-256-gcm");
  if (aesAt < 0 || aesAt !== manifest.transforms.length - 1) {
    throw new StowageError(
      "UNSUPPORTED",
      `rekey: ${old} ${aesAt < 0 ? "is not encrypted with aes-256-gcm" : "has transforms after aes-256-gcm"}`,
      { details: { key: old, transforms: manifest.transforms.map((t) => t.name) } },
    );
  }
  throwIfAborted(signal, "rekey");

  const id = newBackupId(new Date(manifest.startedAt));
  const idAt = old.lastIndexOf(manifest.id);
  const extension = idAt >= 0 ? old.slice(idAt + manifest.id.length) : ".enc";
  const key = artifactKey(manifest.job, id, extension);
  assertSafeKey(key, "rekey");
  const details = { key: old, newKey: key };

  const controller = linkSignal(signal);
  try {
    let raw: Readable;
    try {
      raw = await sink.read(old, { signal: controller.signal });
    } catch (error) {
      throw wrapError(error, "SINK_READ_FAILED", `rekey: reading ${old} from ${sink.kind}`, details, signal);
    }

    let header: HeaderInfo | undefined;
    const failure = new FirstFailure();
    const storedCheck = new ExpectDigest(
      manifest.artifact,
      (actual) =>
        new StowageError("INTEGRITY_MISMATCH", `rekey: ${old}: stored bytes do not match the manifest`, {
          details: {
            ...details,
            expected: { bytes: manifest.artifact.bytes, sha256: manifest.artifact.sha256 },
            actual,
          },
        }),
    );
    const rekeying = createRekeyStream({
      keys,
      recipients,
      reencrypt: opts.reencrypt,
      onHeader: (info) => {
        header = info;
      },
      from: {
        identity: { job: manifest.job, id: manifest.id },
        recordVersion: manifest.transforms[aesAt]!.formatVersion,
      },
      identity: { job: manifest.job, id },
    });
    const written = new HashCounter(progress.written);
    failure.watch(raw, "SINK_READ_FAILED", `rekey: reading ${old} failed`);
    failure.watch(storedCheck, "INTEGRITY_MISMATCH", `rekey: ${old}`);
    failure.watch(rekeying, "DECRYPT_FAILED", `rekey: ${old}`);

    const storageClass =
      manifest.artifact.storageClass &&
      sink.capabilities.storageClasses?.includes(manifest.artifact.storageClass)
        ? manifest.artifact.storageClass
        : undefined;
    const wrote = await transfer({
      streams: [raw, ...progress.meter("read"), storedCheck, rekeying, written],
      sink,
      key,
      write: {
        signal: controller.signal,
        contentType: "application/octet-stream",
        ...(storageClass ? { storageClass } : {}),
      },
      failure,
      writing: `rekey: ${sink.kind} sink failed writing ${key}`,
      unclaimed: { code: "SINK_WRITE_FAILED", what: `rekey: ${old}` },
      details,
      signal,
    });

    const previous = manifest.transforms[aesAt]!;
    const record: TransformRecord = {
      name: "aes-256-gcm",
      role: "encryption",
      formatVersion: AES_FORMAT_VERSION,
      chunkSize: header?.chunkSize ?? previous.chunkSize,
      recipients: records,
      ...(records.length === 1 && records[0]!.type === "raw" ? { keyId: records[0]!.id } : {}),
      rekeyedFrom: manifest.id,
    };
    const { signature: _signature, ...unsigned } = manifest;
    const next: Manifest = {
      ...unsigned,
      id,
      artifact: {
        sink: sink.kind,
        key,
        location: wrote.location,
        bytes: written.bytes,
        sha256: written.digest(),
        ...((wrote.storageClass ?? storageClass) ? { storageClass: wrote.storageClass ?? storageClass } : {}),
      },
      transforms: [...manifest.transforms.slice(0, aesAt), record],
    };

    const stored = await writeSignedManifest(sink, next, signer, {
      signal: controller.signal,
      what: `rekey of ${key}`,
      details,
      keepPrevious: true,
    });

    if (!opts.keepOld && sink.capabilities.delete) {
      // The new backup is committed; check it is there whole before the old one goes.
      const info = await sink.stat(key, { signal: controller.signal }).catch(() => undefined);
      if (info?.size === stored.artifact.bytes) {
        try {
          // Manifest first: a manifest must never point at a missing artifact.
          await sink.delete([manifestKeyFor(old)], { signal: controller.signal });
          await sink.delete([old], { signal: controller.signal });
        } catch (error) {
          throw wrapError(
            error,
            "SINK_DELETE_FAILED",
            `rekey: ${key} was written, but deleting the old ${old} failed`,
            { ...details, newManifest: stored },
            signal,
          );
        }
      }
    }
    progress.done();
    return stored;
  } finally {
    controller.dispose();
  }
}
