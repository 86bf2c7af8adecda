import type { TransformCallback } from "node:stream";
import { FrameQueue, MAX_PARALLEL_BLOCK } from "./parallel-frames.js";
import type { ZstdApi } from "./zstd.js";
import { ZstdFrameSplitter } from "./zstd-frames.js";

export { MAX_PARALLEL_BLOCK };

/**
 * Decodes a stream of zstd frames that each hold at most `blockSize` plain bytes (what `zstd()`
 * writes, recorded as `format: "zstd-frames"` and `blockSize`): each whole frame is decompressed
 * on libuv's thread pool, `concurrency` frames at a time, and passed on in order, so decompression
 * runs on other cores while the main thread decrypts and hashes. A frame that would decode to more
 * than `blockSize`, or whose compressed size passes what zstd can make of that, fails the stream:
 * a decompression bomb costs at most one block. Memory: `concurrency` × (a compressed frame + a
 * block), 3 × 2 MiB at the defaults on 2 cores, with the compressed frames' buffers reused
 * ({@link FrameQueue}).
 */
export class ParallelZstdDecoder extends ZstdFrameSplitter {
  private readonly queue: FrameQueue;
  private readonly pushOut = (out: Buffer) => {
    this.push(out);
  };

  constructor(api: ZstdApi, blockSize: number, concurrency: number) {
    super();
    // One output buffer of a whole block: the default 16 KiB chunks cost a round trip each.
    const options = { maxOutputLength: blockSize, chunkSize: blockSize + 1 };
    // ZSTD_COMPRESSBOUND plus room for frame and block headers and the checksum.
    const maxFrame = blockSize + (blockSize >> 8) + (64 << 10);
    this.queue = new FrameQueue(
      (frame, callback) => api.zstdDecompress(frame, options, callback),
      maxFrame,
      concurrency,
      "zstd",
    );
  }

  protected override passPiece(piece: Buffer, ends: boolean): void {
    this.queue.add(piece, ends);
  }

  override _transform(chunk: Buffer, encoding: BufferEncoding, callback: TransformCallback): void {
    super._transform(chunk, encoding, (error) => {
      if (error) callback(error);
      else this.queue.drain(this.pushOut, this.queue.concurrency).then(() => callback(), callback);
    });
  }

  override _flush(callback: TransformCallback): void {
    super._flush((error) => {
      if (error) callback(error);
      else this.queue.drain(this.pushOut, 0).then(() => callback(), callback);
    });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.queue.clear();
    callback(error);
  }
}
