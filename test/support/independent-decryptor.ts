/**
 * An independent decryptor for stowage artifacts, written only from docs/FORMAT.md with
 * node:crypto. It deliberately imports nothing from src/: if it decrypts what the library
 * writes, the document is exact enough to build a decryptor from.
 *
 * Whole-buffer, not streaming: it exists to check the specification, not to be fast.
 * Run as a script: `tsx test/support/independent-decryptor.ts <artifact> <out>` with one of
 * STOWAGE_KEY (hex/base64), STOWAGE_PASSPHRASE or STOWAGE_IDENTITY in the environment.
 */
import {
  createDecipheriv,
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  hkdfSync,
  scryptSync,
  timingSafeEqual,
  verify,
} from "node:crypto";

export type IndependentKey = { key: Buffer } | { passphrase: string } | { identity: string };

const te = (s: string) => Buffer.from(s, "ascii");
const hkdf = (ikm: Buffer, salt: Buffer, info: string) =>
  Buffer.from(hkdfSync("sha256", ikm, salt, te(info), 32));
const sha256 = (...parts: Buffer[]) => {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
};

function gcmOpen(key: Buffer, nonce: Buffer, sealed: Buffer): Buffer | undefined {
  if (sealed.length < 16) return undefined;
  const d = createDecipheriv("aes-256-gcm", key, nonce);
  d.setAuthTag(sealed.subarray(sealed.length - 16));
  const out = d.update(sealed.subarray(0, sealed.length - 16));
  try {
    d.final();
  } catch {
    return undefined;
  }
  return out;
}

// BIP 173 bech32 decoding.
const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
function polymod(values: number[]): number {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const b = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((b >>> i) & 1) chk ^= gen[i]!;
  }
  return chk >>> 0;
}
export function bech32Decode(text: string): { hrp: string; bytes: Buffer } {
  if (text !== text.toLowerCase() && text !== text.toUpperCase()) throw new Error("mixed case");
  const s = text.toLowerCase();
  const sep = s.lastIndexOf("1");
  const hrp = s.slice(0, sep);
  const data = [...s.slice(sep + 1)].map((c) => {
    const v = CHARSET.indexOf(c);
    if (v < 0) throw new Error("bad character");
    return v;
  });
  const expand = [...hrp]
    .map((c) => c.charCodeAt(0) >> 5)
    .concat(
      [0],
      [...hrp].map((c) => c.charCodeAt(0) & 31),
    );
  if (polymod(expand.concat(data)) !== 1) throw new Error("bad checksum");
  let acc = 0;
  let bits = 0;
  const bytes: number[] = [];
  for (const v of data.slice(0, -6)) {
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((acc >> bits) & 0xff);
    }
  }
  return { hrp, bytes: Buffer.from(bytes) };
}

const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI = Buffer.from("302a300506032b656e032100", "hex");

function x25519(secret: Buffer, publicKey: Buffer): Buffer {
  return diffieHellman({
    privateKey: createPrivateKey({
      key: Buffer.concat([X25519_PKCS8, secret]),
      format: "der",
      type: "pkcs8",
    }),
    publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI, publicKey]), format: "der", type: "spki" }),
  });
}

function x25519Public(secret: Buffer): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8, secret]), format: "der", type: "pkcs8" });
  return Buffer.from(createPublicKey(key).export({ format: "jwk" }).x!, "base64url");
}

function decryptChunks(payloadKey: Buffer, chunkSize: number, body: Buffer): Buffer {
  const sealedSize = chunkSize + 16;
  const out: Buffer[] = [];
  let at = 0;
  let i = 0;
  for (;;) {
    const remaining = body.length - at;
    const last = remaining <= sealedSize;
    if (remaining < 16) throw new Error("truncated: last chunk missing");
    if (last && remaining === 16 && i > 0) throw new Error("empty last chunk after a full one");
    const size = last ? remaining : sealedSize;
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64BE(BigInt(i), 3); // 11-byte big-endian counter: the top 3 bytes stay zero
    nonce[11] = last ? 1 : 0;
    const plain = gcmOpen(payloadKey, nonce, body.subarray(at, at + size));
    if (!plain) throw new Error(`chunk ${i} failed authentication`);
    out.push(plain);
    at += size;
    i++;
    if (last) return Buffer.concat(out);
  }
}

/** Decrypts a whole artifact (version 1, 2 or 3) with one of the keys; throws on any failure. */
export function independentDecrypt(artifact: Buffer, keys: IndependentKey[]): Buffer {
  return independentOpen(artifact, keys).plain;
}

/** Decrypts, and reports the backup identity a version-3 header binds (authenticated by its MAC). */
export function independentOpen(
  artifact: Buffer,
  keys: IndependentKey[],
): { plain: Buffer; identity?: { job: string; id: string } } {
  if (!artifact.subarray(0, 7).equals(te("STOWAGE"))) throw new Error("bad magic");
  const version = artifact[7];
  if (version === 1) return { plain: decryptV1(artifact, keys) };
  if (version === 2 || version === 3) return decryptV2(artifact, keys);
  throw new Error(`unknown version ${version}`);
}

function decryptV1(a: Buffer, keys: IndependentKey[]): Buffer {
  const header = a.subarray(0, 56);
  const kdf = header[8]!;
  const c = header[9]!;
  const salt = header.subarray(16, 32);
  const keyId = header.subarray(32, 40);
  const mac = header.subarray(40, 56);
  const masters: Buffer[] = [];
  for (const k of keys) {
    if (
      kdf === 1 &&
      "key" in k &&
      sha256(te("stowage key id v1"), Buffer.from([0]), k.key)
        .subarray(0, 8)
        .equals(keyId)
    ) {
      masters.push(k.key);
    }
    if (kdf === 2 && "passphrase" in k) {
      const N = 2 ** header[10]!;
      masters.push(
        scryptSync(Buffer.from(k.passphrase, "utf8"), salt, 32, {
          N,
          r: header[11]!,
          p: header[12]!,
          maxmem: 256 * N * header[11]! + (1 << 20),
        }),
      );
    }
  }
  for (const master of masters) {
    const headerKey = hkdf(master, salt, "stowage v1 header");
    const expect = createHmac("sha256", headerKey).update(header.subarray(0, 40)).digest().subarray(0, 16);
    if (timingSafeEqual(expect, mac)) {
      return decryptChunks(hkdf(master, salt, "stowage v1 payload"), 2 ** c, a.subarray(56));
    }
  }
  throw new Error("no key opens this version-1 header");
}

function decryptV2(
  a: Buffer,
  keys: IndependentKey[],
): { plain: Buffer; identity?: { job: string; id: string } } {
  const v3 = a[7] === 3;
  const c = a[8]!;
  const n = a[9]!;
  const H = a.readUInt16BE(10);
  if (c < 10 || c > 24 || n < 1 || n > 32 || H < 47 || H > 8192 || H > a.length)
    throw new Error("bad header");
  const covered = a.subarray(0, H - 32);
  const mac = a.subarray(H - 32, H);
  const candidates: Buffer[] = [];
  let at = 12;
  let identity: { job: string; id: string } | undefined;
  if (v3) {
    // Version 3: job length, job, id length, id, before the stanzas.
    const J = a[at]!;
    const job = a.subarray(at + 1, at + 1 + J).toString("utf8");
    at += 1 + J;
    const I = a[at]!;
    const id = a.subarray(at + 1, at + 1 + I).toString("utf8");
    at += 1 + I;
    if (J < 1 || I < 1 || at > H - 32) throw new Error("bad identity block");
    identity = { job, id };
  }
  for (let s = 0; s < n; s++) {
    const type = a[at]!;
    const L = a.readUInt16BE(at + 1);
    const body = a.subarray(at + 3, at + 3 + L);
    at += 3 + L;
    if (at > H - 32) throw new Error("stanzas overrun the header");
    for (const k of keys) {
      if (type === 1 && L === 72 && "key" in k) {
        if (
          !sha256(te("stowage key id v1"), Buffer.from([0]), k.key)
            .subarray(0, 8)
            .equals(body.subarray(0, 8))
        )
          continue;
        const wrapKey = hkdf(k.key, body.subarray(8, 24), "stowage v2 raw");
        const d = gcmOpen(wrapKey, Buffer.alloc(12), body.subarray(24, 72));
        if (d) candidates.push(d);
      } else if (type === 2 && L === 67 && "passphrase" in k) {
        const N = 2 ** body[16]!;
        const r = body[17]!;
        const wrapKey = scryptSync(Buffer.from(k.passphrase, "utf8"), body.subarray(0, 16), 32, {
          N,
          r,
          p: body[18]!,
          maxmem: 256 * N * r + (1 << 20),
        });
        const d = gcmOpen(wrapKey, Buffer.alloc(12), body.subarray(19, 67));
        if (d) candidates.push(d);
      } else if (type === 3 && L === 88 && "identity" in k) {
        const { hrp, bytes: secret } = bech32Decode(k.identity);
        if (hrp !== "stowage-secret-key-") throw new Error("not an identity");
        const R = x25519Public(secret);
        if (
          !sha256(te("stowage x25519 id v1"), Buffer.from([0]), R)
            .subarray(0, 8)
            .equals(body.subarray(0, 8))
        )
          continue;
        const E = body.subarray(8, 40);
        const S = x25519(secret, E);
        if (S.every((b) => b === 0)) continue;
        const wrapKey = hkdf(S, Buffer.concat([E, R]), "stowage v2 x25519");
        const d = gcmOpen(wrapKey, Buffer.alloc(12), body.subarray(40, 88));
        if (d) candidates.push(d);
      }
    }
  }
  if (at !== H - 32) throw new Error("stanzas do not fill the header");
  for (const D of candidates) {
    const headerKey = hkdf(D, Buffer.alloc(0), v3 ? "stowage v3 header" : "stowage v2 header");
    if (timingSafeEqual(createHmac("sha256", headerKey).update(covered).digest(), mac)) {
      const plain = decryptChunks(hkdf(D, Buffer.alloc(0), "stowage v2 payload"), 2 ** c, a.subarray(H));
      return identity ? { plain, identity } : { plain };
    }
  }
  throw new Error(`no key opens this version-${a[7]} header`);
}

// ---------------------------------------------------------------------------------------------
// Manifest signatures, from docs/FORMAT.md ("Manifest signatures") alone.

/** RFC 8785 canonical JSON for the values a manifest holds: sorted keys, no whitespace. */
export function canonical(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const o = value as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(",")}}`;
}

/** The 32 key bytes of a `stowage-verify1:` string, its checksum checked. */
export function decodeVerifyKey(text: string): Buffer {
  const prefix = "stowage-verify1:";
  if (!text.startsWith(prefix)) throw new Error("not a verify key");
  const raw = Buffer.from(text.slice(prefix.length), "base64url");
  const key = raw.subarray(0, 32);
  if (raw.length !== 36 || !sha256(te(prefix), key).subarray(0, 4).equals(raw.subarray(32))) {
    throw new Error("bad verify key checksum");
  }
  return key;
}

/** True when the manifest (parsed JSON, as stored) is signed by the verify key. */
export function independentVerifyManifest(manifest: Record<string, unknown>, verifyKey: string): boolean {
  const { signature, ...rest } = manifest as {
    signature?: { algorithm: string; keyId: string; value: string };
  };
  if (signature?.algorithm !== "ed25519") return false;
  const pub = decodeVerifyKey(verifyKey);
  const keyId = sha256(te("stowage signing key id v1"), Buffer.from([0]), pub)
    .subarray(0, 8)
    .toString("hex");
  if (keyId !== signature.keyId) return false;
  const message = Buffer.concat([
    te("stowage manifest signature v1"),
    Buffer.from([0]),
    Buffer.from(canonical(rest), "utf8"),
  ]);
  const publicKey = createPublicKey({
    key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), pub]),
    format: "der",
    type: "spki",
  });
  return verify(null, message, publicKey, Buffer.from(signature.value, "base64"));
}

/** `previous.sha256` as a successor records it: SHA-256 of the canonical manifest, signature included. */
export function independentManifestDigest(manifest: Record<string, unknown>): string {
  return createHash("sha256").update(canonical(manifest), "utf8").digest("hex");
}

// As a script: decrypt a file with a key from the environment (never from argv).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const { readFileSync, writeFileSync } = await import("node:fs");
  const [input, output] = process.argv.slice(2);
  const env = process.env;
  const key: IndependentKey = env.STOWAGE_IDENTITY
    ? { identity: env.STOWAGE_IDENTITY }
    : env.STOWAGE_PASSPHRASE
      ? { passphrase: env.STOWAGE_PASSPHRASE }
      : {
          key: Buffer.from(
            env.STOWAGE_KEY ?? "",
            /^[0-9a-f]{64}$/i.test(env.STOWAGE_KEY ?? "") ? "hex" : "base64",
          ),
        };
  writeFileSync(output!, independentDecrypt(readFileSync(input!), [key]));
}
