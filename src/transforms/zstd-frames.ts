import { Transform as NodeTransform, type TransformCallback } from "node:stream";

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const DICT_ID_BYTES = [0, 1, 2, 4];
const CONTENT_SIZE_BYTES = [0, 2, 4, 8];

type SplitState = "magic" | "descriptor" | "blockHeader" | "skippableSize" | "skip" | "frameEnd";

/**
 * Cuts a zstd stream into writes that never span two frames. Node's zstd decompressor (checked on
 * 22.23) stops at the end of the first frame when one write holds the end of one frame and the
 * start of the next, and silently drops the rest (nodejs/node#64741); given frame-aligned writes
 * it decodes every frame. Walks the frame layout of RFC 8878 (header, block headers, checksum;
 * skippable frames) without decompressing, and passes the bytes on as views, without copying.
 * Pipe it into the decompressor (flowing mode keeps its chunks apart; `read()` would merge them).
 */
export class ZstdFrameSplitter extends NodeTransform {
  private state: SplitState = "magic";
  /** Bytes still to pass in the current "skip" run (header fields, block bodies, checksum). */
  private skipping = 0;
  /** Where to go after the skip run. */
  private afterSkip: SplitState = "blockHeader";
  private readonly field = Buffer.alloc(4);
  private fieldLength = 0;
  private checksum = false;
  /** Frames seen so far. */
  frames = 0;

  constructor() {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      let start = 0;
      let i = 0;
      for (;;) {
        if (this.state === "frameEnd") {
          // Everything of this frame in this chunk goes out as one write of its own.
          this.passPiece(chunk.subarray(start, i), true);
          start = i;
          this.frames++;
          this.state = "magic";
        }
        if (i >= chunk.length) break;
        if (this.state === "skip") {
          const n = Math.min(this.skipping, chunk.length - i);
          i += n;
          this.skipping -= n;
          if (this.skipping === 0) this.state = this.afterSkip;
          continue;
        }
        this.field[this.fieldLength++] = chunk[i++]!;
        const want = this.state === "descriptor" ? 1 : this.state === "blockHeader" ? 3 : 4;
        if (this.fieldLength === want) {
          this.fieldLength = 0;
          this.parseField();
        }
      }
      if (i > start) this.passPiece(chunk.subarray(start, i), false);
      callback();
    } catch (error) {
      callback(error as Error);
    }
  }

  /** Where the pieces go: passed on, each within one frame; `ends` when it closes its frame. */
  protected passPiece(piece: Buffer, _ends: boolean): void {
    if (piece.length > 0) this.push(piece);
  }

  override _flush(callback: TransformCallback): void {
    if (this.state !== "magic" || this.fieldLength !== 0) {
      callback(new Error("zstd: the stream ends in the middle of a frame (truncated)"));
    } else if (this.frames === 0) {
      callback(new Error("zstd: empty input, not a zstd stream"));
    } else {
      callback();
    }
  }

  /** Passes `bytes` on unparsed, then goes to `then` (at once when `bytes` is 0). */
  private skip(bytes: number, then: SplitState): void {
    this.skipping = bytes;
    this.afterSkip = then;
    this.state = bytes > 0 ? "skip" : then;
  }

  private parseField(): void {
    const f = this.field;
    switch (this.state) {
      case "magic": {
        const magic = f.readUInt32LE(0);
        if (magic === ZSTD_MAGIC) this.state = "descriptor";
        else if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) this.state = "skippableSize";
        else throw new Error("zstd: bad frame magic number (not a zstd stream, or corrupted)");
        return;
      }
      case "descriptor": {
        const d = f[0]!;
        if (d & 0x08) throw new Error("zstd: reserved bit set in a frame header (corrupted)");
        const contentSizeFlag = d >> 6;
        const singleSegment = (d >> 5) & 1;
        this.checksum = ((d >> 2) & 1) === 1;
        const rest =
          (singleSegment ? 0 : 1) + // window descriptor
          DICT_ID_BYTES[d & 3]! +
          (contentSizeFlag === 0 ? singleSegment : CONTENT_SIZE_BYTES[contentSizeFlag]!);
        this.skip(rest, "blockHeader");
        return;
      }
      case "blockHeader": {
        const v = f[0]! | (f[1]! << 8) | (f[2]! << 16);
        const type = (v >> 1) & 3;
        if (type === 3) throw new Error("zstd: reserved block type (corrupted)");
        const body = type === 1 ? 1 : v >>> 3; // an RLE block stores its one byte
        if (v & 1) this.skip(body + (this.checksum ? 4 : 0), "frameEnd");
        else this.skip(body, "blockHeader");
        return;
      }
      case "skippableSize":
        this.skip(f.readUInt32LE(0), "frameEnd");
        return;
      default:
        return;
    }
  }
}
