/**
 * docs/FORMAT.md is exact enough to decrypt from: test/support/independent-decryptor.ts was
 * written from that page alone, with node:crypto, and imports nothing from src/. Here it opens
 * what the library writes — version 2 with each recipient type, version 1, and after a rekey —
 * and refuses what it must refuse.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  generateSigningKey,
  gzip,
  manifestKeyFor,
  memorySink,
} from "../../src/index.js";
import { aes256gcmV1 } from "../../src/transforms/aes-256-gcm/transform.js";
import { generateKeyPair, rekey } from "../../src/transforms/aes-256-gcm.js";
import { encrypt } from "../support/aes-helpers.js";
import {
  independentDecrypt,
  independentManifestDigest,
  independentOpen,
  independentVerifyManifest,
} from "../support/independent-decryptor.js";

const scrypt = { log2N: 10, r: 8, p: 1 };

describe("an independent decryptor written from docs/FORMAT.md", () => {
  it("imports no stowage code", () => {
    const source = readFileSync(new URL("../support/independent-decryptor.ts", import.meta.url), "utf8");
    const imports = [...source.matchAll(/from\s+"([^"]+)"|import\("([^"]+)"\)/g)].map((m) => m[1] ?? m[2]);
    expect(imports.length).toBeGreaterThan(0);
    for (const spec of imports) expect(spec).toMatch(/^node:/);
  });

  it("decrypts a version-2 artifact for each recipient type, across chunk sizes and lengths", async () => {
    const pair = generateKeyPair();
    const key = randomBytes(32);
    const passphrase = "an independent passphrase";
    for (const [chunkSize, size] of [
      [1024, 0],
      [1024, 1],
      [1024, 1024],
      [1024, 5000],
      [65_536, 200_000],
    ] as const) {
      const plain = randomBytes(size);
      const stored = await encrypt(
        aes256gcm({ recipients: [pair.recipient, { key }, { passphrase }], chunkSize, scrypt }),
        plain,
      );
      expect(independentDecrypt(stored, [{ identity: pair.identity }]).equals(plain)).toBe(true);
      expect(independentDecrypt(stored, [{ key }]).equals(plain)).toBe(true);
      expect(independentDecrypt(stored, [{ passphrase }]).equals(plain)).toBe(true);
      expect(() => independentDecrypt(stored, [{ identity: generateKeyPair().identity }])).toThrow();
    }
  });

  it("decrypts version-1 artifacts (raw key and passphrase)", async () => {
    const key = randomBytes(32);
    const plain = randomBytes(3000);
    expect(
      independentDecrypt(await encrypt(aes256gcmV1({ key, chunkSize: 1024 }), plain), [{ key }]).equals(
        plain,
      ),
    ).toBe(true);
    const pass = await encrypt(
      aes256gcmV1({ passphrase: "version one pass", chunkSize: 1024, scrypt }),
      plain,
    );
    expect(independentDecrypt(pass, [{ passphrase: "version one pass" }]).equals(plain)).toBe(true);
  });

  it("refuses a flipped chunk byte, a truncation and a stripped stanza, as the page says it must", async () => {
    const key = randomBytes(32);
    const pair = generateKeyPair();
    const plain = randomBytes(4096);
    const stored = await encrypt(
      aes256gcm({ recipients: [pair.recipient, { key }], chunkSize: 1024 }),
      plain,
    );
    const flipped = Buffer.from(stored);
    flipped[stored.length - 500]! ^= 1;
    expect(() => independentDecrypt(flipped, [{ key }])).toThrow();
    const H = stored.readUInt16BE(10);
    expect(() => independentDecrypt(stored.subarray(0, H + 3 * 1040), [{ key }])).toThrow();
    // Strip the x25519 stanza (3 + 88 bytes) and fix the count and length: the MAC must catch it.
    const stripped = Buffer.concat([stored.subarray(0, 12), stored.subarray(12 + 91)]);
    stripped[9] = 1;
    stripped.writeUInt16BE(H - 91, 10);
    expect(() => independentDecrypt(stripped, [{ key }])).toThrow(/no key opens/);
  });

  it("runs as a script on a pipeline backup after a rekey, key from the environment, then gunzip", async () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const data = Buffer.from("id,name\n1,alice\n2,bob\n".repeat(5000));
    const sink = memorySink();
    const first = await backup({
      job: "ind",
      source: bytesSource({ data }),
      sink,
      transforms: [gzip(), aes256gcm({ recipients: [a.recipient] })],
    });
    const manifest = await rekey({
      sink,
      manifest: first,
      identities: [{ identity: a.identity }],
      recipients: [b.recipient],
    });
    const dir = await mkdtemp(join(tmpdir(), "stowage-independent-"));
    try {
      const input = join(dir, "artifact.enc");
      const output = join(dir, "artifact.gz");
      await writeFile(input, sink.objects.get(manifest.artifact.key)!.data);
      const script = new URL("../support/independent-decryptor.ts", import.meta.url).pathname;
      const tsx = new URL("../../node_modules/.bin/tsx", import.meta.url).pathname;
      await promisify(execFile)(tsx, [script, input, output], {
        env: { ...process.env, STOWAGE_IDENTITY: b.identity },
      });
      expect(gunzipSync(await readFile(output)).equals(data)).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("checks signatures, the chain and the identity binding of what backup writes, from the page alone", async () => {
    const pair = generateKeyPair();
    const signer = generateSigningKey();
    const sink = memorySink();
    const data = Buffer.from("binding\n".repeat(4000));
    const made = [];
    for (const minute of [1, 2]) {
      made.push(
        await backup({
          job: "bound-job",
          source: bytesSource({ data }),
          sink,
          transforms: [gzip(), aes256gcm({ recipients: [pair.recipient] })],
          signingKey: signer.signingKey,
          now: () => new Date(Date.UTC(2026, 10, 22, 3, minute)),
        }),
      );
    }
    const [first, second] = made;
    // The manifest as stored, parsed as plain JSON (no stowage schema).
    const stored = (m: typeof first) =>
      JSON.parse(sink.objects.get(manifestKeyFor(m!.artifact.key))!.data.toString("utf8"));
    const one = stored(first);
    const two = stored(second);
    expect(independentVerifyManifest(one, signer.verifyKey)).toBe(true);
    expect(independentVerifyManifest(two, signer.verifyKey)).toBe(true);
    expect(independentVerifyManifest(two, generateSigningKey().verifyKey)).toBe(false);
    expect(independentVerifyManifest({ ...two, labels: { x: "y" } }, signer.verifyKey)).toBe(false);
    expect(two.previous).toEqual({ id: one.id, sha256: independentManifestDigest(one) });
    // The header binds the manifest's job and id (version 3), under its MAC.
    const artifact = Buffer.from(sink.objects.get(second!.artifact.key)!.data);
    expect(artifact[7]).toBe(3);
    const opened = independentOpen(artifact, [{ identity: pair.identity }]);
    expect(opened.identity).toEqual({ job: two.job, id: two.id });
    expect(gunzipSync(opened.plain).equals(data)).toBe(true);
    // Rewriting the bound id (same length) breaks the header's MAC.
    const moved = Buffer.from(artifact);
    const at = moved.indexOf(Buffer.from(two.id, "utf8"));
    moved.write(one.id, at, "utf8");
    expect(() => independentOpen(moved, [{ identity: pair.identity }])).toThrow(/no key opens/);
  });
});
