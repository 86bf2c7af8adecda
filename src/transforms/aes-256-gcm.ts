/**
 * Chunked, streaming AES-256-GCM with envelope encryption. The byte layout is specified in
 * docs/FORMAT.md; keep the two in step. Summary:
 *
 * Version 2 (written): a fresh random 32-byte data key per artifact, wrapped once per recipient.
 *
 *   header:  "STOWAGE" | 2 | log2(chunk) | stanza count | header length (u16 BE) |
 *            stanzas (type | length u16 BE | body) | HMAC-SHA256(headerKey, everything before)
 *   stanzas: raw        keyId(8) | salt(16) | wrap    wrapKey = HKDF(key, salt, "stowage v2 raw")
 *            passphrase salt(16) | log2N | r | p | wrap           wrapKey = scrypt(passphrase, salt)
 *            x25519     id(8) | ephemeral(32) | wrap  wrapKey = HKDF(X25519(e, R), E ‖ R, "stowage v2 x25519")
 *            (wrap = AES-256-GCM(wrapKey, zero nonce, dataKey) ‖ tag: 48 bytes)
 *   headerKey / payloadKey = HKDF-SHA256(dataKey, no salt, "stowage v2 header" / "stowage v2 payload")
 *
 * Version 1 (read; written only by {@link aes256gcmV1}): one key per artifact.
 *
 *   header (56 bytes): "STOWAGE" | 1 | kdf | log2(chunk) | scrypt log2N,r,p | 3 zero |
 *                      salt(16) | keyId(8) | HMAC-SHA256(headerKey, bytes 0..39)[0..16]
 *
 * Both: chunks are AES-256-GCM(payloadKey, nonce = counter(11 bytes BE) | last(1)) ‖ tag(16).
 * The last-chunk flag in the nonce makes truncation at a chunk boundary fail; the counter makes
 * reordering fail; each chunk's plaintext is released only after its tag has been checked.
 *
 * In version 2 the chunks depend on the data key alone, not on the header, so `rekey` can write a
 * new header for new recipients in front of the old chunk bytes without re-encrypting them.
 *
 * This file is the transform's entry and exports its public API only; the parts live in
 * ./aes-256-gcm/, one file per section of docs/FORMAT.md.
 */
export { AES_FORMAT_VERSION, AES_LIMITS } from "./aes-256-gcm/format.js";
export {
  generateKey,
  generateKeyPair,
  identityToRecipient,
  type KeyPair,
  keyFingerprint,
  type RecipientRecord,
  type RecipientType,
  recipientFingerprint,
} from "./aes-256-gcm/keys.js";
export { type Aes256GcmOptions, aes256gcmOptionsSchema, type Recipient } from "./aes-256-gcm/options.js";
export { type RekeyOptions, rekey, rekeyOptionsSchema } from "./aes-256-gcm/rekey.js";
export { aes256gcm, recipientIds } from "./aes-256-gcm/transform.js";
