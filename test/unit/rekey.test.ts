import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  gzip,
  listManifests,
  type Manifest,
  manifestKeyFor,
  memorySink,
  readAll,
  restore,
  type Sink,
  type StowageError,
  verify,
} from "../../src/index.js";
import { aes256gcmV1 } from "../../src/transforms/aes-256-gcm/transform.js";
import { generateKeyPair, recipientIds, rekey } from "../../src/transforms/aes-256-gcm.js";
import { codeOf } from "../support/aes-helpers.js";
import { sha } from "../support/expect-helpers.js";

async function listing(sink: Sink): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const info of sink.list("")) out.set(info.key, sha(await readAll(await sink.read(info.key))));
  return out;
}

async function plainOf(
  sink: Sink,
  manifest: Manifest,
  keys: Parameters<typeof restore>[0]["keys"],
): Promise<Buffer> {
  return readAll(await restore({ sink, manifest, keys }), 64 << 20);
}

const headerLength = (b: Buffer) => (b[7] === 1 ? 56 : b.readUInt16BE(10));

describe("rekey()", () => {
  const a = generateKeyPair();
  const b = generateKeyPair();
  const c = generateKeyPair();
  const data = randomBytes(700_000);

  async function twoRecipients() {
    const sink = memorySink();
    const manifest = await backup({
      job: "rk",
      source: bytesSource({ data }),
      sink,
      transforms: [gzip({ level: 1 }), aes256gcm({ recipients: [a.recipient, b.recipient] })],
      labels: { constitutional_hash: "cdd01ef066bc6cf2" },
    });
    return { sink, manifest, stored: Buffer.from(sink.objects.get(manifest.artifact.key)!.data) };
  }

  it("rewraps for a new recipient set without re-encrypting: a removed recipient cannot decrypt after", async () => {
    const { sink, manifest, stored } = await twoRecipients();
    const next = await rekey({
      sink,
      manifest,
      identities: [{ identity: a.identity }],
      recipients: [a.recipient, c.recipient],
    });

    // New artifact and manifest, same content; the old ones are gone.
    expect(next.id).not.toBe(manifest.id);
    expect(next.artifact.key).not.toBe(manifest.artifact.key);
    expect(next.artifact.key.endsWith(".bin.gz.enc")).toBe(true);
    expect(next.startedAt).toBe(manifest.startedAt);
    expect(next.id.slice(0, 19)).toBe(manifest.id.slice(0, 19)); // same time, new random suffix
    expect(next.content).toEqual(manifest.content);
    expect(next.labels).toEqual(manifest.labels);
    expect(next.transforms[0]).toEqual(manifest.transforms[0]);
    expect(next.transforms[1]).toMatchObject({ formatVersion: 3, rekeyedFrom: manifest.id });
    expect(recipientIds(next)).toEqual([
      { type: "x25519", id: a.id },
      { type: "x25519", id: c.id },
    ]);
    const newStored = sink.objects.get(next.artifact.key)!.data;
    expect(next.artifact.sha256).toBe(sha(newStored));
    expect(next.artifact.bytes).toBe(newStored.length);
    expect(next.artifact.sha256).not.toBe(manifest.artifact.sha256);
    expect([...(await listing(sink)).keys()].sort()).toEqual(
      [next.artifact.key, manifestKeyFor(next.artifact.key)].sort(),
    );
    expect((await listManifests(sink, { job: "rk" })).manifests.map((m) => m.id)).toEqual([next.id]);

    // The chunks are the old bytes: only the header changed.
    expect(newStored.subarray(headerLength(newStored)).equals(stored.subarray(headerLength(stored)))).toBe(
      true,
    );

    expect((await plainOf(sink, next, [{ identity: a.identity }])).equals(data)).toBe(true);
    expect((await plainOf(sink, next, [{ identity: c.identity }])).equals(data)).toBe(true);
    expect(await codeOf(plainOf(sink, next, [{ identity: b.identity }]))).toBe("DECRYPT_FAILED");
    expect((await verify({ sink, manifest: next, keys: [{ identity: c.identity }] })).ok).toBe(true);
  });

  it("keepOld leaves the old artifact and manifest byte for byte; the old one still opens for the old set", async () => {
    const { sink, manifest } = await twoRecipients();
    const before = await listing(sink);
    const next = await rekey({
      sink,
      manifest,
      identities: { identity: b.identity },
      recipients: [c.recipient],
      keepOld: true,
    });
    const after = await listing(sink);
    for (const [k, digest] of before) expect(after.get(k)).toBe(digest);
    expect(after.size).toBe(before.size + 2);
    expect((await plainOf(sink, manifest, [{ identity: b.identity }])).equals(data)).toBe(true);
    expect(await codeOf(plainOf(sink, next, [{ identity: b.identity }]))).toBe("DECRYPT_FAILED");
  });

  it("reencrypt draws a new data key: every chunk changes, the content does not", async () => {
    const { sink, manifest, stored } = await twoRecipients();
    const next = await rekey({
      sink,
      manifest,
      identities: [{ identity: a.identity }],
      recipients: [{ passphrase: "the new offsite passphrase" }],
      reencrypt: true,
      scrypt: { log2N: 10, r: 8, p: 1 },
    });
    const newStored = sink.objects.get(next.artifact.key)!.data;
    const oldBody = stored.subarray(headerLength(stored));
    const newBody = newStored.subarray(headerLength(newStored));
    expect(newBody.length).toBe(oldBody.length);
    expect(newBody.subarray(0, 64).equals(oldBody.subarray(0, 64))).toBe(false);
    expect((await plainOf(sink, next, [{ passphrase: "the new offsite passphrase" }])).equals(data)).toBe(
      true,
    );
  });

  it("moves a version-1 artifact to version 2 for the new recipients", async () => {
    const key = randomBytes(32);
    const sink = memorySink();
    const manifest = await backup({
      job: "old",
      source: bytesSource({ data }),
      sink,
      transforms: [gzip({ level: 1 }), aes256gcmV1({ key, chunkSize: 4096 })],
    });
    const next = await rekey({ sink, manifest, identities: [{ key }], recipients: [c.recipient, { key }] });
    const newStored = sink.objects.get(next.artifact.key)!.data;
    expect(newStored[7]).toBe(3);
    expect(next.transforms[1]).toMatchObject({ formatVersion: 3, chunkSize: 4096 });
    expect((await plainOf(sink, next, [{ identity: c.identity }])).equals(data)).toBe(true);
    expect((await plainOf(sink, next, [{ key }])).equals(data)).toBe(true);
  });

  it("with a wrong identity fails DECRYPT_FAILED naming the expected recipients, and writes nothing", async () => {
    const { sink, manifest } = await twoRecipients();
    const before = await listing(sink);
    const error = (await rekey({
      sink,
      manifest,
      identities: [{ identity: c.identity }],
      recipients: [c.recipient],
    }).catch((e: unknown) => e)) as StowageError;
    expect(error.code).toBe("DECRYPT_FAILED");
    expect(error.details.expectedRecipients).toEqual([
      { type: "x25519", id: a.id },
      { type: "x25519", id: b.id },
    ]);
    expect(await listing(sink)).toEqual(before);
  });

  it("refuses to copy a damaged chunk, and leaves the sink as it was", async () => {
    const { sink, manifest } = await twoRecipients();
    const object = sink.objects.get(manifest.artifact.key)!;
    object.data[object.data.length - 1000]! ^= 0x01;
    const before = await listing(sink);
    const code = await codeOf(
      rekey({ sink, manifest, identities: [{ identity: a.identity }], recipients: [c.recipient] }),
    );
    expect(["DECRYPT_FAILED", "INTEGRITY_MISMATCH"]).toContain(code);
    expect(await listing(sink)).toEqual(before);
  });

  it("leaves the old backup alone when writing the new one fails or the signal fires", async () => {
    const { sink, manifest } = await twoRecipients();
    const before = await listing(sink);
    const failing: Sink = {
      ...sink,
      async write(key, body, options) {
        if (key.endsWith(".manifest.json")) throw new Error("disk full");
        return sink.write(key, body, options);
      },
    };
    const args = { manifest, identities: [{ identity: a.identity }], recipients: [c.recipient] };
    expect(await codeOf(rekey({ sink: failing, ...args }))).toBe("SINK_WRITE_FAILED");
    expect(await listing(sink)).toEqual(before);

    const controller = new AbortController();
    const slow: Sink = {
      ...sink,
      async read(key, options) {
        const inner = await sink.read(key, options);
        return Readable.from(
          (async function* () {
            let n = 0;
            for await (const chunk of inner) {
              if (n++ === 2) controller.abort();
              yield chunk as Buffer;
            }
          })(),
        );
      },
    };
    expect(await codeOf(rekey({ sink: slow, ...args, signal: controller.signal }))).toBe("ABORTED");
    expect(await listing(sink)).toEqual(before);
  });

  it("validates its options: no recipients, a secret where a recipient belongs, an unencrypted backup", async () => {
    const { sink, manifest } = await twoRecipients();
    const base = { sink, manifest, identities: [{ identity: a.identity }] };
    expect(await codeOf(rekey({ ...base, recipients: [] }))).toBe("CONFIG_INVALID");
    expect(await codeOf(rekey({ ...base, recipients: [a.identity] }))).toBe("CONFIG_INVALID");
    const plain = await backup({ job: "rk", source: bytesSource({ data: "x" }), sink, transforms: [gzip()] });
    expect(await codeOf(rekey({ ...base, manifest: plain, recipients: [c.recipient] }))).toBe("UNSUPPORTED");
  });
});
