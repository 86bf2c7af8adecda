/** `stowage keygen`: a new key pair for write-only backups, or a manifest signing key. Needs no config. */
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { generateSigningKey } from "../core/signing.js";
import { generateKeyPair } from "../transforms/aes-256-gcm.js";
import type { Flags } from "./flags.js";
import { EXIT, type Io, outExists, print } from "./output.js";

/** Writes a secret to a new file (mode 0600), never replacing one. @throws {CONFIG_INVALID} it exists */
async function writeSecret(path: string, text: string): Promise<void> {
  // "wx": never overwrite a key that may be the only key to existing backups.
  await writeFile(path, text, { mode: 0o600, flag: "wx" }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== "EEXIST") throw error;
    throw outExists(path, "exists; a key file is never replaced");
  });
}

/** `keygen --signing`: the signing key is secret (backup host), the verify key public (restore hosts). */
async function signingKeygen(flags: Flags, io: Io): Promise<number> {
  const pair = generateSigningKey();
  if (flags.out) {
    const path = resolve(io.cwd, flags.out);
    await writeSecret(
      path,
      `# stowage signing key ${pair.id}, verify key ${pair.verifyKey}\n${pair.signingKey}\n`,
    );
    if (flags.json)
      print(io, JSON.stringify({ verifyKey: pair.verifyKey, id: pair.id, signingKeyFile: path }, null, 2));
    else print(io, `verify key: ${pair.verifyKey}\nsigning key written to ${path} (mode 0600)`);
    return EXIT.ok;
  }
  if (flags.json) print(io, JSON.stringify(pair, null, 2));
  else {
    print(
      io,
      `# verify key ${pair.id} (public: give it to every host that restores or validates)\n${pair.verifyKey}\n# signing key (secret: only the backup host; it vouches for backups)\n${pair.signingKey}`,
    );
  }
  return EXIT.ok;
}

/** Prints a new key pair, or writes the secret half to a new file. @throws {CONFIG_INVALID} --out exists */
export async function keygenCommand(flags: Flags, io: Io): Promise<number> {
  if (flags.signing) return signingKeygen(flags, io);
  const pair = generateKeyPair();
  if (flags.out) {
    const path = resolve(io.cwd, flags.out);
    await writeSecret(path, `# stowage identity for recipient ${pair.recipient}\n${pair.identity}\n`);
    if (flags.json)
      print(io, JSON.stringify({ recipient: pair.recipient, id: pair.id, identityFile: path }, null, 2));
    else print(io, `recipient: ${pair.recipient}\nidentity written to ${path} (mode 0600)`);
    return EXIT.ok;
  }
  if (flags.json) print(io, JSON.stringify(pair, null, 2));
  else {
    print(
      io,
      `# recipient (public: give it to the backup host)\n${pair.recipient}\n# identity (secret: keep it in your secret store; it restores)\n${pair.identity}`,
    );
  }
  return EXIT.ok;
}
