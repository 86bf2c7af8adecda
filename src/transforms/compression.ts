import type { z } from "zod";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Transform } from "../core/types.js";
import { blockParallelOptionsShape } from "./block-parallel.js";
import { gzip } from "./gzip.js";
import { zstd, zstdAvailable } from "./zstd.js";

/** The zod schema of {@link CompressionOptions}, which parses the options at the boundary. */
export const compressionOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * "auto" picks zstd where the running Node has it in `node:zlib` (>= 22.15 or >= 23.8) and gzip
       * elsewhere (Node 20). Pick "gzip" for artifacts that `gzip -d` must read. @default "auto"
       */
      codec: z.enum(["auto", "zstd", "gzip"]).default("auto"),
      /** The codec's level (zstd 1-19, gzip 0-9). @default zstd 3, gzip 6 */
      level: z.number().int().optional(),
      ...blockParallelOptionsShape,
    })
    .strict(),
);
/** What {@link compression} takes: the codec (`auto` picks zstd where Node has it), level, blocks, concurrency. */
export interface CompressionOptions {
  /**
   * "auto" picks zstd where the running Node has it in `node:zlib` (>= 22.15 or >= 23.8) and gzip
   * elsewhere (Node 20). Pick "gzip" for artifacts that `gzip -d` must read. @default "auto"
   */
  codec?: "auto" | "zstd" | "gzip";
  /** The codec's level (zstd 1-19, gzip 0-9). @default zstd 3, gzip 6 */
  level?: number;
  /**
   * Blocks compressed at once on libuv's thread pool.
   * @default the number of cores + 1, at most UV_THREADPOOL_SIZE − 1 (so 3 with the default pool of
   *   4: file reads and writes share that pool). Raise UV_THREADPOOL_SIZE to use more cores.
   */
  concurrency?: number;
  /** Input bytes per block, 64 KiB-64 MiB. @default 1048576 (1 MiB) */
  blockSize?: number;
}
type _CompressionOptionsAgrees = Assert<Agrees<CompressionOptions, z.input<typeof compressionOptionsSchema>>>;

/** The codec {@link compression} picks with `codec: "auto"` on the running Node. */
export const defaultCodec = (): "zstd" | "gzip" => (zstdAvailable() ? "zstd" : "gzip");

/**
 * The default compression: zstd where the running Node has it, gzip elsewhere. zstd at level 3
 * compresses dump-like text about as well as gzip -6 at several times the speed, with less CPU a
 * byte on both sides (BENCHMARKS.md). The manifest records the codec that was used (`name`
 * "zstd" or "gzip"), and a restore picks its decoder from that: a backup made with zstd restores
 * on any Node that has zstd, and fails with UNSUPPORTED, naming the Node version, on one that does
 * not (Node 20), so keep `codec: "gzip"` while a Node 20 host may have to restore.
 *
 * @default codec "auto", level zstd 3 / gzip 6, concurrency = cores, blockSize 1 MiB
 * @throws {CONFIG_INVALID} a level outside the chosen codec's range, naming `level`.
 * @throws {UNSUPPORTED} `codec: "zstd"` on a Node without zstd.
 * @example backup({ ..., transforms: [compression(), aes256gcm({ key })] })
 */
export function compression(options: CompressionOptions = {}): Transform {
  const { codec, level, ...blocks } = parseOptions(compressionOptionsSchema, options, "compression");
  const chosen = codec === "auto" ? defaultCodec() : codec;
  const common = { ...blocks, ...(level === undefined ? {} : { level }) };
  return chosen === "zstd" ? zstd(common) : gzip(common);
}
