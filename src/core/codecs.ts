import type { Duplex } from "node:stream";
// From the module that holds it, not the entry: the entry also exports `rekey`, which imports this.
import { aesDecoder } from "../transforms/aes-256-gcm/chunks.js";
import { gzip } from "../transforms/gzip.js";
import { zstdDecoder } from "../transforms/zstd.js";
import { StowageError, wrapError } from "./errors.js";
import type { TransformRecord } from "./manifest.js";
import type { Decoder, DecryptionKey } from "./types.js";

/*
 * The one written exception to "the core knows no adapter" (STYLE.md, rule 1): these imports of
 * the built-in transforms. They are part of the artifact format, and a manifest that names one must
 * restore with any copy of stowage without the caller passing anything. So the core holds a static
 * name → decoder map (no registration by side effect: the package is `sideEffects: false`); it
 * knows no source or sink, and nothing else of a transform. Users' own decoders are passed in
 * `transforms` and win over the built-ins by name.
 */
const BUILT_IN_DECODERS: Readonly<Record<string, Decoder>> = Object.freeze({
  gzip: gzip(),
  zstd: zstdDecoder,
  "aes-256-gcm": aesDecoder,
});

/** The decoder for a record's name: the caller's first, then a built-in (own keys only). */
function decoderFor(name: string, extra: readonly Decoder[]): Decoder | undefined {
  return (
    extra.find((d) => d.name === name) ??
    (Object.hasOwn(BUILT_IN_DECODERS, name) ? BUILT_IN_DECODERS[name] : undefined)
  );
}

/** Decoders for a manifest's transform records, in the order restore applies them (last first). */
export async function decodersFor(
  records: readonly TransformRecord[],
  keys: readonly DecryptionKey[],
  extra: readonly Decoder[] = [],
): Promise<Duplex[]> {
  const decoders: Duplex[] = [];
  for (const record of [...records].reverse()) {
    const decoder = decoderFor(record.name, extra);
    if (!decoder) {
      throw new StowageError(
        "UNSUPPORTED",
        `no decoder for transform "${record.name}"; pass it in the transforms option`,
        { details: { transform: record.name } },
      );
    }
    try {
      decoders.push(await decoder.decode(record, { keys }));
    } catch (error) {
      for (const d of decoders) d.destroy();
      throw wrapError(error, "TRANSFORM_FAILED", `transform ${record.name}: cannot start decoding`);
    }
  }
  return decoders;
}

/** Normalises the `keys` option: one key, a list, or nothing. */
export function keyList(
  keys: DecryptionKey | readonly DecryptionKey[] | undefined,
): readonly DecryptionKey[] {
  if (keys === undefined) return [];
  return Array.isArray(keys) ? keys : [keys as DecryptionKey];
}
