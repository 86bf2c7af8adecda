/**
 * Chunked, streaming AES-256-GCM with envelope encryption. The byte layout is specified in
 * docs/FORMAT.md; keep the two in step. Summary:
 *
 * Version 2 (written): a fresh random 32-byte data key per artifact, wrapped once per recipient.
 *
 *   header:  "STOWAGE" | 2 | log2(chunk) | stanza count | header length (u16 BE) |
 *            stanzas (type | length u16 BE | body) | HMAC-SHA256(headerKey, everything before)
 *   stanzas: raw        keyId(8) | salt(16) | wrap    wrapKey = HKDF(key, salt, "stowage v2 raw")
 *            passphrase salt(16) | log2N | r | p | wrap           wrapKey = scrypt(passphrase, salt)
 *            x25519     id(8) | ephemeral(32) | wrap  wrapKey = HKDF(X25519(e, R), E ‖ R, "stowage v2 x25519")
 *            (wrap = AES-256-GCM(wrapKey, zero nonce, dataKey) ‖ tag: 48 bytes)
 *   headerKey / payloadKey = HKDF-SHA256(dataKey, no salt, "stowage v2 header" / "stowage v2 payload")
 *
 * Version 1 (read; written only by {@link aes256gcmV1}): one key per artifact.
 *
 *   header (56 bytes): "STOWAGE" | 1 | kdf | log2(chunk) | scrypt log2N,r,p | 3 zero |
 *                      salt(16) | keyId(8) | HMAC-SHA256(headerKey, bytes 0..39)[0..16]
 *
 * Both: chunks are AES-256-GCM(payloadKey, nonce = counter(11 bytes BE) | last(1)) ‖ tag(16).
 * The last-chunk flag in the nonce makes truncation at a chunk boundary fail; the counter makes
 * reordering fail; each chunk's plaintext is released only after its tag has been checked.
 *
 * In version 2 the chunks depend on the data key alone, not on the header, so `rekey` can write a
 * new header for new recipients in front of the old chunk bytes without re-encrypting them.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  randomBytes,
  scrypt,
  timingSafeEqual,
} from "node:crypto";
import { Transform as NodeTransform, type TransformCallback } from "node:stream";
import { z } from "zod";
import { StowageError } from "../core/errors.js";
import type { Manifest, TransformRecord } from "../core/manifest.js";
import { bytesSchema, parseOptions } from "../core/options.js";
import type { DecodeContext, Decoder, DecryptionKey, Transform } from "../core/types.js";

const MAGIC = Buffer.from("STOWAGE", "ascii");
/** The format version this build writes. It reads 1 and 2. */
export const AES_FORMAT_VERSION = 2;
const TAG_LENGTH = 16;
const KEY_LENGTH = 32;
const WRAPPED_LENGTH = KEY_LENGTH + TAG_LENGTH;
const ZERO_NONCE = Buffer.alloc(12);

// Version 1.
const V1_HEADER_LENGTH = 56;
const V1_MAC_OFFSET = 40;
const KDF_RAW = 1;
const KDF_SCRYPT = 2;

// Version 2.
const V2_FIXED_LENGTH = 12;
const V2_MAC_LENGTH = 32;
const STANZA_RAW = 1;
const STANZA_PASSPHRASE = 2;
const STANZA_X25519 = 3;
const STANZA_BODY_LENGTH: Record<number, number> = {
  [STANZA_RAW]: 8 + 16 + WRAPPED_LENGTH,
  [STANZA_PASSPHRASE]: 16 + 3 + WRAPPED_LENGTH,
  [STANZA_X25519]: 8 + 32 + WRAPPED_LENGTH,
};
const STANZA_TYPE_NAME: Record<number, RecipientType> = {
  [STANZA_RAW]: "raw",
  [STANZA_PASSPHRASE]: "passphrase",
  [STANZA_X25519]: "x25519",
};

const KEY_ID_LABEL = Buffer.from("stowage key id v1\0", "ascii");
const X25519_ID_LABEL = Buffer.from("stowage x25519 id v1\0", "ascii");
const PKCS8_X25519_PREFIX = Buffer.from("302e020100300506032b656e04220420", "hex");
const SPKI_X25519_PREFIX = Buffer.from("302a300506032b656e032100", "hex");
const RECIPIENT_HRP = "stowage-pub";
const IDENTITY_HRP = "stowage-secret-key-";

/**
 * Bounds a header may ask for, so a hostile header cannot make the reader allocate gigabytes or
 * spin for minutes. scrypt memory is 128·N·r bytes (N·r ≤ 2^22: 512 MiB); work is N·r·p.
 */
export const AES_LIMITS = {
  log2Chunk: [10, 24],
  log2N: [10, 20],
  r: [1, 32],
  p: [1, 16],
  /** N·r at most 2^22 (512 MiB of scrypt memory). */
  log2MemoryNr: 22,
  /** N·r·p at most 2^24 (64× the default cost). */
  log2WorkNrp: 24,
  /** Recipient stanzas in one header. */
  stanzas: 32,
  /** Passphrase stanzas in one header (each costs one scrypt per passphrase tried). */
  passphraseStanzas: 4,
  /** Bytes of a version-2 header, stanzas and MAC included. */
  headerBytes: 8192,
  /** Bytes of one stanza body. */
  stanzaBytes: 1024,
} as const;

// ---------------------------------------------------------------------------------------------
// Text encodings: keys as hex/base64, recipients and identities as bech32 (BIP 173).

const BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32_GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function bech32Polymod(values: readonly number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= BECH32_GENERATOR[i]!;
  }
  return chk >>> 0;
}

function bech32HrpExpand(hrp: string): number[] {
  const codes = [...hrp].map((c) => c.charCodeAt(0));
  return [...codes.map((c) => c >> 5), 0, ...codes.map((c) => c & 31)];
}

function convertBits(data: Iterable<number>, from: number, to: number, pad: boolean): number[] | undefined {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const maxv = (1 << to) - 1;
  for (const value of data) {
    acc = (acc << from) | value;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >> bits) & maxv);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & maxv);
  } else if (bits >= from || ((acc << (to - bits)) & maxv) !== 0) {
    return undefined;
  }
  return out;
}

function bech32Encode(hrp: string, bytes: Buffer): string {
  const data = convertBits(bytes, 8, 5, true)!;
  const mod = bech32Polymod([...bech32HrpExpand(hrp), ...data, 0, 0, 0, 0, 0, 0]) ^ 1;
  const checksum = [0, 1, 2, 3, 4, 5].map((i) => (mod >>> (5 * (5 - i))) & 31);
  return `${hrp}1${[...data, ...checksum].map((d) => BECH32_CHARSET[d]).join("")}`;
}

/** The bytes of a bech32 string with the given prefix, or undefined (bad checksum, case, prefix). */
function bech32Decode(hrp: string, text: string): Buffer | undefined {
  if (text !== text.toLowerCase() && text !== text.toUpperCase()) return undefined;
  const lower = text.toLowerCase();
  if (lower.length > 90 || !lower.startsWith(`${hrp}1`)) return undefined;
  const data: number[] = [];
  for (const c of lower.slice(hrp.length + 1)) {
    const v = BECH32_CHARSET.indexOf(c);
    if (v < 0) return undefined;
    data.push(v);
  }
  if (data.length < 6 || bech32Polymod([...bech32HrpExpand(hrp), ...data]) !== 1) return undefined;
  const bytes = convertBits(data.slice(0, -6), 5, 8, false);
  return bytes ? Buffer.from(bytes) : undefined;
}

function decodeKeyString(value: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, "hex");
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) {
    const bytes = Buffer.from(value, "base64");
    if (bytes.length === 32) return bytes;
  }
  return undefined;
}

function configInvalid(option: string, problem: string): StowageError {
  return new StowageError("CONFIG_INVALID", `${option}: ${problem}`, {
    details: { issues: [{ option, problem }] },
  });
}

function toKeyBytes(key: Uint8Array | string): Buffer {
  const bytes = typeof key === "string" ? decodeKeyString(key) : Buffer.from(key);
  if (bytes?.length !== 32)
    throw configInvalid("key", "a raw key must be 32 bytes (or 64 hex digits, or base64)");
  return bytes;
}

function decodeRecipient(text: string): Buffer | undefined {
  const bytes = bech32Decode(RECIPIENT_HRP, text.trim());
  return bytes?.length === 32 ? bytes : undefined;
}

function decodeIdentity(text: string): Buffer | undefined {
  const bytes = bech32Decode(IDENTITY_HRP, text.trim());
  return bytes?.length === 32 ? bytes : undefined;
}

const x25519PublicKey = (raw: Buffer): KeyObject =>
  createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: "der", type: "spki" });

const x25519PrivateKey = (raw: Buffer): KeyObject =>
  createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: "der", type: "pkcs8" });

const rawPublicKey = (key: KeyObject): Buffer => Buffer.from(key.export({ format: "jwk" }).x!, "base64url");

interface Identity {
  privateKey: KeyObject;
  publicKey: Buffer;
  id: string;
}

function parseIdentity(text: string): Identity {
  const secret = decodeIdentity(text);
  if (!secret)
    throw configInvalid("identity", "not a STOWAGE-SECRET-KEY-1… identity (bad prefix or checksum)");
  const privateKey = x25519PrivateKey(secret);
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  return { privateKey, publicKey, id: x25519Id(publicKey) };
}

// ---------------------------------------------------------------------------------------------
// Fingerprints and key pairs.

function keyIdBytes(key: Buffer): Buffer {
  return createHash("sha256").update(KEY_ID_LABEL).update(key).digest().subarray(0, 8);
}

function x25519IdBytes(publicKey: Buffer): Buffer {
  return createHash("sha256").update(X25519_ID_LABEL).update(publicKey).digest().subarray(0, 8);
}

const x25519Id = (publicKey: Buffer): string => x25519IdBytes(publicKey).toString("hex");

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

// ---------------------------------------------------------------------------------------------
// scrypt, bounded.

interface ScryptParams {
  log2N: number;
  r: number;
  p: number;
}

const inRange = (v: number, [lo, hi]: readonly [number, number]) => Number.isInteger(v) && v >= lo && v <= hi;

/** Whether scrypt parameters are within {@link AES_LIMITS} (each, plus memory and work). */
export function scryptWithinLimits(s: ScryptParams): boolean {
  return (
    inRange(s.log2N, AES_LIMITS.log2N) &&
    inRange(s.r, AES_LIMITS.r) &&
    inRange(s.p, AES_LIMITS.p) &&
    2 ** s.log2N * s.r <= 2 ** AES_LIMITS.log2MemoryNr &&
    2 ** s.log2N * s.r * s.p <= 2 ** AES_LIMITS.log2WorkNrp
  );
}

function scryptAsync(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  const N = 2 ** params.log2N;
  return new Promise((resolve, reject) => {
    scrypt(
      passphrase,
      salt,
      32,
      { N, r: params.r, p: params.p, maxmem: 256 * N * params.r + (1 << 20) },
      (e, k) => (e ? reject(e) : resolve(k)),
    );
  });
}

const hkdf = (ikm: Buffer, salt: Buffer, info: string): Buffer =>
  Buffer.from(hkdfSync("sha256", ikm, salt, info, 32));

const NO_SALT = Buffer.alloc(0);

// ---------------------------------------------------------------------------------------------
// Options.

const keyInputSchema = z.union([
  bytesSchema.refine((k) => k.length === 32, "a raw key must be 32 bytes"),
  z
    .string()
    .refine(
      (s) => decodeKeyString(s) !== undefined,
      "a key string must be 64 hex digits or base64 of 32 bytes",
    ),
]);

const passphraseSchema = z.string().min(8, "a passphrase needs at least 8 characters");

const recipientSchema = z.union([
  z.string().refine((s) => decodeRecipient(s) !== undefined, {
    message:
      "an x25519 recipient is a stowage-pub1… string (from generateKeyPair().recipient); never pass the secret identity here",
  }),
  z.object({ passphrase: passphraseSchema }).strict(),
  z.object({ key: keyInputSchema }).strict(),
]);
/** One recipient: an x25519 `stowage-pub1…` string, `{ passphrase }` or `{ key }` (32 bytes). */
export type Recipient = z.input<typeof recipientSchema>;

const recipientsSchema = z
  .array(recipientSchema)
  .min(1, "give at least one recipient")
  .max(AES_LIMITS.stanzas, `at most ${AES_LIMITS.stanzas} recipients`)
  .refine(
    (list) =>
      list.filter((r) => typeof r === "object" && "passphrase" in r).length <= AES_LIMITS.passphraseStanzas,
    `at most ${AES_LIMITS.passphraseStanzas} passphrase recipients`,
  );

const scryptSchema = z
  .object({
    log2N: z.number().int().min(AES_LIMITS.log2N[0]).max(AES_LIMITS.log2N[1]),
    r: z.number().int().min(AES_LIMITS.r[0]).max(AES_LIMITS.r[1]),
    p: z.number().int().min(AES_LIMITS.p[0]).max(AES_LIMITS.p[1]),
  })
  .strict()
  .refine(scryptWithinLimits, "scrypt memory (N·r ≤ 2^22) or work (N·r·p ≤ 2^24) too large");

const chunkSizeSchema = z
  .number()
  .int()
  .refine(
    (n) => Number.isInteger(Math.log2(n)) && n >= 1 << 10 && n <= 1 << 24,
    "a power of two, 1 KiB-16 MiB",
  );

export const aes256gcmOptionsSchema = z
  .object({
    /** A 32-byte key, as bytes, 64 hex digits or base64. Give this, `passphrase` or `recipients`. */
    key: keyInputSchema.optional(),
    /** A passphrase, stretched with scrypt and a per-artifact salt. */
    passphrase: passphraseSchema.optional(),
    /**
     * Everyone who may decrypt: x25519 `stowage-pub1…` strings (public keys: the backup host can
     * then write backups it cannot read), `{ passphrase }` and `{ key }`. Each decrypts alone.
     */
    recipients: recipientsSchema.optional(),
    /** Plaintext bytes per authenticated chunk, a power of two from 1 KiB to 16 MiB. @default 65536 */
    chunkSize: chunkSizeSchema.default(1 << 16),
    /** scrypt cost for passphrases. @default { log2N: 15, r: 8, p: 1 } (32 MiB, ~0.1 s) */
    scrypt: scryptSchema.default({ log2N: 15, r: 8, p: 1 }),
  })
  .strict()
  .refine((o) => [o.key, o.passphrase, o.recipients].filter((v) => v !== undefined).length === 1, {
    message: "give exactly one of key, passphrase or recipients",
    path: ["recipients"],
  });
export type Aes256GcmOptions = z.input<typeof aes256gcmOptionsSchema>;

/** A recipient ready to wrap a data key. */
type ResolvedRecipient =
  | { type: "raw"; key: Buffer; id: string }
  | { type: "passphrase"; passphrase: string; params: ScryptParams }
  | { type: "x25519"; publicKey: Buffer; id: string };

/** What manifests record for each recipient: a type and, except for passphrases, a fingerprint. */
export interface RecipientRecord {
  type: RecipientType;
  /** Fingerprint (16 hex digits): {@link keyFingerprint} for raw keys, {@link recipientFingerprint} for x25519. */
  id?: string;
}
export type RecipientType = "raw" | "passphrase" | "x25519";

function resolveRecipients(list: readonly Recipient[], params: ScryptParams): ResolvedRecipient[] {
  return list.map((r, i): ResolvedRecipient => {
    if (typeof r === "string") {
      const publicKey = decodeRecipient(r);
      if (!publicKey) throw configInvalid(`recipients.${i}`, "not a stowage-pub1… recipient");
      return { type: "x25519", publicKey, id: x25519Id(publicKey) };
    }
    if ("passphrase" in r) return { type: "passphrase", passphrase: r.passphrase, params };
    const key = toKeyBytes(r.key);
    return { type: "raw", key, id: keyIdBytes(key).toString("hex") };
  });
}

const recordOf = (r: ResolvedRecipient): RecipientRecord =>
  r.type === "passphrase" ? { type: r.type } : { type: r.type, id: r.id };

/**
 * Parses and checks a recipient list the way `aes256gcm({ recipients })` does; used by `rekey`.
 * @throws {CONFIG_INVALID} naming the bad recipient (never echoing it).
 */
export function parseRecipients(
  recipients: readonly Recipient[],
  scryptParams?: ScryptParams,
): { recipients: ResolvedRecipient[]; records: RecipientRecord[] } {
  const parsed = parseOptions(
    z
      .object({ recipients: recipientsSchema, scrypt: scryptSchema.default({ log2N: 15, r: 8, p: 1 }) })
      .strict(),
    { recipients, ...(scryptParams ? { scrypt: scryptParams } : {}) },
    "recipients",
  );
  const resolved = resolveRecipients(parsed.recipients, parsed.scrypt);
  return { recipients: resolved, records: resolved.map(recordOf) };
}

// ---------------------------------------------------------------------------------------------
// Errors.

function decryptFailed(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): StowageError {
  return new StowageError("DECRYPT_FAILED", `aes-256-gcm: ${message}`, { details, cause });
}

// ---------------------------------------------------------------------------------------------
// Version-2 header: wrapping and unwrapping the data key.

function wrap(wrapKey: Buffer, dataKey: Buffer): Buffer {
  const cipher = createCipheriv("aes-256-gcm", wrapKey, ZERO_NONCE);
  return Buffer.concat([cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
}

function unwrap(wrapKey: Buffer, wrapped: Buffer): Buffer | undefined {
  const decipher = createDecipheriv("aes-256-gcm", wrapKey, ZERO_NONCE);
  decipher.setAuthTag(wrapped.subarray(KEY_LENGTH));
  const key = decipher.update(wrapped.subarray(0, KEY_LENGTH));
  try {
    decipher.final();
    return key;
  } catch {
    return undefined;
  }
}

function x25519WrapKey(shared: Buffer, ephemeral: Buffer, recipient: Buffer): Buffer {
  if (shared.every((b) => b === 0)) throw decryptFailed("x25519 agreement gave the all-zero secret");
  return hkdf(shared, Buffer.concat([ephemeral, recipient]), "stowage v2 x25519");
}

async function buildStanza(r: ResolvedRecipient, dataKey: Buffer): Promise<Buffer> {
  if (r.type === "raw") {
    const salt = randomBytes(16);
    const body = wrap(hkdf(r.key, salt, "stowage v2 raw"), dataKey);
    return stanza(STANZA_RAW, [Buffer.from(r.id, "hex"), salt, body]);
  }
  if (r.type === "passphrase") {
    const salt = randomBytes(16);
    const wrapKey = await scryptAsync(r.passphrase, salt, r.params);
    const params = Buffer.from([r.params.log2N, r.params.r, r.params.p]);
    return stanza(STANZA_PASSPHRASE, [salt, params, wrap(wrapKey, dataKey)]);
  }
  const ephemeral = generateKeyPairSync("x25519");
  const ephemeralPublic = rawPublicKey(ephemeral.publicKey);
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: x25519PublicKey(r.publicKey) });
  const wrapKey = x25519WrapKey(shared, ephemeralPublic, r.publicKey);
  return stanza(STANZA_X25519, [Buffer.from(r.id, "hex"), ephemeralPublic, wrap(wrapKey, dataKey)]);
}

function stanza(type: number, parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(body.length, 1);
  return Buffer.concat([head, body]);
}

function v2Keys(dataKey: Buffer): { headerKey: Buffer; payloadKey: Buffer } {
  return {
    headerKey: hkdf(dataKey, NO_SALT, "stowage v2 header"),
    payloadKey: hkdf(dataKey, NO_SALT, "stowage v2 payload"),
  };
}

/** A complete version-2 header for `dataKey`, one stanza per recipient. */
async function buildV2Header(
  dataKey: Buffer,
  recipients: readonly ResolvedRecipient[],
  log2Chunk: number,
): Promise<Buffer> {
  const stanzas: Buffer[] = [];
  for (const r of recipients) stanzas.push(await buildStanza(r, dataKey));
  const fixed = Buffer.alloc(V2_FIXED_LENGTH);
  MAGIC.copy(fixed, 0);
  fixed[7] = 2;
  fixed[8] = log2Chunk;
  fixed[9] = stanzas.length;
  const length = V2_FIXED_LENGTH + stanzas.reduce((n, s) => n + s.length, 0) + V2_MAC_LENGTH;
  fixed.writeUInt16BE(length, 10);
  const unmacced = Buffer.concat([fixed, ...stanzas]);
  const mac = createHmac("sha256", v2Keys(dataKey).headerKey).update(unmacced).digest();
  return Buffer.concat([unmacced, mac]);
}

interface Stanza {
  type: number;
  body: Buffer;
}

interface ParsedV2 {
  version: 2;
  chunkSize: number;
  stanzas: Stanza[];
  unmacced: Buffer;
  mac: Buffer;
}

interface ParsedV1 {
  version: 1;
  kdf: number;
  chunkSize: number;
  scrypt: ScryptParams;
  salt: Buffer;
  keyId: string;
  mac: Buffer;
  bytes: Buffer;
}

type ParsedHeader = ParsedV1 | ParsedV2;

/** How many bytes the header has, from its first bytes; undefined until enough have arrived. */
function headerLength(start: Buffer): number | undefined {
  if (start.length < 8) return undefined;
  if (!start.subarray(0, 7).equals(MAGIC))
    throw decryptFailed("not a stowage encrypted artifact (bad magic)");
  const version = start[7]!;
  if (version === 1) return V1_HEADER_LENGTH;
  if (version !== 2) throw decryptFailed(`unsupported format version ${version}`, { version });
  if (start.length < V2_FIXED_LENGTH) return undefined;
  const length = start.readUInt16BE(10);
  if (length < V2_FIXED_LENGTH + 3 + V2_MAC_LENGTH || length > AES_LIMITS.headerBytes) {
    throw decryptFailed(`header length ${length} out of range`);
  }
  return length;
}

function parseHeader(header: Buffer): ParsedHeader {
  const version = header[7]!;
  return version === 1 ? parseV1(header) : parseV2(header);
}

function parseV2(header: Buffer): ParsedV2 {
  const log2Chunk = header[8]!;
  const count = header[9]!;
  if (!inRange(log2Chunk, AES_LIMITS.log2Chunk)) throw decryptFailed("chunk size in header out of range");
  if (count < 1 || count > AES_LIMITS.stanzas) throw decryptFailed(`${count} recipient stanzas in header`);
  const end = header.length - V2_MAC_LENGTH;
  const stanzas: Stanza[] = [];
  let at = V2_FIXED_LENGTH;
  for (let i = 0; i < count; i++) {
    if (at + 3 > end) throw decryptFailed("header ends inside a stanza");
    const type = header[at]!;
    const length = header.readUInt16BE(at + 1);
    at += 3;
    if (length > AES_LIMITS.stanzaBytes || at + length > end)
      throw decryptFailed("stanza length out of range");
    const expected = STANZA_BODY_LENGTH[type];
    if (expected !== undefined && length !== expected)
      throw decryptFailed(`malformed ${STANZA_TYPE_NAME[type]} stanza`);
    const body = header.subarray(at, at + length);
    if (type === STANZA_PASSPHRASE) {
      const params = { log2N: body[16]!, r: body[17]!, p: body[18]! };
      if (!scryptWithinLimits(params)) throw decryptFailed("scrypt parameters in header out of range");
    }
    stanzas.push({ type, body });
    at += length;
  }
  if (at !== end) throw decryptFailed("header length does not match its stanzas");
  if (stanzas.filter((s) => s.type === STANZA_PASSPHRASE).length > AES_LIMITS.passphraseStanzas) {
    throw decryptFailed("too many passphrase stanzas in header");
  }
  return {
    version: 2,
    chunkSize: 2 ** log2Chunk,
    stanzas,
    unmacced: header.subarray(0, end),
    mac: header.subarray(end),
  };
}

/** The recipients a parsed version-2 header names (types and fingerprints). */
function stanzaRecords(stanzas: readonly Stanza[]): RecipientRecord[] {
  return stanzas.map((s) => {
    const type = STANZA_TYPE_NAME[s.type];
    if (type === "raw" || type === "x25519") return { type, id: s.body.subarray(0, 8).toString("hex") };
    if (type === "passphrase") return { type };
    return { type: `unknown-${s.type}` as RecipientType };
  });
}

interface KeyMaterial {
  raw: Array<{ key: Buffer; id: string }>;
  identities: Identity[];
  passphrases: string[];
}

function keyMaterial(keys: readonly DecryptionKey[]): KeyMaterial {
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

const givenRecords = (m: KeyMaterial): RecipientRecord[] => [
  ...m.raw.map((r) => ({ type: "raw" as const, id: r.id })),
  ...m.identities.map((i) => ({ type: "x25519" as const, id: i.id })),
  ...m.passphrases.map(() => ({ type: "passphrase" as const })),
];

const describeRecords = (list: readonly RecipientRecord[]): string =>
  list.map((r) => (r.id ? `${r.type}:${r.id}` : r.type)).join(", ") || "none";

/** Finds the data key of a version-2 header among the keys given; checks the header's MAC. */
async function unlockV2(header: ParsedV2, material: KeyMaterial): Promise<Buffer> {
  const candidates: Array<() => Promise<Buffer | undefined> | Buffer | undefined> = [];
  for (const s of header.stanzas) {
    if (s.type === STANZA_RAW) {
      const id = s.body.subarray(0, 8).toString("hex");
      for (const r of material.raw.filter((m) => m.id === id)) {
        candidates.push(() =>
          unwrap(hkdf(r.key, s.body.subarray(8, 24), "stowage v2 raw"), s.body.subarray(24)),
        );
      }
    } else if (s.type === STANZA_X25519) {
      const id = s.body.subarray(0, 8).toString("hex");
      for (const identity of material.identities.filter((m) => m.id === id)) {
        candidates.push(() => {
          const ephemeral = s.body.subarray(8, 40);
          let shared: Buffer;
          try {
            shared = diffieHellman({
              privateKey: identity.privateKey,
              publicKey: x25519PublicKey(Buffer.from(ephemeral)),
            });
          } catch {
            return undefined; // a low-order or malformed ephemeral key: this stanza is damaged
          }
          if (shared.every((b) => b === 0)) return undefined;
          return unwrap(x25519WrapKey(shared, ephemeral, identity.publicKey), s.body.subarray(40));
        });
      }
    }
  }
  // Passphrases last: each try costs a scrypt.
  for (const s of header.stanzas.filter((x) => x.type === STANZA_PASSPHRASE)) {
    const params = { log2N: s.body[16]!, r: s.body[17]!, p: s.body[18]! };
    for (const passphrase of material.passphrases) {
      candidates.push(async () =>
        unwrap(await scryptAsync(passphrase, s.body.subarray(0, 16), params), s.body.subarray(19)),
      );
    }
  }
  const expected = stanzaRecords(header.stanzas);
  if (candidates.length === 0) {
    const given = givenRecords(material);
    throw decryptFailed(
      `no key given matches a recipient of this artifact: it is encrypted to [${describeRecords(expected)}]; the keys given are [${describeRecords(given)}]`,
      { expectedRecipients: expected, givenRecipients: given },
    );
  }
  let unwrapped = false;
  for (const attempt of candidates) {
    const dataKey = await attempt();
    if (!dataKey) continue;
    unwrapped = true;
    const mac = createHmac("sha256", v2Keys(dataKey).headerKey).update(header.unmacced).digest();
    if (timingSafeEqual(mac, header.mac)) return dataKey;
  }
  throw decryptFailed(
    unwrapped
      ? "header authentication failed: the header or its recipient list was altered"
      : `no recipient stanza could be unwrapped with the keys given (wrong passphrase, or a stanza was altered); the artifact is encrypted to [${describeRecords(expected)}]`,
    { expectedRecipients: expected, givenRecipients: givenRecords(material) },
  );
}

// ---------------------------------------------------------------------------------------------
// Version-1 header.

function v1Subkeys(master: Buffer, salt: Buffer): { headerKey: Buffer; payloadKey: Buffer } {
  return {
    headerKey: hkdf(master, salt, "stowage v1 header"),
    payloadKey: hkdf(master, salt, "stowage v1 payload"),
  };
}

function v1Mac(headerKey: Buffer, header: Buffer): Buffer {
  return createHmac("sha256", headerKey).update(header.subarray(0, V1_MAC_OFFSET)).digest().subarray(0, 16);
}

function parseV1(header: Buffer): ParsedV1 {
  const kdf = header[8]!;
  const log2Chunk = header[9]!;
  const scryptParams = { log2N: header[10]!, r: header[11]!, p: header[12]! };
  if (kdf !== KDF_RAW && kdf !== KDF_SCRYPT) throw decryptFailed(`unknown key derivation ${kdf} in header`);
  if (!inRange(log2Chunk, AES_LIMITS.log2Chunk)) throw decryptFailed("chunk size in header out of range");
  if (kdf === KDF_SCRYPT && !scryptWithinLimits(scryptParams)) {
    throw decryptFailed("scrypt parameters in header out of range");
  }
  return {
    version: 1,
    kdf,
    chunkSize: 2 ** log2Chunk,
    scrypt: scryptParams,
    salt: Buffer.from(header.subarray(16, 32)),
    keyId: header.subarray(32, 40).toString("hex"),
    mac: Buffer.from(header.subarray(V1_MAC_OFFSET, V1_HEADER_LENGTH)),
    bytes: Buffer.from(header),
  };
}

/** Finds the payload key for a version-1 header among the keys given, checking the header's MAC. */
async function unlockV1(header: ParsedV1, material: KeyMaterial): Promise<Buffer> {
  const tryMaster = (master: Buffer): Buffer | undefined => {
    const { headerKey, payloadKey } = v1Subkeys(master, header.salt);
    return timingSafeEqual(v1Mac(headerKey, header.bytes), header.mac) ? payloadKey : undefined;
  };
  if (header.kdf === KDF_RAW) {
    const expected = [{ type: "raw" as const, id: header.keyId }];
    const matching = material.raw.filter((k) => k.id === header.keyId);
    if (matching.length === 0) {
      const given = givenRecords(material);
      throw decryptFailed(
        `this artifact needs key ${header.keyId}; the keys given are [${describeRecords(given)}]`,
        { neededKeyId: header.keyId, expectedRecipients: expected, givenRecipients: given },
      );
    }
    for (const { key } of matching) {
      const payloadKey = tryMaster(key);
      if (payloadKey) return payloadKey;
    }
    throw decryptFailed("header authentication failed: the header was altered", {
      keyId: header.keyId,
      expectedRecipients: expected,
    });
  }
  if (material.passphrases.length === 0) {
    throw decryptFailed("this artifact was encrypted with a passphrase, and none was given", {
      kdf: "scrypt",
      expectedRecipients: [{ type: "passphrase" }],
      givenRecipients: givenRecords(material),
    });
  }
  for (const passphrase of material.passphrases) {
    const payloadKey = tryMaster(await scryptAsync(passphrase, header.salt, header.scrypt));
    if (payloadKey) return payloadKey;
  }
  throw decryptFailed("header authentication failed: wrong passphrase, or the header was altered", {
    kdf: "scrypt",
    expectedRecipients: [{ type: "passphrase" }],
  });
}

// ---------------------------------------------------------------------------------------------
// Streaming.

/** A FIFO of buffers that hands out exact-size runs as lists of views, never copying. */
class PartQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.length += chunk.length;
  }

  /** The next `n` bytes as views of the buffers that hold them. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let want = n;
    while (want > 0) {
      const part = this.parts[0]!;
      if (part.length <= want) {
        out.push(part);
        this.parts.shift();
        want -= part.length;
      } else {
        out.push(part.subarray(0, want));
        this.parts[0] = part.subarray(want);
        want = 0;
      }
    }
    this.length -= n;
    return out;
  }

  /** A copy of the first `n` bytes (at most what is queued), leaving them queued. */
  peek(n: number): Buffer {
    const out = Buffer.allocUnsafe(Math.min(n, this.length));
    let filled = 0;
    for (const part of this.parts) {
      if (filled === out.length) break;
      filled += part.copy(out, filled, 0, Math.min(part.length, out.length - filled));
    }
    return out;
  }

  /** The next `n` bytes as one buffer (copies only when they span buffers). */
  takeJoined(n: number): Buffer {
    const parts = this.take(n);
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }
}

function nonceFor(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(counter), 3);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

/** Seals one chunk given as views; pushes ciphertext pieces then the tag. */
function sealParts(
  push: (b: Buffer) => void,
  payloadKey: Buffer,
  counter: number,
  parts: readonly Buffer[],
  last: boolean,
): void {
  const cipher = createCipheriv("aes-256-gcm", payloadKey, nonceFor(counter, last));
  for (const part of parts) {
    const out = cipher.update(part);
    if (out.length > 0) push(out);
  }
  cipher.final();
  push(cipher.getAuthTag());
}

/**
 * Opens one sealed chunk given as views. Returns the plaintext pieces only after the tag checked.
 * @throws {DECRYPT_FAILED} when it does not.
 */
function openParts(
  payloadKey: Buffer,
  counter: number,
  parts: readonly Buffer[],
  length: number,
  last: boolean,
): Buffer[] {
  const bodyLength = length - TAG_LENGTH;
  const decipher = createDecipheriv("aes-256-gcm", payloadKey, nonceFor(counter, last));
  const plain: Buffer[] = [];
  const tagPieces: Buffer[] = [];
  let at = 0;
  for (const part of parts) {
    const bodyEnd = Math.min(part.length, Math.max(0, bodyLength - at));
    if (bodyEnd > 0) {
      const out = decipher.update(bodyEnd === part.length ? part : part.subarray(0, bodyEnd));
      if (out.length > 0) plain.push(out);
    }
    if (bodyEnd < part.length) tagPieces.push(part.subarray(bodyEnd));
    at += part.length;
  }
  decipher.setAuthTag(tagPieces.length === 1 ? tagPieces[0]! : Buffer.concat(tagPieces, TAG_LENGTH));
  try {
    decipher.final();
  } catch (error) {
    const what = last ? "the last chunk" : `chunk ${counter}`;
    throw decryptFailed(
      `${what} failed authentication (corrupted, truncated, reordered or tampered)`,
      { chunk: counter, last },
      error,
    );
  }
  return plain;
}

type HeaderMaker = () => Promise<{ header: Buffer; payloadKey: Buffer }>;

/** Encrypts: a header from `makeHeader`, then sealed chunks of `chunkSize` plaintext bytes. */
class EncryptStream extends NodeTransform {
  private readonly queue = new PartQueue();
  private payloadKey: Buffer | undefined;
  private counter = 0;
  private readonly pushOut = (b: Buffer) => {
    this.push(b);
  };

  constructor(
    private readonly makeHeader: HeaderMaker,
    private readonly chunkSize: number,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  private async start(): Promise<void> {
    const { header, payloadKey } = await this.makeHeader();
    this.payloadKey = payloadKey;
    this.push(header);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const run = () => {
      this.queue.push(chunk);
      // A chunk is sealed as "not last" only once a byte after it exists; the rest waits for flush.
      while (this.queue.length > this.chunkSize) {
        sealParts(this.pushOut, this.payloadKey!, this.counter++, this.queue.take(this.chunkSize), false);
      }
      callback();
    };
    if (this.payloadKey) {
      run();
      return;
    }
    this.start().then(run, (e: unknown) => callback(e as Error));
  }

  override _flush(callback: TransformCallback): void {
    const finish = () => {
      sealParts(this.pushOut, this.payloadKey!, this.counter++, this.queue.take(this.queue.length), true);
      callback();
    };
    if (this.payloadKey) {
      finish();
      return;
    }
    this.start().then(finish, (e: unknown) => callback(e as Error));
  }
}

/**
 * What to do once the header is unlocked. "plain" releases plaintext (restore). "rekey" writes a
 * new version-2 header and the chunks again: the same sealed bytes when the data key is kept, or
 * re-sealed under a new data key (version-1 input, or `reencrypt`).
 */
type DecryptMode =
  | { kind: "plain" }
  | {
      kind: "rekey";
      recipients: readonly ResolvedRecipient[];
      reencrypt: boolean;
      onHeader?: (info: HeaderInfo) => void;
    };

/** Facts about an artifact's header, reported to `rekey`. */
export interface HeaderInfo {
  version: number;
  chunkSize: number;
  recipients: RecipientRecord[];
}

class DecryptStream extends NodeTransform {
  private readonly queue = new PartQueue();
  private opening = false;
  private chunkSize = 0;
  private payloadKey: Buffer | undefined;
  /** In rekey mode with re-encryption: the key chunks are re-sealed with. */
  private resealKey: Buffer | undefined;
  private counter = 0;
  private readonly pushOut = (b: Buffer) => {
    this.push(b);
  };

  constructor(
    private readonly keys: readonly DecryptionKey[],
    private readonly mode: DecryptMode = { kind: "plain" },
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  private async open(length: number): Promise<void> {
    const header = parseHeader(this.queue.takeJoined(length));
    this.chunkSize = header.chunkSize;
    const material = keyMaterial(this.keys);
    if (header.version === 1) {
      this.payloadKey = await unlockV1(header, material);
    } else {
      const dataKey = await unlockV2(header, material);
      this.payloadKey = v2Keys(dataKey).payloadKey;
      if (this.mode.kind === "rekey" && !this.mode.reencrypt) {
        this.push(await buildV2Header(dataKey, this.mode.recipients, Math.log2(header.chunkSize)));
      }
    }
    if (this.mode.kind === "rekey") {
      this.mode.onHeader?.({
        version: header.version,
        chunkSize: header.chunkSize,
        recipients:
          header.version === 2
            ? stanzaRecords(header.stanzas)
            : header.kdf === KDF_RAW
              ? [{ type: "raw", id: header.keyId }]
              : [{ type: "passphrase" }],
      });
      if (header.version === 1 || this.mode.reencrypt) {
        const dataKey = randomBytes(KEY_LENGTH);
        this.resealKey = v2Keys(dataKey).payloadKey;
        this.push(await buildV2Header(dataKey, this.mode.recipients, Math.log2(header.chunkSize)));
      }
    }
  }

  private unseal(length: number, last: boolean): void {
    const parts = this.queue.take(length);
    const index = this.counter++;
    const plain = openParts(this.payloadKey!, index, parts, length, last);
    // Only now, with the tag checked, may anything of the chunk leave.
    if (this.mode.kind === "plain") {
      for (const p of plain) this.push(p);
    } else if (this.resealKey) {
      sealParts(this.pushOut, this.resealKey, index, plain, last);
    } else {
      for (const p of parts) this.push(p);
    }
  }

  private drain(): void {
    const sealedSize = this.chunkSize + TAG_LENGTH;
    while (this.queue.length > sealedSize) this.unseal(sealedSize, false);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    try {
      if (this.payloadKey) {
        this.drain();
        callback();
        return;
      }
      if (this.opening) {
        callback(); // unreachable in practice: a Transform does not write while a callback is pending
        return;
      }
      const length = headerLength(this.queue.peek(V2_FIXED_LENGTH));
      if (length === undefined || this.queue.length < length) {
        callback();
        return;
      }
      this.opening = true;
      this.open(length).then(
        () => {
          try {
            this.drain();
            callback();
          } catch (e) {
            callback(e as Error);
          }
        },
        (e: unknown) => callback(e as Error),
      );
    } catch (e) {
      callback(e as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    try {
      if (!this.payloadKey) throw decryptFailed("artifact ends inside the header (truncated)");
      const rest = this.queue.length;
      if (rest < TAG_LENGTH) throw decryptFailed("artifact is truncated: the last chunk is missing");
      if (rest === TAG_LENGTH && this.counter > 0) {
        throw decryptFailed("artifact is truncated: an empty last chunk follows a full one");
      }
      this.unseal(rest, true);
      callback();
    } catch (e) {
      callback(e as Error);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Factories.

/** The decoding half alone: what `restore` uses when it meets an "aes-256-gcm" record. */
export const aesDecoder: Decoder = {
  name: "aes-256-gcm",
  decode: (_record: TransformRecord, context: DecodeContext) => new DecryptStream(context.keys),
};

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
  const makeHeader: HeaderMaker = async () => {
    const dataKey = randomBytes(KEY_LENGTH);
    const header = await buildV2Header(dataKey, recipients, log2Chunk);
    return { header, payloadKey: v2Keys(dataKey).payloadKey };
  };
  return {
    ...aesDecoder,
    role: "encryption",
    extension: ".enc",
    encode: () => new EncryptStream(makeHeader, parsed.chunkSize),
    describe: () => structuredClone(record),
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
  const makeHeader: HeaderMaker = async () => {
    const salt = randomBytes(16);
    const header = Buffer.alloc(V1_HEADER_LENGTH);
    MAGIC.copy(header, 0);
    header[7] = 1;
    header[9] = Math.log2(chunkSize);
    let master: Buffer;
    if (rawKey) {
      header[8] = KDF_RAW;
      master = rawKey;
      keyIdBytes(master).copy(header, 32);
    } else {
      header[8] = KDF_SCRYPT;
      header[10] = parsed.scrypt.log2N;
      header[11] = parsed.scrypt.r;
      header[12] = parsed.scrypt.p;
      master = await scryptAsync(parsed.passphrase!, salt, parsed.scrypt);
    }
    salt.copy(header, 16);
    const { headerKey, payloadKey } = v1Subkeys(master, salt);
    v1Mac(headerKey, header).copy(header, V1_MAC_OFFSET);
    return { header, payloadKey };
  };
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
 * A stream for `rekey`: reads an encrypted artifact (version 1 or 2), unlocks it with `keys`, and
 * writes a version-2 artifact for `recipients`. A version-2 input keeps its data key and its chunk
 * bytes (only the header changes) unless `reencrypt` is set; a version-1 input is re-sealed chunk
 * by chunk under a fresh data key. Every chunk is authenticated on the way through.
 * @internal used by src/core/rekey.ts
 */
export function createRekeyStream(options: {
  keys: readonly DecryptionKey[];
  recipients: readonly ResolvedRecipient[];
  reencrypt?: boolean;
  onHeader?: (info: HeaderInfo) => void;
}): NodeTransform {
  return new DecryptStream(options.keys, {
    kind: "rekey",
    recipients: options.recipients,
    reencrypt: options.reencrypt ?? false,
    ...(options.onHeader ? { onHeader: options.onHeader } : {}),
  });
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
