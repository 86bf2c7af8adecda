/**
 * Signed manifests (docs/FORMAT.md, "Manifest signatures"): Ed25519 over a canonical encoding of
 * the whole manifest but its `signature` field, so a backup host that holds only public encryption
 * keys can still vouch for what it wrote, and any restore host can check it with a public key.
 *
 * The signature covers every field, including optional ones added by later versions: nothing
 * needs listing here when the manifest grows.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";
import { StowageError } from "./errors.js";
import type { Manifest } from "./manifest.js";

const SIGNING_PREFIX = "stowage-sign1:";
const VERIFY_PREFIX = "stowage-verify1:";
/** Bytes signed: this domain string, a zero byte, then the canonical manifest. */
const DOMAIN = "stowage manifest signature v1";
const ED25519_PKCS8 = Buffer.from("302e020100300506032b657004220420", "hex");
const ED25519_SPKI = Buffer.from("302a300506032b6570032100", "hex");

/** What {@link generateSigningKey} returns. */
export interface SigningKeyPair {
  /** Secret: keep it on the backup host only (an environment variable or a secret store). */
  signingKey: string;
  /** Public: give it to every host that restores or validates. */
  verifyKey: string;
  /** The key's id: 16 lowercase hex digits, recorded in each signature. */
  id: string;
}

/** The signature a signed manifest carries. */
export interface ManifestSignature {
  /** The signature algorithm. */
  algorithm: "ed25519";
  /** The fingerprint of the verify key that checks it. */
  keyId: string;
  /** 64 bytes, base64 (standard alphabet, padded). */
  value: string;
}

const checksum = (prefix: string, key: Buffer) =>
  createHash("sha256").update(prefix).update(key).digest().subarray(0, 4);

function encodeKey(prefix: string, key: Buffer): string {
  return prefix + Buffer.concat([key, checksum(prefix, key)]).toString("base64url");
}

function decodeKey(prefix: string, text: unknown, option: string): Buffer {
  const bad = (problem: string) =>
    new StowageError("CONFIG_INVALID", `${option}: ${problem}`, {
      details: { issues: [{ path: option, problem }] },
    });
  if (typeof text !== "string" || !text.startsWith(prefix)) {
    throw bad(`expected a ${prefix}… string`);
  }
  const bytes = Buffer.from(text.slice(prefix.length), "base64url");
  if (bytes.length !== 36 || !checksum(prefix, bytes.subarray(0, 32)).equals(bytes.subarray(32))) {
    throw bad(`not a valid ${prefix}… string (wrong length or checksum)`);
  }
  return bytes.subarray(0, 32);
}

/** The id of a verify key: SHA-256("stowage signing key id v1" ‖ 0x00 ‖ public key)[0..8), hex. */
function keyIdOf(publicKey: Buffer): string {
  return createHash("sha256")
    .update("stowage signing key id v1\0")
    .update(publicKey)
    .digest()
    .subarray(0, 8)
    .toString("hex");
}

/**
 * A new Ed25519 signing key pair as printable strings, each with a checksum so a mangled paste is
 * refused. Sign with `backup({ signingKey })`; check with `verifyKeys: [verifyKey]`. Rotate by
 * signing with a new key and keeping the old verify key in `verifyKeys` while its backups live.
 * @example const { signingKey, verifyKey, id } = generateSigningKey();
 */
export function generateSigningKey(): SigningKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d!, "base64url");
  const pub = Buffer.from(publicKey.export({ format: "jwk" }).x!, "base64url");
  return {
    signingKey: encodeKey(SIGNING_PREFIX, seed),
    verifyKey: encodeKey(VERIFY_PREFIX, pub),
    id: keyIdOf(pub),
  };
}

/** A parsed signing key; the secret stays inside the KeyObject. */
export interface Signer {
  /** The key's id (16 hex digits), recorded in each signature so a reader picks the verify key. */
  id: string;
  /** The matching public key (`stowage-verify1:…`), to give readers as `verifyKeys`. */
  verifyKey: string;
  /** The manifest with its signature over the canonical JSON added (any old one replaced); a copy. */
  sign(manifest: Manifest): Manifest;
}

/**
 * Parses a signing key once, for many manifests.
 * @throws {CONFIG_INVALID} naming `option`, never quoting the value.
 */
export function signerFrom(signingKey: string, option = "signingKey"): Signer {
  const seed = decodeKey(SIGNING_PREFIX, signingKey, option);
  const privateKey = createPrivateKey({
    key: Buffer.concat([ED25519_PKCS8, seed]),
    format: "der",
    type: "pkcs8",
  });
  const pub = Buffer.from(createPublicKey(privateKey).export({ format: "jwk" }).x!, "base64url");
  const id = keyIdOf(pub);
  return {
    id,
    verifyKey: encodeKey(VERIFY_PREFIX, pub),
    sign: (manifest) => signWith(privateKey, id, manifest),
  };
}

function signWith(privateKey: KeyObject, keyId: string, manifest: Manifest): Manifest {
  const { signature: _old, ...unsigned } = manifest as Manifest & { signature?: unknown };
  const value = sign(null, signedBytes(unsigned), privateKey).toString("base64");
  return { ...unsigned, signature: { algorithm: "ed25519", keyId, value } } as Manifest;
}

/** The verify key text and its id, for `keygen` and for error messages. */
export function verifyKeyId(verifyKey: string, option = "verifyKeys"): string {
  return keyIdOf(decodeKey(VERIFY_PREFIX, verifyKey, option));
}

/** A set of verify keys by id, parsed once. */
export type VerifyKeyring = ReadonlyMap<string, KeyObject>;

/**
 * Parses `verifyKeys` (one string or a list). `undefined` or an empty list gives `undefined`:
 * no signature check, the behaviour of stowage without signing.
 * @throws {CONFIG_INVALID} naming `verifyKeys[i]`.
 */
export function verifyKeyring(
  verifyKeys: string | readonly string[] | undefined,
  option = "verifyKeys",
): VerifyKeyring | undefined {
  if (verifyKeys === undefined) return undefined;
  const list = typeof verifyKeys === "string" ? [verifyKeys] : verifyKeys;
  if (!Array.isArray(list)) {
    throw new StowageError("CONFIG_INVALID", `${option}: expected a list of stowage-verify1:… strings`, {
      details: { issues: [{ path: option, problem: "expected a list of strings" }] },
    });
  }
  if (list.length === 0) return undefined;
  const ring = new Map<string, KeyObject>();
  for (const [i, text] of list.entries()) {
    const pub = decodeKey(VERIFY_PREFIX, text, typeof verifyKeys === "string" ? option : `${option}[${i}]`);
    ring.set(
      keyIdOf(pub),
      createPublicKey({ key: Buffer.concat([ED25519_SPKI, pub]), format: "der", type: "spki" }),
    );
  }
  return ring;
}

/**
 * JSON with object keys sorted by UTF-16 code units and no whitespace (RFC 8785, JCS, for the
 * values a manifest holds): the same manifest gives the same bytes whatever order its fields
 * were written in.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") {
    if (typeof value === "number" && !Number.isFinite(value)) throw new TypeError("non-finite number");
    return JSON.stringify(value);
  }
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const entries = Object.keys(value)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(",")}}`;
}

function signedBytes(unsigned: object): Buffer {
  return Buffer.concat([Buffer.from(`${DOMAIN}\0`, "utf8"), Buffer.from(canonicalJson(unsigned), "utf8")]);
}

/**
 * A manifest's digest, as its successor records it in `previous.sha256`: SHA-256 of the canonical
 * encoding of the whole manifest, signature included, lowercase hex.
 */
export function manifestDigest(manifest: Manifest): string {
  return createHash("sha256").update(canonicalJson(manifest), "utf8").digest("hex");
}

export type SignatureProblem = "unsigned" | "unknown-key" | "bad-signature";

/** Why a manifest fails the keyring, or `undefined` when a key in it signed this exact manifest. */
export function signatureProblem(manifest: Manifest, ring: VerifyKeyring): SignatureProblem | undefined {
  const { signature, ...unsigned } = manifest as Manifest & { signature?: ManifestSignature };
  if (!signature) return "unsigned";
  const key = ring.get(signature.keyId);
  if (!key) return "unknown-key";
  const value = Buffer.from(signature.value, "base64");
  if (value.length !== 64) return "bad-signature";
  return verify(null, signedBytes(unsigned), key, value) ? undefined : "bad-signature";
}

/**
 * Checks a manifest's signature against the keyring; does nothing without one.
 * @throws {SIGNATURE_MISSING} the manifest is unsigned. {SIGNATURE_INVALID} it is signed by a key
 *   not in the ring (`details.reason: "unknown-key"`), or any signed field was changed
 *   (`"bad-signature"`).
 */
export function assertSigned(manifest: Manifest, ring: VerifyKeyring | undefined, where: string): void {
  if (!ring) return;
  const problem = signatureProblem(manifest, ring);
  if (!problem) return;
  const details = {
    key: manifest.artifact.key,
    job: manifest.job,
    id: manifest.id,
    reason: problem,
    ...(manifest.signature ? { keyId: manifest.signature.keyId } : {}),
  };
  if (problem === "unsigned") {
    throw new StowageError("SIGNATURE_MISSING", `${where}: ${manifest.artifact.key} is not signed`, {
      details,
    });
  }
  throw new StowageError(
    "SIGNATURE_INVALID",
    problem === "unknown-key"
      ? `${where}: ${manifest.artifact.key} is signed by key ${manifest.signature?.keyId}, which is not among the verify keys`
      : `${where}: ${manifest.artifact.key}: the signature does not match the manifest (a field was changed after signing)`,
    { details },
  );
}
