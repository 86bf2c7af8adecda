import { Transform as NodeTransform, type TransformCallback } from "node:stream";
import * as zlib from "node:zlib";
import { FrameQueue } from "./parallel-frames.js";

/**
 * The layout `gzip()` writes, recorded as `format: "gzip-members"` (docs/FORMAT.md, "gzip"): one
 * gzip member (RFC 1952) per block, each deflated on its own (no dictionary from the block
 * before), with an extra field whose subfield "ST" holds the member's whole length in bytes, as
 * BGZF's "BC" does. A sequence of members is one gzip file to every reader (gzip, zcat, pigz,
 * Node, Python, Go), and the lengths let a decoder cut members without inflating to find their
 * ends, so members inflate in parallel. Each member's CRC-32 and length are checked by zlib.
 */
export const GZIP_MEMBERS = "gzip-members";

/** ID1 ID2 CM FLG(FEXTRA) MTIME(4) XFL OS, XLEN, then the subfield: SI1 SI2 LEN(2) size(4). */
export const MEMBER_HEADER_LENGTH = 20;
const FEXTRA = 0x04;
const SI1 = 0x53; // "S"
const SI2 = 0x54; // "T"
/** The most extra-field bytes a member may carry; stowage writes 8. */
const MAX_XLEN = 1024;
/** Magic, method, flags, mtime, XFL, OS and XLEN: what comes before the extra field. */
const PREFIX = 12;

/** One whole member for a block: header with its length, the raw deflate body, CRC-32 and size. */
export function gzipMember(body: Buffer, crc: number, plainLength: number, level: number): Buffer {
  const length = MEMBER_HEADER_LENGTH + body.length + 8;
  const member = Buffer.allocUnsafe(length);
  // MTIME 0 (reproducible output); XFL says "best" / "fastest" as gzip does; OS 3 (Unix).
  const xfl = level === 9 ? 2 : level === 1 ? 4 : 0;
  member.set([0x1f, 0x8b, 8, FEXTRA, 0, 0, 0, 0, xfl, 3], 0);
  member.writeUInt16LE(8, 10);
  member.set([SI1, SI2], 12);
  member.writeUInt16LE(4, 14);
  member.writeUInt32LE(length, 16);
  body.copy(member, MEMBER_HEADER_LENGTH);
  member.writeUInt32LE(crc >>> 0, length - 8);
  member.writeUInt32LE(plainLength % 2 ** 32, length - 4); // ISIZE is the length modulo 2^32
  return member;
}

type Phase = "prefix" | "extra" | "body";

/**
 * Decodes the "gzip-members" layout: cuts the stream into members by their recorded lengths and
 * inflates `concurrency` of them at once on libuv's thread pool, passing the blocks on in order.
 * A member longer than a `blockSize` block can deflate to, one that inflates to more than
 * `blockSize`, one without its length field, a bad CRC-32 or size, and a stream that ends inside
 * a member all fail the stream. Memory: `concurrency` × (a member + a block), with the members'
 * assembly buffers reused ({@link FrameQueue}).
 */
export class ParallelGzipDecoder extends NodeTransform {
  private readonly queue: FrameQueue;
  private readonly maxMember: number;
  private readonly head = Buffer.allocUnsafe(PREFIX + MAX_XLEN);
  private headLength = 0;
  private phase: Phase = "prefix";
  /** Bytes still to come of the current phase (the prefix, the extra field, the rest of the member). */
  private need = PREFIX;
  /** Members seen so far. */
  members = 0;
  private readonly pushOut = (out: Buffer) => {
    this.push(out);
  };

  constructor(blockSize: number, concurrency: number) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    // One output buffer of a whole block: the default 16 KiB chunks cost a round trip each.
    const options = { maxOutputLength: blockSize, chunkSize: blockSize + 1 };
    // deflate's bound (stored blocks: 5 bytes each 16 KiB and more) plus the header and trailer.
    this.maxMember = blockSize + (blockSize >> 8) + (64 << 10);
    this.queue = new FrameQueue(
      (member, callback) => zlib.gunzip(member, options, callback),
      this.maxMember,
      concurrency,
      "gzip",
    );
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    try {
      this.split(chunk);
    } catch (error) {
      callback(error as Error);
      return;
    }
    this.queue.drain(this.pushOut, this.queue.concurrency).then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    if (this.phase !== "prefix" || this.headLength > 0) {
      callback(new Error("gzip: the stream ends in the middle of a member (truncated)"));
    } else if (this.members === 0) {
      callback(new Error("gzip: empty input, not a gzip stream"));
    } else {
      this.queue.drain(this.pushOut, 0).then(() => callback(), callback);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.queue.clear();
    callback(error);
  }

  /** Passes each member's bytes to the queue as views of `chunk`, never one spanning two members. */
  private split(chunk: Buffer): void {
    let start = 0;
    let i = 0;
    while (i < chunk.length) {
      const n = Math.min(this.need, chunk.length - i);
      if (this.phase !== "body") {
        chunk.copy(this.head, this.headLength, i, i + n);
        this.headLength += n;
      }
      i += n;
      this.need -= n;
      if (this.need > 0) break;
      if (this.phase === "prefix") {
        this.need = this.extraLength();
        this.phase = "extra";
      } else if (this.phase === "extra") {
        this.need = this.memberLength() - this.headLength;
        this.phase = "body";
      } else {
        this.queue.add(chunk.subarray(start, i), true);
        start = i;
        this.members++;
        this.phase = "prefix";
        this.need = PREFIX;
        this.headLength = 0;
      }
    }
    if (i > start) this.queue.add(chunk.subarray(start, i), false);
  }

  private extraLength(): number {
    const h = this.head;
    if (h[0] !== 0x1f || h[1] !== 0x8b || h[2] !== 8) {
      throw new Error("gzip: bad member header (not a gzip stream, or corrupted)");
    }
    if (!(h[3]! & FEXTRA)) throw new Error("gzip: a member without its length field (corrupted)");
    const xlen = h.readUInt16LE(10);
    if (xlen < 8 || xlen > MAX_XLEN) throw new Error(`gzip: extra field of ${xlen} bytes (corrupted)`);
    return xlen;
  }

  /** The member's whole length, from its "ST" subfield. */
  private memberLength(): number {
    const h = this.head;
    for (let at = PREFIX; at + 4 <= this.headLength; ) {
      const length = h.readUInt16LE(at + 2);
      if (h[at] === SI1 && h[at + 1] === SI2 && length === 4 && at + 8 <= this.headLength) {
        const member = h.readUInt32LE(at + 4);
        // At least the header, an empty deflate block (2 bytes) and the trailer.
        if (member < this.headLength + 10)
          throw new Error(`gzip: member length ${member} too short (corrupted)`);
        // Refused before its bytes are gathered: a bomb or damage, not a member of this record.
        if (member > this.maxMember) {
          throw new Error(
            `gzip: a member of ${member} bytes, longer than its recorded block can compress to (corrupted)`,
          );
        }
        return member;
      }
      at += 4 + length;
    }
    throw new Error("gzip: a member without its length field (corrupted)");
  }
}
