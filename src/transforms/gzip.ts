import { createGunzip, createGzip } from "node:zlib";
import { z } from "zod";
import type { TransformRecord } from "../core/manifest.js";
import { parseOptions } from "../core/options.js";
import type { Transform } from "../core/types.js";

export const gzipOptionsSchema = z
  .object({
    /** zlib level 0-9. @default 6 */
    level: z.number().int().min(0).max(9).default(6),
  })
  .strict();
export type GzipOptions = z.input<typeof gzipOptionsSchema>;

/**
 * gzip compression (RFC 1952). Any gzip reader (`gzip -d`, `zcat`) reads the artifact once
 * decrypted; the decoder also reads multi-member streams.
 *
 * @throws {CONFIG_INVALID} on a level outside 0-9.
 * @example backup({ ..., transforms: [gzip({ level: 6 }), aes256gcm({ key })] })
 */
export function gzip(options: GzipOptions = {}): Transform {
  const { level } = parseOptions(gzipOptionsSchema, options, "gzip");
  const record: TransformRecord = { name: "gzip", role: "compression", level };
  return {
    name: "gzip",
    role: "compression",
    extension: ".gz",
    encode: () => createGzip({ level, chunkSize: 1 << 16 }),
    decode: () => createGunzip({ chunkSize: 1 << 16 }),
    describe: () => ({ ...record }),
  };
}
