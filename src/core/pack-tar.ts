import { Readable } from "node:stream";
import type { Pack } from "tar-stream";

/**
 * The byte stream of a tar that `produced` is filling: finalised when `produced` resolves,
 * destroyed with its error when it rejects, and released when the consumer closes the stream
 * early. tar-stream's pack is a streamx stream; wrapping it makes it a Node Readable for
 * `pipeline`, with backpressure through the wrapper's reads.
 */
export function packedTar(pack: Pack, produced: Promise<unknown>): Readable {
  produced.then(
    () => pack.finalize(),
    (error: unknown) => pack.destroy(error instanceof Error ? error : new Error(String(error))),
  );
  const stream = Readable.from(pack, { objectMode: false, highWaterMark: 1 << 20 });
  stream.once("close", () => pack.destroy());
  return stream;
}
