/**
 * Keys as text and as fingerprints (docs/FORMAT.md, "Key text"): raw keys as hex or base64,
 * recipients and identities as bech32; fingerprints, key pairs, and the keys a reader is given.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from "node:crypto";
import type { DecryptionKey } from "../../core/types.js";
import { bech32Decode, bech32Encode } from "./bech32.js";
import { configInvalid } from "./format.js";

const KEY_ID_LABEL = Buffer.from("stowage key id v1\0", "ascii");
const X25519_ID_LABEL = Buffer.from("stowage x25519 id v1\0", "ascii");
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_X25519_PREFIX = Buffer.from("302a300506032b656e032100", "hex");
const RECIPIENT_HRP = "stowage-pub";
const IDENTITY_HRP = "stowage-secret-key-";

export function decodeKeyString(value: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, "hex");
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) {
    const bytes = Buffer.from(value, "base64");
    if (bytes.length === 32) return bytes;
  }
  return undefined;
}

export function toKeyBytes(key: Uint8Array | string): Buffer {
  const bytes = typeof key === "string" ? decodeKeyString(key) : Buffer.from(key);
  if (bytes?.length !== 32)
    throw configInvalid("key", "a raw key must be 32 bytes (or 64 hex digits, or base64)");
  return bytes;
}

export function decodeRecipient(text: string): Buffer | undefined {
  const bytes = bech32Decode(RECIPIENT_HRP, text.trim());
  return bytes?.length === 32 ? bytes : undefined;
}

export function decodeIdentity(text: string): Buffer | undefined {
  const bytes = bech32Decode(IDENTITY_HRP, text.trim());
  return bytes?.length === 32 ? bytes : undefined;
}

export const x25519PublicKey = (raw: Buffer): KeyObject =>
  createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: "der", type: "spki" });

const x25519PrivateKey = (raw: Buffer): KeyObject =>
  createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: "der", type: "pkcs8" });

export const rawPublicKey = (key: KeyObject): Buffer =>
  Buffer.from(key.export({ format: "jwk" }).x!, "base64url");

export interface Identity {
  privateKey: KeyObject;
  publicKey: Buffer;
  id: string;
}

export function parseIdentity(text: string): Identity {
  const secret = decodeIdentity(text);
  if (!secret)
    throw configInvalid("identity", "not a STOWAGE-SECRET-KEY-1… identity (bad prefix or checksum)");
  const privateKey = x25519PrivateKey(secret);
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  return { privateKey, publicKey, id: x25519Id(publicKey) };
}

// ---------------------------------------------------------------------------------------------
// Fingerprints and key pairs.

export function keyIdBytes(key: Buffer): Buffer {
  return createHash("sha256").update(KEY_ID_LABEL).update(key).digest().subarray(0, 8);
}

function x25519IdBytes(publicKey: Buffer): Buffer {
  return createHash("sha256").update(X25519_ID_LABEL).update(publicKey).digest().subarray(0, 8);
}

export const x25519Id = (publicKey: Buffer): string => x25519IdBytes(publicKey).toString("hex");

/**
 * The fingerprint of a raw key: 16 hex digits of SHA-256("stowage key id v1\0" ‖ key). It names
 * the key in headers, manifests and error messages; it does not reveal the key.
 * @throws {CONFIG_INVALID} when the key is not 32 bytes.
 */
export function keyFingerprint(key: Uint8Array | string): string {
  return keyIdBytes(toKeyBytes(key)).toString("hex");
}

/**
 * The fingerprint of an x25519 recipient: 16 hex digits of SHA-256("stowage x25519 id v1\0" ‖
 * public key). Give the public `stowage-pub1…` string, or the identity (its public half is used).
 * This is the `id` that manifests record in `recipients: [{ type: "x25519", id }]`.
 * @throws {CONFIG_INVALID} when the string is neither.
 * @example recipientFingerprint(process.env.OFFLINE_RECOVERY_RECIPIENT!) // "3f1c…"
 */
export function recipientFingerprint(recipientOrIdentity: string): string {
  const pub = decodeRecipient(recipientOrIdentity);
  if (pub) return x25519Id(pub);
  if (decodeIdentity(recipientOrIdentity)) return parseIdentity(recipientOrIdentity).id;
  throw configInvalid("recipient", "not a stowage-pub1… recipient or STOWAGE-SECRET-KEY-1… identity");
}

/** 32 random bytes, for a new raw key. Store it as `toString("base64")` in a secret store. */
export function generateKey(): Buffer {
  return randomBytes(32);
}

/** A key pair for write-only backups; see {@link generateKeyPair}. */
export interface KeyPair {
  /** Public: give it to the backup host (`aes256gcm({ recipients: [recipient] })`). `stowage-pub1…` */
  recipient: string;
  /** Secret: keep it in a secret store, away from the backup host. `STOWAGE-SECRET-KEY-1…` */
  identity: string;
  /** The recipient's fingerprint, as manifests record it. */
  id: string;
}

/**
 * A new X25519 key pair. The backup host holds only `recipient` and can write backups it cannot
 * read; restoring takes `identity` (`restore({ keys: [{ identity }] })`). Both are bech32 text
 * with a checksum, safe to paste into an environment variable or a secret store.
 * @example const { recipient, identity } = generateKeyPair();
 */
export function generateKeyPair(): KeyPair {
  const pair = generateKeyPairSync("x25519");
  const jwk = pair.privateKey.export({ format: "jwk" });
  const publicKey = Buffer.from(jwk.x!, "base64url");
  return {
    recipient: bech32Encode(RECIPIENT_HRP, publicKey),
    identity: bech32Encode(IDENTITY_HRP, Buffer.from(jwk.d!, "base64url")).toUpperCase(),
    id: x25519Id(publicKey),
  };
}

/**
 * The public recipient string of an identity, e.g. to add yourself when you rekey.
 * @throws {CONFIG_INVALID} when `identity` is not an identity string.
 */
export function identityToRecipient(identity: string): string {
  return bech32Encode(RECIPIENT_HRP, parseIdentity(identity).publicKey);
}

/** What manifests record for each recipient: a type and, except for passphrases, a fingerprint. */
export interface RecipientRecord {
  /** How this recipient opens the data key. */
  type: RecipientType;
  /** Fingerprint (16 hex digits): {@link keyFingerprint} for raw keys, {@link recipientFingerprint} for x25519. */
  id?: string;
}
/**
 * How a recipient wraps the data key: with a `raw` 32-byte key, a `passphrase` (scrypt), or an
 * `x25519` public key (whose private identity alone can open it).
 */
export type RecipientType = "raw" | "passphrase" | "x25519";

// ---------------------------------------------------------------------------------------------
// The keys a reader is given.

export interface KeyMaterial {
  raw: Array<{ key: Buffer; id: string }>;
  identities: Identity[];
  passphrases: string[];
}

export function keyMaterial(keys: readonly DecryptionKey[]): KeyMaterial {
  const material: KeyMaterial = { raw: [], identities: [], passphrases: [] };
  for (const k of keys) {
    if ("key" in k) {
      const key = toKeyBytes(k.key);
      material.raw.push({ key, id: keyIdBytes(key).toString("hex") });
    } else if ("identity" in k) {
      material.identities.push(parseIdentity(k.identity));
    } else if ("passphrase" in k) {
      material.passphrases.push(k.passphrase);
    }
  }
  return material;
}

export const givenRecords = (m: KeyMaterial): RecipientRecord[] => [
  ...m.raw.map((r) => ({ type: "raw" as const, id: r.id })),
  ...m.identities.map((i) => ({ type: "x25519" as const, id: i.id })),
  ...m.passphrases.map(() => ({ type: "passphrase" as const })),
];

export const describeRecords = (list: readonly RecipientRecord[]): string =>
  list.map((r) => (r.id ? `${r.type}:${r.id}` : r.type)).join(", ") || "none";
