import type { Duplex } from "node:stream";
import { aesDecoder } from "../transforms/aes-256-gcm.js";
import { gzip } from "../transforms/gzip.js";
import { zstdDecoder } from "../transforms/zstd.js";
import { StowageError, wrapError } from "./errors.js";
import type { TransformRecord } from "./manifest.js";
import type { DecryptionKey, Transform } from "./types.js";

/*
 * The built-in transforms are part of the artifact format (a manifest that says "aes-256-gcm"
 * must be readable by any copy of stowage), so the core knows them; it knows no source or sink.
 * Users' own transforms are passed in `transforms` and win over the built-ins by name.
 */
const BUILT_IN: readonly Transform[] = [gzip(), zstdDecoder, aesDecoder];

/** Decoders for a manifest's transform records, in the order restore applies them (last first). */
export async function decodersFor(
  records: readonly TransformRecord[],
  keys: readonly DecryptionKey[],
  extra: readonly Transform[] = [],
): Promise<Duplex[]> {
  const decoders: Duplex[] = [];
  for (const record of [...records].reverse()) {
    const transform =
      extra.find((t) => t.name === record.name) ?? BUILT_IN.find((t) => t.name === record.name);
    if (!transform) {
      throw new StowageError(
        "UNSUPPORTED",
        `no decoder for transform "${record.name}"; pass it in the transforms option`,
        { details: { transform: record.name } },
      );
    }
    try {
      decoders.push(await transform.decode(record, { keys }));
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
