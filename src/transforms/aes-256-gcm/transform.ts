/**
 * The transform itself: `aes256gcm` (format version 2), `aes256gcmV1` for tests, and what the
 * transform records in manifests (docs/FORMAT.md, "What the manifest records").
 */
import { randomBytes } from "node:crypto";
import type { Manifest, TransformRecord } from "../../core/manifest.js";
import { parseOptions } from "../../core/options.js";
import type { BackupIdentity, Transform } from "../../core/types.js";
import { aesDecoder, EncryptStream, type HeaderMaker } from "./chunks.js";
import { AES_FORMAT_VERSION, KEY_LENGTH, type ScryptParams } from "./format.js";
import { buildV1Header } from "./header-v1.js";
import { buildV2Header, v2Keys } from "./header-v2.js";
import { buildV3Header } from "./header-v3.js";
import { keyIdBytes, type RecipientRecord, type RecipientType, toKeyBytes } from "./keys.js";
import {
  type Aes256GcmOptions,
  aes256gcmOptionsSchema,
  type Recipient,
  recordOf,
  resolveRecipients,
} from "./options.js";

/**
 * AES-256-GCM encryption in independently authenticated chunks, with the per-artifact data key
 * wrapped for each recipient (format version 2, docs/FORMAT.md).
 *
 * Encrypt to public keys (`recipients: ["stowage-pub1…"]`, from {@link generateKeyPair}) and the
 * backup host can write backups it cannot read. `{ key }` and `{ passphrase }` are shorthands for
 * one raw-key or passphrase recipient. The manifest records every recipient's type and fingerprint
 * (`record.recipients`; `record.keyId` too when the only recipient is one raw key), never a key.
 *
 * Decryption takes the keys from `restore({ keys })`/`verify({ keys })`: `{ identity }` strings,
 * raw `{ key }`s (matched by fingerprint, so a keyring of old and new keys works after rotation)
 * and `{ passphrase }`s. Version-1 artifacts still decrypt.
 *
 * @default chunkSize 65536; scrypt { log2N: 15, r: 8, p: 1 }
 * @throws {CONFIG_INVALID} naming the option, e.g. a key that is not 32 bytes or a recipient
 *   string that is not a `stowage-pub1…` (the value itself is never echoed).
 * @example aes256gcm({ recipients: [process.env.BACKUP_RECIPIENT!, process.env.OFFLINE_RECOVERY_RECIPIENT!] })
 * @example aes256gcm({ key: process.env.BACKUP_KEY! }) // 64 hex digits or base64
 */
export function aes256gcm(options: Aes256GcmOptions): Transform {
  const parsed = parseOptions(aes256gcmOptionsSchema, options, "aes256gcm");
  const list: Recipient[] =
    parsed.recipients ??
    (parsed.key !== undefined ? [{ key: parsed.key }] : [{ passphrase: parsed.passphrase! }]);
  const recipients = resolveRecipients(list, parsed.scrypt);
  const records = recipients.map(recordOf);
  const log2Chunk = Math.log2(parsed.chunkSize);
  const record: TransformRecord = {
    name: "aes-256-gcm",
    role: "encryption",
    formatVersion: AES_FORMAT_VERSION,
    chunkSize: parsed.chunkSize,
    recipients: records,
    ...(recipients.length === 1 && recipients[0]!.type === "raw" ? { keyId: recipients[0]!.id } : {}),
  };
  // With the backup's identity (what `backup()` passes), version 3, bound to it; bare, version 2.
  const headerFor =
    (identity: BackupIdentity | undefined): HeaderMaker =>
    async () => {
      const dataKey = randomBytes(KEY_LENGTH);
      const header = identity
        ? await buildV3Header(dataKey, recipients, log2Chunk, identity)
        : await buildV2Header(dataKey, recipients, log2Chunk);
      return { header, payloadKey: v2Keys(dataKey).payloadKey };
    };
  return {
    ...aesDecoder,
    role: "encryption",
    extension: ".enc",
    encode: (identity?: BackupIdentity) => new EncryptStream(headerFor(identity), parsed.chunkSize),
    // A copy the caller may change; the recipients are its only nested part. (structuredClone
    // cost more than the rest of describing a backup's transforms.)
    describe: () => ({ ...record, recipients: records.map((r) => ({ ...r })) }),
  };
}

/**
 * Writes the version-1 format (one raw key or one passphrase, no recipients). Kept so that tests
 * can prove version-1 artifacts still decrypt; new backups should use {@link aes256gcm}.
 * @internal
 */
export function aes256gcmV1(options: {
  key?: Uint8Array | string;
  passphrase?: string;
  chunkSize?: number;
  scrypt?: ScryptParams;
}): Transform {
  const parsed = parseOptions(aes256gcmOptionsSchema, options, "aes256gcmV1");
  const chunkSize = parsed.chunkSize;
  const rawKey = parsed.key !== undefined ? toKeyBytes(parsed.key) : undefined;
  const makeHeader: HeaderMaker = () =>
    buildV1Header(
      rawKey ? { key: rawKey } : { passphrase: parsed.passphrase!, scrypt: parsed.scrypt },
      Math.log2(chunkSize),
    );
  const record: TransformRecord = {
    name: "aes-256-gcm",
    role: "encryption",
    formatVersion: 1,
    chunkSize,
    kdf: rawKey ? "raw" : "scrypt",
    ...(rawKey ? { keyId: keyIdBytes(rawKey).toString("hex") } : {}),
  };
  return {
    ...aesDecoder,
    role: "encryption",
    extension: ".enc",
    encode: () => new EncryptStream(makeHeader, chunkSize),
    describe: () => ({ ...record }),
  };
}

/**
 * The recipients an artifact is encrypted to, from its manifest: every `aes-256-gcm` record's
 * `recipients` (version 2), or `[{ type: "raw", id: keyId }]` / `[{ type: "passphrase" }]` for a
 * version-1 record. Empty when nothing is encrypted. Ids are fingerprints, never keys.
 * @example recipientIds(manifest).some((r) => r.id === recipientFingerprint(OFFLINE_RECIPIENT))
 */
export function recipientIds(manifest: Pick<Manifest, "transforms">): RecipientRecord[] {
  const out: RecipientRecord[] = [];
  for (const t of manifest.transforms) {
    if (t.name !== "aes-256-gcm") continue;
    const recorded = (t as { recipients?: unknown }).recipients;
    if (Array.isArray(recorded)) {
      for (const r of recorded) {
        const { type, id } = r as { type?: unknown; id?: unknown };
        if (typeof type !== "string") continue;
        out.push(
          typeof id === "string" ? { type: type as RecipientType, id } : { type: type as RecipientType },
        );
      }
    } else if (typeof t.keyId === "string") {
      out.push({ type: "raw", id: t.keyId });
    } else if (t.kdf === "scrypt") {
      out.push({ type: "passphrase" });
    }
  }
  return out;
}
