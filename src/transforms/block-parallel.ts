import { availableParallelism } from "node:os";
import { Transform, type TransformCallback } from "node:stream";
import { lazySchema } from "../core/options.js";

/**
 * The codec-specific half of a {@link BlockParallelEncoder}: how one block is compressed (off the
 * main thread, e.g. with zlib's async API, which runs on the libuv thread pool) and what frames
 * the blocks.
 */
export interface BlockCodec {
  /**
   * How many bytes at the end of each block the next block's `compress` receives as `previous`
   * (e.g. 32 KiB, deflate's window, to prime a dictionary). 0: none.
   */
  readonly dictionarySize: number;
  /** Bytes written before the first block, if any. */
  header(): Buffer | undefined;
  /** Sees every input byte, in order, on the main thread (e.g. to update a CRC). */
  observe?(chunk: Buffer): void;
  /**
   * Compresses one block. `previous` is the tail (`dictionarySize` bytes at most) of the block
   * before it, undefined for the first block or when `dictionarySize` is 0; `last` is true exactly once, for the final block,
   * which may be empty. The result may come in pieces, written in order: joining them would be a
   * copy of every compressed byte on the main thread for nothing.
   */
  compress(block: Buffer, last: boolean, previous: Buffer | undefined): Promise<Buffer | readonly Buffer[]>;
  /** Bytes written after the last block, if any. Called once, after every block is out. */
  trailer(): Buffer | undefined;
  /** Releases what the codec holds (reused compressors); called when the stream ends or fails. */
  close?(): void;
}

export interface BlockParallelOptions {
  /** Input bytes per block. */
  blockSize: number;
  /** Blocks compressed at the same time. */
  concurrency: number;
  /**
   * Blocks cut from the input and not yet written out (compressing, waiting for a thread, or
   * done and waiting for an earlier block). Input is refused while this many are pending, which
   * bounds memory at about `maxInFlight × (blockSize + compressed block)`.
   * @default 2 × concurrency
   */
  maxInFlight?: number;
}

interface Slot {
  block: Buffer;
  /** The encoder's own buffer the block was copied into, handed back once compressed. */
  owned: Buffer | undefined;
  previous: Buffer | undefined;
  last: boolean;
  started: boolean;
  done: boolean;
  output?: Buffer | readonly Buffer[];
  error?: Error;
}

/**
 * The size of libuv's thread pool, which zlib's async calls share with file system and crypto
 * work. It is fixed when the pool first starts, from UV_THREADPOOL_SIZE (default 4).
 */
export function threadPoolSize(): number {
  const n = Number(process.env.UV_THREADPOOL_SIZE);
  return Number.isInteger(n) && n > 0 ? n : 4;
}

/**
 * Default concurrency: one block more than there are cores, but leave one thread of libuv's pool
 * free for the file reads and writes of the same pipeline (they queue behind compressions
 * otherwise). The one more keeps every core compressing while the main thread hashes and
 * encrypts: with exactly one block per core, a core waits whenever the main thread is the one
 * running, and on 2 cores `cores + 1` measured 12-13% faster for zstd and gzip alike.
 */
export function defaultConcurrency(): number {
  return Math.max(1, Math.min(availableParallelism() + 1, threadPoolSize() - 1));
}

/**
 * A Transform that cuts its input into fixed-size blocks, compresses up to `concurrency` of them
 * at once off the main thread, and writes the results in input order. Backpressure: the write
 * callback is held while `maxInFlight` blocks are pending, so a fast source waits for the
 * compressors instead of filling memory.
 */
export class BlockParallelEncoder extends Transform {
  private parts: Buffer[] = [];
  private partsLength = 0;
  private readonly slots: Slot[] = [];
  private running = 0;
  private previous: Buffer | undefined;
  private headerDone = false;
  private finalCut = false;
  private ending = false;
  private heldCallback: TransformCallback | undefined;
  private flushCallback: TransformCallback | undefined;
  private readonly maxInFlight: number;
  /**
   * Block buffers to copy small input chunks into, reused once their block is compressed. A
   * fresh 1 MiB buffer per block is garbage that V8 is slow to collect: a large ArrayBuffer
   * costs its young generation one small object, so no scavenge comes for it, and they pile up
   * until a full collection (tens of MiB of RSS on Node 24).
   */
  private readonly spare: Buffer[] = [];
  /** Most blocks ever pending at once (for tests and benchmarks). */
  peakInFlight = 0;
  /** Most compressions ever running at once. */
  peakRunning = 0;
  /** Blocks compressed so far. */
  blocks = 0;

  constructor(
    private readonly codec: BlockCodec,
    private readonly options: BlockParallelOptions,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: options.blockSize });
    this.maxInFlight = Math.max(options.concurrency, options.maxInFlight ?? 2 * options.concurrency);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length > 0) {
      this.codec.observe?.(chunk);
      this.parts.push(chunk);
      this.partsLength += chunk.length;
    }
    this.heldCallback = callback;
    this.pump();
  }

  override _flush(callback: TransformCallback): void {
    this.ending = true;
    this.flushCallback = callback;
    this.pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // Compressions already on the thread pool finish on their own; their results are dropped.
    this.codec.close?.();
    this.parts = [];
    this.slots.length = 0;
    this.spare.length = 0;
    this.previous = undefined;
    callback(error);
  }

  /** Cuts blocks while there is room, starts compressions, writes finished blocks in order. */
  private pump(): void {
    if (this.destroyed) return;
    // Write out what is finished, in order.
    while (this.slots.length > 0 && this.slots[0]!.done) {
      const slot = this.slots.shift()!;
      if (slot.error) {
        this.destroy(slot.error);
        return;
      }
      const output = slot.output!;
      if (Buffer.isBuffer(output)) {
        if (output.length > 0) this.push(output);
      } else {
        for (const piece of output) if (piece.length > 0) this.push(piece);
      }
    }
    // Cut new blocks while there is room.
    while (this.slots.length < this.maxInFlight) {
      if (this.partsLength >= this.options.blockSize) {
        this.cut(this.options.blockSize, false);
      } else if (this.ending && !this.finalCut) {
        this.cut(this.partsLength, true);
      } else {
        break;
      }
    }
    // Start compressions while threads are free.
    for (const slot of this.slots) {
      if (this.running >= this.options.concurrency) break;
      if (!slot.started) this.start(slot);
    }
    if (this.heldCallback && this.slots.length < this.maxInFlight) {
      const callback = this.heldCallback;
      this.heldCallback = undefined;
      callback();
    }
    if (this.flushCallback && this.finalCut && this.slots.length === 0) {
      const callback = this.flushCallback;
      this.flushCallback = undefined;
      const trailer = this.codec.trailer();
      if (trailer && trailer.length > 0) this.push(trailer);
      this.codec.close?.();
      callback();
    }
  }

  private cut(size: number, last: boolean): void {
    let block: Buffer;
    let owned: Buffer | undefined;
    const first = this.parts[0];
    if (first && first.length >= size) {
      // The common case with 1 MiB reads: a view, no copy.
      block = first.subarray(0, size);
      if (first.length === size) this.parts.shift();
      else this.parts[0] = first.subarray(size);
    } else {
      // The last block (often short) gets a buffer of its own size unless a spare one is at hand.
      owned = this.spare.pop() ?? (last ? undefined : Buffer.allocUnsafe(this.options.blockSize));
      block = owned ? owned.subarray(0, size) : Buffer.allocUnsafe(size);
      let filled = 0;
      while (filled < size) {
        const part = this.parts[0]!;
        const used = Math.min(part.length, size - filled);
        part.copy(block, filled, 0, used);
        filled += used;
        if (used === part.length) this.parts.shift();
        else this.parts[0] = part.subarray(used);
      }
    }
    this.partsLength -= size;
    if (!this.headerDone) {
      this.headerDone = true;
      const header = this.codec.header();
      if (header && header.length > 0) this.push(header);
    }
    this.slots.push({ block, owned, previous: this.previous, last, started: false, done: false });
    this.peakInFlight = Math.max(this.peakInFlight, this.slots.length);
    // A copy of the tail, so the previous block (often a view of a larger read buffer) is freed.
    const keep = Math.min(this.codec.dictionarySize, block.length);
    this.previous = keep > 0 ? Buffer.from(block.subarray(block.length - keep)) : undefined;
    if (last) this.finalCut = true;
  }

  private start(slot: Slot): void {
    slot.started = true;
    this.running++;
    this.peakRunning = Math.max(this.peakRunning, this.running);
    const settle = (output: Buffer | readonly Buffer[] | undefined, error: Error | undefined) => {
      this.running--;
      slot.done = true;
      slot.output = output;
      slot.error = error;
      // Free the input as soon as it is compressed; a buffer of ours is kept for the next copy
      // (the codec is done with it: its promise has settled).
      if (slot.owned && !error && this.spare.length < this.maxInFlight) this.spare.push(slot.owned);
      slot.owned = undefined;
      slot.block = EMPTY;
      slot.previous = undefined;
      this.blocks++;
      this.pump();
    };
    let pending: Promise<Buffer | readonly Buffer[]>;
    try {
      pending = this.codec.compress(slot.block, slot.last, slot.previous);
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then(
      (output) => settle(output, undefined),
      (error: unknown) => settle(undefined, error instanceof Error ? error : new Error(String(error))),
    );
  }
}

const EMPTY = Buffer.alloc(0);

/** The options every block-parallel codec takes (gzip, zstd). */
export const blockParallelOptionsShape = lazySchema((z) => ({
  /**
   * Blocks compressed at once on libuv's thread pool.
   * @default the number of cores + 1, at most UV_THREADPOOL_SIZE − 1 (so 3 with the default pool of
   *   4: file reads and writes share that pool). Raise UV_THREADPOOL_SIZE to use more cores.
   */
  concurrency: z.number().int().min(1).max(256).optional(),
  /** Input bytes per block, 64 KiB-64 MiB. @default 1048576 (1 MiB) */
  blockSize: z
    .number()
    .int()
    .min(64 * 1024)
    .max(64 << 20)
    .default(1 << 20),
}));
