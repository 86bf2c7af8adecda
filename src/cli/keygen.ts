/** `stowage keygen`: a new key pair for write-only backups. Needs no config. */
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import { generateKeyPair } from "../transforms/aes-256-gcm.js";
import type { Flags } from "./flags.js";
import { EXIT, type Io, outExists, print } from "./output.js";

/** Prints a new key pair, or writes the identity to a new file. @throws {CONFIG_INVALID} --out exists */
export async function keygenCommand(flags: Flags, io: Io): Promise<number> {
  const pair = generateKeyPair();
  if (flags.out) {
    const path = resolve(io.cwd, flags.out);
    // "wx": never overwrite an identity that may be the only key to existing backups.
    await writeFile(path, `# stowage identity for recipient ${pair.recipient}\n${pair.identity}\n`, {
      mode: 0o600,
      flag: "wx",
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
      throw outExists(path, "exists; an identity file is never replaced");
    });
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
