import type { Duplex } from "node:stream";
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
import { GZIP_MEMBERS, gzipMember, ParallelGzipDecoder } from "./gzip-members.js";
import { MAX_PARALLEL_BLOCK } from "./parallel-frames.js";

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
   * @default the number of cores + 1, at most UV_THREADPOOL_SIZE − 1 (so 3 with the default pool of
   *   4: file reads and writes share that pool). Raise UV_THREADPOOL_SIZE to use more cores.
   */
  concurrency?: number;
  /** Input bytes per block, 64 KiB-64 MiB. @default 1048576 (1 MiB) */
  blockSize?: number;
  /** zlib level 0-9. @default 6 */
  level?: number;
}
type _GzipOptionsAgrees = Assert<Agrees<GzipOptions, z.input<typeof gzipOptionsSchema>>>;

/** Compresses one block as raw deflate, on its own (a whole deflate stream). */
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

const EMPTY = Buffer.alloc(0);

/**
 * One gzip member per block ({@link GZIP_MEMBERS}): each block deflated on its own, so restore
 * inflates blocks in parallel as it does zstd frames. Before (recorded as
 * "gzip-single-member-blocks", still read) the blocks were primed with the previous block's last 32 KiB and
 * written as ONE member, pigz's layout: that compressed about 1 % better but could only be inflated
 * serially, and restore was then slower than `age -d | pigz -d`. The concern that kept one member
 * (readers that stop after the first) holds for naive uses of zlib's inflate, not for gzip readers:
 * RFC 1952 defines a gzip file as a series of members, and gzip, zcat, pigz, Node's gunzip,
 * Python's gzip and Go's compress/gzip read them all (tests check `gzip -d`).
 */
class GzipMemberCodec implements BlockCodec {
  readonly dictionarySize = 0;
  private blocks = 0;

  constructor(
    private readonly level: number,
    private readonly deflate: DeflateBlock,
  ) {}

  header(): undefined {
    return undefined;
  }

  trailer(): undefined {
    return undefined;
  }

  compress(block: Buffer, _last: boolean): Promise<Buffer> {
    // An empty input still makes one (empty) member, so the artifact is a gzip file; an empty
    // last block after others adds nothing.
    if (this.blocks++ > 0 && block.length === 0) return Promise.resolve(EMPTY);
    const crc = crc32(block);
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
    };
    const member = (body: Buffer) => gzipMember(body, crc, block.length, this.level);
    if (block.length <= MAIN_THREAD_BLOCK && this.deflate === zlib.deflateRaw) {
      try {
        return Promise.resolve(member(zlib.deflateRawSync(block, options)));
      } catch (error) {
        return Promise.reject(error);
      }
    }
    return new Promise((resolve, reject) => {
      this.deflate(block, options, (error, body) => (error ? reject(error) : resolve(member(body))));
    });
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
  return new BlockParallelEncoder(new GzipMemberCodec(level, deflate), {
    blockSize,
    concurrency: concurrency ?? defaultConcurrency(),
  });
}

/**
 * gzip compression (RFC 1952), in parallel: the input is cut into blocks (1 MiB) that are
 * compressed at once on libuv's thread pool (one per core by default) and written in order, one
 * gzip member per block, each with its length in an extra field (the BGZF idea). `gzip -d`,
 * `zcat`, `pigz -d` and any other gzip reader read the artifact once decrypted; the output is
 * about 1 % larger than serial gzip's (each block starts without the previous one's window).
 *
 * Memory: at most 2 × `concurrency` blocks are held (input and compressed), about 2.6 MiB per
 * core with 1 MiB blocks, plus one deflate state (640 KiB) per running block; input waits
 * (backpressure) while that many are pending.
 *
 * Decompression is parallel too: restore inflates min(cores, 4) members at once on the thread
 * pool (docs/FORMAT.md, "Compressed artifacts"). The manifest records `format: "gzip-members"`, `level`,
 * `concurrency` and `blockSize`; artifacts whose record says otherwise (older versions' single
 * member, or serial gzip) are inflated serially by one streaming gunzip, as before.
 *
 * @default level 6, concurrency = cores + 1 (at most UV_THREADPOOL_SIZE − 1), blockSize 1 MiB
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
    format: GZIP_MEMBERS,
    concurrency,
    blockSize: parsed.blockSize,
  };
  return {
    name: "gzip",
    role: "compression",
    extension: ".gz",
    encode: () => createParallelGzip({ ...parsed, concurrency }),
    decode: (stored) => gzipDecodeStream(stored),
    describe: () => ({ ...record }),
  };
}

/**
 * The decoder for a record: members inflated in parallel when the record says the artifact is
 * "gzip-members" of a bounded block size, else one streaming gunzip, which reads any gzip stream
 * (one member or many) with constant memory.
 */
function gzipDecodeStream(record?: TransformRecord): Duplex {
  const blockSize = record?.format === GZIP_MEMBERS ? record.blockSize : undefined;
  if (
    typeof blockSize === "number" &&
    Number.isInteger(blockSize) &&
    blockSize > 0 &&
    blockSize <= MAX_PARALLEL_BLOCK
  ) {
    return new ParallelGzipDecoder(blockSize, Math.min(defaultConcurrency(), 4));
  }
  return zlib.createGunzip({ chunkSize: 1 << 18 });
}
