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
  const issues: Array<{ option: string; problem: string }> = [];
  for (const [i, entry] of list.entries()) {
    const problem = decryptionKeyProblem(entry);
    if (problem) issues.push({ option: Array.isArray(keys) ? `${option}[${i}]` : option, problem });
  }
  if (issues.length > 0) {
    throw new StowageError(
      "CONFIG_INVALID",
      `${where}: invalid options: ${issues.map((i) => `${i.option} ${i.problem}`).join("; ")}`,
      { details: { issues } },
    );
  }
  return list as readonly DecryptionKey[];
}
