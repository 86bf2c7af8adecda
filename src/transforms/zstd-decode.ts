import type { TransformCallback } from "node:stream";
import type { ZstdApi } from "./zstd.js";
import { ZstdFrameSplitter } from "./zstd-frames.js";

/**
 * The largest recorded block size decoded frame by frame in parallel; above it, a stream decoder
 * (one zstd context, constant memory) reads the artifact instead.
 */
export const MAX_PARALLEL_BLOCK = 4 << 20;

/**
 * Decodes a stream of zstd frames that each hold at most `blockSize` plain bytes (what `zstd()`
 * writes, recorded as `format: "zstd-frames"` and `blockSize`): each whole frame is decompressed
 * on libuv's thread pool, `concurrency` frames at a time, and passed on in order, so decompression
 * runs on other cores while the main thread decrypts and hashes. A frame that would decode to more
 * than `blockSize`, or whose compressed size passes what zstd can make of that, fails the stream:
 * a decompression bomb costs at most one block. Memory: `concurrency` × (a compressed frame + a
 * block), 2 × 2 MiB at the defaults on 2 cores.
 */
export class ParallelZstdDecoder extends ZstdFrameSplitter {
  private pieces: Buffer[] = [];
  private piecesLength = 0;
  private readonly inFlight: Array<Promise<Buffer>> = [];
  private readonly maxFrame: number;

  constructor(
    private readonly api: ZstdApi,
    private readonly blockSize: number,
    private readonly concurrency: number,
  ) {
    super();
    // ZSTD_COMPRESSBOUND plus room for frame and block headers and the checksum.
    this.maxFrame = blockSize + (blockSize >> 8) + (64 << 10);
  }

  protected override passPiece(piece: Buffer, ends: boolean): void {
    this.pieces.push(piece);
    this.piecesLength += piece.length;
    if (this.piecesLength > this.maxFrame) {
      throw new Error(`zstd: a frame longer than a ${this.blockSize}-byte block can compress to (corrupted)`);
    }
    if (!ends) return;
    // The pieces are views of the caller's chunks: one copy makes the frame the pool works on.
    const frame = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.piecesLength);
    this.pieces = [];
    this.piecesLength = 0;
    const decoding = new Promise<Buffer>((resolve, reject) => {
      // One output buffer of a whole block: the default 16 KiB chunks cost a round trip each.
      const options = { maxOutputLength: this.blockSize, chunkSize: this.blockSize + 1 };
      this.api.zstdDecompress(frame, options, (error, out) => (error ? reject(error) : resolve(out)));
    });
    decoding.catch(() => undefined); // awaited in order by drain(); a later one may fail first
    this.inFlight.push(decoding);
  }

  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback): void {
    super._transform(chunk, encoding, (error) => {
      if (error) callback(error);
      else this.drain(this.concurrency).then(() => callback(), callback);
    });
  }

  override _flush(callback: TransformCallback): void {
    super._flush((error) => {
      if (error) callback(error);
      else this.drain(0).then(() => callback(), callback);
    });
  }

  /** Passes on decoded frames, in order, until at most `keep` are still decoding. */
  private async drain(keep: number): Promise<void> {
    while (this.inFlight.length > keep) {
      const out = await this.inFlight.shift()!;
      if (out.length > 0) this.push(out);
    }
  }
}
