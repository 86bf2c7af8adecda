import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { TransformRecord } from "../core/manifest.js";
import type { DecryptionKey, Transform } from "../core/types.js";
import { rejectionOf, type TestApi, testBytes } from "./api.js";

/** What {@link transformConformance} needs to decode, and the sizes it tries. */
export interface TransformConformanceOptions {
  /** Keys that decode what the transform writes (an encryption transform). @default [] */
  keys?: DecryptionKey[];
  /** The transform's own block or chunk size, for the ± 1 round trips. @default 65536 */
  chunkSize?: number;
  /** The large round trip. @default 24 MiB */
  largeBytes?: number;
  /**
   * Whether a flipped byte in the encoded stream must be detected (an authenticated or checksummed
   * format: AES-256-GCM, gzip's CRC, zstd's checksum). @default true
   */
  detectsTampering?: boolean;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of source) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}

/** The backup the suite's artifacts belong to, as `backup()` hands it to `encode()`. */
const IDENTITY = { job: "conformance", id: "20260101T000000000Z-00000000" };

/** Feeds `data` in 64 KiB chunks through a fresh encoder; returns the encoded bytes. */
async function encode(transform: Transform, data: Buffer): Promise<Buffer> {
  const chunks = [] as Buffer[];
  for (let i = 0; i < data.length; i += 65_536) chunks.push(data.subarray(i, i + 65_536));
  const encoder = await transform.encode(IDENTITY);
  const out = collect(encoder);
  await pipeline(Readable.from(chunks), encoder);
  return out;
}

async function decode(transform: Transform, record: TransformRecord, keys: DecryptionKey[], data: Buffer) {
  const decoder = await transform.decode(record, { keys, identity: IDENTITY });
  const out = collect(decoder);
  await Promise.all([pipeline(Readable.from([data]), decoder), out]);
  return out;
}

/**
 * The conformance suite of a {@link Transform}: what `backup` and `restore` rely on. `make` returns
 * a transform configured as a user would configure it.
 *
 * @example
 * import { describe, it } from "vitest";
 * import { transformConformance } from "stowage/testing";
 * transformConformance({ describe, it }, "gzip", () => gzip());
 */
export function transformConformance(
  api: TestApi,
  name: string,
  make: () => Transform,
  options: TransformConformanceOptions = {},
): void {
  const keys = options.keys ?? [];
  const chunk = options.chunkSize ?? 65_536;
  const large = options.largeBytes ?? 24 * 1024 * 1024;
  const { describe, it } = api;

  describe(`transform conformance: ${name}`, () => {
    for (const size of [0, 1, chunk - 1, chunk, chunk + 1, large]) {
      it(`round trips ${size} bytes through describe() as JSON`, async () => {
        const transform = make();
        const data = testBytes(size, size + 1);
        const encoded = await encode(transform, data);
        // The record crosses JSON, as it does in a manifest.
        const record = JSON.parse(JSON.stringify(transform.describe())) as TransformRecord;
        assert.equal(record.name, transform.name);
        const back = await decode(transform, record, keys, encoded);
        assert.equal(back.length, data.length);
        assert.equal(sha(back), sha(data));
      });
    }

    it("gives a fresh stream on every encode(): two artifacts do not share state", async () => {
      const transform = make();
      const a = testBytes(chunk + 7, 1);
      const b = testBytes(3 * chunk + 1, 2);
      const [ea, eb] = await Promise.all([encode(transform, a), encode(transform, b)]);
      const record = JSON.parse(JSON.stringify(transform.describe())) as TransformRecord;
      assert.equal(sha(await decode(transform, record, keys, ea)), sha(a));
      assert.equal(sha(await decode(transform, record, keys, eb)), sha(b));
      assert.notEqual(await transform.encode(), await transform.encode());
    });

    if (options.detectsTampering !== false) {
      it("detects a flipped byte and a truncated stream", async () => {
        const transform = make();
        const data = testBytes(4 * chunk + 3, 3);
        const encoded = await encode(transform, data);
        const record = JSON.parse(JSON.stringify(transform.describe())) as TransformRecord;
        for (const at of [Math.floor(encoded.length / 2), encoded.length - 1]) {
          const bad = Buffer.from(encoded);
          bad[at] = bad[at]! ^ 0x01;
          const outcome = await decode(transform, record, keys, bad).then(
            (back) => (sha(back) === sha(data) ? "same" : "different"),
            () => "rejected",
          );
          assert.equal(outcome, "rejected", `a flipped byte at ${at} was not detected (${outcome})`);
        }
        const error = await rejectionOf(
          decode(transform, record, keys, encoded.subarray(0, encoded.length - 5)),
        );
        assert.ok(error instanceof Error, "a truncated stream was not detected");
      });
    }

    it("holds backpressure: a slow reader keeps the encoder from reading its whole input", async () => {
      const transform = make();
      const total = 32 * 1024 * 1024;
      let produced = 0;
      let consumed = 0;
      let maxAhead = 0;
      const source = Readable.from(
        (async function* () {
          while (produced < total) {
            const piece = testBytes(65_536, produced + 1);
            produced += piece.length;
            yield piece;
          }
        })(),
      );
      const slow = new Writable({
        highWaterMark: 1,
        write(c: Buffer, _e, done) {
          consumed += c.length;
          maxAhead = Math.max(maxAhead, produced - consumed);
          setImmediate(done);
        },
      });
      await pipeline(source, await transform.encode(), slow);
      // Random bytes do not shrink, so input read and output written keep pace; an encoder may
      // hold a few blocks of its own, never a large part of its input.
      const bound = 8 * 1024 * 1024 + 8 * chunk;
      assert.ok(maxAhead < bound, `the encoder read ${maxAhead} bytes ahead of its reader (bound ${bound})`);
    });
  });
}
