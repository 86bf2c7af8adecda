import type { Duplex } from "node:stream";
// From the module that holds it, not the entry: the entry also exports `rekey`, which imports this.
import { aesDecoder } from "../transforms/aes-256-gcm/chunks.js";
import { gzip } from "../transforms/gzip.js";
import { zstdDecoder } from "../transforms/zstd.js";
import { StowageError, wrapError } from "./errors.js";
import type { TransformRecord } from "./manifest.js";
import type { BackupIdentity, Decoder, DecryptionKey } from "./types.js";

/*
 * The one written exception to "the core knows no adapter" (STYLE.md, rule 1): these imports of
 * the built-in transforms. They are part of the artifact format, and a manifest that names one must
 * restore with any copy of stowage without the caller passing anything. So the core holds a static
 * name → decoder map (no registration by side effect: the package is `sideEffects: false`); it
 * knows no source or sink, and nothing else of a transform. Users' own decoders are passed in
 * `transforms` and win over the built-ins by name.
 */
let builtIns: Readonly<Record<string, Decoder>> | undefined;
// Made at first use: `gzip()` parses its options, which would load zod at import.
const builtInDecoders = (): Readonly<Record<string, Decoder>> => {
  builtIns ??= Object.freeze({ gzip: gzip(), zstd: zstdDecoder, "aes-256-gcm": aesDecoder });
  return builtIns;
};

/** The decoder for a record's name: the caller's first, then a built-in (own keys only). */
function decoderFor(name: string, extra: readonly Decoder[]): Decoder | undefined {
  return (
    extra.find((d) => d.name === name) ??
    (Object.hasOwn(builtInDecoders(), name) ? builtInDecoders()[name] : undefined)
  );
}

/** Decoders for a manifest's transform records, in the order restore applies them (last first). */
export async function decodersFor(
  records: readonly TransformRecord[],
  keys: readonly DecryptionKey[],
  extra: readonly Decoder[] = [],
  identity?: BackupIdentity,
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
      decoders.push(await decoder.decode(record, identity ? { keys, identity } : { keys }));
    } catch (error) {
      for (const d of decoders) d.destroy();
      throw wrapError(error, "TRANSFORM_FAILED", `transform ${record.name}: cannot start decoding`);
    }
  }
  return decoders;
}

const KEY_SHAPES =
  "{ key: Uint8Array | hex or base64 string }, { passphrase: string } or { identity: string }";

/**
 * What is wrong with one decryption key, or `undefined` when it has an accepted shape. The text
 * never quotes the value: a misplaced key is still a secret.
 */
export function decryptionKeyProblem(value: unknown): string | undefined {
  if (typeof value === "string") return `is a bare string; wrap it as one of ${KEY_SHAPES}`;
  if (value instanceof Uint8Array) return `is a bare byte array; wrap it as { key: bytes }`;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `is not an object; expected one of ${KEY_SHAPES}`;
  }
  const v = value as Record<string, unknown>;
  const given = (["key", "passphrase", "identity"] as const).filter((name) => v[name] !== undefined);
  if (given.length !== 1) {
    return `must have exactly one of key, passphrase or identity; expected one of ${KEY_SHAPES}`;
  }
  if (given[0] === "key" && typeof v.key !== "string" && !(v.key instanceof Uint8Array)) {
    return "key must be a Uint8Array or a hex or base64 string";
  }
  if (given[0] === "passphrase" && (typeof v.passphrase !== "string" || v.passphrase.length === 0)) {
    return "passphrase must be a non-empty string";
  }
  if (given[0] === "identity" && typeof v.identity !== "string") {
    return "identity must be a STOWAGE-SECRET-KEY-1… string";
  }
  if (v.keyId !== undefined && typeof v.keyId !== "string") return "keyId must be a string";
  return undefined;
}

/**
 * Normalises the `keys` option (one key, a list, or nothing) and checks every entry's shape up
 * front, so a bare string or a Buffer is named here instead of failing inside a decoder.
 * @throws {CONFIG_INVALID} naming the entry (`keys[0]`) and the accepted shapes, never its value.
 */
export function keyList(
  keys: DecryptionKey | readonly DecryptionKey[] | undefined,
  where = "keys",
  option = "keys",
): readonly DecryptionKey[] {
  if (keys === undefined) return [];
  const list: readonly unknown[] = Array.isArray(keys) ? keys : [keys];
  const issues: Array<{ path: string; problem: string }> = [];
  for (const [i, entry] of list.entries()) {
    const problem = decryptionKeyProblem(entry);
    if (problem) issues.push({ path: Array.isArray(keys) ? `${option}[${i}]` : option, problem });
  }
  if (issues.length > 0) {
    throw new StowageError(
      "CONFIG_INVALID",
      `${where}: invalid options: ${issues.map((i) => `${i.path} ${i.problem}`).join("; ")}`,
      { details: { issues } },
    );
  }
  return list as readonly DecryptionKey[];
}
