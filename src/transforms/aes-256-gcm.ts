/**
 * Chunked, streaming AES-256-GCM. The byte layout is specified in docs/FORMAT.md; keep the two
 * in step. Summary of version 1:
 *
 *   header (56 bytes): "STOWAGE" | version=1 | kdf | log2(chunk) | scrypt log2N,r,p | 3 zero |
 *                      salt(16) | keyId(8) | HMAC-SHA256(headerKey, bytes 0..39)[0..16]
 *   chunks:            AES-256-GCM(payloadKey, nonce = counter(11 bytes BE) | last(1)) ‖ tag(16)
 *
 * The master key is the raw key or scrypt(passphrase, salt); headerKey and payloadKey are
 * HKDF-SHA256(master, salt, "stowage v1 header" / "stowage v1 payload"). The last-chunk flag in
 * the nonce makes truncation at a chunk boundary fail; the counter makes reordering fail; each
 * chunk's plaintext is released only after its tag has been checked.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  hkdfSync,
  randomBytes,
  scrypt,
  timingSafeEqual,
} from "node:crypto";
import { Transform as NodeTransform, type TransformCallback } from "node:stream";
import { z } from "zod";
import { StowageError } from "../core/errors.js";
import type { TransformRecord } from "../core/manifest.js";
import { parseOptions } from "../core/options.js";
import type { DecodeContext, DecryptionKey, Transform } from "../core/types.js";

const MAGIC = Buffer.from("STOWAGE", "ascii");
export const AES_FORMAT_VERSION = 1;
const HEADER_LENGTH = 56;
const MAC_OFFSET = 40;
const TAG_LENGTH = 16;
const KDF_RAW = 1;
const KDF_SCRYPT = 2;
const KEY_ID_LABEL = Buffer.from("stowage key id v1\0", "ascii");

/** Bounds a header may ask for, so a hostile header cannot make the reader allocate gigabytes. */
const LIMITS = { log2Chunk: [10, 24], log2N: [10, 20], r: [1, 32], p: [1, 16] } as const;

const keyInputSchema = z.union([
  z.instanceof(Uint8Array).refine((k) => k.length === 32, "a raw key must be 32 bytes"),
  z
    .string()
    .refine(
      (s) => decodeKeyString(s) !== undefined,
      "a key string must be 64 hex digits or base64 of 32 bytes",
    ),
]);

export const aes256gcmOptionsSchema = z
  .object({
    /** A 32-byte key, as bytes, 64 hex digits or base64. Give this or `passphrase`. */
    key: keyInputSchema.optional(),
    /** A passphrase, stretched with scrypt and a per-artifact salt. Give this or `key`. */
    passphrase: z.string().min(8, "a passphrase needs at least 8 characters").optional(),
    /** Plaintext bytes per authenticated chunk, a power of two from 1 KiB to 16 MiB. @default 65536 */
    chunkSize: z
      .number()
      .int()
      .refine(
        (n) => Number.isInteger(Math.log2(n)) && n >= 1 << 10 && n <= 1 << 24,
        "a power of two, 1 KiB-16 MiB",
      )
      .default(1 << 16),
    /** scrypt cost for passphrases. @default { log2N: 15, r: 8, p: 1 } (32 MiB, ~0.1 s) */
    scrypt: z
      .object({
        log2N: z.number().int().min(LIMITS.log2N[0]).max(LIMITS.log2N[1]),
        r: z.number().int().min(LIMITS.r[0]).max(LIMITS.r[1]),
        p: z.number().int().min(LIMITS.p[0]).max(LIMITS.p[1]),
      })
      .strict()
      .default({ log2N: 15, r: 8, p: 1 }),
  })
  .strict()
  .refine((o) => (o.key === undefined) !== (o.passphrase === undefined), {
    message: "give exactly one of key or passphrase",
    path: ["key"],
  });
export type Aes256GcmOptions = z.input<typeof aes256gcmOptionsSchema>;

function decodeKeyString(value: string): Buffer | undefined {
  if (/^[0-9a-fA-F]{64}$/.test(value)) return Buffer.from(value, "hex");
  if (/^[A-Za-z0-9+/_-]{43}=?$/.test(value)) {
    const bytes = Buffer.from(value, "base64");
    if (bytes.length === 32) return bytes;
  }
  return undefined;
}

function toKeyBytes(key: Uint8Array | string): Buffer {
  const bytes = typeof key === "string" ? decodeKeyString(key) : Buffer.from(key);
  if (bytes?.length !== 32) {
    throw new StowageError(
      "CONFIG_INVALID",
      "key: a raw key must be 32 bytes (or 64 hex digits, or base64)",
      {
        details: { issues: [{ option: "key", problem: "not 32 bytes" }] },
      },
    );
  }
  return bytes;
}

/**
 * The fingerprint of a raw key: 16 hex digits of SHA-256("stowage key id v1\0" ‖ key). It names
 * the key in headers, manifests and error messages; it does not reveal the key.
 */
export function keyFingerprint(key: Uint8Array | string): string {
  return keyIdBytes(toKeyBytes(key)).toString("hex");
}

function keyIdBytes(key: Buffer): Buffer {
  return createHash("sha256").update(KEY_ID_LABEL).update(key).digest().subarray(0, 8);
}

/** 32 random bytes, for a new raw key. Store it as `toString("base64")` in a secret store. */
export function generateKey(): Buffer {
  return randomBytes(32);
}

interface ScryptParams {
  log2N: number;
  r: number;
  p: number;
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

function subkeys(master: Buffer, salt: Buffer): { headerKey: Buffer; payloadKey: Buffer } {
  return {
    headerKey: Buffer.from(hkdfSync("sha256", master, salt, "stowage v1 header", 32)),
    payloadKey: Buffer.from(hkdfSync("sha256", master, salt, "stowage v1 payload", 32)),
  };
}

function headerMac(headerKey: Buffer, header: Buffer): Buffer {
  return createHmac("sha256", headerKey).update(header.subarray(0, MAC_OFFSET)).digest().subarray(0, 16);
}

function nonceFor(counter: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(counter), 3);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function decryptFailed(
  message: string,
  details: Record<string, unknown> = {},
  cause?: unknown,
): StowageError {
  return new StowageError("DECRYPT_FAILED", `aes-256-gcm: ${message}`, { details, cause });
}

/** A FIFO of buffers that hands out exact-size slices, copying only when a slice spans buffers. */
class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.parts.push(chunk);
    this.length += chunk.length;
  }

  take(n: number): Buffer {
    const first = this.parts[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const part = this.parts[0]!;
      const used = Math.min(part.length, n - filled);
      part.copy(out, filled, 0, used);
      filled += used;
      if (used === part.length) this.parts.shift();
      else this.parts[0] = part.subarray(used);
    }
    this.length -= n;
    return out;
  }
}

type EncryptKey = { kind: "raw"; key: Buffer } | { kind: "scrypt"; passphrase: string; params: ScryptParams };

class EncryptStream extends NodeTransform {
  private readonly queue = new ByteQueue();
  private payloadKey: Buffer | undefined;
  private counter = 0;

  constructor(
    private readonly keySpec: EncryptKey,
    private readonly chunkSize: number,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  private async start(): Promise<void> {
    const salt = randomBytes(16);
    const header = Buffer.alloc(HEADER_LENGTH);
    MAGIC.copy(header, 0);
    header[7] = AES_FORMAT_VERSION;
    header[9] = Math.log2(this.chunkSize);
    let master: Buffer;
    if (this.keySpec.kind === "raw") {
      header[8] = KDF_RAW;
      master = this.keySpec.key;
      keyIdBytes(master).copy(header, 32);
    } else {
      header[8] = KDF_SCRYPT;
      header[10] = this.keySpec.params.log2N;
      header[11] = this.keySpec.params.r;
      header[12] = this.keySpec.params.p;
      master = await scryptAsync(this.keySpec.passphrase, salt, this.keySpec.params);
    }
    salt.copy(header, 16);
    const { headerKey, payloadKey } = subkeys(master, salt);
    headerMac(headerKey, header).copy(header, MAC_OFFSET);
    this.payloadKey = payloadKey;
    this.push(header);
  }

  private seal(plain: Buffer, last: boolean): void {
    const cipher = createCipheriv("aes-256-gcm", this.payloadKey!, nonceFor(this.counter++, last));
    const body = cipher.update(plain);
    cipher.final();
    if (body.length > 0) this.push(body);
    this.push(cipher.getAuthTag());
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const run = () => {
      this.queue.push(chunk);
      // A chunk is sealed as "not last" only once a byte after it exists; the rest waits for flush.
      while (this.queue.length > this.chunkSize) this.seal(this.queue.take(this.chunkSize), false);
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
      this.seal(this.queue.take(this.queue.length), true);
      callback();
    };
    if (this.payloadKey) {
      finish();
      return;
    }
    this.start().then(finish, (e: unknown) => callback(e as Error));
  }
}

interface ParsedHeader {
  version: number;
  kdf: number;
  chunkSize: number;
  scrypt: ScryptParams;
  salt: Buffer;
  keyId: string;
  mac: Buffer;
  bytes: Buffer;
}

function parseHeader(header: Buffer): ParsedHeader {
  if (!header.subarray(0, 7).equals(MAGIC))
    throw decryptFailed("not a stowage encrypted artifact (bad magic)");
  const version = header[7]!;
  if (version !== AES_FORMAT_VERSION) throw decryptFailed(`unsupported format version ${version}`);
  const kdf = header[8]!;
  const log2Chunk = header[9]!;
  const scryptParams = { log2N: header[10]!, r: header[11]!, p: header[12]! };
  const inRange = (v: number, [lo, hi]: readonly [number, number]) => v >= lo && v <= hi;
  if (kdf !== KDF_RAW && kdf !== KDF_SCRYPT) throw decryptFailed(`unknown key derivation ${kdf} in header`);
  if (!inRange(log2Chunk, LIMITS.log2Chunk)) throw decryptFailed("chunk size in header out of range");
  if (
    kdf === KDF_SCRYPT &&
    !(
      inRange(scryptParams.log2N, LIMITS.log2N) &&
      inRange(scryptParams.r, LIMITS.r) &&
      inRange(scryptParams.p, LIMITS.p)
    )
  ) {
    throw decryptFailed("scrypt parameters in header out of range");
  }
  return {
    version,
    kdf,
    chunkSize: 2 ** log2Chunk,
    scrypt: scryptParams,
    salt: Buffer.from(header.subarray(16, 32)),
    keyId: header.subarray(32, 40).toString("hex"),
    mac: Buffer.from(header.subarray(MAC_OFFSET, HEADER_LENGTH)),
    bytes: Buffer.from(header),
  };
}

/** Finds the payload key for a header among the keys given, checking the header's MAC. */
async function unlock(header: ParsedHeader, keys: readonly DecryptionKey[]): Promise<Buffer> {
  const tryMaster = (master: Buffer): Buffer | undefined => {
    const { headerKey, payloadKey } = subkeys(master, header.salt);
    return timingSafeEqual(headerMac(headerKey, header.bytes), header.mac) ? payloadKey : undefined;
  };
  if (header.kdf === KDF_RAW) {
    const raw = keys
      .filter((k): k is { key: Uint8Array | string } => "key" in k)
      .map((k) => toKeyBytes(k.key));
    const matching = raw.filter((k) => keyIdBytes(k).toString("hex") === header.keyId);
    if (matching.length === 0) {
      const have = raw.map((k) => keyIdBytes(k).toString("hex"));
      throw decryptFailed(
        `this artifact needs key ${header.keyId}; the keys given are [${have.join(", ") || "none"}]`,
        { neededKeyId: header.keyId, givenKeyIds: have },
      );
    }
    for (const key of matching) {
      const payloadKey = tryMaster(key);
      if (payloadKey) return payloadKey;
    }
    throw decryptFailed("header authentication failed: the header was altered", { keyId: header.keyId });
  }
  const passphrases = keys.filter((k): k is { passphrase: string } => "passphrase" in k);
  if (passphrases.length === 0) {
    throw decryptFailed("this artifact was encrypted with a passphrase, and none was given", {
      kdf: "scrypt",
    });
  }
  for (const { passphrase } of passphrases) {
    const payloadKey = tryMaster(await scryptAsync(passphrase, header.salt, header.scrypt));
    if (payloadKey) return payloadKey;
  }
  throw decryptFailed("header authentication failed: wrong passphrase, or the header was altered", {
    kdf: "scrypt",
  });
}

class DecryptStream extends NodeTransform {
  private readonly queue = new ByteQueue();
  private header: ParsedHeader | undefined;
  private payloadKey: Buffer | undefined;
  private counter = 0;

  constructor(private readonly keys: readonly DecryptionKey[]) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  private open(): Promise<void> {
    const header = parseHeader(this.queue.take(HEADER_LENGTH));
    this.header = header;
    return unlock(header, this.keys).then((payloadKey) => {
      this.payloadKey = payloadKey;
    });
  }

  private unseal(sealed: Buffer, last: boolean): void {
    const index = this.counter++;
    const body = sealed.subarray(0, sealed.length - TAG_LENGTH);
    const decipher = createDecipheriv("aes-256-gcm", this.payloadKey!, nonceFor(index, last));
    decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LENGTH));
    const plain = decipher.update(body);
    try {
      decipher.final();
    } catch (error) {
      const what = last ? "the last chunk" : `chunk ${index}`;
      throw decryptFailed(
        `${what} failed authentication (corrupted, truncated, reordered or tampered)`,
        { chunk: index, last },
        error,
      );
    }
    // Only now, with the tag checked, may the chunk's plaintext leave.
    if (plain.length > 0) this.push(plain);
  }

  private drain(): void {
    const sealedSize = this.header!.chunkSize + TAG_LENGTH;
    while (this.queue.length > sealedSize) this.unseal(this.queue.take(sealedSize), false);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.queue.push(chunk);
    try {
      if (this.payloadKey) {
        this.drain();
        callback();
        return;
      }
      if (this.header || this.queue.length < HEADER_LENGTH) {
        callback();
        return;
      }
      this.open().then(
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
      this.unseal(this.queue.take(rest), true);
      callback();
    } catch (e) {
      callback(e as Error);
    }
  }
}

/**
 * AES-256-GCM encryption in independently authenticated chunks (format: docs/FORMAT.md).
 *
 * Decryption takes the keys from `restore({ keys })`/`verify({ keys })`: raw keys are matched by
 * fingerprint (so a keyring of old and new keys works after rotation); passphrases are tried in turn.
 *
 * @default chunkSize 65536; scrypt { log2N: 15, r: 8, p: 1 }
 * @throws {CONFIG_INVALID} naming the option, e.g. a key that is not 32 bytes.
 * @example aes256gcm({ key: process.env.BACKUP_KEY }) // 64 hex digits or base64
 */
export function aes256gcm(options: Aes256GcmOptions): Transform {
  const parsed = parseOptions(aes256gcmOptionsSchema, options, "aes256gcm");
  const keySpec: EncryptKey =
    parsed.key !== undefined
      ? { kind: "raw", key: toKeyBytes(parsed.key) }
      : { kind: "scrypt", passphrase: parsed.passphrase!, params: parsed.scrypt };
  const record: TransformRecord = {
    name: "aes-256-gcm",
    role: "encryption",
    formatVersion: AES_FORMAT_VERSION,
    chunkSize: parsed.chunkSize,
    kdf: keySpec.kind,
    ...(keySpec.kind === "raw" ? { keyId: keyIdBytes(keySpec.key).toString("hex") } : {}),
  };
  return {
    ...aesDecoder,
    encode: () => new EncryptStream(keySpec, parsed.chunkSize),
    describe: () => ({ ...record }),
  };
}

/** The decoding half alone: what `restore` uses when it meets an "aes-256-gcm" record. */
export const aesDecoder: Transform = {
  name: "aes-256-gcm",
  role: "encryption",
  extension: ".enc",
  encode: () => {
    throw new StowageError(
      "CONFIG_INVALID",
      "aes-256-gcm: this decoder cannot encrypt; use aes256gcm({ key })",
    );
  },
  decode: (_record: TransformRecord, context: DecodeContext) => new DecryptStream(context.keys),
  describe: () => ({ name: "aes-256-gcm", role: "encryption" }),
};
