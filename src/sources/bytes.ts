import { Readable } from "node:stream";
import { z } from "zod";
import { parseOptions } from "../core/options.js";
import type { Source, SourceOutput } from "../core/types.js";

type Chunks = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

export const bytesSourceOptionsSchema = z
  .object({
    /** The bytes, or a function returning a fresh (async) iterable of chunks for each run. */
    data: z.union([
      z.string(),
      z.instanceof(Uint8Array),
      z.custom<() => Chunks>((v) => typeof v === "function", "expected a function returning chunks"),
    ]),
    /** @default "bytes" */
    name: z.string().default("bytes"),
    /** @default "application/octet-stream" */
    contentType: z.string().default("application/octet-stream"),
    /** Marks the source as holding secrets (encryption then becomes mandatory). @default false */
    sensitive: z.boolean().default(false),
  })
  .strict();
export type BytesSourceOptions = z.input<typeof bytesSourceOptionsSchema>;

/**
 * A source of bytes you already have, or of chunks a function generates: for tests (yours and
 * ours) and for small payloads. A generator that throws fails the backup like any source error.
 *
 * @example backup({ job: "t", source: bytesSource({ data: "hello" }), sink: memorySink() })
 */
export function bytesSource(options: BytesSourceOptions): Source {
  const opts = parseOptions(bytesSourceOptionsSchema, options, "bytesSource");
  const { data } = opts;
  return {
    kind: "bytes",
    name: opts.name,
    sensitive: opts.sensitive,
    async open(): Promise<SourceOutput> {
      const chunks: Chunks =
        typeof data === "function" ? data() : [typeof data === "string" ? Buffer.from(data, "utf8") : data];
      return {
        stream: Readable.from(chunks, { objectMode: false }),
        contentType: opts.contentType,
        details: async () => ({}),
      };
    },
  };
}
