/** The options of `aes256gcm` and the recipients it (and `rekey`) accept, checked with zod. */
import type { z } from "zod";
import { bytesSchema, lazySchema, loadZod, parseOptions } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { AES_LIMITS, configInvalid, type ScryptParams, scryptWithinLimits } from "./format.js";
import type { ResolvedRecipient } from "./header-v2.js";
import {
  decodeKeyString,
  decodeRecipient,
  keyIdBytes,
  type RecipientRecord,
  toKeyBytes,
  x25519Id,
} from "./keys.js";

const keyInputSchema = lazySchema((z) =>
  z.union([
    bytesSchema.refine((k) => k.length === 32, "a raw key must be 32 bytes"),
    z
      .string()
      .refine(
        (s) => decodeKeyString(s) !== undefined,
        "a key string must be 64 hex digits or base64 of 32 bytes",
      ),
  ]),
);

const passphraseSchema = lazySchema((z) => z.string().min(8, "a passphrase needs at least 8 characters"));

const recipientSchema = lazySchema((z) =>
  z.union([
    z.string().refine((s) => decodeRecipient(s) !== undefined, {
      message:
        "an x25519 recipient is a stowage-pub1… string (from generateKeyPair().recipient); never pass the secret identity here",
    }),
    z.object({ passphrase: passphraseSchema }).strict(),
    z.object({ key: keyInputSchema }).strict(),
  ]),
);
/** One recipient: an x25519 `stowage-pub1…` string, `{ passphrase }` or `{ key }` (32 bytes). */
export type Recipient =
  | string
  | {
      /** A passphrase of at least 8 characters, stretched with scrypt. */
      passphrase: string;
    }
  | {
      /** A 32-byte key, as bytes, 64 hex digits or base64. */
      key: string | Uint8Array;
    };
type _RecipientAgrees = Assert<Agrees<Recipient, z.input<typeof recipientSchema>>>;

const recipientsSchema = lazySchema((z) =>
  z
    .array(recipientSchema)
    .min(1, "give at least one recipient")
    .max(AES_LIMITS.stanzas, `at most ${AES_LIMITS.stanzas} recipients`)
    .refine(
      (list) =>
        list.filter((r) => typeof r === "object" && "passphrase" in r).length <= AES_LIMITS.passphraseStanzas,
      `at most ${AES_LIMITS.passphraseStanzas} passphrase recipients`,
    ),
);

const scryptSchema = lazySchema((z) =>
  z
    .object({
      log2N: z.number().int().min(AES_LIMITS.log2N[0]).max(AES_LIMITS.log2N[1]),
      r: z.number().int().min(AES_LIMITS.r[0]).max(AES_LIMITS.r[1]),
      p: z.number().int().min(AES_LIMITS.p[0]).max(AES_LIMITS.p[1]),
    })
    .strict()
    .refine(scryptWithinLimits, "scrypt memory (N·r ≤ 2^22) or work (N·r·p ≤ 2^24) too large"),
);

const chunkSizeSchema = lazySchema((z) =>
  z
    .number()
    .int()
    .refine(
      (n) => Number.isInteger(Math.log2(n)) && n >= 1 << 10 && n <= 1 << 24,
      "a power of two, 1 KiB-16 MiB",
    ),
);

/** The zod schema of {@link Aes256GcmOptions}, which parses the options at the boundary. */
export const aes256gcmOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** A 32-byte key, as bytes, 64 hex digits or base64. Give this, `passphrase` or `recipients`. */
      key: keyInputSchema.optional(),
      /** A passphrase, stretched with scrypt and a per-artifact salt. */
      passphrase: passphraseSchema.optional(),
      /**
       * Everyone who may decrypt: x25519 `stowage-pub1…` strings (public keys: the backup host can
       * then write backups it cannot read), `{ passphrase }` and `{ key }`. Each decrypts alone.
       */
      recipients: recipientsSchema.optional(),
      /** Plaintext bytes per authenticated chunk, a power of two from 1 KiB to 16 MiB. @default 65536 */
      chunkSize: chunkSizeSchema.default(1 << 16),
      /** scrypt cost for passphrases. @default { log2N: 15, r: 8, p: 1 } (32 MiB, ~0.1 s) */
      scrypt: scryptSchema.default({ log2N: 15, r: 8, p: 1 }),
    })
    .strict()
    .refine((o) => [o.key, o.passphrase, o.recipients].filter((v) => v !== undefined).length === 1, {
      message: "give exactly one of key, passphrase or recipients",
      path: ["recipients"],
    }),
);
/**
 * What {@link aes256gcm} takes: who may decrypt (a key, a passphrase or recipients), the chunk
 * size, and the scrypt cost for passphrases.
 */
export interface Aes256GcmOptions {
  /** A 32-byte key, as bytes, 64 hex digits or base64. Give this, `passphrase` or `recipients`. */
  key?: string | Uint8Array;
  /** A passphrase, stretched with scrypt and a per-artifact salt. */
  passphrase?: string;
  /**
   * Everyone who may decrypt: x25519 `stowage-pub1…` strings (public keys: the backup host can
   * then write backups it cannot read), `{ passphrase }` and `{ key }`. Each decrypts alone.
   */
  recipients?: Recipient[];
  /** Plaintext bytes per authenticated chunk, a power of two from 1 KiB to 16 MiB. @default 65536 */
  chunkSize?: number;
  /** scrypt cost for passphrases. @default { log2N: 15, r: 8, p: 1 } (32 MiB, ~0.1 s) */
  scrypt?: ScryptParams;
}
type _Aes256GcmOptionsAgrees = Assert<Agrees<Aes256GcmOptions, z.input<typeof aes256gcmOptionsSchema>>>;

export function resolveRecipients(list: readonly Recipient[], params: ScryptParams): ResolvedRecipient[] {
  return list.map((r, i): ResolvedRecipient => {
    if (typeof r === "string") {
      const publicKey = decodeRecipient(r);
      if (!publicKey) throw configInvalid(`recipients.${i}`, "not a stowage-pub1… recipient");
      return { type: "x25519", publicKey, id: x25519Id(publicKey) };
    }
    if ("passphrase" in r) return { type: "passphrase", passphrase: r.passphrase, params };
    const key = toKeyBytes(r.key);
    return { type: "raw", key, id: keyIdBytes(key).toString("hex") };
  });
}

export const recordOf = (r: ResolvedRecipient): RecipientRecord =>
  r.type === "passphrase" ? { type: r.type } : { type: r.type, id: r.id };

/**
 * Parses and checks a recipient list the way `aes256gcm({ recipients })` does; used by `rekey`.
 * @throws {CONFIG_INVALID} naming the bad recipient (never echoing it).
 */
export function parseRecipients(
  recipients: readonly Recipient[],
  scryptParams?: ScryptParams,
): { recipients: ResolvedRecipient[]; records: RecipientRecord[] } {
  const parsed = parseOptions(
    loadZod()
      .object({ recipients: recipientsSchema, scrypt: scryptSchema.default({ log2N: 15, r: 8, p: 1 }) })
      .strict(),
    { recipients, ...(scryptParams ? { scrypt: scryptParams } : {}) },
    "recipients",
  );
  const resolved = resolveRecipients(parsed.recipients, parsed.scrypt);
  return { recipients: resolved, records: resolved.map(recordOf) };
}
