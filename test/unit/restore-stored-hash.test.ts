import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  gzip,
  isStowageError,
  type Manifest,
  memorySink,
  readAll,
  restore,
  type Sink,
  verify,
} from "../../src/index.js";

const key = randomBytes(32);
const data = randomBytes(300_000);

async function encryptedBackup(sink: Sink, job = "enc", bytes = data): Promise<Manifest> {
  return backup({
    job,
    source: bytesSource({ data: bytes }),
    transforms: [gzip(), aes256gcm({ key })],
    sink,
  });
}

/** Replaces an artifact's bytes in the sink. */
async function rewrite(sink: Sink, manifest: Manifest, change: (stored: Buffer) => Buffer): Promise<void> {
  const stored = Buffer.from(await readAll(await sink.read(manifest.artifact.key), 1 << 30));
  await sink.write(manifest.artifact.key, Readable.from([change(stored)]), {});
}

async function codeOf(run: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await run();
    return undefined;
  } catch (error) {
    return isStowageError(error) ? error.code : "not a StowageError";
  }
}

const restored = (sink: Sink, manifest: Manifest) => async () =>
  readAll(await restore({ sink, manifest, keys: { key } }), 1 << 30);

describe("restore of an encrypted artifact: the decryptor authenticates every stored byte", () => {
  it("does not hash the stored bytes: a manifest with a wrong stored SHA-256 but the right bytes restores, and verify still reports it", async () => {
    const sink = memorySink();
    const made = await encryptedBackup(sink);
    const manifest = { ...made, artifact: { ...made.artifact, sha256: "0".repeat(64) } };
    expect((await restored(sink, manifest)()).equals(data)).toBe(true);
    const report = await verify({ sink, manifest, keys: { key } });
    expect(report.ok).toBe(false);
    expect(report.stored.ok).toBe(false);
    expect(report.plain?.ok).toBe(true);
  });

  it("an unencrypted artifact without block digests still has its stored SHA-256 checked", async () => {
    const sink = memorySink();
    const made = await backup({ job: "plain", source: bytesSource({ data }), transforms: [gzip()], sink });
    const { blocks: _blocks, ...artifact } = made.artifact;
    const manifest = { ...made, artifact: { ...artifact, sha256: "0".repeat(64) } };
    expect(await codeOf(restored(sink, manifest))).toBe("INTEGRITY_MISMATCH");
    expect(
      await codeOf(async () => readAll(await restore({ sink, manifest, verifyFirst: false }), 1 << 30)),
    ).toBe("INTEGRITY_MISMATCH");
  });

  it("a changed, cut or lengthened artifact still fails, before or as its bytes would be released", async () => {
    const sink = memorySink();
    const manifest = await encryptedBackup(sink);
    const original = Buffer.from(await readAll(await sink.read(manifest.artifact.key), 1 << 30));
    const cases: Array<[string, (b: Buffer) => Buffer, string]> = [
      ["a flipped bit in a chunk", (b) => Buffer.from(b).fill(b[5000]! ^ 1, 5000, 5001), "DECRYPT_FAILED"],
      ["a flipped bit in the header", (b) => Buffer.from(b).fill(b[20]! ^ 1, 20, 21), "DECRYPT_FAILED"],
      ["the last bytes cut", (b) => b.subarray(0, b.length - 10), "DECRYPT_FAILED"],
      ["a whole last chunk cut", (b) => b.subarray(0, b.length - 100), "DECRYPT_FAILED"],
      ["bytes appended", (b) => Buffer.concat([b, Buffer.alloc(16)]), "INTEGRITY_MISMATCH"],
    ];
    for (const [what, change, code] of cases) {
      await rewrite(sink, manifest, () => change(original));
      expect({ what, code: await codeOf(restored(sink, manifest)) }).toEqual({ what, code });
    }
  });

  it("another backup's artifact under the same key is refused (its header names another backup)", async () => {
    const sink = memorySink();
    const first = await encryptedBackup(sink, "same");
    // The same bytes, so the same length: only the header's identity tells the two apart (a
    // longer artifact would be refused by the size check first, as INTEGRITY_MISMATCH).
    const second = await encryptedBackup(sink, "same");
    expect(second.artifact.bytes).toBe(first.artifact.bytes);
    const other = Buffer.from(await readAll(await sink.read(second.artifact.key), 1 << 30));
    await rewrite(sink, first, () => other);
    expect(await codeOf(restored(sink, first))).toBe("DECRYPT_FAILED");
  });
});
