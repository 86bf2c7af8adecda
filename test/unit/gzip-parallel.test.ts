import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { type Duplex, Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import * as zlib from "node:zlib";
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
import { aesDecoder } from "../../src/transforms/aes-256-gcm/chunks.js";
import { createParallelGzip, type DeflateBlock } from "../../src/transforms/gzip.js";
import { sha } from "../support/expect-helpers.js";
import { randomPieces } from "../support/pieces.js";

const BLOCK = 64 * 1024; // the smallest block size, so tests cross many block boundaries quickly
/** The transform record the single-member writer (the layout before members) put in manifests. */
const SINGLE_MEMBER_RECORD = {
  name: "gzip",
  role: "compression",
  level: 6,
  format: "gzip-single-member-blocks",
  concurrency: 2,
  blockSize: BLOCK,
} as const;

/** Text that compresses about 4:1, with no period a compressor could lock onto. */
function textData(size: number, seed = 1): Buffer<ArrayBuffer> {
  const words = ["order", "paid", "shipped", "customer", "the", "of", "invoice", "refund", "note", "zone"];
  const out = Buffer.alloc(size);
  let x = seed;
  let at = 0;
  while (at < size) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    const piece = `${words[x % words.length]} ${(x >>> 8) % 100000}\t`;
    at += out.write(piece, at, "latin1");
  }
  return out;
}

/** Feeds `data` in chunks of `chunk` bytes through the encoder and returns what it wrote. */
async function compress(
  data: Buffer,
  options: Parameters<typeof createParallelGzip>[0] = {},
  deflate?: DeflateBlock,
  chunk = 48 * 1024,
): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  return through(Readable.from(pieces), createParallelGzip(options, deflate));
}

/** Pipes `source` through `stage` and collects the output. */
async function through(source: Readable, stage: Duplex): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(source, stage, async (chunks: AsyncIterable<Buffer>) => {
    for await (const chunk of chunks) out.push(chunk);
  });
  return Buffer.concat(out);
}

/** Runs the system `gzip -dc` on `input` (asynchronously) and returns its stdout. */
async function systemGunzip(input: Buffer): Promise<Buffer> {
  const child = spawn("gzip", ["-dc"], { stdio: ["pipe", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  const stderr = readAll(child.stderr);
  const [out] = await Promise.all([
    readAll(child.stdout, 1 << 30),
    pipeline(Readable.from([input]), child.stdin),
  ]);
  const code = await exited;
  expect({ code, stderr: (await stderr).toString() }).toEqual({ code: 0, stderr: "" });
  return out;
}

/** The members of a "gzip-members" stream, cut by the lengths their headers record. */
function splitMembers(gz: Buffer): Buffer[] {
  const members: Buffer[] = [];
  for (let at = 0; at < gz.length; ) {
    const length = gz.readUInt32LE(at + 16);
    members.push(gz.subarray(at, at + length));
    at += length;
  }
  return members;
}

/** zlib's async raw deflate, delayed by `delayMs(blockIndex)`, counting calls. */
function delayedDeflate(delayMs: (index: number) => number): DeflateBlock & { calls: number } {
  const fn = ((block, options, callback) => {
    const index = fn.calls++;
    setTimeout(() => zlib.deflateRaw(block, options, callback), delayMs(index));
  }) as DeflateBlock & { calls: number };
  fn.calls = 0;
  return fn;
}

describe("parallel gzip: format", () => {
  const sizes = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK - 1, 3 * BLOCK, 3 * BLOCK + 17];

  it.each(sizes)("the system gzip -d reads %i bytes back exactly", async (size) => {
    const data = textData(size, size + 1);
    const gz = await compress(data, { blockSize: BLOCK, concurrency: 2 });
    expect((await systemGunzip(gz)).equals(data)).toBe(true);
  });

  it("the system gzip -d reads 5 MiB of random and of text data with the default 1 MiB blocks", async () => {
    for (const data of [randomBytes(5 << 20), textData(5 << 20)]) {
      const gz = await compress(data, {}, undefined, 1 << 20);
      expect(sha(await systemGunzip(gz))).toBe(sha(data));
    }
  });

  it("writes one member per block, each with its whole length in an ST extra subfield and its own CRC-32 and size", async () => {
    const data = textData(5 * BLOCK + 123);
    const gz = await compress(data, { blockSize: BLOCK, concurrency: 3 });
    const members = splitMembers(gz);
    expect(members.length).toBe(6);
    for (const [i, member] of members.entries()) {
      expect([...member.subarray(0, 4)]).toEqual([0x1f, 0x8b, 8, 4]);
      expect(member.toString("latin1", 12, 14)).toBe("ST");
      const block = data.subarray(i * BLOCK, (i + 1) * BLOCK);
      // Each member inflates on its own: no dictionary from the block before.
      expect(zlib.gunzipSync(member).equals(block)).toBe(true);
      expect(member.readUInt32LE(member.length - 8)).toBe(zlib.crc32(block));
      expect(member.readUInt32LE(member.length - 4)).toBe(block.length);
    }
  });

  it("an empty input is one empty member, and an input of whole blocks ends without an empty member", async () => {
    const empty = await compress(Buffer.alloc(0), { blockSize: BLOCK });
    expect(splitMembers(empty).length).toBe(1);
    expect(zlib.gunzipSync(empty).length).toBe(0);
    expect(splitMembers(await compress(textData(2 * BLOCK), { blockSize: BLOCK })).length).toBe(2);
  });

  it("compresses within 1 % of serial gzip with the default 1 MiB blocks (3 % with 64 KiB ones)", async () => {
    const data = textData(8 << 20);
    const serial = zlib.gzipSync(data, { level: 6 });
    const parallel = await compress(data, { level: 6 }, undefined, 1 << 20);
    expect(parallel.length).toBeLessThan(serial.length * 1.01);
    const small = await compress(data.subarray(0, 16 * BLOCK), { blockSize: BLOCK, level: 6 });
    expect(small.length).toBeLessThan(
      zlib.gzipSync(data.subarray(0, 16 * BLOCK), { level: 6 }).length * 1.03,
    );
  });

  it("Node's gunzip (the decoder restore uses) reads it, and level 0 and 9 too", async () => {
    const data = textData(2 * BLOCK + 5);
    for (const level of [0, 1, 9]) {
      const gz = await compress(data, { blockSize: BLOCK, level });
      expect(zlib.gunzipSync(gz).equals(data)).toBe(true);
    }
  });
});

describe("parallel gzip: concurrency, ordering and memory", () => {
  it("writes blocks in input order when later blocks finish first", async () => {
    const data = textData(12 * BLOCK + 999);
    // Block i waits (12 - i) × 4 ms: completions arrive in reverse order within each window.
    const deflate = delayedDeflate((i) => (12 - i) * 4);
    const encoder = createParallelGzip({ blockSize: BLOCK, concurrency: 4 }, deflate);
    const gz = await through(Readable.from([data]), encoder);
    expect(deflate.calls).toBe(13); // 12 full blocks and the partial last one
    expect(encoder.peakRunning).toBe(4);
    expect(zlib.gunzipSync(gz).equals(data)).toBe(true);
    expect((await systemGunzip(gz)).equals(data)).toBe(true);
  });

  it("reuses its block buffers for small input chunks, never one a compression still reads", async () => {
    const data = textData(40 * BLOCK + 123, 4);
    const inUse = new Set<ArrayBufferLike>();
    const seen = new Set<ArrayBufferLike>();
    let shared = 0;
    // Out of order and slow: block i takes (i % 5) × 3 ms, and checks at the end that its bytes
    // are still the ones it was given (a buffer reused too early would have been overwritten).
    const deflate: DeflateBlock = (block, options, callback) => {
      const owner = block.buffer;
      if (inUse.has(owner)) shared++;
      inUse.add(owner);
      seen.add(owner);
      const before = sha(block);
      setTimeout(
        () => {
          inUse.delete(owner);
          if (sha(block) !== before) shared++;
          zlib.deflateRaw(block, options, callback);
        },
        (seen.size % 5) * 3,
      );
    };
    const gz = await compress(data, { blockSize: BLOCK, concurrency: 3 }, deflate, 10_000);
    expect(zlib.gunzipSync(gz).equals(data)).toBe(true);
    expect(shared).toBe(0);
    // 41 blocks copied from 10 kB chunks into at most 2 × concurrency buffers (+1 for the short last).
    expect(seen.size).toBeLessThanOrEqual(7);
  });

  it("holds at most 2 × concurrency blocks and runs at most `concurrency` at once, with a fast source and a slow sink", async () => {
    const concurrency = 2;
    let pulled = 0;
    let maxAhead = 0;
    const deflate = delayedDeflate(() => 3);
    const encoder = createParallelGzip({ blockSize: BLOCK, concurrency }, deflate);
    async function* fastSource() {
      for (let i = 0; i < 64; i++) {
        const chunk = textData(BLOCK / 2, i);
        pulled += chunk.length;
        // Plain bytes read from the source and not yet compressed.
        maxAhead = Math.max(maxAhead, pulled - encoder.blocks * BLOCK);
        yield chunk;
      }
    }
    const slowSink = new Writable({
      highWaterMark: 1024,
      write(_chunk: Buffer, _encoding, callback) {
        setTimeout(callback, 2);
      },
    });
    await pipeline(Readable.from(fastSource()), encoder, slowSink);
    expect(encoder.blocks).toBe(33);
    expect(encoder.peakRunning).toBeLessThanOrEqual(concurrency);
    expect(encoder.peakInFlight).toBeLessThanOrEqual(2 * concurrency);
    expect(encoder.peakInFlight).toBeGreaterThan(1); // it did run blocks side by side
    // The source never got far ahead of the compressors: the blocks in flight, the block being
    // cut and the stream buffers, not the 2 MiB the source would have produced.
    expect(pulled).toBe(64 * (BLOCK / 2));
    expect(maxAhead).toBeLessThanOrEqual(8 * BLOCK);
  });

  it("stops pulling the source while every slot is taken (no compressor finishes)", async () => {
    let pulled = 0;
    async function* endless() {
      for (;;) {
        pulled += BLOCK / 4;
        yield textData(BLOCK / 4, pulled);
      }
    }
    const stuck: Array<() => void> = [];
    const never: DeflateBlock = (_block, _options, callback) => {
      stuck.push(() => callback(null, Buffer.alloc(0)));
    };
    const encoder = createParallelGzip({ blockSize: BLOCK, concurrency: 2 }, never);
    const source = Readable.from(endless());
    const running = pipeline(source, encoder, new Writable({ write: (_c, _e, cb) => cb() }));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(stuck.length).toBe(2); // two compressions started, the next two blocks wait
    expect(encoder.peakInFlight).toBe(4);
    const bounded = pulled;
    expect(bounded).toBeLessThan(12 * BLOCK);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(pulled).toBe(bounded); // nothing more was read while stuck
    source.destroy(new Error("stop"));
    await expect(running).rejects.toThrow("stop");
  });

  it("a failing block fails the stream with its error, and nothing after it is written", async () => {
    const boom = new Error("deflate exploded");
    let calls = 0;
    const failThird: DeflateBlock = (block, options, callback) => {
      const index = calls++;
      if (index === 2) setTimeout(() => callback(boom, Buffer.alloc(0)), 5);
      else zlib.deflateRaw(block, options, callback);
    };
    const encoder = createParallelGzip({ blockSize: BLOCK, concurrency: 2 }, failThird);
    const out: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, cb) {
        out.push(chunk);
        cb();
      },
    });
    await expect(pipeline(Readable.from([textData(8 * BLOCK)]), encoder, sink)).rejects.toBe(boom);
    // Header plus at most the two blocks before the failing one.
    expect(out.length).toBeLessThanOrEqual(3);
  });

  it("a compressor that throws synchronously fails the stream too", async () => {
    const throws: DeflateBlock = () => {
      throw new Error("sync failure");
    };
    await expect(compress(textData(3 * BLOCK), { blockSize: BLOCK }, throws)).rejects.toThrow("sync failure");
  });
});

describe("gzip() in backup and restore", () => {
  const key = randomBytes(32);

  it("round-trips through gzip + AES-256-GCM around the block size, and records concurrency and block size", async () => {
    for (const size of [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 4 * BLOCK + 3]) {
      const sink = memorySink();
      const data = textData(size, 7 + size);
      const manifest = await backup({
        job: "gz",
        source: bytesSource({ data }),
        transforms: [gzip({ blockSize: BLOCK, concurrency: 2 }), aes256gcm({ key })],
        sink,
      });
      expect(manifest.transforms[0]).toMatchObject({
        name: "gzip",
        level: 6,
        concurrency: 2,
        blockSize: BLOCK,
      });
      const back = await readAll(await restore({ sink, manifest, keys: { key } }), 1 << 30);
      expect(back.equals(data)).toBe(true);
    }
  });

  it("restores artifacts written by serial gzip (older manifests name the same transform)", async () => {
    const data = textData(3 * BLOCK);
    const serial: Transform = {
      ...gzip(),
      encode: () => zlib.createGzip({ level: 6 }),
      describe: () => ({ name: "gzip", role: "compression", level: 6 }),
    };
    const sink = memorySink();
    const manifest = await backup({ job: "old", source: bytesSource({ data }), transforms: [serial], sink });
    const back = await readAll(await restore({ sink, manifest }), 1 << 30);
    expect(sha(back)).toBe(sha(data));
  });

  it("a compressor failure fails the backup as TRANSFORM_FAILED and leaves nothing in the sink", async () => {
    let calls = 0;
    const failing: DeflateBlock = (block, options, callback) => {
      if (calls++ === 3) callback(new Error("no memory"), Buffer.alloc(0));
      else zlib.deflateRaw(block, options, callback);
    };
    const broken: Transform = { ...gzip(), encode: () => createParallelGzip({ blockSize: BLOCK }, failing) };
    const sink = memorySink();
    const error = await backup({
      job: "broken",
      source: bytesSource({ data: textData(10 * BLOCK) }),
      transforms: [broken],
      sink,
    }).catch((e: unknown) => e);
    expect(isStowageError(error, "TRANSFORM_FAILED")).toBe(true);
    const left: string[] = [];
    for await (const info of sink.list("")) left.push(info.key);
    expect(left).toEqual([]);
  });

  it("refuses bad options by name", () => {
    for (const [options, option] of [
      [{ level: 10 }, "level"],
      [{ concurrency: 0 }, "concurrency"],
      [{ blockSize: 1000 }, "blockSize"],
    ] as const) {
      try {
        gzip(options);
        expect.unreachable();
      } catch (error) {
        expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
        expect((error as { details: { issues: { path: string }[] } }).details.issues[0]!.path).toBe(option);
      }
    }
  });
});

describe("gzip restore: members inflated in parallel", () => {
  const key = randomBytes(32);
  const record = { name: "gzip", role: "compression", format: "gzip-members", blockSize: BLOCK } as const;

  async function decode(input: Buffer[], rec: typeof record | Record<string, unknown> = record) {
    const decoder = await gzip().decode(rec as never, { keys: [] });
    return through(Readable.from(input), decoder);
  }

  /** The error a failing decode rejects with. */
  async function failure(input: Buffer): Promise<Error & { code?: string }> {
    const error = await decode([input]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    return error as Error & { code?: string };
  }

  it("picks the parallel decoder for the members layout and the serial one for older records", async () => {
    expect((await gzip().decode(record, { keys: [] })).constructor.name).toBe("ParallelGzipDecoder");
    for (const old of [
      { name: "gzip", role: "compression", format: "gzip-single-member-blocks", blockSize: BLOCK },
      { name: "gzip", role: "compression", level: 6 },
      { ...record, blockSize: 64 << 20 },
    ] as const) {
      expect((await gzip().decode(old, { keys: [] })).constructor.name).toBe("Gunzip");
    }
  });

  it.each([0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK - 1, 3 * BLOCK, 7 * BLOCK + 17])(
    "decodes %i bytes written in pieces that cut members anywhere",
    async (size) => {
      const data = textData(size, size + 3);
      const gz = await compress(data, { blockSize: BLOCK, concurrency: 2 });
      for (const [seed, max] of [
        [1, 7],
        [2, 1000],
        [3, 70_000],
        [4, gz.length + 1],
      ] as const) {
        expect((await decode(randomPieces(gz, seed, max))).equals(data)).toBe(true);
      }
    },
  );

  it("decodes incompressible blocks at every level, level 0's stored blocks included (members near their bound)", async () => {
    const data = randomBytes(3 * BLOCK + 7);
    for (const level of [0, 1, 6, 9]) {
      const gz = await compress(data, { blockSize: BLOCK, level });
      expect((await decode(randomPieces(gz, level + 1, 50_000))).equals(data)).toBe(true);
    }
  });

  it("round-trips gzip + AES-256-GCM through backup and restore, and `gzip -d` reads the decrypted artifact", async () => {
    const sink = memorySink();
    const data = textData(6 * BLOCK + 99, 5);
    const manifest = await backup({
      job: "gzm",
      source: bytesSource({ data }),
      transforms: [gzip({ blockSize: BLOCK }), aes256gcm({ key })],
      sink,
    });
    expect(manifest.transforms[0]).toMatchObject({ format: "gzip-members", blockSize: BLOCK });
    expect((await readAll(await restore({ sink, manifest, keys: { key } }), 1 << 30)).equals(data)).toBe(
      true,
    );
    // Decrypt only, then let the system gzip read the compressed stream.
    const stored = await readAll(await sink.read(manifest.artifact.key), 1 << 30);
    const decrypt = await aesDecoder.decode(manifest.transforms[1]!, {
      keys: [{ key }],
      identity: { job: manifest.job, id: manifest.id },
    });
    const gz = await through(Readable.from([stored]), decrypt);
    expect((await systemGunzip(gz)).equals(data)).toBe(true);
  });

  it("restores an artifact in the older single-member layout serially, as its record says", async () => {
    const data = textData(5 * BLOCK + 1, 9);
    const older: Transform = {
      ...gzip(),
      // What the single-member writer made is one gzip member, which serial gzip also makes.
      encode: () => zlib.createGzip({ level: 6 }),
      describe: () => ({ ...SINGLE_MEMBER_RECORD }),
    };
    const sink = memorySink();
    const manifest = await backup({
      job: "older",
      source: bytesSource({ data }),
      transforms: [older, aes256gcm({ key })],
      sink,
    });
    expect((await readAll(await restore({ sink, manifest, keys: { key } }), 1 << 30)).equals(data)).toBe(
      true,
    );
  });

  it("decodes an artifact the single-member writer made (a fixture of that version's bytes) as its record says", async () => {
    const old = readFileSync(new URL("../fixtures/gzip-single-member-blocks.gz", import.meta.url));
    expect(old.subarray(0, 4).equals(Buffer.from([0x1f, 0x8b, 8, 0]))).toBe(true); // no extra field
    const back = await decode(randomPieces(old, 5, 3000), SINGLE_MEMBER_RECORD);
    expect(back.equals(textData(2 * BLOCK + 100, 21))).toBe(true);
  });

  it("detects a corrupted member: a flipped bit in its body, its CRC-32 or its size", async () => {
    const data = textData(4 * BLOCK, 11);
    const gz = await compress(data, { blockSize: BLOCK });
    const second = splitMembers(gz)[0]!.length; // where the second member starts
    const secondLength = gz.readUInt32LE(second + 16);
    const flipped = (at: number) => {
      const bad = Buffer.from(gz);
      bad[at]! ^= 0x10;
      return failure(bad);
    };
    // Damaged deflate data fails to inflate, or inflates to more than its block.
    expect((await flipped(second + 200)).code).toMatch(/^(Z_DATA_ERROR|ERR_BUFFER_TOO_LARGE)$/);
    expect((await flipped(second + secondLength - 8)).code).toBe("Z_DATA_ERROR"); // CRC-32
    expect((await flipped(second + secondLength - 2)).code).toBe("Z_DATA_ERROR"); // ISIZE
  });

  it("detects truncation inside a member, a lying length field and bytes that are not its layout", async () => {
    const data = textData(3 * BLOCK, 13);
    const gz = await compress(data, { blockSize: BLOCK });
    const first = splitMembers(gz)[0]!.length;
    for (const cut of [1, 15, first - 1, first + 30, gz.length - 1]) {
      expect((await failure(gz.subarray(0, cut))).message).toMatch(/truncated/);
    }
    expect((await failure(Buffer.alloc(0))).message).toMatch(/empty/);
    // Serial gzip has no length field; a length past the block's bound; a length too short.
    expect((await failure(zlib.gzipSync(data))).message).toMatch(/length field/);
    const long = Buffer.from(gz);
    long.writeUInt32LE(4 * BLOCK, 16);
    expect((await failure(long)).message).toMatch(/longer than/);
    const short = Buffer.from(gz);
    short.writeUInt32LE(100, 16);
    expect(await failure(short)).toBeInstanceOf(Error);
  });

  it("refuses a member that inflates to more than the recorded block (a bomb costs one block)", async () => {
    const gz = await compress(Buffer.alloc(4 * BLOCK), { blockSize: 4 * BLOCK });
    const error = await decode([gz], { ...record, blockSize: BLOCK }).catch((e: unknown) => e);
    expect((error as { code?: string }).code).toBe("ERR_BUFFER_TOO_LARGE");
  });

  it("a corrupted member fails a restore that has no other check before it, with TRANSFORM_FAILED", async () => {
    const sink = memorySink();
    const data = textData(4 * BLOCK, 17);
    const made = await backup({
      job: "bad",
      source: bytesSource({ data }),
      transforms: [gzip({ blockSize: BLOCK })],
      sink,
    });
    const stored = Buffer.from(await readAll(await sink.read(made.artifact.key), 1 << 30));
    stored[stored.length - 8]! ^= 1; // the last member's CRC-32
    await sink.write(made.artifact.key, Readable.from([stored]), {});
    // An older manifest without block digests, read without verifying first: the decoder is the check.
    const { blocks: _blocks, ...artifact } = made.artifact;
    const manifest = { ...made, artifact };
    const error = await readAll(await restore({ sink, manifest, verifyFirst: false }), 1 << 30).catch(
      (e: unknown) => e,
    );
    expect(isStowageError(error)).toBe(true);
    expect((error as { code: string }).code).toBe("TRANSFORM_FAILED");
  });
});
