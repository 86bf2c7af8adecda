/**
 * Authenticated backups: signed manifests, artifacts bound to their backup (format 3), and the
 * job's chain. Each attack is carried out on real stored bytes and must be refused with its code,
 * with no byte of the attacker's content released.
 */
import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  copyBackup,
  generateKeyPair,
  generateSigningKey,
  gzip,
  listManifests,
  type Manifest,
  manifestDigest,
  manifestKeyFor,
  memorySink,
  rekey,
  restore,
  serializeManifest,
  validateBackups,
  verify,
} from "../../src/index.js";
import type { MemorySink } from "../../src/sinks/memory.js";
import { codeOf } from "../support/aes-helpers.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const signer = generateSigningKey();
const stranger = generateSigningKey();
const pair = generateKeyPair();
const verifyKeys = [signer.verifyKey];

/** Backups one minute apart, so their ids (and chain order) are fixed. */
async function chainOf(
  sink: MemorySink,
  job: string,
  count: number,
  options: { encrypted?: boolean; signed?: boolean; start?: number } = {},
): Promise<Array<{ manifest: Manifest; data: Buffer }>> {
  const out: Array<{ manifest: Manifest; data: Buffer }> = [];
  for (let i = 0; i < count; i++) {
    const data = randomBytes(50_000 + i);
    const at = new Date(Date.UTC(2026, 10, 22, 3, (options.start ?? 0) + i));
    const manifest = await backup({
      job,
      source: bytesSource({ data }),
      sink,
      transforms:
        options.encrypted === false ? [gzip()] : [gzip(), aes256gcm({ recipients: [pair.recipient] })],
      now: () => at,
      ...(options.signed === false ? {} : { signingKey: signer.signingKey }),
    });
    out.push({ manifest, data });
  }
  return out;
}

const keys = [{ identity: pair.identity }];

/** Restores and collects; returns the code it failed with and what was released before. */
async function attempt(
  sink: MemorySink,
  manifest: Manifest,
  extra: { verifyKeys?: string[] } = {},
): Promise<{ code?: string; out: Buffer; reason?: unknown }> {
  const parts: Buffer[] = [];
  try {
    for await (const chunk of await restore({ sink, manifest, keys, ...extra })) parts.push(chunk as Buffer);
    return { out: Buffer.concat(parts) };
  } catch (error) {
    const e = error as { code?: string; details?: { reason?: unknown } };
    return { code: e.code ?? String(error), out: Buffer.concat(parts), reason: e.details?.reason };
  }
}

/** Writes `manifest` in place of the stored manifest for its artifact. */
function store(sink: MemorySink, manifest: Manifest): void {
  sink.objects.set(manifestKeyFor(manifest.artifact.key), {
    data: serializeManifest(manifest),
    lastModified: new Date(),
  });
}

describe("signing keys", () => {
  it("are printable, checksummed strings with an id, and a bad one is named, never echoed", async () => {
    expect(signer.signingKey).toMatch(/^stowage-sign1:[A-Za-z0-9_-]{48}$/);
    expect(signer.verifyKey).toMatch(/^stowage-verify1:[A-Za-z0-9_-]{48}$/);
    expect(signer.id).toMatch(/^[0-9a-f]{16}$/);
    expect(generateSigningKey().id).not.toBe(signer.id);
    const mangled = `${signer.signingKey.slice(0, -2)}AA`;
    const error = await backup({
      job: "k",
      source: bytesSource({ data: "x" }),
      sink: memorySink(),
      signingKey: mangled,
    }).catch((e: unknown) => e as { code: string; message: string; details: { issues: unknown[] } });
    expect(error).toMatchObject({ code: "CONFIG_INVALID", details: { issues: [{ path: "signingKey" }] } });
    expect((error as { message: string }).message).not.toContain(mangled.slice(14));
  });
});

describe("signed manifests", () => {
  it("sign every field and chain each backup to the job's previous one on the sink", async () => {
    const sink = memorySink();
    const [a, b, c] = await chainOf(sink, "app", 3);
    expect(a!.manifest.signature).toMatchObject({ algorithm: "ed25519", keyId: signer.id });
    expect(a!.manifest.previous).toBeUndefined();
    expect(b!.manifest.previous).toEqual({ id: a!.manifest.id, sha256: manifestDigest(a!.manifest) });
    expect(c!.manifest.previous).toEqual({ id: b!.manifest.id, sha256: manifestDigest(b!.manifest) });
    const back = await attempt(sink, c!.manifest, { verifyKeys });
    expect(back.code).toBeUndefined();
    expect(back.out.equals(c!.data)).toBe(true);
    const report = await verify({ sink, manifest: c!.manifest, keys, verifyKeys });
    expect(report.ok).toBe(true);
    const { manifests, invalid } = await listManifests(sink, { job: "app", verifyKeys });
    expect(invalid).toEqual([]);
    expect(manifests.map((m) => m.id)).toEqual([a, b, c].map((x) => x!.manifest.id));
    expect(
      validateBackups(manifests, { requireSignature: true, verifyKeys, chain: true }, { now: new Date() })
        .valid,
    ).toBe(3);
  });

  it("refuse a forged manifest (hashes rewritten for another artifact) before releasing a byte", async () => {
    const sink = memorySink();
    const [victim] = await chainOf(sink, "app", 1, { encrypted: false });
    // The attacker stores their own content and rewrites the manifest's hashes and sizes to match.
    const evil = Buffer.from("attacker-chosen content\n".repeat(1000));
    const theirs = memorySink();
    const attacker = await backup({
      job: "evil",
      source: bytesSource({ data: evil }),
      sink: theirs,
      transforms: [gzip()],
    });
    const stored = Buffer.from(theirs.objects.get(attacker.artifact.key)!.data);
    sink.objects.set(victim!.manifest.artifact.key, { data: stored, lastModified: new Date() });
    const forged: Manifest = {
      ...victim!.manifest,
      // Every digest the manifest holds is the attacker's (the block digests too, where recorded).
      artifact: { ...victim!.manifest.artifact, ...attacker.artifact, key: victim!.manifest.artifact.key },
      content: { ...victim!.manifest.content, bytes: evil.length, sha256: sha(evil) },
    };
    store(sink, forged);
    // Without verify keys the forgery is indistinguishable (the issue's report); with them it is refused.
    expect((await attempt(sink, forged)).out.equals(evil)).toBe(true);
    const refused = await attempt(sink, forged, { verifyKeys });
    expect(refused).toMatchObject({ code: "SIGNATURE_INVALID", reason: "bad-signature" });
    expect(refused.out.length).toBe(0);
    const report = await verify({ sink, manifest: forged, verifyKeys });
    expect(report.problems.map((p) => p.code)).toEqual(["SIGNATURE_INVALID"]);
    const { invalid } = await listManifests(sink, { verifyKeys });
    expect(invalid.map((i) => i.error.code)).toEqual(["SIGNATURE_INVALID"]);
  });

  it("refuse a manifest whose signature was stripped, or that a stranger's key signed", async () => {
    const sink = memorySink();
    const [one] = await chainOf(sink, "app", 1);
    const { signature: _s, ...stripped } = one!.manifest;
    expect(await attempt(sink, stripped as Manifest, { verifyKeys })).toMatchObject({
      code: "SIGNATURE_MISSING",
      out: Buffer.alloc(0),
    });
    const other = memorySink();
    const [foreign] = await (async () => {
      const data = randomBytes(1000);
      const m = await backup({
        job: "app",
        source: bytesSource({ data }),
        sink: other,
        signingKey: stranger.signingKey,
      });
      return [m];
    })();
    const refused = await attempt(other, foreign!, { verifyKeys });
    expect(refused).toMatchObject({ code: "SIGNATURE_INVALID", reason: "unknown-key", out: Buffer.alloc(0) });
    // Rotation: with both verify keys, both open.
    expect(
      (await attempt(other, foreign!, { verifyKeys: [signer.verifyKey, stranger.verifyKey] })).code,
    ).toBeUndefined();
    const findings = validateBackups(
      [stripped as Manifest, foreign!],
      { requireSignature: true, verifyKeys },
      { now: new Date() },
    );
    expect(findings.valid).toBe(0);
    expect(findings.jobs[0]!.backups.flatMap((b) => b.findings.map((f) => f.rule))).toEqual([
      "signature",
      "signature",
    ]);
    // requireSignature alone (no keys) checks presence.
    const presence = validateBackups(
      [stripped as Manifest, one!.manifest],
      { requireSignature: true },
      { now: new Date() },
    );
    expect(presence.valid).toBe(1);
  });
});

describe("format 3: an artifact is bound to its backup", () => {
  it("refuses an artifact substituted within a job or across jobs, even with the hashes rewritten", async () => {
    const sink = memorySink();
    const [a, b] = await chainOf(sink, "app", 2, { signed: false });
    const [other] = await chainOf(sink, "billing", 1, { signed: false });
    for (const donor of [a!, other!]) {
      const stolen = Buffer.from(sink.objects.get(donor.manifest.artifact.key)!.data);
      expect(stolen[7]).toBe(3);
      const key = b!.manifest.artifact.key;
      const original = sink.objects.get(key)!;
      sink.objects.set(key, { data: stolen, lastModified: new Date() });
      const rewritten: Manifest = {
        ...b!.manifest,
        artifact: { ...b!.manifest.artifact, bytes: stolen.length, sha256: sha(stolen) },
        content: { ...b!.manifest.content, ...donor.manifest.content },
      };
      const refused = await attempt(sink, rewritten);
      expect(refused).toMatchObject({ code: "DECRYPT_FAILED", reason: "identity-mismatch" });
      expect(refused.out.length).toBe(0);
      sink.objects.set(key, original);
    }
    expect((await attempt(sink, b!.manifest)).out.equals(b!.data)).toBe(true);
  });

  it("refuses an older, unbound (version-2) artifact under a version-3 manifest", async () => {
    const sink = memorySink();
    const [a] = await chainOf(sink, "app", 1, { signed: false });
    const aes = aes256gcm({ recipients: [pair.recipient] });
    const { Readable } = await import("node:stream");
    const { pipeline } = await import("node:stream/promises");
    const parts: Buffer[] = [];
    const plain = randomBytes(100);
    await pipeline(Readable.from([plain]), await aes.encode(), async (s: AsyncIterable<Buffer>) => {
      for await (const c of s) parts.push(c);
    });
    const v2 = Buffer.concat(parts);
    expect(v2[7]).toBe(2);
    sink.objects.set(a!.manifest.artifact.key, { data: v2, lastModified: new Date() });
    const rewritten: Manifest = {
      ...a!.manifest,
      transforms: [a!.manifest.transforms[1]!],
      artifact: { ...a!.manifest.artifact, bytes: v2.length, sha256: sha(v2) },
      content: { ...a!.manifest.content, bytes: plain.length, sha256: sha(plain) },
    };
    expect(await attempt(sink, rewritten)).toMatchObject({
      code: "DECRYPT_FAILED",
      reason: "version-mismatch",
    });
  });

  it("rekey re-binds the artifact to its new id, signs it, and the chain still holds", async () => {
    const sink = memorySink();
    const [a, b, c] = await chainOf(sink, "app", 3);
    const next = await rekey({
      sink,
      manifest: b!.manifest,
      identities: keys,
      recipients: [pair.recipient],
      signingKey: signer.signingKey,
    });
    expect(sink.objects.get(next.artifact.key)!.data[7]).toBe(3);
    expect(next.previous).toEqual(b!.manifest.previous);
    const back = await attempt(sink, next, { verifyKeys });
    expect(back.code).toBeUndefined();
    expect(back.out.equals(b!.data)).toBe(true);
    const { manifests } = await listManifests(sink, { job: "app", verifyKeys });
    expect(manifests).toHaveLength(3);
    const report = validateBackups(manifests, { verifyKeys, chain: true }, { now: new Date() });
    expect(report.jobs[0]!.backups).toEqual([]);
    expect(c!.manifest.previous!.id).toBe(b!.manifest.id);
    expect(a).toBeDefined();
  });
});

describe("the job's chain", () => {
  it("reports a backup deleted from the middle as a gap, and not the oldest one pruned", async () => {
    const sink = memorySink();
    const [a, b, c, d] = await chainOf(sink, "app", 4);
    await sink.delete([manifestKeyFor(b!.manifest.artifact.key), b!.manifest.artifact.key]);
    const { manifests } = await listManifests(sink, { job: "app", verifyKeys });
    const report = validateBackups(manifests, { verifyKeys, chain: true }, { now: new Date() });
    const findings = report.jobs[0]!.backups.flatMap((x) =>
      x.findings.map((f) => ({ id: x.id, rule: f.rule })),
    );
    expect(findings).toEqual([{ id: c!.manifest.id, rule: "chain-gap" }]);
    // Once the gap reaches the oldest end (retention pruned up to it), it is no gap.
    await sink.delete([manifestKeyFor(a!.manifest.artifact.key), a!.manifest.artifact.key]);
    const pruned = await listManifests(sink, { job: "app" });
    const after = validateBackups(pruned.manifests, { chain: true }, { now: new Date() });
    expect(after.jobs[0]!.backups).toEqual([]);
    expect(d).toBeDefined();
  });

  it("reports an old backup replayed in place of a newer one, and refuses to restore it", async () => {
    const sink = memorySink();
    const [a, b, c] = await chainOf(sink, "app", 3);
    // The attacker, without the signing key, puts a's genuine signed manifest and artifact where
    // b's were: the listing shows a twice and c's chain link to b no longer matches.
    const replay = { ...a!.manifest };
    const { manifests } = await listManifests(sink, { job: "app" });
    const listed = manifests.map((m) => (m.id === b!.manifest.id ? replay : m));
    const report = validateBackups(listed, { verifyKeys, chain: true }, { now: new Date() });
    const rules = report.jobs[0]!.backups.flatMap((x) => x.findings.map((f) => f.rule));
    expect(rules).toContain("chain-replay");
    expect(rules).toContain("chain-gap");
    // An old artifact presented under the newest manifest: refused by the binding (unsigned
    // rewrite) and by the signature (signed).
    const old = Buffer.from(sink.objects.get(a!.manifest.artifact.key)!.data);
    sink.objects.set(c!.manifest.artifact.key, { data: old, lastModified: new Date() });
    const rewritten: Manifest = {
      ...c!.manifest,
      artifact: { ...c!.manifest.artifact, bytes: old.length, sha256: sha(old) },
      content: { ...c!.manifest.content, ...a!.manifest.content },
    };
    expect(await attempt(sink, rewritten, { verifyKeys })).toMatchObject({ code: "SIGNATURE_INVALID" });
    const { signature: _s, ...unsigned } = rewritten;
    expect(await attempt(sink, unsigned as Manifest)).toMatchObject({
      code: "DECRYPT_FAILED",
      reason: "identity-mismatch",
    });
    // Even the genuine signed manifest, over the swapped artifact: the header names another backup.
    expect(await attempt(sink, c!.manifest, { verifyKeys })).toMatchObject({
      code: "DECRYPT_FAILED",
      reason: "identity-mismatch",
    });
  });

  it("copyBackup signs the copy and chains it on the destination", async () => {
    const from = memorySink();
    const to = memorySink();
    const [a, b] = await chainOf(from, "app", 2);
    const ca = await copyBackup({ manifest: a!.manifest, from, to, signingKey: signer.signingKey });
    const cb = await copyBackup({ manifest: b!.manifest, from, to, signingKey: signer.signingKey });
    expect(ca.previous).toBeUndefined();
    expect(cb.previous).toEqual({ id: ca.id, sha256: manifestDigest(ca) });
    expect((await attempt(to, cb, { verifyKeys })).out.equals(b!.data)).toBe(true);
    // Without a signing key the copy is stored unsigned, not with a signature that cannot hold.
    const bare = await copyBackup({ manifest: b!.manifest, from, to: memorySink() });
    expect(bare.signature).toBeUndefined();
    expect(await codeOf(restore({ sink: to, manifest: bare, keys, verifyKeys }))).toBe("SIGNATURE_MISSING");
  });
});

describe("signing in the write paths", () => {
  it("a fan-out signs each secondary's manifest again, chained on that sink", async () => {
    const { fanOutSink } = await import("../../src/jobs/fan-out.js");
    const { signerFrom } = await import("../../src/core/signing.js");
    const primary = memorySink();
    const secondary = memorySink();
    const fan = fanOutSink(primary, [{ sink: secondary }], { signer: signerFrom(signer.signingKey) });
    const data = randomBytes(20_000);
    const manifest = await backup({
      job: "fan",
      source: bytesSource({ data }),
      sink: fan,
      signingKey: signer.signingKey,
    });
    const [copy] = fan.manifestsFor(manifest.artifact.key);
    expect(copy!.manifest.signature?.keyId).toBe(signer.id);
    for (const sink of [primary, secondary]) {
      const { manifests, invalid } = await listManifests(sink, { verifyKeys });
      expect(invalid).toEqual([]);
      expect((await attempt(sink, manifests[0]!, { verifyKeys })).out.equals(data)).toBe(true);
    }
  });

  it("a sink whose listing fails while the chain is looked up leaves no artifact and no manifest", async () => {
    const sink = memorySink();
    const broken = {
      ...sink,
      list: () => ({
        [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new Error("list down")) }),
      }),
    };
    const code = await codeOf(
      backup({ job: "app", source: bytesSource({ data: "x" }), sink: broken, signingKey: signer.signingKey }),
    );
    expect(code).toBe("SINK_READ_FAILED");
    expect([...sink.objects.keys()]).toEqual([]);
  });
});
