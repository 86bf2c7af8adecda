import { Readable } from "node:stream";
import type { z } from "zod";
import { throwIfAborted } from "../core/errors.js";
import { bytesSchema, lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../core/types.js";

/** Bytes in chunks, from a (possibly async) iterable. */
export type Chunks = Iterable<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * Chunks from an (async) iterator as a byte stream. Unlike `Readable.from`, destroying it does not
 * wait for a pending `next()` (a generator blocked in an `await`): the stream closes at once and
 * the abandoned iterator is told to return whenever it can. It holds nothing else to release.
 */
class ChunkStream extends Readable {
  private readonly source: Iterator<Uint8Array> | AsyncIterator<Uint8Array>;

  constructor(chunks: Chunks) {
    super({ highWaterMark: 1 << 20 });
    this.source =
      Symbol.asyncIterator in chunks
        ? chunks[Symbol.asyncIterator]()
        : (chunks as Iterable<Uint8Array>)[Symbol.iterator]();
  }

  override _read(): void {
    Promise.resolve(this.source.next()).then(
      (result) => {
        if (this.destroyed) return;
        if (result.done) this.push(null);
        else this.push(Buffer.isBuffer(result.value) ? result.value : Buffer.from(result.value));
      },
      (error: unknown) => this.destroy(error instanceof Error ? error : new Error(String(error))),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    Promise.resolve(this.source.return?.()).catch(() => undefined);
    callback(error);
  }
}

/** The zod schema of {@link BytesSourceOptions}, which parses the options at the boundary. */
export const bytesSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      /**
       * The bytes, or a function returning a fresh (async) iterable of chunks for each run; it gets
       * the run's AbortSignal.
       */
      data: z.union([
        z.string(),
        bytesSchema,
        z.custom<(signal: AbortSignal) => Chunks>(
          (v) => typeof v === "function",
          "expected a function returning chunks",
        ),
      ]),
      /** @default "bytes" */
      name: z.string().default("bytes"),
      /** @default "application/octet-stream" */
      contentType: z.string().default("application/octet-stream"),
      /** Marks the source as holding secrets (encryption then becomes mandatory). @default false */
      sensitive: z.boolean().default(false),
    })
    .strict(),
);
/** What {@link bytesSource} takes: the bytes or a chunk generator, name, content type, sensitivity. */
export interface BytesSourceOptions {
  /**
   * The bytes, or a function returning a fresh (async) iterable of chunks for each run; it gets
   * the run's AbortSignal.
   */
  data: string | Uint8Array | ((signal: AbortSignal) => Chunks);
  /** @default "bytes" */
  name?: string;
  /** @default "application/octet-stream" */
  contentType?: string;
  /** Marks the source as holding secrets (encryption then becomes mandatory). @default false */
  sensitive?: boolean;
}
type _BytesSourceOptionsAgrees = Assert<Agrees<BytesSourceOptions, z.input<typeof bytesSourceOptionsSchema>>>;

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
    async open({ signal }: SourceContext): Promise<SourceOutput> {
      throwIfAborted(signal, "bytesSource");
      const chunks: Chunks =
        typeof data === "function"
          ? data(signal)
          : [typeof data === "string" ? Buffer.from(data, "utf8") : data];
      return {
        stream: new ChunkStream(chunks),
        contentType: opts.contentType,
        details: async () => ({}),
      };
    },
  };
}
