import { Readable } from "node:stream";
import { z } from "zod";
import { notFound, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { ObjectInfo, ReadOptions, Sink, WriteOptions, WrittenObject } from "../core/types.js";

export const memorySinkOptionsSchema = z
  .object({
    /** Storage classes to accept (lets tests exercise storage-class plans). @default [] */
    storageClasses: z.array(z.string()).default([]),
    /** Bytes handed to each read's stream per chunk. @default 65536 */
    readChunkSize: z
      .number()
      .int()
      .positive()
      .default(1 << 16),
  })
  .strict();
export interface MemorySinkOptions {
  /** Storage classes to accept (lets tests exercise storage-class plans). @default [] */
  storageClasses?: string[];
  /** Bytes handed to each read's stream per chunk. @default 65536 */
  readChunkSize?: number;
}
type _MemorySinkOptionsAgrees = Assert<Agrees<MemorySinkOptions, z.input<typeof memorySinkOptionsSchema>>>;

interface StoredObject {
  data: Buffer;
  lastModified: Date;
  storageClass?: string;
}

/** A sink that keeps objects in a Map; `objects` is exposed so tests can corrupt or inspect them. */
export interface MemorySink extends Sink {
  readonly objects: Map<string, StoredObject>;
}

/**
 * An in-memory sink for tests and examples: same contract as every sink (all-or-nothing writes,
 * sorted listings), no persistence. It buffers each object whole, so it is not for large data.
 *
 * @example const sink = memorySink(); await backup({ job: "t", source: bytesSource({ data: "x" }), sink });
 */
export function memorySink(options: MemorySinkOptions = {}): MemorySink {
  const opts = parseOptions(memorySinkOptionsSchema, options, "memorySink");
  const objects = new Map<string, StoredObject>();
  const info = (key: string, o: StoredObject): ObjectInfo => ({
    key,
    size: o.data.length,
    lastModified: o.lastModified,
    ...(o.storageClass ? { storageClass: o.storageClass } : {}),
  });
  return {
    kind: "memory",
    capabilities: { storageClasses: opts.storageClasses, readLatency: "immediate", delete: true },
    objects,
    async write(key: string, body: Readable, options: WriteOptions = {}): Promise<WrittenObject> {
      assertSafeKey(key, "memory sink");
      const parts: Buffer[] = [];
      for await (const chunk of body) {
        throwIfAborted(options.signal, `memory sink: writing ${key}`);
        parts.push(Buffer.from(chunk as Uint8Array));
      }
      throwIfAborted(options.signal, `memory sink: writing ${key}`);
      objects.set(key, {
        data: Buffer.concat(parts),
        lastModified: new Date(),
        ...(options.storageClass ? { storageClass: options.storageClass } : {}),
      });
      return {
        key,
        location: `memory://${key}`,
        ...(options.storageClass ? { storageClass: options.storageClass } : {}),
      };
    },
    async read(key: string, options: ReadOptions = {}): Promise<Readable> {
      assertSafeKey(key, "memory sink");
      throwIfAborted(options.signal, `memory sink: reading ${key}`);
      const o = objects.get(key);
      if (!o) throw notFound(key, "memory sink");
      const data = o.data;
      const size = opts.readChunkSize;
      return Readable.from(
        (function* () {
          for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
        })(),
        { objectMode: false },
      );
    },
    async stat(key: string): Promise<ObjectInfo | undefined> {
      assertSafeKey(key, "memory sink");
      const o = objects.get(key);
      return o ? info(key, o) : undefined;
    },
    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      const keys = [...objects.keys()].filter((k) => k.startsWith(prefix)).sort();
      for (const key of keys) {
        const o = objects.get(key);
        if (o) yield info(key, o);
      }
    },
    async delete(keys: readonly string[]): Promise<void> {
      for (const key of keys) assertSafeKey(key, "memory sink");
      for (const key of keys) objects.delete(key);
    },
  };
}
