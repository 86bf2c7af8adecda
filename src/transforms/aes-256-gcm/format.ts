/**
 * What both versions of the aes-256-gcm format share (docs/FORMAT.md, the opening sections): the
 * magic, the primitive lengths, the bounds a reader holds a header to, scrypt and HKDF, and the
 * errors the transform throws.
 */
import { createHmac, scrypt } from "node:crypto";
import { StowageError } from "../../core/errors.js";

export const MAGIC = Buffer.from("STOWAGE", "ascii");
/**
 * The format version this build writes when it knows the backup's identity (`backup`, `rekey`):
 * 3, which binds the job and id into the header. A bare `encode()` writes 2. It reads 1, 2 and 3.
 */
export const AES_FORMAT_VERSION = 3;
export const TAG_LENGTH = 16;
export const KEY_LENGTH = 32;

/**
 * Bounds a header may ask for, so a hostile header cannot make the reader allocate gigabytes or
 * spin for minutes. scrypt memory is 128·N·r bytes (N·r ≤ 2^22: 512 MiB); work is N·r·p.
 */
export const AES_LIMITS = {
  /** log2 of the chunk size: 1 KiB to 16 MiB. */
  log2Chunk: [10, 24],
  /** log2 of scrypt's N. */
  log2N: [10, 20],
  /** scrypt's r. */
  r: [1, 32],
  /** scrypt's p. */
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
// scrypt, bounded, and HKDF.

/** scrypt's parameters for a passphrase (`aes256gcm({ passphrase, scrypt })`). */
export interface ScryptParams {
  /** log2 of scrypt's cost N. */
  log2N: number;
  /** scrypt's block size r. */
  r: number;
  /** scrypt's parallelism p. */
  p: number;
}

export const inRange = (v: number, [lo, hi]: readonly [number, number]) =>
  Number.isInteger(v) && v >= lo && v <= hi;

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

export function scryptAsync(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
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

const ONE = Buffer.of(1);

/**
 * HKDF-SHA256 (RFC 5869) of 32 bytes: one HMAC to extract, one to expand (a single block, T(1) =
 * HMAC(PRK, info | 0x01)). The same bytes as `hkdfSync("sha256", ikm, salt, info, 32)` (a test
 * compares them), at under half its cost: `hkdfSync` builds a KeyObject and validates every call,
 * and every file encrypted or decrypted derives several keys.
 */
export const hkdf = (ikm: Buffer, salt: Buffer, info: string): Buffer => {
  const prk = createHmac("sha256", salt).update(ikm).digest();
  return createHmac("sha256", prk).update(info, "utf8").update(ONE).digest();
};

// ---------------------------------------------------------------------------------------------
// Errors.

export function configInvalid(option: string, problem: string): StowageError {
  return new StowageError("CONFIG_INVALID", `${option}: ${problem}`, {
    details: { issues: [{ path: option, problem }] },
  });
}

export function decryptFailed(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): StowageError {
  return new StowageError("DECRYPT_FAILED", `aes-256-gcm: ${message}`, { details, cause });
}
