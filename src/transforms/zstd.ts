import { Duplex, pipeline } from "node:stream";
import * as zlib from "node:zlib";
import type { z } from "zod";
import { StowageError } from "../core/errors.js";
import type { TransformRecord } from "../core/manifest.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Decoder, Transform } from "../core/types.js";
import {
  type BlockCodec,
  BlockParallelEncoder,
  blockParallelOptionsShape,
  defaultConcurrency,
} from "./block-parallel.js";
import { MAX_PARALLEL_BLOCK, ParallelZstdDecoder } from "./zstd-decode.js";
import { ZstdFrameSplitter } from "./zstd-frames.js";

/** The parts of node:zlib's zstd API (Node >= 22.15 / 23.8) that stowage uses. */
export interface ZstdApi {
  createZstdCompress(options: {
    params: Record<number, number>;
    chunkSize?: number;
    flush?: number;
  }): ZstdStream;
  createZstdDecompress(options?: { chunkSize?: number }): Duplex;
  zstdDecompress(
    buffer: Buffer,
    options: { maxOutputLength: number; chunkSize?: number },
    callback: (error: Error | null, result: Buffer) => void,
  ): void;
  constants: { ZSTD_c_compressionLevel: number; ZSTD_c_checksumFlag: number; ZSTD_e_end: number };
}

/** A zlib-style compression stream. */
type ZstdStream = Duplex;

function zstdApi(): ZstdApi | undefined {
  const api = zlib as unknown as Partial<ZstdApi>;
  return typeof api.createZstdCompress === "function" &&
    typeof api.createZstdDecompress === "function" &&
    typeof api.constants?.ZSTD_c_compressionLevel === "number"
    ? (api as ZstdApi)
    : undefined;
}

/**
 * Whether the running Node has zstd in `node:zlib` (Node >= 22.15 and >= 23.8). Use it to pick a
 * codec: `zstdAvailable() ? zstd() : gzip()`; the manifest records which one was used.
 */
export function zstdAvailable(): boolean {
  return zstdApi() !== undefined;
}

function requireZstd(where: string): ZstdApi {
  const api = zstdApi();
  if (!api) {
    throw new StowageError(
      "UNSUPPORTED",
      `${where}: this Node (${process.version}) has no zstd in node:zlib; it needs Node >= 22.15 or >= 23.8 (use gzip() here)`,
      { details: { nodeVersion: process.version, needs: ">=22.15 <23 || >=23.8" } },
    );
  }
  return api;
}

export { ZstdFrameSplitter };

/** The zod schema of {@link ZstdOptions}, which parses the options at the boundary. */
export const zstdOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** zstd level 1-19 (the fast, low-memory ones; 20-22 need ultra mode). @default 3 */
      level: z.number().int().min(1).max(19).default(3),
      ...blockParallelOptionsShape,
    })
    .strict(),
);
/** What {@link zstd} takes: the level, and the blocks compressed in parallel. */
export interface ZstdOptions {
  /**
   * Blocks compressed at once on libuv's thread pool.
   * @default the number of cores + 1, at most UV_THREADPOOL_SIZE − 1 (so 3 with the default pool of
   *   4: file reads and writes share that pool). Raise UV_THREADPOOL_SIZE to use more cores.
   */
  concurrency?: number;
  /** Input bytes per block, 64 KiB-64 MiB. @default 1048576 (1 MiB) */
  blockSize?: number;
  /** zstd level 1-19 (the fast, low-memory ones; 20-22 need ultra mode). @default 3 */
  level?: number;
}
type _ZstdOptionsAgrees = Assert<Agrees<ZstdOptions, z.input<typeof zstdOptionsSchema>>>;

/**
 * Independent frames, one per block, each with zstd's content checksum. RFC 8878 defines a zstd
 * stream as a sequence of frames, so `zstd -d` and every decoder read the concatenation. (zstd's
 * own worker threads, ZSTD_c_nbWorkers, would make one frame, but Node's zstd stream wrapper
 * fails with them: "stream.push() after EOF" on Node 22.23.)
 *
 * Compressors are reused, one per concurrent block: a fresh `zlib.zstdCompress` per block would
 * be simpler, but Node frees a zstd context only when the garbage collector gets to its handle
 * (about 2.5 MiB each, unseen by V8), and peak RSS climbed past 140 MiB that way. Each compressor
 * is made with `flush: ZSTD_e_end`, so one `write()` of a block is one whole frame, handed on in
 * the pieces it came out in (a write and then a `ZSTD_e_end` flush took a trip to the pool more,
 * and a join of the pieces copied every compressed byte on the main thread). Given the whole
 * block in one end call, zstd also records the frame's content size in its header.
 */
/**
 * The compressors' output buffer. A frame larger than it takes one more trip to the pool per
 * buffer it fills, which measured as nothing (10-13 ms of main thread per 64 MiB with 256 KiB or
 * 1 MiB buffers); a larger buffer pins more memory, since every piece of output is a view of it
 * and it is freed only once all of them are garbage.
 */
const ZSTD_OUTPUT_BUFFER = 256 * 1024;

class ZstdBlockCodec implements BlockCodec {
  readonly dictionarySize = 0;
  private readonly idle: ZstdStream[] = [];
  private readonly all = new Set<ZstdStream>();

  constructor(
    private readonly api: ZstdApi,
    private readonly level: number,
    private readonly outputSize: number,
  ) {}
  header(): undefined {
    return undefined;
  }
  trailer(): undefined {
    return undefined;
  }

  compress(block: Buffer): Promise<readonly Buffer[]> {
    const { constants } = this.api;
    let stream = this.idle.pop();
    if (!stream) {
      stream = this.api.createZstdCompress({
        params: { [constants.ZSTD_c_compressionLevel]: this.level, [constants.ZSTD_c_checksumFlag]: 1 },
        chunkSize: this.outputSize,
        flush: constants.ZSTD_e_end,
      });
      this.all.add(stream);
    }
    const compressor = stream;
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      // Flowing and never paused: every output piece is emitted before the write callback runs.
      const onData = (chunk: Buffer) => parts.push(chunk);
      const settle = (error: Error | null | undefined) => {
        compressor.off("data", onData);
        compressor.off("error", settle);
        if (error || compressor.destroyed) {
          this.all.delete(compressor);
          compressor.destroy();
          reject(error ?? new Error("zstd: compressor closed"));
          return;
        }
        this.idle.push(compressor);
        resolve(parts);
      };
      compressor.on("data", onData);
      compressor.once("error", settle);
      compressor.write(block, settle);
    });
  }

  close(): void {
    for (const stream of this.all) stream.destroy();
    this.all.clear();
    this.idle.length = 0;
  }
}

/**
 * zstd compression (RFC 8878) from `node:zlib`, in parallel blocks like {@link gzip}: faster than
 * gzip at a similar or better ratio. Needs a Node with zstd in `node:zlib` (>= 22.15 or >= 23.8),
 * checked when the transform is made and again when a manifest that names it is restored.
 * `compression()` picks it where the runtime has it. `zstd -d` reads the artifact once decrypted.
 *
 * Memory: at most 2 × `concurrency` blocks (input and compressed) plus one zstd context (about
 * 2.5 MiB at level 3) per concurrent block.
 * The manifest records `codec: "zstd"`, `level`, `concurrency`, `blockSize` and the Node version.
 *
 * @default level 3, concurrency = cores + 1 (at most UV_THREADPOOL_SIZE − 1), blockSize 1 MiB
 * @throws {UNSUPPORTED} when the running Node has no zstd.
 * @throws {CONFIG_INVALID} on a level outside 1-19, a concurrency below 1 or a block size out of range.
 * @example backup({ ..., transforms: [zstdAvailable() ? zstd() : gzip(), aes256gcm({ key })] })
 */
export function zstd(options: ZstdOptions = {}): Transform {
  const parsed = parseOptions(zstdOptionsSchema, options, "zstd");
  const api = requireZstd("zstd");
  const concurrency = parsed.concurrency ?? defaultConcurrency();
  const record: TransformRecord = {
    name: "zstd",
    role: "compression",
    codec: "zstd",
    level: parsed.level,
    format: "zstd-frames",
    concurrency,
    blockSize: parsed.blockSize,
    runtime: `node ${process.version}`,
  };
  return {
    name: "zstd",
    role: "compression",
    extension: ".zst",
    encode: () =>
      new BlockParallelEncoder(new ZstdBlockCodec(api, parsed.level, ZSTD_OUTPUT_BUFFER), {
        blockSize: parsed.blockSize,
        concurrency,
      }),
    decode: (stored) => zstdDecodeStream(api, stored),
    describe: () => ({ ...record }),
  };
}

/**
 * The decoder for a record: frames decoded in parallel on the thread pool when the record says
 * they are blocks of a bounded size ({@link ParallelZstdDecoder}), else Node's zstd decompressor
 * behind a {@link ZstdFrameSplitter}, which reads every frame of any zstd stream.
 */
function zstdDecodeStream(api: ZstdApi, record?: TransformRecord): Duplex {
  const blockSize = record?.format === "zstd-frames" ? record.blockSize : undefined;
  if (typeof blockSize === "number" && blockSize <= MAX_PARALLEL_BLOCK) {
    return new ParallelZstdDecoder(api, blockSize, Math.min(defaultConcurrency(), 4));
  }
  const splitter = new ZstdFrameSplitter();
  const decompressor = api.createZstdDecompress({ chunkSize: 1 << 18 });
  // An error on either side destroys the other, and so the duplex made of the two.
  pipeline(splitter, decompressor, () => undefined);
  return Duplex.from({ writable: splitter, readable: decompressor });
}

/**
 * The decoder in the core's built-in decoder map, so a manifest that says "zstd" restores on any
 * Node that has zstd, and fails with UNSUPPORTED (naming the Node version) on one that does not.
 */
export const zstdDecoder: Decoder = {
  name: "zstd",
  decode: (record) => zstdDecodeStream(requireZstd("zstd: restore"), record),
};
