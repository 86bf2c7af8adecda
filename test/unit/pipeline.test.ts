import { randomBytes } from "node:crypto";
import { readFileSync, write, writeSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Transform as NodeTransform, Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";
import {
  aes256gcm,
  type BackupProgress,
  backup,
  bytesSource,
  copyBackup,
  type Decoder,
  filesystemSink,
  gzip,
  isStowageError,
  listManifests,
  manifestKeyFor,
  memorySink,
  parseManifest,
  readAll,
  restore,
  type Sink,
  type Source,
  StowageError,
  type Transform,
  VERSION,
  verify,
} from "../../src/index.js";
import { failingChunks } from "../../src/testing.js";
import { codeOf, keysOf, rejection, sha } from "../support/expect-helpers.js";

const key = randomBytes(32);

const tempDirs: string[] = [];
afterEach(async () => {
  for (const dir of tempDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe("backup()", () => {
  it("records the plain and stored SHA-256 and sizes that independent hashes agree with", async () => {
    const sink = memorySink();
    const data = Buffer.from("row\n".repeat(50_000));
    const manifest = await backup({
      job: "db",
      source: bytesSource({ data, contentType: "application/sql" }),
      transforms: [gzip(), aes256gcm({ key })],
      sink,
      labels: { constitutional_hash: "cdd01ef066bc6cf2" },
    });
    const stored = sink.objects.get(manifest.artifact.key)!.data;
    expect(manifest.content).toEqual({
      bytes: data.length,
      sha256: sha(data),
      contentType: "application/sql",
    });
    expect(manifest.artifact.bytes).toBe(stored.length);
    expect(manifest.artifact.sha256).toBe(sha(stored));
    expect(manifest.artifact.key).toMatch(
      /^db\/\d{4}\/\d{2}\/\d{2}\/\d{8}T\d{9}Z-[0-9a-f]{8}\.sql\.gz\.enc$/,
    );
    expect(manifest.labels).toEqual({ constitutional_hash: "cdd01ef066bc6cf2" });
    expect(manifest.transforms.map((t) => t.name)).toEqual(["gzip", "aes-256-gcm"]);
    expect(manifest.generator).toEqual({ name: "stowage", version: VERSION });
    // The manifest stored beside the artifact is the one returned.
    const storedManifest = parseManifest(
      sink.objects.get(manifestKeyFor(manifest.artifact.key))!.data.toString(),
    );
    expect(storedManifest).toEqual(manifest);
    // It never carries the key.
    expect(JSON.stringify(storedManifest)).not.toContain(key.toString("hex"));
    expect(JSON.stringify(storedManifest)).not.toContain(key.toString("base64"));
  });

  it("gives two backups of one job started together different, time-sorted keys", async () => {
    const sink = memorySink();
    const manifests = await Promise.all(
      Array.from({ length: 20 }, () => backup({ job: "burst", source: bytesSource({ data: "x" }), sink })),
    );
    const artifactKeys = new Set(manifests.map((m) => m.artifact.key));
    expect(artifactKeys.size).toBe(20);
    const { manifests: listed } = await listManifests(sink, { job: "burst" });
    const ids = listed.map((m) => m.id);
    expect(ids).toEqual([...ids].sort());
  });

  it("names a bad option in CONFIG_INVALID before opening the source", async () => {
    let opened = false;
    const source: Source = {
      kind: "probe",
      name: "probe",
      open: async () => {
        opened = true;
        throw new Error("should not open");
      },
    };
    try {
      await backup({ job: "Bad Name!", source, sink: memorySink() });
      expect.unreachable();
    } catch (error) {
      expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
      expect((error as StowageError).details.issues).toEqual([expect.objectContaining({ path: "job" })]);
    }
    expect(opened).toBe(false);
  });

  it("refuses a sensitive source without encryption, unless told to allow it", async () => {
    const sink = memorySink();
    const source = bytesSource({ data: "secret", sensitive: true });
    expect(await codeOf(backup({ job: "s", source, sink, transforms: [gzip()] }))).toBe("CONFIG_INVALID");
    expect(await keysOf(sink)).toEqual([]);
    await backup({ job: "s", source, sink, allowUnencrypted: true });
    await backup({ job: "s", source, sink, transforms: [aes256gcm({ key })] });
    expect((await listManifests(sink)).manifests).toHaveLength(2);
  });

  it("refuses a storage class the sink does not declare", async () => {
    const sink = memorySink({ storageClasses: ["COLD"] });
    const source = bytesSource({ data: "x" });
    expect(await codeOf(backup({ job: "c", source, sink, storageClass: "GLACIER" }))).toBe("CONFIG_INVALID");
    const manifest = await backup({ job: "c", source, sink, storageClass: "COLD" });
    expect(manifest.artifact.storageClass).toBe("COLD");
  });

  it("fails with SOURCE_FAILED when the source errors at byte N, leaving no files at all", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-pipe-"));
    tempDirs.push(root);
    const sink = filesystemSink({ root });
    const data = randomBytes(3 << 20);
    for (const failAt of [0, 1, 65_536, (2 << 20) + 5]) {
      const error = await backup({
        job: "fail",
        source: bytesSource({ data: failingChunks(data, failAt) }),
        transforms: [gzip(), aes256gcm({ key })],
        sink,
      }).then(
        () => expect.unreachable(),
        (e: unknown) => e as StowageError,
      );
      expect(error.code).toBe("SOURCE_FAILED");
      expect((error.cause as Error).message).toContain(`byte ${failAt}`);
    }
    expect(await readdir(root, { recursive: true })).toEqual([]);
  });

  it("waits for the source's verdict: a late failure (a bad exit code) leaves no artifact", async () => {
    const sink = memorySink();
    const source: Source = {
      kind: "late",
      name: "late",
      open: async () => ({
        stream: Readable.from([Buffer.from("complete-looking output")]),
        contentType: "text/plain",
        details: async () => {
          throw new Error("process exited with code 1");
        },
      }),
    };
    expect(await codeOf(backup({ job: "late", source, sink }))).toBe("SOURCE_FAILED");
    expect(sink.objects.size).toBe(0);
  });

  it("names a failing transform TRANSFORM_FAILED", async () => {
    const broken: Transform = {
      ...gzip(),
      name: "broken",
      encode: () =>
        new NodeTransform({
          transform(_chunk, _enc, cb) {
            cb(new Error("transform exploded"));
          },
        }),
    };
    const sink = memorySink();
    expect(
      await codeOf(backup({ job: "t", source: bytesSource({ data: "abc" }), transforms: [broken], sink })),
    ).toBe("TRANSFORM_FAILED");
    expect(sink.objects.size).toBe(0);
  });

  it("names a failing sink SINK_WRITE_FAILED and stops the source", async () => {
    const stream = Readable.from(
      (async function* () {
        for (let i = 0; i < 1000; i++) yield randomBytes(64 * 1024);
      })(),
    );
    const source: Source = {
      kind: "endless",
      name: "endless",
      open: async () => ({ stream, contentType: "application/octet-stream", details: async () => ({}) }),
    };
    const inner = memorySink();
    const failing: Sink = {
      ...inner,
      async write(key, body, options) {
        if (key.endsWith(".manifest.json")) return inner.write(key, body, options);
        let seen = 0;
        for await (const chunk of body) {
          seen += (chunk as Buffer).length;
          if (seen > 1 << 20) throw new Error("disk full");
        }
        throw new Error("unreachable");
      },
    };
    expect(await codeOf(backup({ job: "sinkfail", source, sink: failing }))).toBe("SINK_WRITE_FAILED");
    expect(stream.destroyed).toBe(true);
    expect(inner.objects.size).toBe(0);
  });

  it("rejects only after a failed source has released what it holds", async () => {
    let released = false;
    class SlowToRelease extends Readable {
      override _read() {
        setImmediate(() => this.push(randomBytes(64 * 1024))); // paced like a real process's output
      }
      override _destroy(error: Error | null, callback: (error?: Error | null) => void) {
        // Like a child process that takes a moment to be killed and reaped.
        setTimeout(() => {
          released = true;
          callback(error);
        }, 200);
      }
    }
    const controller = new AbortController();
    const source: Source = {
      kind: "slow",
      name: "slow",
      open: async () => ({
        stream: new SlowToRelease(),
        contentType: "application/octet-stream",
        details: async () => ({}),
      }),
    };
    setTimeout(() => controller.abort(), 20);
    expect(await codeOf(backup({ job: "rel", source, sink: memorySink(), signal: controller.signal }))).toBe(
      "ABORTED",
    );
    expect(released).toBe(true);
  });

  it("removes the artifact when the manifest cannot be written", async () => {
    const inner = memorySink();
    const sink: Sink = {
      ...inner,
      async write(key, body, options) {
        if (key.endsWith(".manifest.json")) throw new Error("quota exceeded");
        return inner.write(key, body, options);
      },
    };
    expect(await codeOf(backup({ job: "m", source: bytesSource({ data: "abc" }), sink }))).toBe(
      "SINK_WRITE_FAILED",
    );
    expect(inner.objects.size).toBe(0);
  });

  it("aborts with ABORTED, before or during the run, leaving nothing", async () => {
    const sink = memorySink();
    expect(
      await codeOf(
        backup({ job: "a", source: bytesSource({ data: "x" }), sink, signal: AbortSignal.abort() }),
      ),
    ).toBe("ABORTED");
    const controller = new AbortController();
    const slow = bytesSource({
      data: async function* () {
        for (let i = 0; i < 100; i++) {
          if (i === 3) controller.abort();
          yield randomBytes(1024);
          await new Promise((r) => setTimeout(r, 2));
        }
      },
    });
    expect(await codeOf(backup({ job: "a", source: slow, sink, signal: controller.signal }))).toBe("ABORTED");
    expect(sink.objects.size).toBe(0);
  });

  it("reports progress a few times a second and once at the end", async () => {
    const events: BackupProgress[] = [];
    const data = randomBytes(4 << 20);
    await backup({
      job: "p",
      source: bytesSource({
        data: async function* () {
          for (let i = 0; i < data.length; i += 256 * 1024) {
            yield data.subarray(i, i + 256 * 1024);
            await new Promise((r) => setTimeout(r, 20));
          }
        },
      }),
      sink: memorySink(),
      onProgress: (p) => events.push(p),
    });
    const last = events.at(-1)!;
    expect(last).toMatchObject({ done: true, bytesRead: data.length, bytesWritten: data.length });
    expect(events.filter((e) => !e.done).length).toBeLessThanOrEqual(Math.ceil(last.elapsedMs / 250) + 1);
    expect(events.length).toBeGreaterThan(1);
  });

  it("holds back a fast source when the sink is slow (bounded buffering)", async () => {
    const chunk = 64 * 1024;
    let produced = 0;
    let consumed = 0;
    let maxAhead = 0;
    const source = bytesSource({
      data: async function* () {
        for (let i = 0; i < 400; i++) {
          produced += chunk;
          maxAhead = Math.max(maxAhead, produced - consumed);
          yield randomBytes(chunk);
        }
      },
    });
    const inner = memorySink();
    const slow: Sink = {
      ...inner,
      async write(key, body, options) {
        if (key.endsWith(".manifest.json")) return inner.write(key, body, options);
        for await (const part of body) {
          consumed += (part as Buffer).length;
          await new Promise((r) => setTimeout(r, 1));
        }
        return { key, location: `memory://${key}` };
      },
    };
    await backup({ job: "bp", source, sink: slow, transforms: [aes256gcm({ key })] });
    expect(consumed).toBeGreaterThan(25 << 20);
    // Each stage buffers about 1 MiB (its high-water marks); 25 MiB of data never piles up.
    expect(maxAhead).toBeLessThan(12 << 20);
  });
});

describe("backup() into the sink's own file (Source.openToFile, Sink.openFile)", () => {
  /**
   * A source that writes `parts` into the file it is given, as a child process would: the first
   * before it returns (so the core starts behind), the rest after.
   */
  const writingSource = ([first, ...rest]: Buffer[], failWith?: Error): Source => ({
    kind: "writer",
    name: "parts",
    open: () => Promise.reject(new Error("this test wants the file path")),
    async openToFile(fd) {
      let position = writeSync(fd, first!);
      const written = (async () => {
        for (const part of rest) {
          await new Promise<void>((resolve, reject) =>
            write(fd, part, 0, part.length, position, (error) => (error ? reject(error) : resolve())),
          );
          position += part.length;
        }
        if (failWith) throw failWith;
      })();
      written.catch(() => undefined);
      return {
        contentType: "application/sql",
        finished: written,
        stop: async () => undefined,
        details: async () => ({ parts: rest.length }),
      };
    },
  });

  it("hashes every byte the writer wrote, and gives the event loop a turn after every MiB", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-direct-"));
    tempDirs.push(root);
    // 24 MiB in the file before the core first reads, then a tail: it has to catch up.
    const parts = [randomBytes(24 << 20), randomBytes(12345)];
    let running = true;
    let turns = 0;
    const tick = () => {
      turns++;
      if (running) setImmediate(tick);
    };
    setImmediate(tick);
    // The turn each read of the file was made in, seen where the core reports its progress.
    const turnOfRead: number[] = [];
    const disk = filesystemSink({ root });
    const sink: Sink = {
      ...disk,
      async openFile(options) {
        const file = await disk.openFile!(options);
        return {
          ...file,
          grown: (bytes) => {
            turnOfRead.push(turns);
            file.grown(bytes);
          },
        };
      },
    };
    const manifest = await backup({ job: "direct", source: writingSource(parts), sink });
    running = false;
    const data = Buffer.concat(parts);
    expect(manifest.content).toMatchObject({ bytes: data.length, sha256: sha(data) });
    expect(manifest.artifact).toMatchObject({ bytes: data.length, sha256: sha(data) });
    expect(manifest.source.details).toEqual({ parts: 1 });
    expect(readFileSync(join(root, manifest.artifact.key)).equals(data)).toBe(true);
    // Each MiB of the 24 it had to catch up on was read in a turn of its own.
    expect(new Set(turnOfRead.slice(0, 24)).size).toBe(24);
  });

  it("keeps nothing when the writer fails after writing", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-direct-"));
    tempDirs.push(root);
    const failed = backup({
      job: "direct",
      source: writingSource([randomBytes(3 << 20)], new Error("exit 1")),
      sink: filesystemSink({ root }),
    });
    expect(await codeOf(failed)).toBe("SOURCE_FAILED");
    expect(await readdir(root, { recursive: true })).toEqual([]);
  });
});

describe("restore() and verify()", () => {
  async function stored(transforms: Transform[] = [gzip()]) {
    const sink = memorySink();
    const data = randomBytes(300_000);
    const manifest = await backup({ job: "r", source: bytesSource({ data }), sink, transforms });
    return { sink, data, manifest, object: sink.objects.get(manifest.artifact.key)! };
  }

  it("verify reports a flipped byte in an unencrypted artifact, restore refuses it before releasing a byte", async () => {
    const { sink, manifest, object } = await stored();
    object.data[Math.floor(object.data.length / 2)]! ^= 0x01;
    const report = await verify({ sink, manifest });
    expect(report.ok).toBe(false);
    expect(report.stored.ok).toBe(false);
    expect(report.problems.map((p) => p.code)).toContain("INTEGRITY_MISMATCH");
    // Read once and checked block by block: the damaged block fails the stream, and nothing of it
    // (here: nothing at all, the artifact is one block) is released.
    expect(manifest.artifact.blocks).toBeDefined();
    let released = 0;
    const error = await rejection(
      (async () => {
        for await (const chunk of await restore({ sink, manifest })) released += (chunk as Buffer).length;
      })(),
    );
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(released).toBe(0);
    // Verified first (the default for manifests without blocks): refused before the stream exists.
    expect(await codeOf(restore({ sink, manifest, verifyFirst: true }))).toBe("INTEGRITY_MISMATCH");
  });

  it("verify with keys does a trial restore; without keys it checks only stored bytes", async () => {
    const { sink, manifest } = await stored([gzip(), aes256gcm({ key })]);
    const withKeys = await verify({ sink, manifest, keys: [{ key }] });
    expect(withKeys.ok).toBe(true);
    expect(withKeys.plain?.ok).toBe(true);
    const storedOnly = await verify({ sink, manifest });
    expect(storedOnly.ok).toBe(true);
    expect(storedOnly.plain).toBeUndefined();
    const wrongKey = await verify({ sink, manifest, keys: [{ key: randomBytes(32) }] });
    expect(wrongKey.ok).toBe(false);
    expect(wrongKey.problems[0]?.code).toBe("DECRYPT_FAILED");
  });

  it("reports a missing artifact as NOT_FOUND", async () => {
    const { sink, manifest } = await stored();
    sink.objects.delete(manifest.artifact.key);
    const report = await verify({ sink, manifest });
    expect(report.problems.map((p) => p.code)).toEqual(["NOT_FOUND"]);
    expect(await codeOf(restore({ sink, manifest }))).toBe("NOT_FOUND");
  });

  it("errors the stream with INTEGRITY_MISMATCH when the manifest's plain hash is wrong", async () => {
    const { sink, manifest } = await stored([gzip(), aes256gcm({ key })]);
    const lying = { ...manifest, content: { ...manifest.content, sha256: "0".repeat(64) } };
    const stream = await restore({ sink, manifest: lying, keys: [{ key }] });
    expect(await codeOf(readAll(stream))).toBe("INTEGRITY_MISMATCH");
  });

  it("stops as soon as the plain bytes pass what the manifest declares (a decompression bomb)", async () => {
    const sink = memorySink();
    const data = Buffer.alloc(16 << 20);
    const manifest = await backup({ job: "r", source: bytesSource({ data }), sink, transforms: [gzip()] });
    const lying = { ...manifest, content: { ...manifest.content, bytes: 1 << 20 } };
    let released = 0;
    const error = await rejection(
      (async () => {
        for await (const chunk of await restore({ sink, manifest: lying })) released += chunk.length;
      })(),
    );
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(error.details).toMatchObject({ which: "plain", reason: "too-long" });
    expect(released).toBeLessThanOrEqual(1 << 20);
    const report = await verify({ sink, manifest: lying });
    expect(report.problems.map((p) => p.code)).toContain("INTEGRITY_MISMATCH");
  });

  it("stops as soon as the stored bytes pass what the manifest declares", async () => {
    const { sink, manifest, object } = await stored([aes256gcm({ key })]);
    object.data = Buffer.concat([object.data, Buffer.alloc(8 << 20)]);
    const error = await rejection(readAll(await restore({ sink, manifest, keys: [{ key }] })));
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(error.details).toMatchObject({ which: "stored", reason: "too-long" });
  });

  it("reports an unsafe artifact key in a manifest as MANIFEST_INVALID naming artifact.key", async () => {
    const { sink, manifest } = await stored();
    for (const bad of ["../../etc/passwd", "/etc/passwd"]) {
      const error = await rejection(
        restore({ sink, manifest: { ...manifest, artifact: { ...manifest.artifact, key: bad } } }),
      );
      expect(error.code).toBe("MANIFEST_INVALID");
      expect(error.details.issues).toEqual([expect.objectContaining({ path: "artifact.key" })]);
    }
  });

  it("refuses keys of the wrong shape up front, naming the entry and never quoting it", async () => {
    const { sink, manifest } = await stored([aes256gcm({ key })]);
    const identity = "STOWAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
    for (const keys of [[identity], [key], [{ key }, "a passphrase of sorts"]]) {
      const error = await rejection(restore({ sink, manifest, keys: keys as never }));
      expect(error.code).toBe("CONFIG_INVALID");
      const option = keys.length === 2 ? "keys[1]" : "keys[0]";
      expect(error.details.issues).toEqual([expect.objectContaining({ path: option })]);
      const text = JSON.stringify({ m: error.message, d: error.details });
      expect(text).not.toContain(identity);
      expect(text).not.toContain(key.toString("hex"));
    }
    expect(await codeOf(verify({ sink, manifest, keys: [key as never] }))).toBe("CONFIG_INVALID");
  });

  it("releases the sink's read when the consumer stops early", async () => {
    const { sink, manifest, data } = await stored([aes256gcm({ key })]);
    let closed = false;
    const tracking: Sink = {
      ...sink,
      async read(k, o) {
        const stream = await sink.read(k, o);
        stream.once("close", () => {
          closed = true;
        });
        return stream;
      },
    };
    const stream = await restore({ sink: tracking, manifest, keys: [{ key }] });
    for await (const chunk of stream) {
      expect(data.subarray(0, (chunk as Buffer).length).equals(chunk as Buffer)).toBe(true);
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
    expect(closed).toBe(true);
  });

  it("says UNSUPPORTED for a transform it does not know, and uses one it is given", async () => {
    const { sink, manifest } = await stored([]);
    // Names an object has by inheritance are no built-in decoder either.
    for (const name of ["rot13", "constructor", "toString", "__proto__", "hasOwnProperty"]) {
      const odd = { ...manifest, transforms: [{ name, role: "other" as const }] };
      expect(await codeOf(restore({ sink, manifest: odd, verifyFirst: false })), name).toBe("UNSUPPORTED");
    }
  });

  it("restores with a decoder alone, and the caller's decoder wins over a built-in of that name", async () => {
    const flip = () =>
      new NodeTransform({
        transform(chunk: Buffer, _encoding, callback) {
          callback(null, Buffer.from(chunk.map((b) => b ^ 0xff)));
        },
      });
    const flipper: Transform = {
      name: "flip",
      role: "other",
      extension: ".flip",
      encode: flip,
      decode: flip,
      describe: () => ({ name: "flip", role: "other" }),
    };
    const { sink, data, manifest } = await stored([gzip(), flipper]);
    const decoder: Decoder = { name: "flip", decode: flip };
    expect((await readAll(await restore({ sink, manifest, transforms: [decoder] }))).equals(data)).toBe(true);

    let ownGunzip = 0;
    const gunzip: Decoder = {
      name: "gzip",
      decode: () => {
        ownGunzip++;
        return createGunzip();
      },
    };
    const plain = await readAll(await restore({ sink, manifest, transforms: [decoder, gunzip] }));
    expect(plain.equals(data)).toBe(true);
    expect(ownGunzip).toBe(1);
  });
});

describe("manifests", () => {
  it("parseManifest names the fields that are wrong", () => {
    try {
      parseManifest({ version: 1, id: "nope" });
      expect.unreachable();
    } catch (error) {
      expect(isStowageError(error, "MANIFEST_INVALID")).toBe(true);
      const fields = ((error as StowageError).details.issues as Array<{ path: string }>).map((i) => i.path);
      expect(fields).toContain("id");
      expect(fields).toContain("job");
    }
    try {
      parseManifest({ version: 99 });
      expect.unreachable();
    } catch (error) {
      expect(isStowageError(error, "MANIFEST_INVALID")).toBe(true);
    }
  });

  it("listManifests reports invalid manifests instead of dropping them", async () => {
    const sink = memorySink();
    const good = await backup({ job: "l", source: bytesSource({ data: "a" }), sink });
    await sink.write("l/2026/01/01/broken.bin.manifest.json", Readable.from([Buffer.from("{not json")]));
    const copied = sink.objects.get(manifestKeyFor(good.artifact.key))!.data;
    await sink.write("l/2026/01/01/moved.bin.manifest.json", Readable.from([copied]));
    const listing = await listManifests(sink, { job: "l" });
    expect(listing.manifests.map((m) => m.id)).toEqual([good.id]);
    expect(listing.invalid.map((i) => [i.key, i.error.code])).toEqual([
      ["l/2026/01/01/broken.bin.manifest.json", "MANIFEST_INVALID"],
      ["l/2026/01/01/moved.bin.manifest.json", "MANIFEST_INVALID"],
    ]);
  });

  it("VERSION matches package.json", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version: string;
    };
    expect(VERSION).toBe(pkg.version);
  });

  it("isStowageError recognises errors from another copy of the package by brand", () => {
    const foreign = Object.assign(new Error("x"), { code: "ABORTED", [Symbol.for("stowage.error")]: true });
    expect(isStowageError(foreign, "ABORTED")).toBe(true);
    expect(isStowageError(new Error("x"))).toBe(false);
    expect(isStowageError(new StowageError("NOT_FOUND", "x"), "ABORTED")).toBe(false);
  });
});

/**
 * A memory sink whose write passes on a body that fails past `limit` bytes, as a disk that fills
 * up does: the inner write reads a stream that reads the body with `for await` and throws.
 */
function failsWritingAfter(limit: number): {
  sink: Sink;
  inner: ReturnType<typeof memorySink>;
  error: Error;
} {
  const inner = memorySink();
  const error = Object.assign(new Error("no space left"), { code: "ENOSPC" });
  const sink: Sink = {
    ...inner,
    async write(k, body, options) {
      let seen = 0;
      async function* capped() {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          seen += chunk.length;
          if (seen > limit) throw error;
          yield chunk;
        }
      }
      return inner.write(k, Readable.from(capped()), options);
    },
  };
  return { sink, inner, error };
}

describe("a sink that fails mid-write", () => {
  const data = randomBytes(3 << 20);

  for (const [label, transforms] of [
    ["no transforms", () => []],
    ["gzip + aes-256-gcm", () => [gzip(), aes256gcm({ key })]],
  ] as const) {
    for (const limit of [0, 1 << 20]) {
      it(`is blamed, not reported as ABORTED (${label}, after ${limit} bytes)`, async () => {
        const { sink, inner, error } = failsWritingAfter(limit);
        const failure = await rejection(
          backup({ job: "f", source: bytesSource({ data }), transforms: transforms(), sink }),
        );
        expect(failure.code).toBe("SINK_WRITE_FAILED");
        expect(failure.cause).toBe(error);
        expect(await keysOf(inner)).toEqual([]);
      });
    }
  }

  it("copyBackup blames the destination that stopped reading", async () => {
    const from = memorySink();
    const manifest = await backup({ job: "c", source: bytesSource({ data }), sink: from });
    const { sink: to, inner, error } = failsWritingAfter(1 << 20);
    const failure = await rejection(copyBackup({ manifest, from, to }));
    expect(failure.code).toBe("SINK_WRITE_FAILED");
    expect(failure.cause).toBe(error);
    expect(await keysOf(inner)).toEqual([]);
  });

  it("is still ABORTED when the caller's signal fired", async () => {
    const controller = new AbortController();
    const inner = memorySink();
    const sink: Sink = {
      ...inner,
      async write(k, body, options) {
        for await (const _ of body as AsyncIterable<Buffer>) {
          controller.abort();
          throw new Error("stopped because the caller aborted");
        }
        return inner.write(k, Readable.from([]), options);
      },
    };
    const code = await codeOf(
      backup({ job: "a", source: bytesSource({ data }), sink, signal: controller.signal }),
    );
    expect(code).toBe("ABORTED");
    expect(await keysOf(inner)).toEqual([]);
  });

  it("a sink that stops reading without an error of its own is SINK_WRITE_FAILED, not ABORTED", async () => {
    const inner = memorySink();
    const sink: Sink = {
      ...inner,
      async write(k, body) {
        (body as Readable).destroy();
        return { key: k, location: `memory://${k}` } as Awaited<ReturnType<Sink["write"]>>;
      },
    };
    const code = await codeOf(backup({ job: "s", source: bytesSource({ data }), sink }));
    expect(code).toBe("SINK_WRITE_FAILED");
    expect(await keysOf(inner)).toEqual([]);
  });
});
