import { hkdfSync, randomBytes } from "node:crypto";
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
  type StowageError,
} from "../../src/index.js";
import { hkdf } from "../../src/transforms/aes-256-gcm/format.js";
import { aes256gcmV1 } from "../../src/transforms/aes-256-gcm/transform.js";
import { keyFingerprint } from "../../src/transforms/aes-256-gcm.js";
import { codeOf, decrypt, encrypt } from "../support/aes-helpers.js";
import { sha } from "../support/expect-helpers.js";

const key = randomBytes(32);
const C = 1024; // small chunks keep the tamper matrix fast
const V2_RAW_HEADER = 12 + 3 + 72 + 32;

/** Asserts a failed decryption released only whole chunks before `chunk`, and nothing else. */
function expectStoppedBefore(result: { out: Buffer; code?: string }, plain: Buffer, chunk: number): void {
  expect(result.code).toBe("DECRYPT_FAILED");
  expect(result.out.length).toBeLessThanOrEqual(chunk * C);
  expect(result.out.length % C).toBe(0);
  expect(result.out.equals(plain.subarray(0, result.out.length))).toBe(true);
}

describe("aes-256-gcm round trips (format version 2)", () => {
  it.each([0, 1, 65_535, 65_536, 65_537, 32 << 20])(
    "backs up and restores %i bytes through gzip + aes-256-gcm, hashes matching independent ones",
    async (size) => {
      const data = randomBytes(size);
      const sink = memorySink();
      const manifest = await backup({
        job: "aes",
        source: bytesSource({ data }),
        sink,
        transforms: [gzip({ level: 1 }), aes256gcm({ key })],
      });
      const stored = sink.objects.get(manifest.artifact.key)!.data;
      expect(stored.subarray(0, 8).toString("latin1")).toBe("STOWAGE\x03"); // bound to its backup (format 3)
      expect(manifest.artifact.sha256).toBe(sha(stored));
      expect(manifest.artifact.bytes).toBe(stored.length);
      expect(manifest.content.sha256).toBe(sha(data));
      const back = await readAll(await restore({ sink, manifest, keys: [{ key }] }), 64 << 20);
      expect(back.length).toBe(size);
      expect(sha(back)).toBe(sha(data));
    },
  );

  it.each([0, 1, C - 1, C, C + 1, 3 * C, 3 * C + 17])(
    "lays out %i bytes as header + chunks of chunkSize + 16, and decrypts from uneven reads",
    async (size) => {
      const data = randomBytes(size);
      const stored = await encrypt(aes256gcm({ key, chunkSize: C }), data);
      const chunks = Math.max(1, Math.ceil(size / C));
      expect(stored.length).toBe(V2_RAW_HEADER + size + 16 * chunks);
      for (const sizes of [[1], [C + 16], [V2_RAW_HEADER, C + 16], [5000, 3]]) {
        const result = await decrypt(stored, [{ key }], sizes);
        expect(result.code).toBeUndefined();
        expect(result.out.equals(data)).toBe(true);
      }
    },
  );

  it("records the format version, chunk size and the key's fingerprint, never the key", () => {
    const record = aes256gcm({ key, chunkSize: C }).describe();
    expect(record).toMatchObject({
      name: "aes-256-gcm",
      role: "encryption",
      formatVersion: 3,
      chunkSize: C,
      keyId: keyFingerprint(key),
      recipients: [{ type: "raw", id: keyFingerprint(key) }],
    });
    const text = JSON.stringify(record);
    expect(text).not.toContain(key.toString("hex"));
    expect(text).not.toContain(key.toString("base64"));
  });
});

describe("aes-256-gcm tampering (format version 2)", () => {
  const plain = randomBytes(10 * C + 500); // 11 chunks, the last one partial
  const storedP = encrypt(aes256gcm({ key, chunkSize: C }), plain);
  const sealed = C + 16;
  const chunkAt = (i: number) => V2_RAW_HEADER + i * sealed;

  it("decrypts untouched", async () => {
    const result = await decrypt(await storedP, [{ key }]);
    expect(result.code).toBeUndefined();
    expect(result.out.equals(plain)).toBe(true);
  });

  it("fails every single-byte flip in the header before releasing a byte", async () => {
    const stored = await storedP;
    for (let at = 0; at < V2_RAW_HEADER; at++) {
      const bad = Buffer.from(stored);
      bad[at]! ^= 0x01;
      const result = await decrypt(bad, [{ key }]);
      expect(result.code, `flip at header byte ${at}`).toBe("DECRYPT_FAILED");
      expect(result.out.length).toBe(0);
    }
  });

  const flips: Array<[string, (s: number) => number, number]> = [
    ["first chunk, first byte", () => chunkAt(0), 0],
    ["first chunk, middle", () => chunkAt(0) + 511, 0],
    ["first chunk's tag", () => chunkAt(0) + C + 3, 0],
    ["middle chunk", () => chunkAt(5) + 100, 5],
    ["middle chunk's tag", () => chunkAt(5) + C + 15, 5],
    ["last chunk, first byte", () => chunkAt(10), 10],
    ["last chunk's tag, last byte", (len) => len - 1, 10],
  ];
  it.each(flips)("fails a flip in the %s without releasing that chunk", async (_what, offset, chunk) => {
    const stored = await storedP;
    const bad = Buffer.from(stored);
    bad[offset(stored.length)]! ^= 0x80;
    expectStoppedBefore(await decrypt(bad, [{ key }]), plain, chunk);
  });

  it.each([
    ["at a chunk boundary after 1 chunk", 1, 0],
    ["at a chunk boundary after 5 chunks", 5, 4],
    ["at the boundary before the last chunk", 10, 9],
  ])("fails truncation %s", async (_what, keep, chunk) => {
    const stored = await storedP;
    expectStoppedBefore(await decrypt(stored.subarray(0, chunkAt(keep)), [{ key }]), plain, chunk);
  });

  it("fails truncation mid-chunk, by one byte, and to the bare header", async () => {
    const stored = await storedP;
    expectStoppedBefore(await decrypt(stored.subarray(0, chunkAt(5) + 100), [{ key }]), plain, 5);
    expectStoppedBefore(await decrypt(stored.subarray(0, stored.length - 1), [{ key }]), plain, 10);
    expectStoppedBefore(await decrypt(stored.subarray(0, V2_RAW_HEADER), [{ key }]), plain, 0);
    expectStoppedBefore(await decrypt(stored.subarray(0, V2_RAW_HEADER - 1), [{ key }]), plain, 0);
  });

  it("fails truncation of a whole last chunk when the plaintext is a multiple of the chunk size", async () => {
    const even = randomBytes(4 * C);
    const stored = await encrypt(aes256gcm({ key, chunkSize: C }), even);
    expect(stored.length).toBe(chunkAt(4));
    expect((await decrypt(stored, [{ key }])).out.equals(even)).toBe(true);
    expectStoppedBefore(await decrypt(stored.subarray(0, chunkAt(3)), [{ key }]), even, 2);
    // An empty last chunk appended after full ones is refused, not read as "the end".
    const withEmpty = Buffer.concat([
      stored.subarray(0, chunkAt(3)),
      stored.subarray(chunkAt(3), chunkAt(3) + 16),
    ]);
    expect((await decrypt(withEmpty, [{ key }])).code).toBe("DECRYPT_FAILED");
  });

  it("fails two chunks swapped, a chunk repeated, and bytes appended", async () => {
    const stored = await storedP;
    const chunk = (i: number) => stored.subarray(chunkAt(i), chunkAt(i + 1));
    const swapped = Buffer.concat([
      stored.subarray(0, chunkAt(2)),
      chunk(3),
      chunk(2),
      stored.subarray(chunkAt(4)),
    ]);
    expect(swapped.length).toBe(stored.length);
    expectStoppedBefore(await decrypt(swapped, [{ key }]), plain, 2);
    const repeated = Buffer.concat([stored.subarray(0, chunkAt(3)), chunk(2), stored.subarray(chunkAt(3))]);
    expectStoppedBefore(await decrypt(repeated, [{ key }]), plain, 3);
    const appended = Buffer.concat([stored, randomBytes(20)]);
    expectStoppedBefore(await decrypt(appended, [{ key }]), plain, 10);
  });

  it("fails a wrong key before releasing a byte, naming the key id it needs", async () => {
    const stored = await storedP;
    const other = randomBytes(32);
    const result = await decrypt(stored, [{ key: other }]);
    expect(result.code).toBe("DECRYPT_FAILED");
    expect(result.out.length).toBe(0);
    const details = (result.error as StowageError).details;
    expect(details.expectedRecipients).toEqual([{ type: "raw", id: keyFingerprint(key) }]);
    expect(details.givenRecipients).toEqual([{ type: "raw", id: keyFingerprint(other) }]);
    expect((result.error as Error).message).toContain(keyFingerprint(key));
    expect((result.error as Error).message).not.toContain(other.toString("hex"));
    expect((await decrypt(stored, [])).code).toBe("DECRYPT_FAILED");
    expect((await decrypt(stored, [{ passphrase: "not the key at all" }])).code).toBe("DECRYPT_FAILED");
  });

  it("a keyring with old and new keys opens artifacts of either", async () => {
    const old = randomBytes(32);
    const a = await encrypt(aes256gcm({ key: old, chunkSize: C }), plain);
    const b = await encrypt(aes256gcm({ key, chunkSize: C }), plain);
    const ring = [{ key }, { key: old }];
    expect((await decrypt(a, ring)).out.equals(plain)).toBe(true);
    expect((await decrypt(b, ring)).out.equals(plain)).toBe(true);
  });

  it("fails a restore of a tampered artifact, handing out only authenticated chunks", async () => {
    const data = randomBytes(300_000);
    const sink = memorySink();
    const manifest = await backup({
      job: "t",
      source: bytesSource({ data }),
      sink,
      transforms: [aes256gcm({ key })],
    });
    const object = sink.objects.get(manifest.artifact.key)!;
    object.data[V2_RAW_HEADER + 2 * (65_536 + 16) + 7]! ^= 0x01; // inside chunk 2
    const stream = await restore({ sink, manifest, keys: [{ key }] });
    const got: Buffer[] = [];
    let code: string | undefined;
    try {
      for await (const c of stream) got.push(c as Buffer);
    } catch (error) {
      code = isStowageError(error) ? error.code : String(error);
    }
    // The core settles the stored SHA-256 only after the decoders have seen every chunk, so the
    // decryptor's finding is the one reported.
    expect(code).toBe("DECRYPT_FAILED");
    const out = Buffer.concat(got);
    expect(out.length).toBeLessThanOrEqual(2 * 65_536);
    expect(out.equals(data.subarray(0, out.length))).toBe(true);
  });
});

describe("aes-256-gcm format version 1 still decrypts", () => {
  const plain = randomBytes(5 * C + 1);
  const V1_HEADER = 56;

  it("reads raw-key and passphrase artifacts written by the version-1 writer", async () => {
    const raw = await encrypt(aes256gcmV1({ key, chunkSize: C }), plain);
    expect(raw[7]).toBe(1);
    expect(raw.length).toBe(V1_HEADER + plain.length + 6 * 16);
    expect((await decrypt(raw, [{ key }])).out.equals(plain)).toBe(true);
    const scrypt = { log2N: 10, r: 8, p: 1 };
    const pass = await encrypt(
      aes256gcmV1({ passphrase: "correct horse battery", chunkSize: C, scrypt }),
      plain,
    );
    expect(
      (
        await decrypt(pass, [{ passphrase: "wrong horse battery" }, { passphrase: "correct horse battery" }])
      ).out.equals(plain),
    ).toBe(true);
    expect((await decrypt(pass, [{ passphrase: "wrong horse battery" }])).code).toBe("DECRYPT_FAILED");
  });

  it("restores a version-1 backup made through the pipeline", async () => {
    const sink = memorySink();
    const manifest = await backup({
      job: "v1",
      source: bytesSource({ data: plain }),
      sink,
      transforms: [gzip(), aes256gcmV1({ key })],
    });
    expect(manifest.transforms[1]).toMatchObject({
      formatVersion: 1,
      kdf: "raw",
      keyId: keyFingerprint(key),
    });
    expect((await readAll(await restore({ sink, manifest, keys: [{ key }] }))).equals(plain)).toBe(true);
  });

  it("fails every header flip, a chunk flip, truncation and a wrong key on version 1", async () => {
    const stored = await encrypt(aes256gcmV1({ key, chunkSize: C }), plain);
    for (let at = 0; at < V1_HEADER; at++) {
      const bad = Buffer.from(stored);
      bad[at]! ^= 0x01;
      const result = await decrypt(bad, [{ key }]);
      expect(result.code, `flip at v1 header byte ${at}`).toBe("DECRYPT_FAILED");
      expect(result.out.length).toBe(0);
    }
    const flipped = Buffer.from(stored);
    flipped[V1_HEADER + 2 * (C + 16) + 9]! ^= 0x01;
    expectStoppedBefore(await decrypt(flipped, [{ key }]), plain, 2);
    expectStoppedBefore(await decrypt(stored.subarray(0, V1_HEADER + 3 * (C + 16)), [{ key }]), plain, 2);
    const wrong = await decrypt(stored, [{ key: randomBytes(32) }]);
    expect(wrong.code).toBe("DECRYPT_FAILED");
    expect((wrong.error as StowageError).details.neededKeyId).toBe(keyFingerprint(key));
  });
});

describe("aes256gcm options", () => {
  it("names the bad option and never echoes a secret", async () => {
    const cases: unknown[] = [
      {},
      { key, passphrase: "long enough passphrase" },
      { key: Buffer.alloc(31) },
      { passphrase: "short" },
      { key, chunkSize: 1000 },
      { passphrase: "long enough passphrase", scrypt: { log2N: 20, r: 32, p: 1 } },
      { recipients: [] },
    ];
    for (const options of cases) {
      const code = await codeOf(Promise.resolve().then(() => aes256gcm(options as never)));
      expect(code).toBe("CONFIG_INVALID");
    }
    try {
      aes256gcm({ passphrase: "short" });
    } catch (error) {
      expect(((error as StowageError).details.issues as Array<{ path: string }>)[0]?.path).toBe("passphrase");
      expect((error as Error).message).not.toContain('short"');
    }
  });
});

describe("the key derivation", () => {
  it("is HKDF-SHA256 exactly as node:crypto computes it, for any salt and info", () => {
    for (const saltLength of [0, 16, 32, 64, 65, 200]) {
      for (const info of ["stowage v3 header", "", "ünïcode ✓"]) {
        const ikm = randomBytes(32);
        const salt = randomBytes(saltLength);
        expect(hkdf(ikm, salt, info).toString("hex")).toBe(
          Buffer.from(hkdfSync("sha256", ikm, salt, info, 32)).toString("hex"),
        );
      }
    }
  });
});

describe("describe()", () => {
  it("hands out a copy: changing one record, recipients included, changes neither the next nor the manifest", async () => {
    const t = aes256gcm({ key });
    const first = t.describe();
    (first.recipients as Array<{ id?: string }>)[0]!.id = "changed";
    first.chunkSize = 1;
    const second = t.describe();
    expect(second).toEqual({
      name: "aes-256-gcm",
      role: "encryption",
      formatVersion: 3,
      chunkSize: 65536,
      recipients: [{ type: "raw", id: keyFingerprint(key) }],
      keyId: keyFingerprint(key),
    });
    expect(Object.keys(second)).toEqual([
      "name",
      "role",
      "formatVersion",
      "chunkSize",
      "recipients",
      "keyId",
    ]);
    const manifest = await backup({
      job: "d",
      source: bytesSource({ data: "x" }),
      sink: memorySink(),
      transforms: [t],
    });
    expect(manifest.transforms[0]).toEqual(second);
  });
});
