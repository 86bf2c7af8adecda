import assert from "node:assert/strict";
import { inspect } from "node:util";

/**
 * The test framework's functions a conformance suite is given. vitest's and `node:test`'s
 * `describe` and `it` both fit; the suites assert with `node:assert`, so they need nothing else.
 * For a longer timeout under vitest, pass `it: (name, fn) => it(name, fn, 120_000)`.
 */
export interface TestApi {
  /** Groups the suite's tests under a name (vitest's, jest's or node:test's `describe`). */
  describe(name: string, fn: () => void): unknown;
  /** Declares one async test; it fails when `fn` rejects. */
  it(name: string, fn: () => Promise<void>): unknown;
}

/** Deterministic, barely compressible bytes (xorshift), so a failure is reproducible. */
export function testBytes(length: number, seed = 0x2545f491): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** The error a promise rejects with; throws if it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected a rejection, got a value");
}

/** The `code` of a value that has one. */
export const codeOf = (error: unknown): unknown =>
  typeof error === "object" && error !== null ? (error as { code?: unknown }).code : undefined;

/**
 * Records every exception that goes uncaught while a case runs (a stream's 'error' nobody hears
 * crashes the host). `uncaughtExceptionMonitor` only observes, so the runner's own handling is
 * unchanged; `check()` waits a moment for teardown errors that come after the last await.
 */
export function watchUncaught() {
  const seen: unknown[] = [];
  const record = (error: unknown) => seen.push(error);
  process.on("uncaughtExceptionMonitor", record);
  return {
    async check() {
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(seen.length, 0, `uncaught exception: ${inspect(seen[0])}`);
    },
    dispose: () => process.off("uncaughtExceptionMonitor", record),
  };
}
