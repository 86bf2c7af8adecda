/**
 * The quickstart (`npm run demo`): back up a folder with gzip + AES-256-GCM to ./backups, verify
 * it, restore it into a temporary folder, compare every file, and list the backups. No server, no
 * account. Copy this file to start your own job.
 *
 * The key comes from STOWAGE_DEMO_KEY (64 hex digits or base64) or, failing that, from the file
 * .stowage-demo.key, created on the first run with mode 0600. In production, keep the key in your
 * secret store and never beside the backups.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import {
  aes256gcm,
  backup,
  directorySource,
  extractTar,
  filesystemSink,
  generateKey,
  gzip,
  keyFingerprint,
  listManifests,
  restore,
  verify,
} from "stowage";

const here = import.meta.dirname;
const sampleDir = resolve(process.env.STOWAGE_DEMO_SOURCE ?? join(here, "sample"));
const backupsDir = resolve(process.env.STOWAGE_DEMO_BACKUPS ?? "backups");
const keyFile = resolve(".stowage-demo.key");

async function demoKey(): Promise<string> {
  if (process.env.STOWAGE_DEMO_KEY) return process.env.STOWAGE_DEMO_KEY;
  if (existsSync(keyFile)) return (await readFile(keyFile, "utf8")).trim();
  const key = generateKey().toString("base64");
  await writeFile(keyFile, `${key}\n`, { mode: 0o600 });
  console.log(
    `Generated a new key in ${keyFile} (mode 0600). Keep it: without it the backups cannot be read.`,
  );
  return key;
}

async function filesUnder(dir: string): Promise<Map<string, string>> {
  const hashes = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    hashes.set(
      relative(dir, path),
      createHash("sha256")
        .update(await readFile(path))
        .digest("hex"),
    );
  }
  return hashes;
}

const key = await demoKey();
const sink = filesystemSink({ root: backupsDir });

console.log(`Backing up ${sampleDir} to ${backupsDir} (gzip + AES-256-GCM, key ${keyFingerprint(key)})`);
const manifest = await backup({
  job: "quickstart",
  source: directorySource({ path: sampleDir, name: "sample" }),
  transforms: [gzip({ level: 6 }), aes256gcm({ key })],
  sink,
  labels: { env: "demo", constitutional_hash: "cdd01ef066bc6cf2" },
});
console.log("\nManifest:");
console.log(JSON.stringify(manifest, null, 2));

const report = await verify({ sink, manifest, keys: [{ key }] });
console.log(
  `\nVerify: ${report.ok ? "OK" : "FAILED"} — stored ${report.stored.actual?.bytes} B sha256 ${report.stored.ok ? "matches" : "DIFFERS"}, ` +
    `trial restore ${report.plain?.actual?.bytes} B sha256 ${report.plain?.ok ? "matches" : "DIFFERS"}`,
);
if (!report.ok) {
  console.error(report.problems);
  process.exit(1);
}

const scratch = await mkdtemp(join(tmpdir(), "stowage-quickstart-"));
try {
  const target = join(scratch, "restored");
  const extracted = await extractTar(await restore({ sink, manifest, keys: [{ key }] }), target);
  const [before, after] = await Promise.all([filesUnder(sampleDir), filesUnder(target)]);
  const differing = [...before].filter(([path, hash]) => after.get(path) !== hash).map(([path]) => path);
  const extra = [...after.keys()].filter((path) => !before.has(path));
  if (differing.length > 0 || extra.length > 0) {
    console.error(
      `Restore differs: changed or missing ${differing.join(", ")}; unexpected ${extra.join(", ")}`,
    );
    process.exit(1);
  }
  console.log(
    `Restore: ${extracted.files} files restored into ${target}; every file is identical to the original.`,
  );
} finally {
  await rm(scratch, { recursive: true, force: true });
}

const { manifests, invalid } = await listManifests(sink, { job: "quickstart" });
console.log(`\nBackups of job "quickstart" in ${backupsDir}:`);
for (const m of manifests) {
  console.log(`  ${m.startedAt}  ${String(m.artifact.bytes).padStart(9)} B  ${m.artifact.key}`);
}
if (invalid.length > 0)
  console.log(`  (${invalid.length} manifests could not be read: ${invalid.map((i) => i.key).join(", ")})`);
