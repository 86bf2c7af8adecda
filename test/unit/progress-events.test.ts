import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  type BackupProgress,
  backup,
  bytesSource,
  copyBackup,
  generateKey,
  gzip,
  memorySink,
  readAll,
  restore,
  verify,
} from "../../src/index.js";
import { generateKeyPair, rekey } from "../../src/transforms/aes-256-gcm.js";

// restore, verify, copyBackup and rekey report progress as backup does: running totals that never
// go back, and one final event with `done: true` whose totals are the manifest's sizes.

function recorder() {
  const events: BackupProgress[] = [];
  return { events, onProgress: (p: BackupProgress) => events.push({ ...p }) };
}

function expectWellFormed(events: BackupProgress[], read: number, written: number) {
  expect(events.filter((e) => e.done)).toHaveLength(1);
  expect(events.at(-1)).toMatchObject({ done: true, bytesRead: read, bytesWritten: written });
  for (const [i, e] of events.entries()) {
    if (i === 0) continue;
    expect(e.bytesRead).toBeGreaterThanOrEqual(events[i - 1]!.bytesRead);
    expect(e.bytesWritten).toBeGreaterThanOrEqual(events[i - 1]!.bytesWritten);
    expect(e.elapsedMs).toBeGreaterThanOrEqual(events[i - 1]!.elapsedMs);
  }
}

describe("onProgress beyond backup", () => {
  const pair = generateKeyPair();
  const data = randomBytes(3 << 20);

  async function stored(encrypt = true) {
    const sink = memorySink();
    const manifest = await backup({
      job: "progress",
      source: bytesSource({ data }),
      sink,
      transforms: encrypt ? [gzip({ level: 1 }), aes256gcm({ recipients: [pair.recipient] })] : [gzip()],
    });
    return { sink, manifest };
  }

  it("restore: stored bytes read and plain bytes released, done once the stream has ended", async () => {
    const { sink, manifest } = await stored();
    const { events, onProgress } = recorder();
    const plain = await readAll(
      await restore({ sink, manifest, keys: [{ identity: pair.identity }], onProgress }),
      8 << 20,
    );
    expect(plain.equals(data)).toBe(true);
    expectWellFormed(events, manifest.artifact.bytes, manifest.content.bytes);
  });

  it("restore: no done event when the artifact is tampered with", async () => {
    const { sink, manifest } = await stored();
    const bytes = sink.objects.get(manifest.artifact.key)!.data;
    bytes[5000] = bytes[5000]! ^ 1;
    const { events, onProgress } = recorder();
    const stream = await restore({ sink, manifest, keys: [{ identity: pair.identity }], onProgress });
    await expect(readAll(stream, 8 << 20)).rejects.toMatchObject({ code: "DECRYPT_FAILED" });
    expect(events.some((e) => e.done)).toBe(false);
  });

  it("verify: stored and decoded bytes; stored only without keys", async () => {
    const { sink, manifest } = await stored();
    const withKeys = recorder();
    const report = await verify({
      sink,
      manifest,
      keys: [{ identity: pair.identity }],
      onProgress: withKeys.onProgress,
    });
    expect(report.ok).toBe(true);
    expectWellFormed(withKeys.events, manifest.artifact.bytes, manifest.content.bytes);

    const storedOnly = recorder();
    expect((await verify({ sink, manifest, onProgress: storedOnly.onProgress })).ok).toBe(true);
    expectWellFormed(storedOnly.events, manifest.artifact.bytes, 0);
  });

  it("copyBackup: bytes read from one sink and handed to the other", async () => {
    const { sink, manifest } = await stored(false);
    const to = memorySink();
    const { events, onProgress } = recorder();
    const copied = await copyBackup({ manifest, from: sink, to, onProgress });
    expect(
      Buffer.from(to.objects.get(copied.artifact.key)!.data).equals(
        sink.objects.get(manifest.artifact.key)!.data,
      ),
    ).toBe(true);
    expectWellFormed(events, manifest.artifact.bytes, manifest.artifact.bytes);
  });

  it("rekey: old artifact read, new artifact written", async () => {
    const { sink, manifest } = await stored();
    const { events, onProgress } = recorder();
    const next = await rekey({
      sink,
      manifest,
      identities: [{ identity: pair.identity }],
      recipients: [pair.recipient, { key: generateKey() }],
      onProgress,
    });
    expectWellFormed(events, manifest.artifact.bytes, next.artifact.bytes);
    const plain = await readAll(
      await restore({ sink, manifest: next, keys: [{ identity: pair.identity }] }),
      8 << 20,
    );
    expect(plain.equals(data)).toBe(true);
  });
});
