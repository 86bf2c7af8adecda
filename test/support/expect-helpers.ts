/** Small helpers the test files share for asserting on failures and on what a sink holds. */
import { createHash } from "node:crypto";
import { isStowageError, type Sink, type StowageError } from "../../src/index.js";

/** The StowageError a promise rejects with; fails the test if it resolves or rejects otherwise. */
export async function rejection(promise: Promise<unknown>): Promise<StowageError> {
  try {
    await promise;
  } catch (error) {
    if (isStowageError(error)) return error;
    throw new Error(`expected a StowageError, got ${String(error)}`, { cause: error });
  }
  throw new Error("expected a rejection");
}

/** The `code` of the StowageError a promise rejects with. */
export async function codeOf(promise: Promise<unknown>): Promise<string> {
  return (await rejection(promise)).code;
}

/** Every key a sink lists under `prefix`, in its order. */
export async function keysOf(sink: Sink, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of sink.list(prefix)) keys.push(info.key);
  return keys;
}

/** The SHA-256 of some bytes, in hex, as manifests record it. */
export const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
