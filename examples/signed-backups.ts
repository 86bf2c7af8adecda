/**
 * Signed backups: the backup host signs each manifest with a secret signing key; every restore host
 * checks it with the public verify key, so an artifact or manifest written by anyone else (even a
 * holder of the public encryption recipient) is refused. Run it with `npx tsx
 * examples/signed-backups.ts`; it writes to a temporary folder and removes it.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import {
  aes256gcm,
  backup,
  bytesSource,
  filesystemSink,
  generateKeyPair,
  generateSigningKey,
  listManifests,
  restore,
  validateBackups,
} from "stowage";

const folder = await mkdtemp(join(tmpdir(), "stowage-signed-"));
try {
  const sink = filesystemSink({ root: folder });
  const { identity, recipient } = generateKeyPair();
  const job = "orders";
  const transforms = [aes256gcm({ recipients: [recipient] })];
  const keys = [{ identity }];

  // or: npx stowage keygen --signing --out signing.txt
  const { signingKey, verifyKey } = generateSigningKey(); // "stowage-sign1:…" / "stowage-verify1:…"
  const source = bytesSource({ data: "order 1\norder 2\n", name: "orders" });
  const manifest = await backup({ job, source, sink, transforms, signingKey });
  const plain = await restore({ sink, manifest, keys, verifyKeys: [verifyKey] }); // SIGNATURE_MISSING / SIGNATURE_INVALID
  console.log(await text(plain));

  const { manifests } = await listManifests(sink, { job, verifyKeys: [verifyKey] });
  const now = new Date();
  const report = validateBackups(
    manifests,
    { requireSignature: true, verifyKeys: [verifyKey], chain: true },
    { now },
  );
  console.log(`${report.valid} of ${report.total} backups valid: signed by the verify key, chain intact`);
} finally {
  await rm(folder, { recursive: true, force: true });
}
