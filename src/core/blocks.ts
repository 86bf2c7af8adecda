import { createHash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import type { z } from "zod";
import { StowageError } from "./errors.js";
import { lazySchema } from "./options.js";
import { HashCounter } from "./streams.js";
import type { Agrees, Assert } from "./type-checks.js";

const MiB = 1024 * 1024;

/**
 * The block size `backup()` hashes unencrypted artifacts in: 2 MiB. A restore holds the block being
 * checked and, until the consumer takes it, the one released before it; 8 MiB blocks (the first
 * default) put an S3 restore at 125-131 MiB peak RSS, 2 MiB ones keep two blocks to 4 MiB. The
 * manifest grows by 44 characters a block: 22 KB a GiB.
 */
export const ARTIFACT_BLOCK_SIZE = 2 * MiB;
/**
 * The largest block a manifest may name. A restore holds one block in memory until it is checked,
 * so a manifest cannot make it hold more than this.
 */
export const MAX_ARTIFACT_BLOCK_SIZE = 64 * MiB;

const DIGEST_BYTES = 32;

/**
 * `artifact.blocks` in a manifest: the SHA-256 of each `size`-byte block of the stored bytes (the
 * last block may be shorter), so a restore can check each block as it arrives and release nothing
 * unchecked without reading the artifact twice. `sha256` is the 32-byte digests, concatenated in
 * order and base64-encoded: 44 characters a block (22 KB a GiB at 2 MiB), where a JSON list of hex
 * strings would take 67. Written for unencrypted artifacts only; encrypted ones authenticate each
 * chunk already (docs/FORMAT.md).
 */
export const artifactBlocksSchema = lazySchema((z) =>
  z
    .object({
      /** Bytes a block (the last may be shorter). */
      size: z.number().int().min(1).max(MAX_ARTIFACT_BLOCK_SIZE),
      /** The blocks' 32-byte SHA-256 digests, concatenated in order, base64. */
      sha256: z.base64("expected base64 of the concatenated 32-byte SHA-256 of each block"),
    })
    .refine(
      (b) => Buffer.from(b.sha256, "base64").length % DIGEST_BYTES === 0,
      "sha256 must hold whole 32-byte digests",
    ),
);
/** `artifact.blocks` in a manifest: the SHA-256 of each block of an unencrypted artifact's stored bytes. */
export interface ArtifactBlocks {
  /** Bytes a block (the last may be shorter). */
  size: number;
  /** The blocks' 32-byte SHA-256 digests, concatenated in order, base64. */
  sha256: string;
}
type _ArtifactBlocksAgrees = Assert<Agrees<ArtifactBlocks, z.output<typeof artifactBlocksSchema>>>;

/** How many blocks an artifact of `bytes` bytes has in `size`-byte blocks. */
export const blockCount = (bytes: number, size: number) => Math.ceil(bytes / size);

/** Whether `blocks` names exactly as many digests as an artifact of `bytes` bytes has blocks. */
export function blocksMatchSize(blocks: ArtifactBlocks, bytes: number): boolean {
  return Buffer.from(blocks.sha256, "base64").length / DIGEST_BYTES === blockCount(bytes, blocks.size);
}

/** Hashes a byte stream in fixed-size blocks as it is fed, cutting chunks at block boundaries. */
export class BlockDigester {
  private hash = createHash("sha256");
  private filled = 0;
  private readonly digests: Buffer[] = [];

  constructor(readonly size = ARTIFACT_BLOCK_SIZE) {}

  update(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(this.size - this.filled, chunk.length - at);
      this.hash.update(at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n));
      this.filled += n;
      at += n;
      if (this.filled === this.size) this.close();
    }
  }

  private close(): void {
    this.digests.push(this.hash.digest());
    this.hash = createHash("sha256");
    this.filled = 0;
  }

  /** The manifest's record, once every byte has been fed. */
  finish(): ArtifactBlocks {
    if (this.filled > 0) this.close();
    return { size: this.size, sha256: Buffer.concat(this.digests).toString("base64") };
  }
}

/** A {@link HashCounter} that also hashes each block (backup's stored-bytes stage when unencrypted). */
export class BlockHashCounter extends HashCounter {
  private readonly digester = new BlockDigester();

  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback): void {
    this.digester.update(chunk);
    super._transform(chunk, encoding, callback);
  }

  blocks(): ArtifactBlocks {
    return this.digester.finish();
  }
}

/**
 * A stage that holds each block back until its SHA-256 matches the manifest's, then passes it on
 * (the chunks as they came, no copy). A block that does not match errors the stream with
 * INTEGRITY_MISMATCH (`details.reason: "block"`, `block`, `offset`) and none of its bytes are
 * released; so are a stream that ends early and one with more blocks than named. Holds at most one
 * block (`blocks.size`, at most {@link MAX_ARTIFACT_BLOCK_SIZE}).
 */
export class BlockCheck extends Transform {
  private readonly expected: Buffer;
  private readonly count: number;
  private held: Buffer[] = [];
  private filled = 0;
  private hash = createHash("sha256");
  private index = 0;

  constructor(
    private readonly blocks: ArtifactBlocks,
    private readonly key: string,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.expected = Buffer.from(blocks.sha256, "base64");
    this.count = this.expected.length / DIGEST_BYTES;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const size = this.blocks.size;
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(size - this.filled, chunk.length - at);
      const piece = at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n);
      this.hash.update(piece);
      this.held.push(piece);
      this.filled += n;
      at += n;
      if (this.filled === size) {
        const error = this.release();
        if (error) {
          callback(error);
          return;
        }
      }
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    const error = this.filled > 0 ? this.release() : undefined;
    if (error) {
      callback(error);
      return;
    }
    callback(this.index === this.count ? null : this.failure("missing"));
  }

  /** Checks the block held, passes it on if it matches; returns the error otherwise. */
  private release(): StowageError | undefined {
    const actual = this.hash.digest();
    const at = this.index * DIGEST_BYTES;
    if (this.index >= this.count) return this.failure("extra");
    if (!actual.equals(this.expected.subarray(at, at + DIGEST_BYTES))) return this.failure("block");
    for (const piece of this.held) this.push(piece);
    this.held = [];
    this.filled = 0;
    this.hash = createHash("sha256");
    this.index += 1;
    return undefined;
  }

  private failure(reason: "block" | "missing" | "extra"): StowageError {
    const offset = this.index * this.blocks.size;
    const what =
      reason === "block"
        ? `block ${this.index} (bytes from ${offset}) does not match the manifest`
        : reason === "missing"
          ? `ended after ${this.index} of ${this.count} blocks`
          : `has more than the manifest's ${this.count} blocks`;
    return new StowageError(
      "INTEGRITY_MISMATCH",
      `${this.key}: stored bytes ${what}; nothing of it released`,
      {
        details: { key: this.key, which: "stored", reason, block: this.index, offset },
      },
    );
  }
}
