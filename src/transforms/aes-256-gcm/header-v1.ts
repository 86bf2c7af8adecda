/**
 * The version-1 header (docs/FORMAT.md, "Version 1"): one raw key or one passphrase per artifact.
 * Read always; written only by `aes256gcmV1`, so that tests can prove version 1 still decrypts.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import {
  AES_LIMITS,
  decryptFailed,
  hkdf,
  inRange,
  MAGIC,
  type ScryptParams,
  scryptAsync,
  scryptWithinLimits,
} from "./format.js";
import { describeRecords, givenRecords, type KeyMaterial, keyIdBytes } from "./keys.js";

export const V1_HEADER_LENGTH = 56;
const V1_MAC_OFFSET = 40;
export const KDF_RAW = 1;
const KDF_SCRYPT = 2;

export interface ParsedV1 {
  version: 1;
  kdf: number;
  chunkSize: number;
  scrypt: ScryptParams;
  salt: Buffer;
  keyId: string;
  mac: Buffer;
  bytes: Buffer;
}

function v1Subkeys(master: Buffer, salt: Buffer): { headerKey: Buffer; payloadKey: Buffer } {
  return {
    headerKey: hkdf(master, salt, "stowage v1 header"),
    payloadKey: hkdf(master, salt, "stowage v1 payload"),
  };
}

function v1Mac(headerKey: Buffer, header: Buffer): Buffer {
  return createHmac("sha256", headerKey).update(header.subarray(0, V1_MAC_OFFSET)).digest().subarray(0, 16);
}

export function parseV1(header: Buffer): ParsedV1 {
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
export async function unlockV1(header: ParsedV1, material: KeyMaterial): Promise<Buffer> {
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

/** A new version-1 header and its payload key, for one raw key or one passphrase. */
export async function buildV1Header(
  secret: { key: Buffer } | { passphrase: string; scrypt: ScryptParams },
  log2Chunk: number,
): Promise<{ header: Buffer; payloadKey: Buffer }> {
  const salt = randomBytes(16);
  const header = Buffer.alloc(V1_HEADER_LENGTH);
  MAGIC.copy(header, 0);
  header[7] = 1;
  header[9] = log2Chunk;
  let master: Buffer;
  if ("key" in secret) {
    header[8] = KDF_RAW;
    master = secret.key;
    keyIdBytes(master).copy(header, 32);
  } else {
    header[8] = KDF_SCRYPT;
    header[10] = secret.scrypt.log2N;
    header[11] = secret.scrypt.r;
    header[12] = secret.scrypt.p;
    master = await scryptAsync(secret.passphrase, salt, secret.scrypt);
  }
  salt.copy(header, 16);
  const { headerKey, payloadKey } = v1Subkeys(master, salt);
  v1Mac(headerKey, header).copy(header, V1_MAC_OFFSET);
  return { header, payloadKey };
}
