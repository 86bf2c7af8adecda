/**
 * The largest recorded block size decoded frame by frame in parallel; above it, a stream decoder
 * (one context, constant memory) reads the artifact instead.
 */
export const MAX_PARALLEL_BLOCK = 4 << 20;

/**
 * Decodes one whole frame (a zstd frame, a gzip member) off the main thread, e.g. with zlib's
 * async one-shot API, which runs on libuv's thread pool.
 */
export type DecodeFrame = (frame: Buffer, callback: (error: Error | null, out: Buffer) => void) => void;

/**
 * The half of a parallel decoder that both codecs share: collects the pieces of each frame (views
 * of the caller's chunks, cut by a codec's splitter), hands whole frames to `decode`, up to
 * `concurrency` at once, and passes the results on in order.
 *
 * Memory is bounded and reused: a frame that arrives in one chunk is decoded from a view of it
 * (no copy); one that spans chunks is copied into an assembly buffer of `maxFrame` bytes taken
 * from a free list and given back when its decoding ends, so at most `concurrency` + 1 such
 * buffers ever exist, however long the artifact. A fresh buffer per frame would be garbage that
 * V8 frees only at its next full collection (an external-memory trigger about 64 MiB later),
 * which showed as peak RSS growing with the size of a restore.
 */
export class FrameQueue {
  private pieces: Buffer[] = [];
  private piecesLength = 0;
  private readonly inFlight: Array<Promise<Buffer>> = [];
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly decode: DecodeFrame,
    /** The longest frame accepted; a longer one is refused before it is decoded (a bomb or damage). */
    private readonly maxFrame: number,
    /** Frames decoded at once. */
    readonly concurrency: number,
    /** Names the codec in errors. */
    private readonly what: string,
  ) {}

  /** Frames decoding or decoded and not yet passed on. */
  get pending(): number {
    return this.inFlight.length;
  }

  /**
   * Adds the next piece of the current frame; `ends` when it closes the frame, which then starts
   * decoding. @throws when the frame grows past `maxFrame`.
   */
  add(piece: Buffer, ends: boolean): void {
    if (piece.length > 0) {
      this.pieces.push(piece);
      this.piecesLength += piece.length;
    }
    if (this.piecesLength > this.maxFrame) {
      throw new Error(`${this.what}: a frame longer than its recorded block can compress to (corrupted)`);
    }
    if (!ends) return;
    let frame: Buffer;
    let assembly: Buffer | undefined;
    if (this.pieces.length <= 1) {
      frame = this.pieces[0] ?? Buffer.alloc(0);
    } else {
      assembly = this.spare.pop() ?? Buffer.allocUnsafe(this.maxFrame);
      let at = 0;
      for (const piece of this.pieces) at += piece.copy(assembly, at);
      frame = assembly.subarray(0, at);
    }
    this.pieces = [];
    this.piecesLength = 0;
    const decoding = new Promise<Buffer>((resolve, reject) => {
      this.decode(frame, (error, out) => {
        // The pool is done reading the frame: its assembly buffer can take the next one.
        if (assembly) this.spare.push(assembly);
        if (error) reject(error);
        else resolve(out);
      });
    });
    decoding.catch(() => undefined); // awaited in order by drain(); a later one may fail first
    this.inFlight.push(decoding);
  }

  /** Whether a frame has begun and not ended (a stream that stops here is truncated). */
  get partial(): boolean {
    return this.piecesLength > 0;
  }

  /** Passes on decoded frames, in order, until at most `keep` are still decoding. */
  async drain(push: (out: Buffer) => void, keep: number): Promise<void> {
    while (this.inFlight.length > keep) {
      const out = await this.inFlight.shift()!;
      if (out.length > 0) push(out);
    }
  }

  /** Drops what is held; decodings already on the pool finish and their results are dropped. */
  clear(): void {
    this.pieces = [];
    this.piecesLength = 0;
    this.inFlight.length = 0;
    this.spare.length = 0;
  }
}
