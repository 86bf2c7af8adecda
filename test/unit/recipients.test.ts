import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  gzip,
  isStowageError,
  manifestKeyFor,
  memorySink,
  readAll,
  restore,
  type StowageError,
  verify,
} from "../../src/index.js";
import {
  generateKeyPair,
  identityToRecipient,
  keyFingerprint,
  recipientFingerprint,
  recipientIds,
} from "../../src/transforms/aes-256-gcm.js";
import { codeOf, decrypt, encrypt } from "../support/aes-helpers.js";

const C = 1024;
const scrypt = { log2N: 10, r: 8, p: 1 }; // cheap for tests; the default is 2^15
const passphrase = "a passphrase for the offsite copy";

/** The stanzas of a version-2 header, as raw byte ranges (type ‖ length ‖ body each). */
function splitHeader(stored: Buffer): { fixed: Buffer; stanzas: Buffer[]; mac: Buffer; rest: Buffer } {
  const H = stored.readUInt16BE(10);
  const stanzas: Buffer[] = [];
  let at = 12;
  for (let i = 0; i < stored[9]!; i++) {
    const L = stored.readUInt16BE(at + 1);
    stanzas.push(stored.subarray(at, at + 3 + L));
    at += 3 + L;
  }
  return {
    fixed: stored.subarray(0, 12),
    stanzas,
    mac: stored.subarray(H - 32, H),
    rest: stored.subarray(H),
  };
}

/** Reassembles a header with the given stanzas, fixing the count and length (the MAC is kept). */
function joinHeader(parts: { fixed: Buffer; stanzas: Buffer[]; mac: Buffer; rest: Buffer }): Buffer {
  const fixed = Buffer.from(parts.fixed);
  fixed[9] = parts.stanzas.length;
  fixed.writeUInt16BE(12 + parts.stanzas.reduce((n, s) => n + s.length, 0) + 32, 10);
  return Buffer.concat([fixed, ...parts.stanzas, parts.mac, parts.rest]);
}

describe("generateKeyPair", () => {
  it("returns pasteable bech32 strings and a fingerprint that names the recipient", () => {
    const pair = generateKeyPair();
    expect(pair.recipient).toMatch(/^stowage-pub1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/);
    expect(pair.identity).toMatch(/^STOWAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}$/);
    expect(pair.id).toMatch(/^[0-9a-f]{16}$/);
    expect(recipientFingerprint(pair.recipient)).toBe(pair.id);
    expect(recipientFingerprint(pair.identity)).toBe(pair.id);
    expect(identityToRecipient(pair.identity)).toBe(pair.recipient);
    expect(identityToRecipient(pair.identity.toLowerCase())).toBe(pair.recipient);
    const other = generateKeyPair();
    expect(other.recipient).not.toBe(pair.recipient);
    expect(other.id).not.toBe(pair.id);
  });

  it("refuses mistyped strings (the checksum catches a changed character)", () => {
    const { recipient, identity } = generateKeyPair();
    const last = recipient.at(-1) === "q" ? "p" : "q";
    expect(() => recipientFingerprint(recipient.slice(0, -1) + last)).toThrow();
    expect(() => identityToRecipient(identity.slice(0, -2))).toThrow();
    expect(() =>
      recipientFingerprint(`${recipient.slice(0, 20).toUpperCase()}${recipient.slice(20)}`),
    ).toThrow();
    expect(() => aes256gcm({ recipients: [recipient.slice(0, -1) + last] })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }),
    );
  });

  it("refuses an identity where a recipient belongs, without echoing it", () => {
    const { identity } = generateKeyPair();
    try {
      aes256gcm({ recipients: [identity] });
      expect.unreachable();
    } catch (error) {
      expect(isStowageError(error, "CONFIG_INVALID")).toBe(true);
      expect((error as Error).message).not.toContain(identity);
      expect((error as Error).message.toLowerCase()).not.toContain(identity.toLowerCase().slice(20, 40));
      expect(JSON.stringify((error as StowageError).details)).not.toContain(identity);
    }
  });
});

describe("write-only backups to a public key", () => {
  it("cannot be decrypted with anything the backup host holds; the identity decrypts it", async () => {
    const { recipient, identity, id } = generateKeyPair();
    const data = Buffer.from("secret rows\n".repeat(20_000));
    const sink = memorySink();
    const manifest = await backup({
      job: "wo",
      source: bytesSource({ data }),
      sink,
      transforms: [gzip(), aes256gcm({ recipients: [recipient] })],
    });
    const record = manifest.transforms[1]!;
    expect(record).toMatchObject({ formatVersion: 3, recipients: [{ type: "x25519", id }] });
    expect(record.keyId).toBeUndefined();
    expect(recipientIds(manifest)).toEqual([{ type: "x25519", id }]);

    // What the host has: the public string, the manifest (and the artifact itself).
    const manifestText = sink.objects.get(manifestKeyFor(manifest.artifact.key))!.data.toString("utf8");
    expect(manifestText).not.toContain(recipient);
    expect(manifestText.toLowerCase()).not.toContain(identity.toLowerCase());
    const publicBytes = Buffer.from(recipient); // and any key one might derive from what is public
    const attempts = [
      [],
      [{ passphrase: recipient }],
      [{ passphrase: manifestText }],
      [{ key: publicBytes.subarray(0, 32) }],
      [{ key: Buffer.from(id.repeat(4), "hex") }],
      [{ identity: recipient }],
    ];
    for (const keys of attempts) {
      const stream = await restore({ sink, manifest, keys }).catch((e: unknown) => e);
      const code = isStowageError(stream) ? stream.code : await codeOf(readAll(stream as never));
      expect(["DECRYPT_FAILED", "CONFIG_INVALID"]).toContain(code);
    }
    const report = await verify({ sink, manifest, keys: [{ passphrase: recipient }] });
    expect(report.ok).toBe(false);
    expect(report.problems[0]?.code).toBe("DECRYPT_FAILED");

    const back = await readAll(await restore({ sink, manifest, keys: [{ identity }] }));
    expect(back.equals(data)).toBe(true);
    expect((await verify({ sink, manifest, keys: [{ identity }] })).ok).toBe(true);
  });

  it("with several recipients, each one alone decrypts", async () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const key = randomBytes(32);
    const plain = randomBytes(5 * C + 3);
    const transform = aes256gcm({
      recipients: [a.recipient, b.recipient, { passphrase }, { key }],
      chunkSize: C,
      scrypt,
    });
    expect(transform.describe().recipients).toEqual([
      { type: "x25519", id: a.id },
      { type: "x25519", id: b.id },
      { type: "passphrase" },
      { type: "raw", id: keyFingerprint(key) },
    ]);
    const recorded = JSON.stringify(transform.describe());
    for (const secret of [passphrase, key.toString("hex"), key.toString("base64"), a.identity, b.identity]) {
      expect(recorded).not.toContain(secret);
    }
    const stored = await encrypt(transform, plain);
    for (const keys of [
      [{ identity: a.identity }],
      [{ identity: b.identity }],
      [{ passphrase }],
      [{ key }],
    ]) {
      const result = await decrypt(stored, keys);
      expect(result.code, JSON.stringify(Object.keys(keys[0]!))).toBeUndefined();
      expect(result.out.equals(plain)).toBe(true);
    }
  });

  it("a wrong identity fails with DECRYPT_FAILED naming the recipients the artifact expects", async () => {
    const a = generateKeyPair();
    const key = randomBytes(32);
    const stored = await encrypt(
      aes256gcm({ recipients: [a.recipient, { key }], chunkSize: C }),
      randomBytes(100),
    );
    const stranger = generateKeyPair();
    const result = await decrypt(stored, [{ identity: stranger.identity }]);
    expect(result.code).toBe("DECRYPT_FAILED");
    expect(result.out.length).toBe(0);
    const error = result.error as StowageError;
    expect(error.details.expectedRecipients).toEqual([
      { type: "x25519", id: a.id },
      { type: "raw", id: keyFingerprint(key) },
    ]);
    expect(error.details.givenRecipients).toEqual([{ type: "x25519", id: stranger.id }]);
    expect(error.message).toContain(a.id);
    expect(error.message).toContain(keyFingerprint(key));
    expect(error.message).not.toContain(stranger.identity);
  });
});

describe("tampering with the recipients", () => {
  const a = generateKeyPair();
  const key = randomBytes(32);
  const plain = randomBytes(3 * C + 10);
  const storedP = encrypt(
    aes256gcm({ recipients: [a.recipient, { key }, { passphrase }], chunkSize: C, scrypt }),
    plain,
  );
  const everyone = [[{ identity: a.identity }], [{ key }], [{ passphrase }]];

  it("fails every single-byte flip anywhere in the header, for every recipient", async () => {
    const stored = await storedP;
    const H = stored.readUInt16BE(10);
    for (let at = 0; at < H; at++) {
      const bad = Buffer.from(stored);
      bad[at]! ^= 0x04;
      for (const keys of everyone) {
        const result = await decrypt(bad, keys);
        expect(result.code, `flip at header byte ${at} of ${H}`).toBe("DECRYPT_FAILED");
        expect(result.out.length).toBe(0);
      }
    }
  }, 120_000);

  it("fails a stripped, reordered, added or swapped-in stanza even for a recipient left untouched", async () => {
    const stored = await storedP;
    const parts = splitHeader(stored);
    expect(parts.stanzas.length).toBe(3);
    expect((await decrypt(joinHeader(parts), [{ key }])).out.equals(plain)).toBe(true); // the helper is faithful

    const [x, raw, pass] = parts.stanzas as [Buffer, Buffer, Buffer];
    const other = splitHeader(
      await encrypt(aes256gcm({ recipients: [a.recipient, { key }], chunkSize: C }), randomBytes(10)),
    );
    const variants: Record<string, Buffer[]> = {
      "x25519 stripped": [raw, pass],
      "passphrase stripped": [x, raw],
      reordered: [raw, x, pass],
      "a stanza duplicated": [x, raw, pass, raw],
      "a stanza from another artifact added": [x, raw, pass, other.stanzas[0]!],
      "the x25519 stanza swapped for another artifact's": [other.stanzas[0]!, raw, pass],
    };
    for (const [what, stanzas] of Object.entries(variants)) {
      for (const keys of everyone) {
        const result = await decrypt(joinHeader({ ...parts, stanzas }), keys);
        expect(result.code, what).toBe("DECRYPT_FAILED");
        expect(result.out.length).toBe(0);
      }
    }
    // Another artifact's whole header in front of these chunks: its MAC checks, the chunks do not.
    const grafted = Buffer.concat([joinHeader({ ...other, rest: Buffer.alloc(0) }), parts.rest]);
    const result = await decrypt(grafted, [{ key }]);
    expect(result.code).toBe("DECRYPT_FAILED");
    expect(result.out.length).toBe(0);
  });

  it("bounds what a hostile header can ask for, failing fast without running its scrypt", async () => {
    const stored = await storedP;
    const parts = splitHeader(stored);
    const passStanza = Buffer.from(parts.stanzas[2]!);
    const withParams = (log2N: number, r: number, p: number) => {
      const s = Buffer.from(passStanza);
      s[3 + 16] = log2N;
      s[3 + 17] = r;
      s[3 + 18] = p;
      return joinHeader({ ...parts, stanzas: [s] });
    };
    const hostile: Record<string, Buffer> = {
      "zero stanzas": joinHeader({ ...parts, stanzas: [] }),
      "33 stanzas": joinHeader({ ...parts, stanzas: Array(33).fill(parts.stanzas[1]!) }),
      "5 passphrase stanzas": joinHeader({ ...parts, stanzas: Array(5).fill(passStanza) }),
      "scrypt N = 2^30": withParams(30, 8, 1),
      "scrypt r = 255": withParams(15, 255, 1),
      "scrypt p = 0": withParams(15, 8, 0),
      "scrypt memory 2^20 x 32": withParams(20, 32, 1),
      "scrypt work over the bound": withParams(18, 8, 16),
      "header length 65535": (() => {
        const b = Buffer.from(stored);
        b.writeUInt16BE(65_535, 10);
        return b;
      })(),
      "header length below the minimum": (() => {
        const b = Buffer.from(stored);
        b.writeUInt16BE(20, 10);
        return b;
      })(),
      "a stanza claiming 4000 bytes": (() => {
        const s = Buffer.from(parts.stanzas[1]!);
        s.writeUInt16BE(4000, 1);
        return joinHeader({ ...parts, stanzas: [s] });
      })(),
      "chunk size 2^40": (() => {
        const b = Buffer.from(stored);
        b[8] = 40;
        return b;
      })(),
    };
    for (const [what, bad] of Object.entries(hostile)) {
      const started = Date.now();
      const result = await decrypt(bad, [{ passphrase }, { key }]);
      expect(result.code, what).toBe("DECRYPT_FAILED");
      expect(result.out.length).toBe(0);
      expect(Date.now() - started, what).toBeLessThan(2000);
    }
  });
});
