import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { ARTIFACT_BLOCK_SIZE, BlockCheck, BlockDigester, blocksMatchSize } from "../../src/core/blocks.js";
import {
  backup,
  bytesSource,
  compression,
  defaultCodec,
  gzip,
  memorySink,
  parseManifest,
  readAll,
  restore,
  zstdAvailable,
} from "../../src/index.js";
import { codeOf, rejection, sha } from "../support/expect-helpers.js";

const digestsOf = (data: Buffer, size: number) =>
  Buffer.concat(
    Array.from({ length: Math.ceil(data.length / size) }, (_, i) =>
      createHash("sha256")
        .update(data.subarray(i * size, (i + 1) * size))
        .digest(),
    ),
  ).toString("base64");

/** `data` cut into pieces of the given sizes, cycling. */
function* pieces(data: Buffer, sizes: number[]) {
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield data.subarray(at, at + n);
    at += n;
  }
}

async function released(data: Buffer, blocks: { size: number; sha256: string }) {
  let bytes = 0;
  const check = new BlockCheck(blocks, "k");
  const error = await rejection(
    (async () => {
      for await (const chunk of Readable.from([data]).pipe(check)) bytes += (chunk as Buffer).length;
    })(),
  ).catch((e: unknown) => e);
  return { bytes, error: error as { code?: string; details?: Record<string, unknown> } };
}

describe("per-block SHA-256 of unencrypted artifacts", () => {
  it("digests blocks whatever the chunking, the same as hashing each block alone", () => {
    const data = randomBytes(5 * 1000 + 17);
    for (const sizes of [[1], [999], [1000], [1001], [7, 3000, 13]]) {
      const d = new BlockDigester(1000);
      for (const p of pieces(data, sizes)) d.update(p);
      expect(d.finish()).toEqual({ size: 1000, sha256: digestsOf(data, 1000) });
    }
    expect(new BlockDigester(1000).finish().sha256).toBe("");
  });

  it("passes intact blocks and refuses a changed, missing or extra one without releasing it", async () => {
    const data = randomBytes(3500);
    const blocks = { size: 1000, sha256: digestsOf(data, 1000) };
    expect((await released(data, blocks)).bytes).toBe(3500);

    const changed = Buffer.from(data);
    changed[2500]! ^= 1;
    const bad = await released(changed, blocks);
    expect(bad.error.code).toBe("INTEGRITY_MISMATCH");
    expect(bad.error.details).toMatchObject({ reason: "block", block: 2, offset: 2000 });
    expect(bad.bytes).toBeLessThanOrEqual(2000);

    const short = await released(data.subarray(0, 3200), blocks);
    expect(short.error.details).toMatchObject({ reason: "block", block: 3 });
    expect(short.bytes).toBeLessThanOrEqual(3000);
    const atBoundary = await released(data.subarray(0, 2000), blocks);
    expect(atBoundary.error.details).toMatchObject({ reason: "missing" });
    const extra = await released(Buffer.concat([data, data.subarray(0, 600)]), blocks);
    expect(extra.error.code).toBe("INTEGRITY_MISMATCH");
    expect(extra.bytes).toBeLessThanOrEqual(3500);
  });

  it("backup() records blocks that restore() checks; the manifest refuses a count that does not fit", async () => {
    const sink = memorySink();
    const data = randomBytes(ARTIFACT_BLOCK_SIZE + 5);
    const manifest = await backup({ job: "b", source: bytesSource({ data }), transforms: [gzip()], sink });
    const stored = sink.objects.get(manifest.artifact.key)!.data;
    expect(manifest.artifact.blocks).toEqual({
      size: ARTIFACT_BLOCK_SIZE,
      sha256: digestsOf(stored, ARTIFACT_BLOCK_SIZE),
    });
    expect(sha(await readAll(await restore({ sink, manifest })))).toBe(sha(data));
    expect(blocksMatchSize(manifest.artifact.blocks!, manifest.artifact.bytes)).toBe(true);
    const wrong = {
      ...manifest,
      artifact: { ...manifest.artifact, bytes: manifest.artifact.bytes + ARTIFACT_BLOCK_SIZE },
    };
    expect(await codeOf((async () => parseManifest(wrong))())).toBe("MANIFEST_INVALID");
    const huge = { ...manifest, artifact: { ...manifest.artifact, blocks: { size: 2 ** 30, sha256: "" } } };
    expect(await codeOf((async () => parseManifest(huge))())).toBe("MANIFEST_INVALID");
  });

  it("restores by block alone with no transforms, yet refuses a flipped byte and a manifest whose plain and stored digests differ", async () => {
    const sink = memorySink();
    const data = randomBytes(2 * ARTIFACT_BLOCK_SIZE + 7);
    const manifest = await backup({ job: "n", source: bytesSource({ data }), sink });
    expect(manifest.content.sha256).toBe(manifest.artifact.sha256);
    expect((await readAll(await restore({ sink, manifest }))).equals(data)).toBe(true);

    // The plain bytes are the stored bytes: a manifest that says otherwise is refused before reading.
    const lying = { ...manifest, content: { ...manifest.content, sha256: sha(Buffer.from("x")) } };
    expect(await codeOf(restore({ sink, manifest: lying }))).toBe("INTEGRITY_MISMATCH");

    // A flipped byte in the last block: the first two blocks come out, nothing of the third.
    const object = sink.objects.get(manifest.artifact.key)!;
    const tampered = Buffer.from(object.data);
    tampered[tampered.length - 1]! ^= 1;
    sink.objects.set(manifest.artifact.key, { ...object, data: tampered });
    let out = 0;
    const error = await rejection(
      (async () => {
        for await (const chunk of await restore({ sink, manifest })) out += (chunk as Buffer).length;
      })(),
    );
    expect(error.code).toBe("INTEGRITY_MISMATCH");
    expect(error.details).toMatchObject({ which: "stored", reason: "block", block: 2 });
    expect(out).toBeLessThanOrEqual(2 * ARTIFACT_BLOCK_SIZE);
  });
});

describe("compression(): the default codec", () => {
  it(`is zstd where the runtime has it, gzip elsewhere (here: ${zstdAvailable() ? "zstd" : "gzip"})`, async () => {
    expect(defaultCodec()).toBe(zstdAvailable() ? "zstd" : "gzip");
    const sink = memorySink();
    const data = Buffer.from("id\tname\n".repeat(20_000));
    const manifest = await backup({
      job: "c",
      source: bytesSource({ data }),
      transforms: [compression()],
      sink,
    });
    expect(manifest.transforms.map((t) => t.name)).toEqual([defaultCodec()]);
    expect(sha(await readAll(await restore({ sink, manifest })))).toBe(sha(data));
    expect(compression({ codec: "gzip" }).name).toBe("gzip");
    expect(await codeOf((async () => compression({ codec: "gzip", level: 12 }))())).toBe("CONFIG_INVALID");
  });
});
