import { Readable } from "node:stream";
import type { z } from "zod";
import { notFound, throwIfAborted } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import { lazySchema, parseOptions } from "../core/options.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { ObjectInfo, ReadOptions, Sink, WriteOptions, WrittenObject } from "../core/types.js";

/** The zod schema of {@link MemorySinkOptions}, which parses the options at the boundary. */
export const memorySinkOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/** What {@link memorySink} takes: the storage classes it accepts and its read chunk size. */
export interface MemorySinkOptions {
  /** Storage classes to accept (lets tests exercise storage-class plans). @default [] */
  storageClasses?: string[];
  /** Bytes handed to each read's stream per chunk. @default 65536 */
  readChunkSize?: number;
}
type _MemorySinkOptionsAgrees = Assert<Agrees<MemorySinkOptions, z.input<typeof memorySinkOptionsSchema>>>;

/** One object a memory sink holds. */
export interface StoredObject {
  /** The object's bytes; a test may replace or change them to simulate corruption. */
  data: Buffer;
  /** When the write committed; listings report it. */
  lastModified: Date;
  /** The storage class it was written with, when one was asked for. */
  storageClass?: string;
}

/** The index of the first key in `sorted` that is not before `key`. */
function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * A Map that also keeps its keys in order, whoever changes it (a test that corrupts `objects`
 * too), so that a listing under a prefix is a binary search and a slice: a job lists its sink on
 * every run, and sorting every key of the sink each time made long simulations quadratic.
 */
class SortedKeyMap<V> extends Map<string, V> {
  private sorted: string[] = [];

  override set(key: string, value: V): this {
    if (!super.has(key)) this.sorted.splice(lowerBound(this.sorted, key), 0, key);
    return super.set(key, value);
  }

  override delete(key: string): boolean {
    const had = super.delete(key);
    if (had) this.sorted.splice(lowerBound(this.sorted, key), 1);
    return had;
  }

  override clear(): void {
    super.clear();
    this.sorted = [];
  }

  /** The keys that start with `prefix`, in order: a copy, so later changes do not touch it. */
  keysUnder(prefix: string): string[] {
    const start = lowerBound(this.sorted, prefix);
    let end = start;
    while (end < this.sorted.length && this.sorted[end]!.startsWith(prefix)) end++;
    return this.sorted.slice(start, end);
  }
}

/** A sink that keeps objects in a Map; `objects` is exposed so tests can corrupt or inspect them. */
export interface MemorySink extends Sink {
  /** Every object by key, kept in key order: tests read, corrupt or delete entries here. */
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
  const objects = new SortedKeyMap<StoredObject>();
  const info = (key: string, o: StoredObject): ObjectInfo => ({
    key,
    size: o.data.length,
    lastModified: o.lastModified,
    ...(o.storageClass ? { storageClass: o.storageClass } : {}),
  });
  // Listings hand out one frozen ObjectInfo per stored object rather than a new one each time.
  const infos = new WeakMap<StoredObject, ObjectInfo>();
  const listed = (key: string, o: StoredObject): ObjectInfo => {
    let i = infos.get(o);
    if (!i || i.key !== key) {
      i = Object.freeze(info(key, o));
      infos.set(o, i);
    }
    return i;
  };
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
    list(prefix: string): AsyncIterable<ObjectInfo> {
      // A plain async iterator, not an async generator: a generator's every yield costs several
      // more turns of the microtask queue, and jobs list their whole prefix on every run.
      const keys = objects.keysUnder(prefix);
      let i = 0;
      const iterator: AsyncIterableIterator<ObjectInfo> = {
        [Symbol.asyncIterator]: () => iterator,
        next: () => {
          while (i < keys.length) {
            const key = keys[i++]!;
            const o = objects.get(key);
            if (o) return Promise.resolve({ done: false, value: listed(key, o) });
          }
          return Promise.resolve({ done: true, value: undefined });
        },
        return: () => {
          i = keys.length;
          return Promise.resolve({ done: true, value: undefined });
        },
      };
      return iterator;
    },
    async delete(keys: readonly string[]): Promise<void> {
      for (const key of keys) assertSafeKey(key, "memory sink");
      for (const key of keys) objects.delete(key);
    },
  };
}
