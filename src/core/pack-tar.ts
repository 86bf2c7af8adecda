import { Readable } from "node:stream";
import type { Pack } from "tar-stream";
import { loadTarStream } from "./lazy-deps.js";

const ignore = () => undefined;

/**
 * A tar-stream pack whose entries never raise an 'error' nobody hears. When the pack is destroyed
 * (the consumer stopped early, the run was aborted) tar-stream destroys the entry being written
 * and every queued one with the pack's error; an entry made without a body (a folder, a symlink)
 * or one whose writer has not attached yet (it is still opening the file) would then throw that
 * error as an uncaught exception and take the host down. An entry's failure always reaches the
 * pack (tar-stream destroys the pack with it), and through the pack the consumer, so the entry's
 * own 'error' carries nothing that would otherwise be lost.
 */
export function guardedPack(tar: { pack(): Pack }): Pack {
  const pack = tar.pack();
  const entry = pack.entry.bind(pack) as (...args: unknown[]) => ReturnType<Pack["entry"]>;
  pack.entry = ((...args: unknown[]) => entry(...args).on("error", ignore)) as Pack["entry"];
  return pack;
}

/** {@link guardedPack} with tar-stream loaded at first use. */
export async function newPack(): Promise<Pack> {
  return guardedPack(await loadTarStream());
}

/**
 * The byte stream of a tar that `produced` is filling: finalised when `produced` resolves,
 * destroyed with its error when it rejects, and released when the consumer closes the stream
 * early. tar-stream's pack is a streamx stream; wrapping it makes it a Node Readable for
 * `pipeline`, with backpressure through the wrapper's reads. Make the pack with
 * {@link guardedPack} or {@link newPack}.
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
