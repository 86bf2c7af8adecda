import * as zlib from "node:zlib";
import type { z } from "zod";
import type { TransformRecord } from "../core/manifest.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Transform } from "../core/types.js";
import {
  type BlockCodec,
  BlockParallelEncoder,
  blockParallelOptionsShape,
  defaultConcurrency,
} from "./block-parallel.js";

/** deflate's window: the most a back-reference can reach, so the dictionary each block needs. */
const WINDOW = 32 * 1024;

/**
 * Blocks up to this size are deflated on the main thread: for a few KiB (a small backup's only
 * block, a large one's last) zlib's async stream and the thread pool's round trip cost about
 * twenty times the deflating, which takes well under a millisecond here. Smaller than the
 * smallest `blockSize`, so whole blocks always go to the pool.
 */
const MAIN_THREAD_BLOCK = 16 * 1024;

/** The zod schema of {@link GzipOptions}, which parses the options at the boundary. */
export const gzipOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** zlib level 0-9. @default 6 */
      level: z.number().int().min(0).max(9).default(6),
      ...blockParallelOptionsShape,
    })
    .strict(),
);
/** What {@link gzip} takes: the level, and the blocks compressed in parallel. */
export interface GzipOptions {
  /**
   * Blocks compressed at once on libuv's thread pool.
   * @default the number of cores, at most UV_THREADPOOL_SIZE − 1 (so 3 with the default pool of
   *   4: file reads and writes share that pool). Raise UV_THREADPOOL_SIZE to use more cores.
   */
  concurrency?: number;
  /** Input bytes per block, 64 KiB-64 MiB. @default 1048576 (1 MiB) */
  blockSize?: number;
  /** zlib level 0-9. @default 6 */
  level?: number;
}
type _GzipOptionsAgrees = Assert<Agrees<GzipOptions, z.input<typeof gzipOptionsSchema>>>;

/**
 * Compresses one block as raw deflate. Not the last block: ends on a byte boundary with a sync
 * flush and no final bit, so the next block's deflate data can follow it directly.
 */
export type DeflateBlock = (
  block: Buffer,
  options: zlib.ZlibOptions,
  callback: (error: Error | null, result: Buffer) => void,
) => void;

const crc32: (data: Uint8Array, value?: number) => number =
  typeof (zlib as { crc32?: unknown }).crc32 === "function" ? zlib.crc32 : crc32Js;

let crcTable: Uint32Array | undefined;
/** CRC-32 (IEEE) for Node versions before 20.15, which lack zlib.crc32. */
function crc32Js(data: Uint8Array, value = 0): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = ~value >>> 0;
  for (let i = 0; i < data.length; i++) crc = crcTable[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

/**
 * pigz's layout: ONE gzip member whose deflate stream is made of independently compressed blocks.
 * Each block is primed with the last 32 KiB of the block before it as a dictionary (so the ratio
 * matches serial gzip), ends with a sync flush (byte-aligned, not final), and the last block ends
 * the stream. The CRC-32 and length in the trailer cover the whole input.
 *
 * One member rather than one per block: some readers (zlib's inflate used naively, several HTTP
 * and archive libraries) stop after the first member and would silently lose the rest of a
 * backup. Every gzip reader reads a single member.
 */
class GzipBlockCodec implements BlockCodec {
  readonly dictionarySize = WINDOW;
  private crc = 0;
  private size = 0;

  constructor(
    private readonly level: number,
    private readonly deflate: DeflateBlock,
  ) {}

  header(): Buffer {
    // ID1 ID2 CM=deflate FLG=0 MTIME=0 (reproducible output) XFL OS=3 (Unix)
    const xfl = this.level === 9 ? 2 : this.level === 1 ? 4 : 0;
    return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]);
  }

  observe(chunk: Buffer): void {
    this.crc = crc32(chunk, this.crc);
    this.size += chunk.length;
  }

  compress(block: Buffer, last: boolean, previous: Buffer | undefined): Promise<Buffer> {
    const options: zlib.ZlibOptions = {
      level: this.level,
      // zlib's largest hash table and literal buffer (256 KiB more per running block than the
      // default 8): 4-6 % less CPU at level 6 on dump-like text and a slightly better ratio, for
      // output any inflater reads the same way (memLevel is the encoder's business alone).
      memLevel: 9,
      // Output buffer: a small block (a small backup's only one) needs no 256 KiB buffer, and
      // allocating one per backup cost more than compressing it. Output that outgrows the
      // buffer is still all returned, in more than one piece.
      chunkSize: Math.min(256 * 1024, block.length + 1024),
      finishFlush: last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
      ...(previous && previous.length > 0 ? { dictionary: previous } : {}),
    };
    if (block.length <= MAIN_THREAD_BLOCK && this.deflate === zlib.deflateRaw) {
      try {
        return Promise.resolve(zlib.deflateRawSync(block, options));
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return new Promise((resolve, reject) => {
      this.deflate(block, options, (error, result) => (error ? reject(error) : resolve(result)));
    });
  }

  trailer(): Buffer {
    const trailer = Buffer.allocUnsafe(8);
    trailer.writeUInt32LE(this.crc >>> 0, 0);
    trailer.writeUInt32LE(this.size % 2 ** 32, 4); // ISIZE is the length modulo 2^32
    return trailer;
  }
}

/**
 * The encoder behind {@link gzip}, exposed for tests and benchmarks: a stream whose
 * `peakInFlight` and `peakRunning` report how many blocks it held and compressed at once.
 * `deflate` replaces zlib's async raw deflate (tests use it to delay or fail blocks).
 */
export function createParallelGzip(
  options: GzipOptions = {},
  deflate: DeflateBlock = zlib.deflateRaw,
): BlockParallelEncoder {
  const { level, concurrency, blockSize } = parseOptions(gzipOptionsSchema, options, "gzip");
  return new BlockParallelEncoder(new GzipBlockCodec(level, deflate), {
    blockSize,
    concurrency: concurrency ?? defaultConcurrency(),
  });
}

/**
 * gzip compression (RFC 1952), in parallel: the input is cut into blocks (1 MiB) that are
 * compressed at once on libuv's thread pool (one per core by default) and written in order as a
 * single gzip member, the way pigz does. `gzip -d`, `zcat`, `pigz -d` and any other gzip reader
 * read the artifact once decrypted; the output is about the size serial gzip makes.
 *
 * Memory: at most 2 × `concurrency` blocks are held (input and compressed), about 2.6 MiB per
 * core with 1 MiB blocks, plus one deflate state (640 KiB) per running block; input waits
 * (backpressure) while that many are pending.
 *
 * Decompression is serial and streaming (deflate cannot be split); it reads both this layout and
 * multi-member gzip. The manifest records `level`, `concurrency` and `blockSize`; only the name
 * matters for decoding, so artifacts from older versions (serial gzip) decode the same way.
 *
 * @default level 6, concurrency = cores (at most UV_THREADPOOL_SIZE − 1), blockSize 1 MiB
 * @throws {CONFIG_INVALID} on a level outside 0-9, a concurrency below 1 or a block size out of range.
 * @example backup({ ..., transforms: [gzip({ level: 6 }), aes256gcm({ key })] })
 */
export function gzip(options: GzipOptions = {}): Transform {
  const parsed = parseOptions(gzipOptionsSchema, options, "gzip");
  const concurrency = parsed.concurrency ?? defaultConcurrency();
  const record: TransformRecord = {
    name: "gzip",
    role: "compression",
    level: parsed.level,
    format: "gzip-single-member-blocks",
    concurrency,
    blockSize: parsed.blockSize,
  };
  return {
    name: "gzip",
    role: "compression",
    extension: ".gz",
    encode: () => createParallelGzip({ ...parsed, concurrency }),
    decode: () => zlib.createGunzip({ chunkSize: 1 << 18 }),
    describe: () => ({ ...record }),
  };
}
