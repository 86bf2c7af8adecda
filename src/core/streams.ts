import { createHash, type Hash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
// The cap in settled() is a safety limit in real time, whatever a test does to the global clock.
import { clearTimeout, setTimeout } from "node:timers";

/** A byte cap for a {@link HashCounter}: the chunk that would pass `bytes` errors the stream instead. */
export interface ByteCap {
  /** The most bytes allowed through. */
  bytes: number;
  /** The error for a stream that reached `seen` bytes, more than the cap. */
  error: (seen: number) => Error;
}

/**
 * A pass-through stage that hashes (SHA-256) and counts what flows through it. Chunks are passed
 * on as they are, without copying. With a `cap`, the first chunk past it errors the stream and
 * is not passed on (restore stops a decompression bomb at the manifest's size this way). With
 * `hashing` false it only counts and caps: for bytes another stage already checks (restore's
 * stored bytes when each block is checked), where a second SHA-256 pass would prove nothing more.
 */
export class HashCounter extends Transform {
  /** Bytes passed through so far. */
  bytes = 0;
  private readonly hash: Hash | undefined;
  private hex: string | undefined;

  constructor(
    private readonly onBytes?: (bytes: number) => void,
    private readonly cap?: ByteCap,
    hashing = true,
  ) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.hash = hashing ? createHash("sha256") : undefined;
  }

  /** Whether this stage hashes what passes (else {@link digest} is not available). */
  get hashing(): boolean {
    return this.hash !== undefined;
  }

  /** @internal Node's stream hook. */
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.cap && this.bytes + chunk.length > this.cap.bytes) {
      callback(this.cap.error(this.bytes + chunk.length));
      return;
    }
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    this.onBytes?.(this.bytes);
    callback(null, chunk);
  }

  /** The SHA-256 as lowercase hex; only meaningful once the stream has ended. */
  digest(): string {
    if (!this.hash) throw new Error("HashCounter: digest() of a stage that only counts");
    this.hex ??= this.hash.digest("hex");
    return this.hex;
  }
}

/**
 * A pass-through stage that holds back the end of the stream until `settle()` resolves, and turns
 * a rejection into a stream error. The core puts it last so that a sink commits only after the
 * source has said it succeeded (e.g. pg_dump exited 0).
 */
export class EndGate extends Transform {
  constructor(private readonly settle: () => Promise<unknown>) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.settle().then(
      () => callback(),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
    );
  }
}

type Digest = { bytes: number; sha256: string };

/**
 * The error `onMismatch` builds when a finished counter's size or digest differ; else undefined.
 * A counter that does not hash is judged by its size alone (its bytes are checked elsewhere).
 */
export function digestError(counter: HashCounter, expected: Digest, onMismatch: (actual: Digest) => Error) {
  if (!counter.hashing) {
    return counter.bytes === expected.bytes ? undefined : onMismatch({ bytes: counter.bytes, sha256: "" });
  }
  const actual = { bytes: counter.bytes, sha256: counter.digest() };
  return actual.bytes === expected.bytes && actual.sha256 === expected.sha256
    ? undefined
    : onMismatch(actual);
}

/**
 * A stage that checks, when the stream ends, that what passed matched an expected size and
 * SHA-256; a mismatch errors the stream instead of ending it. `first` runs before that check and
 * may return an earlier stage's error (restore checks the stored digest there, after every decoder
 * has had its say, so a decryptor's finding on a tampered chunk is the one reported).
 */
export class ExpectDigest extends HashCounter {
  constructor(
    private readonly expected: { bytes: number; sha256: string },
    private readonly onMismatch: (actual: { bytes: number; sha256: string }) => Error,
    private readonly first?: () => Error | undefined,
    cap?: ByteCap,
    hashing = true,
  ) {
    super(undefined, cap, hashing);
  }

  override _flush(callback: TransformCallback): void {
    callback(this.first?.() ?? digestError(this, this.expected, this.onMismatch));
  }
}

/** Reads a whole stream into one Buffer. Only for small things (manifests, test fixtures). */
export async function readAll(
  stream: Readable | AsyncIterable<Uint8Array>,
  limit = 64 << 20,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    total += buffer.length;
    if (total > limit) {
      if (stream instanceof Readable) stream.destroy();
      throw new RangeError(`stream is larger than ${limit} bytes`);
    }
    parts.push(buffer);
  }
  return Buffer.concat(parts, total);
}

/** Calls `emit` at most once per `intervalMs`, plus a final call the caller makes with `force`. */
export function throttle<T>(
  intervalMs: number,
  emit: (value: T) => void,
): (value: T, force?: boolean) => void {
  let last = 0;
  return (value, force = false) => {
    const now = Date.now();
    if (force || now - last >= intervalMs) {
      last = now;
      emit(value);
    }
  };
}

/**
 * Waits until a destroyed stream has closed, i.e. its `_destroy` has finished releasing what it
 * held (a source's child process is reaped by then), but no longer than `limitMs`, so a source
 * that never closes cannot hang its caller. (`finished()` is no help here: it settles at once for
 * a stream already destroyed, before its `_destroy` is done; `events.once` would reject on the
 * `'error'` emitted just before `'close'`.)
 */
export async function settled(stream: Readable, limitMs = 10_000): Promise<void> {
  if (stream.closed) return;
  let timer: NodeJS.Timeout | undefined;
  let onClose: (() => void) | undefined;
  try {
    await new Promise<void>((resolve) => {
      onClose = resolve;
      stream.once("close", onClose);
      timer = setTimeout(resolve, limitMs);
      timer.unref();
    });
  } finally {
    clearTimeout(timer);
    if (onClose) stream.off("close", onClose);
  }
}
