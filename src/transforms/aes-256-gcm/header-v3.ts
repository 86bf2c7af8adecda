/**
 * The version-3 header (docs/FORMAT.md, "Version 3"): version 2's layout with the backup's
 * identity — its job and id — between the fixed fields and the stanzas, under the header's MAC.
 * Only a holder of the data key can write that MAC, so an artifact moved under another backup's
 * manifest (another id, another job) is refused before a byte is decrypted, while `rekey`, which
 * holds the data key, binds the new id. The chunks are version 2's, under the same payload key, so
 * a rekey from version 2 keeps them.
 */
import type { BackupIdentity } from "../../core/types.js";
import { decryptFailed, hkdf } from "./format.js";
import {
  buildHeader,
  type ParsedV2,
  parseV2,
  type ResolvedRecipient,
  unlockV2,
  V2_FIXED_LENGTH,
  V2_MAC_LENGTH,
} from "./header-v2.js";
import type { KeyMaterial } from "./keys.js";

const NO_SALT = Buffer.alloc(0);

/** HKDF(D, "", "stowage v3 header"): its own MAC key, so a version-2 header never passes as 3. */
export const v3HeaderKey = (dataKey: Buffer): Buffer => hkdf(dataKey, NO_SALT, "stowage v3 header");

/** The identity block: job length (1 byte), job (UTF-8), id length (1 byte), id (UTF-8). */
function identityBlock(identity: BackupIdentity): Buffer {
  const job = Buffer.from(identity.job, "utf8");
  const id = Buffer.from(identity.id, "utf8");
  if (job.length < 1 || job.length > 255 || id.length < 1 || id.length > 255) {
    throw decryptFailed("a backup identity must be 1 to 255 bytes of job and of id");
  }
  return Buffer.concat([Buffer.from([job.length]), job, Buffer.from([id.length]), id]);
}

/** A complete version-3 header for `dataKey`, bound to `identity`. */
export function buildV3Header(
  dataKey: Buffer,
  recipients: readonly ResolvedRecipient[],
  log2Chunk: number,
  identity: BackupIdentity,
): Promise<Buffer> {
  return buildHeader(dataKey, recipients, log2Chunk, {
    version: 3,
    headerKey: v3HeaderKey(dataKey),
    before: identityBlock(identity),
  });
}

/** Parses a version-3 header: the identity block, then version 2's stanzas and MAC. */
export function parseV3(header: Buffer): ParsedV2 {
  const end = header.length - V2_MAC_LENGTH;
  let at = V2_FIXED_LENGTH;
  const field = (): string => {
    if (at + 1 > end) throw decryptFailed("header ends inside the backup identity");
    const length = header[at]!;
    if (length < 1 || at + 1 + length > end) throw decryptFailed("backup identity length out of range");
    const text = header.subarray(at + 1, at + 1 + length).toString("utf8");
    at += 1 + length;
    return text;
  };
  const job = field();
  const id = field();
  return { ...parseV2(header, at), version: 3, identity: { job, id } };
}

/** Finds the data key of a version-3 header among the keys given; checks the header's MAC. */
export function unlockV3(header: ParsedV2, material: KeyMaterial): Promise<Buffer> {
  return unlockV2(header, material, v3HeaderKey);
}
