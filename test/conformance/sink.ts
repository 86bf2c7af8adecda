/**
 * The one conformance suite every sink runs (memory, filesystem, S3, Glacier, ...). A sink file
 * calls `sinkConformance("s3", setup)` inside its own test file; `setup` gives a fresh, empty sink.
 */
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  gzip,
  listManifests,
  readAll,
  restore,
  type Sink,
  verify,
} from "../../src/index.js";
import { keysOf, rejection } from "../support/expect-helpers.js";

export interface SinkFixture {
  sink: Sink;
  /** Anything the backend holds that `list` does not show: temp files, open multipart uploads. */
  leftovers?: () => Promise<string[]>;
  cleanup?: () => Promise<void>;
}

export interface ConformanceOptions {
  /** The large round trip; "tens of MiB" by default. */
  largeBytes?: number;
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

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
      await new Promise((r) => setImmediate(r));
    }
  };
}

export function sinkConformance(
  name: string,
  setup: () => Promise<SinkFixture>,
  options: ConformanceOptions = {},
) {
  const large = options.largeBytes ?? 24 * 1024 * 1024;
  describe(`sink conformance: ${name}`, () => {
    let fixture: SinkFixture;
    let sink: Sink;
    beforeAll(async () => {
      fixture = await setup();
      sink = fixture.sink;
    });
    afterAll(async () => {
      await fixture?.cleanup?.();
    });

    const sizes = [0, 1, 65_535, 65_536, 65_537, 1_048_576 + 3];
    it.each(sizes)("writes and reads back %i bytes exactly", async (size) => {
      const data = randomBytes(size);
      const key = `conf/sizes/${size}.bin`;
      const written = await sink.write(key, Readable.from([data]));
      expect(written.key).toBe(key);
      expect(written.location.length).toBeGreaterThan(0);
      const back = await readAll(await sink.read(key));
      expect(back.length).toBe(size);
      expect(sha(back)).toBe(sha(data));
      const info = await sink.stat(key);
      expect(info?.size).toBe(size);
    });

    it(`streams ${large} bytes in and out`, async () => {
      const data = randomBytes(large);
      const key = "conf/large.bin";
      await sink.write(
        key,
        Readable.from(
          (function* () {
            for (let i = 0; i < data.length; i += 1 << 20) yield data.subarray(i, i + (1 << 20));
          })(),
        ),
      );
      const back = await readAll(await sink.read(key), large + 1);
      expect(sha(back)).toBe(sha(data));
      await sink.delete([key]);
    });

    it("answers NOT_FOUND for a missing key, and stat says undefined", async () => {
      expect((await rejection(sink.read("conf/missing/nothing.bin"))).code).toBe("NOT_FOUND");
      expect(await sink.stat("conf/missing/nothing.bin")).toBeUndefined();
    });

    it("refuses keys that could escape its root before touching storage", async () => {
      for (const bad of ["../escape", "/abs/key", "a/../../b", "nul\u0000byte", ""]) {
        const error = await rejection(sink.write(bad, Readable.from([Buffer.from("x")])));
        expect(error.code).toBe("CONFIG_INVALID");
      }
    });

    it("lists by prefix in key order, nested keys included, other prefixes not", async () => {
      const keys = ["conf/list/b/2.bin", "conf/list/a.bin", "conf/list/b/1.bin", "conf/listother/x.bin"];
      for (const key of keys) await sink.write(key, Readable.from([Buffer.from(key)]));
      expect(await keysOf(sink, "conf/list/")).toEqual([
        "conf/list/a.bin",
        "conf/list/b/1.bin",
        "conf/list/b/2.bin",
      ]);
      expect(await keysOf(sink, "conf/list")).toEqual([
        "conf/list/a.bin",
        "conf/list/b/1.bin",
        "conf/list/b/2.bin",
        "conf/listother/x.bin",
      ]);
      for await (const info of sink.list("conf/list/b/")) {
        expect(info.size).toBe(Buffer.byteLength(info.key));
        expect(info.lastModified).toBeInstanceOf(Date);
      }
    });

    it("deletes keys, and deleting a missing key is not an error", async () => {
      await sink.write("conf/del/one.bin", Readable.from([Buffer.from("1")]));
      await sink.delete(["conf/del/one.bin", "conf/del/never-existed.bin"]);
      expect(await sink.stat("conf/del/one.bin")).toBeUndefined();
      expect(await keysOf(sink, "conf/del/")).toEqual([]);
    });

    it("leaves nothing when the body fails part-way (a fault at byte N)", async () => {
      const data = randomBytes(3 * 1024 * 1024);
      const body = Readable.from(failingChunks(data, 2 * 1024 * 1024 + 17)(), { objectMode: false });
      await expect(sink.write("conf/fault/object.bin", body)).rejects.toThrow();
      expect(await sink.stat("conf/fault/object.bin")).toBeUndefined();
      expect(await keysOf(sink, "conf/fault/")).toEqual([]);
      expect((await fixture.leftovers?.()) ?? []).toEqual([]);
    });

    it("leaves nothing when the signal fires mid-stream", async () => {
      const controller = new AbortController();
      const data = randomBytes(4 * 1024 * 1024);
      let sent = 0;
      const body = Readable.from(
        (async function* () {
          for (let i = 0; i < data.length; i += 256 * 1024) {
            sent += 256 * 1024;
            if (sent > 1024 * 1024) controller.abort(new Error("test abort"));
            yield data.subarray(i, i + 256 * 1024);
            await new Promise((r) => setImmediate(r));
          }
        })(),
        { objectMode: false },
      );
      await expect(
        sink.write("conf/abort/object.bin", body, { signal: controller.signal }),
      ).rejects.toThrow();
      expect(await keysOf(sink, "conf/abort/")).toEqual([]);
      expect((await fixture.leftovers?.()) ?? []).toEqual([]);
    });

    describe("under backup()", () => {
      const key = randomBytes(32);
      it("round-trips a backup through gzip + AES-256-GCM and verifies it", async () => {
        const data = Buffer.from(randomBytes(300_000).toString("base64"));
        const manifest = await backup({
          job: "conformance",
          source: bytesSource({ data }),
          transforms: [gzip(), aes256gcm({ key })],
          sink,
        });
        expect(manifest.content.sha256).toBe(sha(data));
        expect(manifest.artifact.sink).toBe(sink.kind);
        const back = await readAll(await restore({ sink, manifest, keys: [{ key }] }));
        expect(back.equals(data)).toBe(true);
        expect((await verify({ sink, manifest, keys: [{ key }] })).ok).toBe(true);
        const { manifests } = await listManifests(sink, { job: "conformance" });
        expect(manifests.map((m) => m.id)).toContain(manifest.id);
      });

      it("a source failing at byte N leaves no artifact and no manifest", async () => {
        const data = randomBytes(2 * 1024 * 1024);
        const error = await rejection(
          backup({
            job: "conformance-fail",
            source: bytesSource({ data: failingChunks(data, 1_000_003) }),
            transforms: [gzip(), aes256gcm({ key })],
            sink,
          }),
        );
        expect(error.code).toBe("SOURCE_FAILED");
        expect(await keysOf(sink, "conformance-fail/")).toEqual([]);
        expect((await fixture.leftovers?.()) ?? []).toEqual([]);
      });

      it("an abort mid-stream leaves no artifact and no manifest", async () => {
        const controller = new AbortController();
        const error = await rejection(
          backup({
            job: "conformance-abort",
            source: bytesSource({
              data: async function* () {
                for (let i = 0; i < 64; i++) {
                  if (i === 8) controller.abort();
                  yield randomBytes(64 * 1024);
                  await new Promise((r) => setImmediate(r));
                }
              },
            }),
            transforms: [gzip()],
            sink,
            signal: controller.signal,
          }),
        );
        expect(error.code).toBe("ABORTED");
        expect(await keysOf(sink, "conformance-abort/")).toEqual([]);
        expect((await fixture.leftovers?.()) ?? []).toEqual([]);
      });
    });
  });
}
