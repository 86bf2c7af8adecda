import { once } from "node:events";
import { PassThrough, Readable } from "node:stream";
import { linkSignal } from "../core/abort.js";
import { findPrevious } from "../core/chain.js";
import { StowageError, wrapError } from "../core/errors.js";
import { MANIFEST_SUFFIX, type Manifest, parseManifest, serializeManifest } from "../core/manifest.js";
import type { Signer } from "../core/signing.js";
import { readAll } from "../core/streams.js";
import type { ObjectInfo, ReadOptions, Sink, WriteOptions, WrittenObject } from "../core/types.js";

/** One destination of a fan-out write. */
export interface FanOutTarget {
  /** The sink that receives its own copy of every object written. */
  sink: Sink;
  /** The storage class for this sink (the primary's comes from the backup's own option). */
  storageClass?: string;
}

/** A sink that writes each object to several sinks from one stream; see {@link fanOutSink}. */
export interface FanOutSink extends Sink {
  /** After a backup: the manifest as each secondary sink holds it (its own location and class). */
  manifestsFor(artifactKey: string): Array<{
    /** The secondary sink. */
    sink: Sink;
    /** The backup's manifest with that sink's location and storage class. */
    manifest: Manifest;
  }>;
}

/**
 * Tees every write to the primary sink and the secondary ones at once, so one read of the source
 * lands in all of them. The slowest sink sets the pace (a chunk goes on only when every sink has
 * taken it), so memory stays at one chunk per sink. All or nothing across sinks: if one fails,
 * the others' objects are deleted and the write fails.
 *
 * A manifest written through it is rewritten per secondary sink with that sink's own
 * `artifact.sink`, `location` and `storageClass`, so every sink holds a manifest that describes
 * the copy beside it. Reads, listings and deletions go to the primary.
 */
export function fanOutSink(
  primary: Sink,
  secondaries: readonly FanOutTarget[],
  options: { signer?: Signer } = {},
): FanOutSink {
  const written = new Map<string, Array<{ sink: Sink; object: WrittenObject }>>();
  const manifests = new Map<string, Array<{ sink: Sink; manifest: Manifest }>>();
  const targets: FanOutTarget[] = [{ sink: primary }, ...secondaries];

  async function writeAll(key: string, body: Readable, options: WriteOptions): Promise<WrittenObject> {
    const controller = linkSignal(options.signal);
    // A branch is destroyed with the first failure after its sink may have stopped reading it (a
    // sink that failed or saw the abort); unheard, that 'error' would crash the host. The failure
    // is reported once, by this write's rejection.
    const branches = targets.map(() =>
      new PassThrough({ highWaterMark: 1 << 20 }).on("error", () => undefined),
    );
    // The first real failure (a sink's, or the body's); the aborts it causes elsewhere are echoes.
    let firstError: unknown;
    const writes = targets.map((t, i) =>
      t.sink
        .write(key, branches[i]!, {
          ...options,
          signal: controller.signal,
          ...(i === 0 ? {} : { storageClass: t.storageClass }),
        })
        .catch((error: unknown) => {
          if (!controller.signal.aborted) firstError ??= error;
          controller.abort(error);
          for (const b of branches) b.destroy();
          throw error;
        }),
    );
    const feeding = (async () => {
      try {
        for await (const chunk of body) {
          for (const branch of branches) {
            if (!branch.write(chunk)) await once(branch, "drain", { signal: controller.signal });
          }
        }
        for (const branch of branches) branch.end();
      } catch (error) {
        if (!controller.signal.aborted) firstError ??= error;
        controller.abort(error);
        for (const b of branches) b.destroy(error instanceof Error ? error : new Error(String(error)));
        throw error;
      }
    })();
    try {
      const [fed, ...results] = await Promise.allSettled([feeding, ...writes]);
      const failed = [fed, ...results].find((r) => r.status === "rejected") as
        | PromiseRejectedResult
        | undefined;
      if (failed) {
        // Whatever some sinks committed is taken back: a fan-out write is all or nothing.
        await Promise.all(
          results.map((r, i) =>
            r.status === "fulfilled" ? targets[i]!.sink.delete([key]).catch(() => undefined) : undefined,
          ),
        );
        const first = firstError ?? failed.reason;
        throw wrapError(
          first,
          "SINK_WRITE_FAILED",
          `fan-out write of ${key} failed`,
          { key },
          options.signal,
        );
      }
      const objects = (results as Array<PromiseFulfilledResult<WrittenObject>>).map((r) => r.value);
      written.set(
        key,
        objects.map((object, i) => ({ sink: targets[i]!.sink, object })),
      );
      return objects[0]!;
    } finally {
      controller.dispose();
    }
  }

  async function writeManifest(key: string, body: Readable, opts: WriteOptions): Promise<WrittenObject> {
    const artifactKey = key.slice(0, -MANIFEST_SUFFIX.length);
    const objects = written.get(artifactKey);
    if (!objects) {
      throw new StowageError(
        "SINK_WRITE_FAILED",
        `fan-out: manifest ${key} has no artifact written before it`,
        {
          details: { key },
        },
      );
    }
    const manifest = parseManifest((await readAll(body)).toString("utf8"), `fan-out manifest ${key}`);
    const perSink = await Promise.all(
      objects.map(async ({ sink, object }, i) => {
        const storageClass =
          i === 0 ? manifest.artifact.storageClass : (object.storageClass ?? targets[i]!.storageClass);
        const { storageClass: _drop, ...artifact } = manifest.artifact;
        // A signed manifest changes per sink, so each secondary's is chained on that sink and signed
        // again; without the signer it is stored unsigned rather than with a signature that fails.
        const { signature, previous: _chain, ...unsigned } = manifest;
        const base = i === 0 ? manifest : unsigned;
        const rewritten: Manifest = {
          ...base,
          artifact: {
            ...artifact,
            sink: sink.kind,
            location: object.location,
            ...(storageClass ? { storageClass } : {}),
          },
        };
        if (i === 0 || !signature || !options.signer) return { sink, manifest: rewritten };
        const previous = await findPrevious(sink, manifest.job, manifest.id, opts.signal);
        return { sink, manifest: options.signer.sign({ ...rewritten, ...(previous ? { previous } : {}) }) };
      }),
    );
    const results = await Promise.allSettled(
      perSink.map(({ sink, manifest: m }) =>
        sink.write(key, Readable.from([serializeManifest(m)]), {
          ...opts,
          contentType: "application/json",
        }),
      ),
    );
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) {
      await Promise.all(
        results.map((r, i) =>
          r.status === "fulfilled" ? objects[i]!.sink.delete([key]).catch(() => undefined) : undefined,
        ),
      );
      // The core deletes the primary's artifact; the secondaries' are ours to take back.
      await Promise.all(
        objects.slice(1).map(({ sink }) => sink.delete([artifactKey]).catch(() => undefined)),
      );
      throw wrapError(
        failed.reason,
        "SINK_WRITE_FAILED",
        `fan-out write of ${key} failed`,
        { key },
        opts.signal,
      );
    }
    manifests.set(artifactKey, perSink.slice(1));
    written.delete(artifactKey);
    return (results[0] as PromiseFulfilledResult<WrittenObject>).value;
  }

  return {
    kind: primary.kind,
    capabilities: primary.capabilities,
    write(key, body, options = {}) {
      return key.endsWith(MANIFEST_SUFFIX) ? writeManifest(key, body, options) : writeAll(key, body, options);
    },
    read: (key: string, options?: ReadOptions) => primary.read(key, options),
    stat: (key: string, options?: ReadOptions) => primary.stat(key, options),
    list: (prefix: string, options?: ReadOptions): AsyncIterable<ObjectInfo> => primary.list(prefix, options),
    async delete(keys, options) {
      // The core deletes a half-made backup through us: take it away everywhere.
      await Promise.all(targets.map((t) => t.sink.delete(keys, options)));
    },
    manifestsFor: (artifactKey) => manifests.get(artifactKey) ?? [],
  };
}
