/**
 * The chunks (docs/FORMAT.md, "Chunks") and the streams that write and read a whole artifact:
 * a header, then AES-256-GCM chunks whose nonce binds their index and whether each is the last.
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { Transform as NodeTransform, type TransformCallback } from "node:stream";
import type { TransformRecord } from "../../core/manifest.js";
import type { BackupIdentity, DecodeContext, Decoder, DecryptionKey } from "../../core/types.js";
import { AES_LIMITS, decryptFailed, KEY_LENGTH, MAGIC, TAG_LENGTH } from "./format.js";
import { KDF_RAW, type ParsedV1, parseV1, unlockV1, V1_HEADER_LENGTH } from "./header-v1.js";
import {
  type ParsedV2,
  parseV2,
  type ResolvedRecipient,
  stanzaRecords,
  unlockV2,
  V2_FIXED_LENGTH,
  V2_MAC_LENGTH,
  v2Keys,
} from "./header-v2.js";
import { buildV3Header, parseV3, unlockV3 } from "./header-v3.js";
import { keyMaterial, type RecipientRecord } from "./keys.js";
import { PartQueue } from "./parts.js";

// The first 8 bytes (magic and version) tell the two header versions apart.
type ParsedHeader = ParsedV1 | ParsedV2;

/** How many bytes the header has, from its first bytes; undefined until enough have arrived. */
function headerLength(start: Buffer): number | undefined {
  if (start.length < 8) return undefined;
  if (!start.subarray(0, 7).equals(MAGIC))
    throw decryptFailed("not a stowage encrypted artifact (bad magic)");
  const version = start[7]!;
  if (version === 1) return V1_HEADER_LENGTH;
  if (version !== 2 && version !== 3)
    throw decryptFailed(`unsupported format version ${version}`, { version });
  if (start.length < V2_FIXED_LENGTH) return undefined;
  const length = start.readUInt16BE(10);
  if (length < V2_FIXED_LENGTH + 3 + V2_MAC_LENGTH || length > AES_LIMITS.headerBytes) {
    throw decryptFailed(`header length ${length} out of range`);
  }
  return length;
}

function parseHeader(header: Buffer): ParsedHeader {
  const version = header[7]!;
  return version === 1 ? parseV1(header) : version === 3 ? parseV3(header) : parseV2(header);
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

export type HeaderMaker = () => Promise<{ header: Buffer; payloadKey: Buffer }>;

/** Encrypts: a header from `makeHeader`, then sealed chunks of `chunkSize` plaintext bytes. */
export class EncryptStream extends NodeTransform {
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
      /** The new backup's identity, bound into the new (version-3) header. */
      identity: BackupIdentity;
      onHeader?: (info: HeaderInfo) => void;
    };

/** Facts about an artifact's header, reported to `rekey`. */
export interface HeaderInfo {
  version: number;
  chunkSize: number;
  recipients: RecipientRecord[];
}

/** What the manifest says the artifact is: checked against the header before any chunk opens. */
interface Expected {
  /** The backup's job and id: a version-3 header must bind exactly these. */
  identity?: BackupIdentity | undefined;
  /** The format version the manifest records; a header older than 3 under a 3 is refused. */
  recordVersion?: unknown;
  /** The chunk size the manifest records; the header's must be the same. */
  recordChunkSize?: unknown;
}

/**
 * Refuses a header that disagrees with its manifest (docs/FORMAT.md, "When the manifest and the
 * header disagree"): a version-3 header bound to another backup, or an unbound (older) header
 * where the manifest says the artifact was bound — an older artifact moved under this manifest.
 */
function checkExpected(header: ParsedHeader, expect: Expected): void {
  const recorded = typeof expect.recordVersion === "number" ? expect.recordVersion : 0;
  if (recorded >= 3 && header.version < 3) {
    throw decryptFailed(
      `the manifest records format version ${recorded} but the artifact's header is version ${header.version}: not the artifact this manifest describes`,
      { reason: "version-mismatch", recorded, header: header.version },
    );
  }
  const size = expect.recordChunkSize;
  if (typeof size === "number" && size !== header.chunkSize) {
    throw decryptFailed(
      `the manifest records chunks of ${size} bytes but the artifact's header says ${header.chunkSize}: not the artifact this manifest describes`,
      { reason: "chunk-size-mismatch", recorded: size, header: header.chunkSize },
    );
  }
  const bound = header.version === 3 ? header.identity : undefined;
  const want = expect.identity;
  if (bound && want && (bound.job !== want.job || bound.id !== want.id)) {
    throw decryptFailed(
      `the artifact belongs to backup ${bound.job}/${bound.id}, not to ${want.job}/${want.id}: it was moved under another backup's manifest`,
      { reason: "identity-mismatch", expected: want, actual: bound },
    );
  }
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
    private readonly expect: Expected = {},
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  private async open(length: number): Promise<void> {
    const header = parseHeader(this.queue.takeJoined(length));
    this.chunkSize = header.chunkSize;
    const material = keyMaterial(this.keys);
    const log2Chunk = Math.log2(header.chunkSize);
    if (header.version === 1) {
      this.payloadKey = await unlockV1(header, material);
    } else {
      const dataKey = await (header.version === 3 ? unlockV3 : unlockV2)(header, material);
      this.payloadKey = v2Keys(dataKey).payloadKey;
      checkExpected(header, this.expect);
      if (this.mode.kind === "rekey" && !this.mode.reencrypt) {
        this.push(await buildV3Header(dataKey, this.mode.recipients, log2Chunk, this.mode.identity));
      }
    }
    if (header.version === 1) checkExpected(header, this.expect);
    if (this.mode.kind === "rekey") {
      this.mode.onHeader?.({
        version: header.version,
        chunkSize: header.chunkSize,
        recipients:
          header.version !== 1
            ? stanzaRecords(header.stanzas)
            : header.kdf === KDF_RAW
              ? [{ type: "raw", id: header.keyId }]
              : [{ type: "passphrase" }],
      });
      if (header.version === 1 || this.mode.reencrypt) {
        const dataKey = randomBytes(KEY_LENGTH);
        this.resealKey = v2Keys(dataKey).payloadKey;
        this.push(await buildV3Header(dataKey, this.mode.recipients, log2Chunk, this.mode.identity));
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

/** The decoding half alone: what `restore` uses when it meets an "aes-256-gcm" record. */
export const aesDecoder: Decoder = {
  name: "aes-256-gcm",
  decode: (record: TransformRecord, context: DecodeContext) =>
    new DecryptStream(
      context.keys,
      { kind: "plain" },
      {
        identity: context.identity,
        recordVersion: record.formatVersion,
        recordChunkSize: record.chunkSize,
      },
    ),
};

/**
 * A stream for `rekey`: reads an encrypted artifact (version 1 or 2), unlocks it with `keys`, and
 * writes a version-2 artifact for `recipients`. A version-2 input keeps its data key and its chunk
 * bytes (only the header changes) unless `reencrypt` is set; a version-1 input is re-sealed chunk
 * by chunk under a fresh data key. Every chunk is authenticated on the way through.
 * @internal used by ./rekey.ts
 */
export function createRekeyStream(options: {
  keys: readonly DecryptionKey[];
  recipients: readonly ResolvedRecipient[];
  reencrypt?: boolean;
  onHeader?: (info: HeaderInfo) => void;
  /** The backup being rekeyed, as its manifest says: checked like a restore checks it. */
  from: { identity: BackupIdentity; recordVersion: unknown };
  /** The new backup's identity, bound into the new header. */
  identity: BackupIdentity;
}): NodeTransform {
  return new DecryptStream(
    options.keys,
    {
      kind: "rekey",
      recipients: options.recipients,
      reencrypt: options.reencrypt ?? false,
      identity: options.identity,
      ...(options.onHeader ? { onHeader: options.onHeader } : {}),
    },
    options.from,
  );
}
