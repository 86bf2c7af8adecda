import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  gzip,
  isStowageError,
  memorySink,
  readAll,
  restore,
  type Transform,
} from "../../src/index.js";
import { ZstdFrameSplitter, zstd, zstdAvailable, zstdDecoder } from "../../src/transforms/zstd.js";
import { sha } from "../support/expect-helpers.js";
import { randomPieces } from "../support/pieces.js";

const available = zstdAvailable();

function textData(size: number, seed = 1): Buffer<ArrayBuffer> {
  const words = ["order", "paid", "shipped", "customer", "the", "of", "invoice", "refund", "note", "zone"];
  const out = Buffer.alloc(size);
  let x = seed;
  let at = 0;
  while (at < size) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    at += out.write(`${words[x % words.length]} ${(x >>> 8) % 100000}\t`, at, "latin1");
  }
  return out;
}

/** A zstd block header: last flag, type (0 raw, 1 RLE), size. */
function blockHeader(last: boolean, type: number, size: number): Buffer {
  const v = (size << 3) | (type << 1) | (last ? 1 : 0);
  return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]);
}
const rawBlock = (data: Buffer, last: boolean) => Buffer.concat([blockHeader(last, 0, data.length), data]);
const rleBlock = (byte: number, count: number, last: boolean) =>
  Buffer.concat([blockHeader(last, 1, count), Buffer.from([byte])]);
const MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/**
 * Hand-made frames (raw and RLE blocks, so no compressor is needed) covering the header variants
 * the splitter must walk, with their plain content. With `checksum`, a frame carries 4 checksum
 * bytes that are not a real XXH64 (the splitter does not check them; a decoder would).
 */
function handMadeFrames(checksum: boolean): { frames: Buffer[]; plain: Buffer } {
  const a = Buffer.from("first frame, two raw blocks; ");
  const b = Buffer.from("and a second raw block\n");
  const c = Buffer.from("single segment with a one-byte content size");
  const frames = [
    // window descriptor 0x50 (1 MiB window), no content size, two raw blocks
    Buffer.concat([
      MAGIC,
      Buffer.from([checksum ? 0x04 : 0x00, 0x50]),
      rawBlock(a, false),
      rawBlock(b, true),
    ]),
    // single segment, 1-byte content size
    Buffer.concat([MAGIC, Buffer.from([0x20 | (checksum ? 0x04 : 0), c.length]), rawBlock(c, true)]),
    // 2-byte content size (flag 1: size - 256), 1-byte dictionary id 0, window descriptor, RLE + empty raw
    Buffer.concat([
      MAGIC,
      Buffer.from([0x40 | 0x01 | (checksum ? 0x04 : 0), 0x50, 0x00, (1000 - 256) & 0xff, (1000 - 256) >> 8]),
      rleBlock(0x41, 1000, false),
      rawBlock(Buffer.alloc(0), true),
    ]),
  ].map((f) => (checksum ? Buffer.concat([f, Buffer.from([1, 2, 3, 4])]) : f));
  const plain = Buffer.concat([a, b, c, Buffer.alloc(1000, 0x41)]);
  return { frames, plain };
}

/**
 * Walks zstd frames (RFC 8878, 3.1.1) and returns each frame's Frame_Content_Size, or -1 for a
 * frame whose header does not record one.
 */
function frameContentSizes(stream: Buffer): number[] {
  const sizes: number[] = [];
  let at = 0;
  while (at < stream.length) {
    expect(stream.subarray(at, at + 4).equals(MAGIC)).toBe(true);
    const descriptor = stream[at + 4]!;
    const fcsFlag = descriptor >> 6;
    const singleSegment = (descriptor >> 5) & 1;
    const dictionaryBytes = [0, 1, 2, 4][descriptor & 3]!;
    const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
    let p = at + 5 + (singleSegment ? 0 : 1) + dictionaryBytes;
    let size = -1;
    if (fcsBytes === 1) size = stream[p]!;
    if (fcsBytes === 2) size = stream.readUInt16LE(p) + 256;
    if (fcsBytes === 4) size = stream.readUInt32LE(p);
    if (fcsBytes === 8) size = Number(stream.readBigUInt64LE(p));
    p += fcsBytes;
    for (let last = false; !last; ) {
      const header = stream.readUIntLE(p, 3);
      last = (header & 1) === 1;
      const type = (header >> 1) & 3;
      p += 3 + (type === 1 ? 1 : header >> 3);
    }
    at = p + ((descriptor >> 2) & 1 ? 4 : 0);
    sizes.push(size);
  }
  return sizes;
}

/**
 * Pipes `source` through `stage` into a Writable, keeping the writes as they come (as piping into
 * the decompressor does; an async iterator would merge buffered chunks).
 */
async function collect(source: Readable, stage: import("node:stream").Duplex): Promise<Buffer[]> {
  const out: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out.push(chunk);
      callback();
    },
  });
  await pipeline(source, stage, sink);
  return out;
}

async function codeOf(run: () => unknown): Promise<string> {
  try {
    await run();
  } catch (error) {
    if (isStowageError(error)) return error.code;
    throw error;
  }
  throw new Error("expected a failure");
}

describe(`zstd on Node ${process.version} (zstd in node:zlib: ${available})`, () => {
  it("agrees with node:zlib about whether zstd exists", async () => {
    const zlib = await import("node:zlib");
    expect(available).toBe(
      typeof (zlib as { createZstdCompress?: unknown }).createZstdCompress === "function",
    );
  });

  it("is there on every Node that ships it (22.15+, 23.8+), so those runs never skip the zstd tests", () => {
    const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
    const ships = major >= 24 || (major === 23 && minor >= 8) || (major === 22 && minor >= 15);
    expect(available).toBe(ships);
  });

  it("the frame splitter never lets one write span two frames, and passes every byte", async () => {
    const { frames } = handMadeFrames(true);
    const skippable = Buffer.concat([
      Buffer.from([0x53, 0x2a, 0x4d, 0x18]),
      Buffer.from([5, 0, 0, 0]),
      Buffer.from("skip!"),
    ]);
    const all = [frames[0]!, skippable, frames[1]!, frames[2]!, frames[0]!];
    const stream = Buffer.concat(all);
    const ends: number[] = [];
    let end = 0;
    for (const frame of all) {
      end += frame.length;
      ends.push(end);
    }
    for (const [seed, max] of [
      [1, 1],
      [2, 3],
      [3, 17],
      [4, 64],
      [5, stream.length],
    ] as const) {
      const splitter = new ZstdFrameSplitter();
      const out = await collect(Readable.from(randomPieces(stream, seed, max)), splitter);
      expect(Buffer.concat(out).equals(stream)).toBe(true);
      expect(splitter.frames).toBe(all.length);
      let at = 0;
      for (const piece of out) {
        const frameEnd = ends.find((end) => end > at)!;
        expect(at + piece.length).toBeLessThanOrEqual(frameEnd); // stays inside one frame
        at += piece.length;
      }
    }
  });

  it("the frame splitter rejects a truncated stream, a bad magic number and empty input", async () => {
    const { frames } = handMadeFrames(false);
    const whole = Buffer.concat(frames);
    for (const bad of [
      whole.subarray(0, whole.length - 1),
      Buffer.from("not zstd at all"),
      Buffer.alloc(0),
    ]) {
      await expect(collect(Readable.from([bad]), new ZstdFrameSplitter())).rejects.toThrow(/zstd/);
    }
  });

  it.skipIf(available)("without zstd, zstd() fails with UNSUPPORTED", async () => {
    expect(await codeOf(() => zstd())).toBe("UNSUPPORTED");
  });

  it.skipIf(available)(
    "without zstd, restoring a manifest that names zstd fails with UNSUPPORTED",
    async () => {
      // An artifact whose manifest says "zstd" (its bytes do not matter: decoding is refused first).
      const named: Transform = {
        ...gzip(),
        name: "zstd",
        describe: () => ({ name: "zstd", role: "compression" }),
      };
      const sink = memorySink();
      const manifest = await backup({
        job: "z",
        source: bytesSource({ data: "x" }),
        transforms: [named],
        sink,
      });
      expect(await codeOf(async () => readAll(await restore({ sink, manifest })))).toBe("UNSUPPORTED");
    },
  );

  it.runIf(available)(
    "writes each block as one frame that records its content size, whole even when it outgrows the output buffer",
    async () => {
      // Random blocks of 512 KiB come out larger than the compressors' 256 KiB output buffer, so
      // each frame arrives in pieces; text blocks compress into one piece.
      const block = 512 * 1024;
      const data = Buffer.concat([randomBytes(2 * block), textData(block + 1000, 9)]);
      const encoder = zstd({ blockSize: block, concurrency: 2 }).encode({ job: "z", id: "1" });
      const stored = Buffer.concat(await collect(Readable.from([data]), await encoder));
      expect(frameContentSizes(stored)).toEqual([block, block, block, 1000]);
      const decoder = await zstdDecoder.decode({ name: "zstd", role: "compression" }, { keys: [] });
      expect(Buffer.concat(await collect(Readable.from([stored]), decoder)).equals(data)).toBe(true);
      const record = { name: "zstd", role: "compression", format: "zstd-frames", blockSize: block } as const;
      const parallel = await zstdDecoder.decode(record, { keys: [] });
      expect(Buffer.concat(await collect(Readable.from([stored]), parallel)).equals(data)).toBe(true);
    },
  );

  it.runIf(available)("round-trips through zstd + AES-256-GCM and records the codec", async () => {
    const key = randomBytes(32);
    for (const size of [0, 1, (1 << 16) - 1, 1 << 16, (1 << 16) + 1, 5 * (1 << 16) + 7]) {
      const data = textData(size, size + 3);
      const sink = memorySink();
      const manifest = await backup({
        job: "z",
        source: bytesSource({ data }),
        transforms: [zstd({ blockSize: 1 << 16, concurrency: 2 }), aes256gcm({ key })],
        sink,
      });
      expect(manifest.transforms[0]).toMatchObject({
        name: "zstd",
        codec: "zstd",
        level: 3,
        concurrency: 2,
        blockSize: 1 << 16,
        runtime: `node ${process.version}`,
      });
      expect(manifest.artifact.key.endsWith(".zst.enc")).toBe(true);
      const back = await readAll(await restore({ sink, manifest, keys: { key } }), 1 << 30);
      expect(sha(back)).toBe(sha(data));
    }
  });

  it.runIf(available)(
    "decodes many frames fed in writes that cross frame boundaries (nodejs/node#64741)",
    async () => {
      const { frames, plain } = handMadeFrames(false);
      const stream = Buffer.concat([...frames, ...frames]);
      for (const max of [1, 7, 100, stream.length]) {
        const decoder = await zstdDecoder.decode({ name: "zstd", role: "compression" }, { keys: [] });
        const out = await collect(Readable.from(randomPieces(stream, max, max)), decoder);
        expect(Buffer.concat(out).equals(Buffer.concat([plain, plain]))).toBe(true);
      }
    },
  );

  it.runIf(available)(
    "decodes recorded blocks frame by frame in parallel, in order, and refuses a frame larger than its record's block",
    async () => {
      const { frames, plain } = handMadeFrames(false);
      const stream = Buffer.concat([...frames, ...frames, ...frames]);
      const record = { name: "zstd", role: "compression", format: "zstd-frames", blockSize: 1024 } as const;
      for (const max of [1, 7, 100, stream.length]) {
        const decoder = await zstdDecoder.decode(record, { keys: [] });
        const out = await collect(Readable.from(randomPieces(stream, max, max)), decoder);
        expect(Buffer.concat(out).equals(Buffer.concat([plain, plain, plain]))).toBe(true);
      }
      // The third frame holds 1000 plain bytes: a record that says 512 is refused there.
      const small = await zstdDecoder.decode({ ...record, blockSize: 512 }, { keys: [] });
      await expect(collect(Readable.from([stream]), small)).rejects.toThrow();

      // Through restore: a manifest whose record understates the block size fails, never bloats.
      const data = textData(3 << 16, 5);
      const sink = memorySink();
      const manifest = await backup({
        job: "zp",
        source: bytesSource({ data }),
        transforms: [zstd({ blockSize: 1 << 16 })],
        sink,
      });
      expect((await readAll(await restore({ sink, manifest }))).equals(data)).toBe(true);
      const lying = { ...manifest, transforms: [{ ...manifest.transforms[0]!, blockSize: 1 << 12 }] };
      const error = await readAll(await restore({ sink, manifest: lying })).catch((e: unknown) => e);
      expect(isStowageError(error) && error.code).toBe("TRANSFORM_FAILED");
    },
  );

  it.runIf(available)("the system zstd -d reads the frames it writes", async () => {
    const data = textData(3 << 20);
    const sink = memorySink();
    const manifest = await backup({ job: "z", source: bytesSource({ data }), transforms: [zstd()], sink });
    const stored = await readAll(await sink.read(manifest.artifact.key), 1 << 30);
    expect(stored.length).toBeLessThan(data.length / 2);
    const child = spawn("zstd", ["-dc"], { stdio: ["pipe", "pipe", "inherit"] });
    const exited = new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("close", resolve);
    });
    const [out] = await Promise.all([
      readAll(child.stdout, 1 << 30),
      pipeline(Readable.from([stored]), child.stdin),
    ]);
    expect(await exited).toBe(0);
    expect(sha(out)).toBe(sha(data));
  });

  it("refuses bad options by name on any Node (options are checked before the runtime)", () => {
    try {
      zstd({ level: 30 });
      expect.unreachable();
    } catch (error) {
      expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
      expect((error as { details: { issues: { path: string }[] } }).details.issues[0]!.path).toBe("level");
    }
  });
});
