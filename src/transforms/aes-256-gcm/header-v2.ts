/**
 * The version-2 header (docs/FORMAT.md, "Version 2"): a fresh data key per artifact, wrapped once
 * per recipient in a stanza, and an HMAC over the whole header keyed from the data key.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import {
  AES_LIMITS,
  decryptFailed,
  hkdf,
  inRange,
  KEY_LENGTH,
  MAGIC,
  type ScryptParams,
  scryptAsync,
  scryptWithinLimits,
  TAG_LENGTH,
} from "./format.js";
import {
  describeRecords,
  givenRecords,
  type KeyMaterial,
  type RecipientRecord,
  type RecipientType,
  rawPublicKey,
  x25519PublicKey,
} from "./keys.js";

const WRAPPED_LENGTH = KEY_LENGTH + TAG_LENGTH;
const ZERO_NONCE = Buffer.alloc(12);

export const V2_FIXED_LENGTH = 12;
export const V2_MAC_LENGTH = 32;
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

const NO_SALT = Buffer.alloc(0);

/** A recipient ready to wrap a data key. */
export type ResolvedRecipient =
  | { type: "raw"; key: Buffer; id: string }
  | { type: "passphrase"; passphrase: string; params: ScryptParams }
  | { type: "x25519"; publicKey: Buffer; id: string };

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

export async function buildStanza(r: ResolvedRecipient, dataKey: Buffer): Promise<Buffer> {
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

/**
 * The header and payload keys of a data key. Each is derived when first read: most callers want
 * one of the two, and a backup of a few bytes spent more on key derivation than on its data.
 */
export function v2Keys(dataKey: Buffer): { readonly headerKey: Buffer; readonly payloadKey: Buffer } {
  let headerKey: Buffer | undefined;
  let payloadKey: Buffer | undefined;
  return {
    get headerKey() {
      headerKey ??= hkdf(dataKey, NO_SALT, "stowage v2 header");
      return headerKey;
    },
    get payloadKey() {
      payloadKey ??= hkdf(dataKey, NO_SALT, "stowage v2 payload");
      return payloadKey;
    },
  };
}

/** A complete version-2 header for `dataKey`, one stanza per recipient. */
export function buildV2Header(
  dataKey: Buffer,
  recipients: readonly ResolvedRecipient[],
  log2Chunk: number,
): Promise<Buffer> {
  return buildHeader(dataKey, recipients, log2Chunk, { version: 2, headerKey: v2Keys(dataKey).headerKey });
}

/**
 * The layout versions 2 and 3 share: fixed fields, `before` (version 3's identity block), the
 * stanzas, and an HMAC over all of it keyed with `headerKey`.
 */
export async function buildHeader(
  dataKey: Buffer,
  recipients: readonly ResolvedRecipient[],
  log2Chunk: number,
  layout: { version: number; headerKey: Buffer; before?: Buffer },
): Promise<Buffer> {
  const before = layout.before ?? Buffer.alloc(0);
  const stanzas: Buffer[] = [];
  for (const r of recipients) stanzas.push(await buildStanza(r, dataKey));
  const fixed = Buffer.alloc(V2_FIXED_LENGTH);
  MAGIC.copy(fixed, 0);
  fixed[7] = layout.version;
  fixed[8] = log2Chunk;
  fixed[9] = stanzas.length;
  const length = V2_FIXED_LENGTH + before.length + stanzas.reduce((n, s) => n + s.length, 0) + V2_MAC_LENGTH;
  fixed.writeUInt16BE(length, 10);
  const unmacced = Buffer.concat([fixed, before, ...stanzas]);
  const mac = createHmac("sha256", layout.headerKey).update(unmacced).digest();
  return Buffer.concat([unmacced, mac]);
}

interface Stanza {
  type: number;
  body: Buffer;
}

export interface ParsedV2 {
  /** 3 is version 2's layout with the backup's identity bound in (./header-v3.ts). */
  version: 2 | 3;
  /** Version 3: the job and backup id the header binds. */
  identity?: { job: string; id: string };
  chunkSize: number;
  stanzas: Stanza[];
  unmacced: Buffer;
  mac: Buffer;
}

export function parseV2(header: Buffer, stanzasAt = V2_FIXED_LENGTH): ParsedV2 {
  const log2Chunk = header[8]!;
  const count = header[9]!;
  if (!inRange(log2Chunk, AES_LIMITS.log2Chunk)) throw decryptFailed("chunk size in header out of range");
  if (count < 1 || count > AES_LIMITS.stanzas) throw decryptFailed(`${count} recipient stanzas in header`);
  const end = header.length - V2_MAC_LENGTH;
  const stanzas: Stanza[] = [];
  let at = stanzasAt;
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
export function stanzaRecords(stanzas: readonly Stanza[]): RecipientRecord[] {
  return stanzas.map((s) => {
    const type = STANZA_TYPE_NAME[s.type];
    if (type === "raw" || type === "x25519") return { type, id: s.body.subarray(0, 8).toString("hex") };
    if (type === "passphrase") return { type };
    return { type: `unknown-${s.type}` as RecipientType };
  });
}

/** Finds the data key of a version-2 header among the keys given; checks the header's MAC. */
export async function unlockV2(
  header: ParsedV2,
  material: KeyMaterial,
  headerKeyOf: (dataKey: Buffer) => Buffer = (d) => v2Keys(d).headerKey,
): Promise<Buffer> {
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
    const mac = createHmac("sha256", headerKeyOf(dataKey)).update(header.unmacced).digest();
    if (timingSafeEqual(mac, header.mac)) return dataKey;
  }
  throw decryptFailed(
    unwrapped
      ? "header authentication failed: the header or its recipient list was altered"
      : `no recipient stanza could be unwrapped with the keys given (wrong passphrase, or a stanza was altered); the artifact is encrypted to [${describeRecords(expected)}]`,
    { expectedRecipients: expected, givenRecipients: givenRecords(material) },
  );
}
