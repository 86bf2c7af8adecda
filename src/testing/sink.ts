import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { backup } from "../core/backup.js";
import { listManifests } from "../core/catalog.js";
import { restore, verify } from "../core/restore.js";
import { readAll } from "../core/streams.js";
import type { Sink } from "../core/types.js";
import { bytesSource } from "../sources/bytes.js";
import { aes256gcm } from "../transforms/aes-256-gcm.js";
import { gzip } from "../transforms/gzip.js";
import { codeOf, rejectionOf, type TestApi, watchUncaught } from "./api.js";

/** What a sink's conformance run needs; `setup` makes a fresh, empty one for each test. */
export interface SinkFixture {
  /** The sink under test, empty. */
  sink: Sink;
  /**
   * What the backend holds that `list` does not show (temporary files, open multipart uploads),
   * looked at independently of the sink; it must be empty after every failed write.
   * @default nothing checked beyond the sink's own listing
   */
  leftovers?: () => Promise<string[]>;
  /** Removes what the test left (a folder, a bucket); run after each test, passed or failed. */
  cleanup?: () => Promise<void>;
}

/** How {@link sinkConformance} sizes its round trips. */
export interface SinkConformanceOptions {
  /** The size of the large round trip. @default 25165824 (24 MiB) */
  largeBytes?: number;
  /**
   * The size at which the sink splits or buffers what it writes (S3's multipart part size): round
   * trips at exactly `partSize - 1`, `partSize` and `partSize + 1` bytes are added.
   * @default none (only the fixed sizes: 0, 1, 64 KiB ± 1, 1 MiB + 3)
   */
  partSize?: number;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const pause = () => new Promise((r) => setImmediate(r));

/** Chunks of `data`, then an error once `failAt` bytes have gone out. */
export function failingChunks(
  data: Buffer,
  failAt: number,
  chunk = 64 * 1024,
): () => AsyncIterable<Uint8Array> {
  return async function* () {
    for (let i = 0; i < data.length; i += chunk) {
      const end = Math.min(i + chunk, data.length);
      if (end > failAt) {
        if (failAt > i) yield data.subarray(i, failAt);
        throw new Error(`injected source failure at byte ${failAt}`);
      }
      yield data.subarray(i, end);
      await pause();
    }
  };
}

/** The keys a sink lists under `prefix`, in its order. */
async function keysOf(sink: Sink, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of sink.list(prefix)) keys.push(info.key);
  return keys;
}

/** `data` in chunks of at most 1 MiB, as a byte stream. */
const chunked = (data: Buffer) =>
  Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += 1 << 20) yield data.subarray(i, i + (1 << 20));
    })(),
    { objectMode: false },
  );

async function assertNothingLeft(fixture: SinkFixture, prefix: string): Promise<void> {
  assert.deepEqual(await keysOf(fixture.sink, prefix), [], `something is listed under ${prefix}`);
  assert.deepEqual((await fixture.leftovers?.()) ?? [], [], "the backend holds leftovers");
}

/**
 * The conformance suite of a {@link Sink}: exact round trips at the sizes where sinks break (0 B,
 * 1 B, 64 KiB ± 1, the part size ± 1, tens of MiB), NOT_FOUND, unsafe keys refused, listing by
 * prefix in key order, delete, and all-or-nothing writes (a fault at byte N, an abort mid-stream,
 * directly and under `backup()` with gzip and AES-256-GCM).
 *
 * @example
 * import { describe, it } from "node:test";
 * import { sinkConformance } from "stowage/testing";
 * sinkConformance({ describe, it }, "mine", async () => ({ sink: mySink(options) }), { partSize: 8 << 20 });
 */
export function sinkConformance(
  api: TestApi,
  name: string,
  setup: () => Promise<SinkFixture>,
  options: SinkConformanceOptions = {},
): void {
  const { describe, it } = api;
  const large = options.largeBytes ?? 24 * 1024 * 1024;
  const withSink = (fn: (f: SinkFixture, sink: Sink) => Promise<void>) => async () => {
    const fixture = await setup();
    const uncaught = watchUncaught();
    try {
      await fn(fixture, fixture.sink);
      await uncaught.check();
    } finally {
      uncaught.dispose();
      await fixture.cleanup?.();
    }
  };
  const sizes = [0, 1, 65_535, 65_536, 65_537, 1_048_576 + 3];
  if (options.partSize !== undefined) {
    for (const size of [options.partSize - 1, options.partSize, options.partSize + 1]) {
      if (size >= 0 && !sizes.includes(size)) sizes.push(size);
    }
  }

  describe(`sink conformance: ${name}`, () => {
    for (const size of sizes) {
      it(
        `writes and reads back ${size} bytes exactly`,
        withSink(async (_, sink) => {
          const data = randomBytes(size);
          const key = `conf/sizes/${size}.bin`;
          const written = await sink.write(key, chunked(data));
          assert.equal(written.key, key);
          assert.ok(written.location.length > 0, "no location");
          const back = await readAll(await sink.read(key), size + 1);
          assert.equal(back.length, size);
          assert.equal(sha(back), sha(data));
          assert.equal((await sink.stat(key))?.size, size);
        }),
      );
    }

    it(
      `streams ${large} bytes in and out`,
      withSink(async (_, sink) => {
        const data = randomBytes(large);
        await sink.write("conf/large.bin", chunked(data));
        const back = await readAll(await sink.read("conf/large.bin"), large + 1);
        assert.equal(sha(back), sha(data));
        await sink.delete(["conf/large.bin"]);
        assert.equal(await sink.stat("conf/large.bin"), undefined);
      }),
    );

    it(
      "answers NOT_FOUND for a missing key, and stat says undefined",
      withSink(async (_, sink) => {
        assert.equal(codeOf(await rejectionOf(sink.read("conf/missing/nothing.bin"))), "NOT_FOUND");
        assert.equal(await sink.stat("conf/missing/nothing.bin"), undefined);
      }),
    );

    it(
      "refuses keys that could escape its root before touching storage",
      withSink(async (_, sink) => {
        for (const bad of ["../escape", "/abs/key", "a/../../b", "nul\u0000byte", ""]) {
          const error = await rejectionOf(sink.write(bad, Readable.from([Buffer.from("x")])));
          assert.equal(codeOf(error), "CONFIG_INVALID", `key ${JSON.stringify(bad)}`);
        }
        assert.deepEqual(await keysOf(sink, ""), []);
      }),
    );

    it(
      "lists by prefix in key order, nested keys included, other prefixes not",
      withSink(async (_, sink) => {
        const keys = ["conf/list/b/2.bin", "conf/list/a.bin", "conf/list/b/1.bin", "conf/listother/x.bin"];
        for (const key of keys) await sink.write(key, Readable.from([Buffer.from(key)]));
        assert.deepEqual(await keysOf(sink, "conf/list/"), [
          "conf/list/a.bin",
          "conf/list/b/1.bin",
          "conf/list/b/2.bin",
        ]);
        assert.deepEqual(await keysOf(sink, "conf/list"), [
          "conf/list/a.bin",
          "conf/list/b/1.bin",
          "conf/list/b/2.bin",
          "conf/listother/x.bin",
        ]);
        for await (const info of sink.list("conf/list/b/")) {
          assert.equal(info.size, Buffer.byteLength(info.key));
          assert.ok(info.lastModified instanceof Date, "lastModified is not a Date");
        }
      }),
    );

    it(
      "deletes keys, and deleting a missing key is not an error",
      withSink(async (_, sink) => {
        await sink.write("conf/del/one.bin", Readable.from([Buffer.from("1")]));
        await sink.write("conf/del/two.bin", Readable.from([Buffer.from("2")]));
        await sink.delete(["conf/del/one.bin", "conf/del/never-existed.bin"]);
        assert.equal(await sink.stat("conf/del/one.bin"), undefined);
        assert.deepEqual(await keysOf(sink, "conf/del/"), ["conf/del/two.bin"]);
      }),
    );

    it(
      "leaves nothing when the body fails part-way (a fault at byte N)",
      withSink(async (f, sink) => {
        const data = randomBytes(3 * 1024 * 1024);
        const body = Readable.from(failingChunks(data, 2 * 1024 * 1024 + 17)(), { objectMode: false });
        await rejectionOf(sink.write("conf/fault/object.bin", body));
        assert.equal(await sink.stat("conf/fault/object.bin"), undefined);
        await assertNothingLeft(f, "conf/fault/");
      }),
    );

    it(
      "leaves nothing when the signal fires mid-stream",
      withSink(async (f, sink) => {
        const controller = new AbortController();
        const data = randomBytes(4 * 1024 * 1024);
        const body = Readable.from(
          (async function* () {
            for (let i = 0; i < data.length; i += 256 * 1024) {
              if (i >= 1024 * 1024) controller.abort(new Error("test abort"));
              yield data.subarray(i, i + 256 * 1024);
              await pause();
            }
          })(),
          { objectMode: false },
        );
        await rejectionOf(sink.write("conf/abort/object.bin", body, { signal: controller.signal }));
        await assertNothingLeft(f, "conf/abort/");
      }),
    );

    const key = randomBytes(32);
    it(
      "under backup(): round-trips through gzip + AES-256-GCM, verifies and lists the backup",
      withSink(async (_, sink) => {
        const data = Buffer.from(randomBytes(300_000).toString("base64"));
        const manifest = await backup({
          job: "conformance",
          source: bytesSource({ data }),
          transforms: [gzip(), aes256gcm({ key })],
          sink,
        });
        assert.equal(manifest.content.sha256, sha(data));
        assert.equal(manifest.artifact.sink, sink.kind);
        const back = await readAll(await restore({ sink, manifest, keys: [{ key }] }));
        assert.ok(back.equals(data), "the restored bytes differ");
        assert.equal((await verify({ sink, manifest, keys: [{ key }] })).ok, true);
        const { manifests } = await listManifests(sink, { job: "conformance" });
        assert.ok(
          manifests.some((m) => m.id === manifest.id),
          "listManifests does not find the backup",
        );
      }),
    );

    it(
      "under backup(): a source failing at byte N leaves no artifact and no manifest",
      withSink(async (f, sink) => {
        const error = await rejectionOf(
          backup({
            job: "conformance-fail",
            source: bytesSource({ data: failingChunks(randomBytes(2 * 1024 * 1024), 1_000_003) }),
            transforms: [gzip(), aes256gcm({ key })],
            sink,
          }),
        );
        assert.equal(codeOf(error), "SOURCE_FAILED");
        await assertNothingLeft(f, "conformance-fail/");
      }),
    );

    it(
      "under backup(): an abort mid-stream leaves no artifact and no manifest",
      withSink(async (f, sink) => {
        const controller = new AbortController();
        const error = await rejectionOf(
          backup({
            job: "conformance-abort",
            source: bytesSource({
              data: async function* () {
                for (let i = 0; i < 64; i++) {
                  if (i === 8) controller.abort();
                  yield randomBytes(64 * 1024);
                  await pause();
                }
              },
            }),
            transforms: [gzip()],
            sink,
            signal: controller.signal,
          }),
        );
        assert.equal(codeOf(error), "ABORTED");
        await assertNothingLeft(f, "conformance-abort/");
      }),
    );
  });
}
