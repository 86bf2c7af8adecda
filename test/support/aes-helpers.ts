/** Helpers for the aes-256-gcm tests: run the transform's streams directly over buffers. */
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isStowageError } from "../../src/core/errors.js";
import type { DecryptionKey, Transform } from "../../src/core/types.js";
import { aesDecoder } from "../../src/transforms/aes-256-gcm/chunks.js";

/** Splits a buffer into pieces of varying sizes, so stream code sees uneven boundaries. */
export function pieces(data: Buffer, sizes: readonly number[] = [1000, 7, 4096, 65_537, 3]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  let i = 0;
  while (at < data.length) {
    const n = sizes[i++ % sizes.length]!;
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

export async function encrypt(transform: Transform, plain: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(pieces(plain)),
    await transform.encode(),
    async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) out.push(chunk);
    },
  );
  return Buffer.concat(out);
}

export interface DecryptResult {
  /** Everything the consumer received before the stream ended or failed. */
  out: Buffer;
  /** The error code the stream failed with, if it did. */
  code?: string;
  error?: unknown;
}

/** Decrypts with the built-in decoder, collecting what reaches the consumer even when it fails. */
export async function decrypt(
  stored: Buffer,
  keys: readonly DecryptionKey[],
  sizes?: readonly number[],
): Promise<DecryptResult> {
  const out: Buffer[] = [];
  try {
    await pipeline(
      Readable.from(pieces(stored, sizes)),
      await aesDecoder.decode({ name: "aes-256-gcm", role: "encryption" }, { keys }),
      async (source: AsyncIterable<Buffer>) => {
        for await (const chunk of source) out.push(chunk);
      },
    );
    return { out: Buffer.concat(out) };
  } catch (error) {
    return {
      out: Buffer.concat(out),
      code: isStowageError(error) ? error.code : `not a StowageError: ${String(error)}`,
      error,
    };
  }
}

/** The code a promise rejects with. */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (isStowageError(error)) return error.code;
    throw error;
  }
  throw new Error("expected a rejection");
}
