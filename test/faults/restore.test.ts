/**
 * Faults of the way back: restore() and verify() given damaged or lying artifacts and manifests
 * (a decompression bomb, bytes appended or cut off, an unsafe key), keys of the wrong shape, and
 * extractTar given a hostile target or archive. Each checks the code, that no more bytes were
 * released than the manifest declares, that nothing was written outside where it belongs, and
 * that no key appears in the error.
 */
import { randomBytes } from "node:crypto";
import { lstat, mkdir, readdir, readlink, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { describe } from "vitest";
import {
  aes256gcm,
  backup,
  bytesSource,
  type DecryptionKey,
  extractTar,
  generateKeyPair,
  gzip,
  type Manifest,
  type MemorySink,
  memorySink,
  readAll,
  rekey,
  restore,
  type Sink,
  verify,
} from "../../src/index.js";
import { failureOf, fault, filesUnder, listing, listingChange, tempFolders } from "./harness.js";

const freshDir = tempFolders("restore");

const key = randomBytes(32);
const hexKey = key.toString("hex");
const pair = generateKeyPair();
const MiB = 1 << 20;

async function backedUp(
  data: Uint8Array<ArrayBuffer>,
  encrypted: boolean,
): Promise<{ sink: MemorySink; manifest: Manifest }> {
  const sink = memorySink();
  const manifest = await backup({
    job: "r",
    source: bytesSource({ data }),
    transforms: encrypted ? [gzip(), aes256gcm({ key: hexKey })] : [gzip()],
    sink,
  });
  return { sink, manifest };
}

/** Drains a restore into nothing, counting the plain bytes it released before it failed. */
async function drain(stream: Readable): Promise<{ released: number; error: unknown }> {
  let released = 0;
  const error = await failureOf(
    pipeline(
      stream,
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          released += chunk.length;
          cb();
        },
      }),
    ),
  );
  return { released, error };
}

/** A sink whose reads count the stored bytes that left it. */
function counting(sink: Sink): { sink: Sink; read: () => number } {
  let read = 0;
  return {
    read: () => read,
    sink: {
      ...sink,
      async read(k, options) {
        const inner = await sink.read(k, options);
        return Readable.from(
          (async function* () {
            for await (const chunk of inner as AsyncIterable<Buffer>) {
              read += chunk.length;
              yield chunk;
            }
          })(),
        );
      },
    },
  };
}

describe("restore", () => {
  // A bomb: 64 MiB of zeros gzip to about 64 KiB; the manifest claims 1 MiB of plain bytes.
  const zeros = Buffer.alloc(64 * MiB);
  for (const encrypted of [false, true]) {
    fault(
      "restore",
      `decompression bomb (manifest says 1 MiB, ${encrypted ? "encrypted" : "gzip"})`,
      async () => {
        const { sink, manifest } = await backedUp(zeros, encrypted);
        const before = await listing(sink);
        const lying = { ...manifest, content: { ...manifest.content, bytes: MiB } };
        const { released, error } = await drain(
          await restore({ sink, manifest: lying, ...(encrypted ? { keys: [{ key }] } : {}) }),
        );
        const leftovers = [
          ...listingChange(before, await listing(sink)),
          ...(released > MiB ? [`released ${released} plain bytes, more than the declared ${MiB}`] : []),
        ];
        return { error, code: "INTEGRITY_MISMATCH", leftovers, secrets: [hexKey] };
      },
    );
  }

  fault("restore", "decompression bomb into extractTar stops at the declared size", async () => {
    const pack = tar.pack();
    pack.entry({ name: "big.bin", size: 32 * MiB }, Buffer.alloc(32 * MiB));
    pack.finalize();
    const { sink, manifest } = await backedUp(new Uint8Array(await readAll(Readable.from(pack))), false);
    // A quarter of what the tar header declares, and more than restore decodes ahead of its
    // reader (at most four gzip members of 1 MiB), so the header is what refuses it, not restore's
    // own size check a few blocks later.
    const lying = { ...manifest, content: { ...manifest.content, bytes: 8 * MiB } };
    const target = join(await freshDir(), "out");
    const error = await failureOf(extractTar(await restore({ sink, manifest: lying }), target));
    // The header already declares more than the manifest: refused before a byte of it is written.
    return { error, code: "RESTORE_FAILED", leftovers: await filesUnder(dirname(target)) };
  });

  for (const appended of [1, 64 * 1024, 32 * MiB]) {
    fault("restore", `stored artifact longer than declared by ${appended} B (no verifyFirst)`, async () => {
      const { sink: inner, manifest } = await backedUp(randomBytes(2 * MiB), true);
      const stored = inner.objects.get(manifest.artifact.key)!;
      stored.data = Buffer.concat([stored.data, randomBytes(appended)]);
      const { sink, read } = counting(inner);
      const { released, error } = await drain(
        await restore({ sink, manifest, keys: [{ key }], verifyFirst: false }),
      );
      const leftovers = [
        ...(released > manifest.content.bytes ? [`released ${released} plain bytes`] : []),
        ...(read() > manifest.artifact.bytes + 2 * MiB ? [`read ${read()} stored bytes`] : []),
      ];
      return { error, code: "INTEGRITY_MISMATCH", leftovers, secrets: [hexKey] };
    });
  }

  fault("restore", "stored artifact longer than declared (gzip, verified first)", async () => {
    const { sink: inner, manifest } = await backedUp(randomBytes(MiB), false);
    const stored = inner.objects.get(manifest.artifact.key)!;
    stored.data = Buffer.concat([stored.data, Buffer.alloc(32 * MiB)]);
    const { sink, read } = counting(inner);
    const error = await failureOf(async () => drain(await restore({ sink, manifest, verifyFirst: true })));
    const leftovers = read() > manifest.artifact.bytes + 2 * MiB ? [`read ${read()} stored bytes`] : [];
    return { error, code: "INTEGRITY_MISMATCH", leftovers };
  });

  for (const [encrypted, cut] of [
    [false, "0"],
    [false, "1"],
    [false, "half"],
    [true, "1"],
    [true, "half"],
    [true, "last-1"],
  ] as const) {
    fault(
      "restore",
      `truncated artifact (${encrypted ? "encrypted" : "gzip"}, cut to ${cut} B)`,
      async () => {
        const { sink, manifest } = await backedUp(randomBytes(MiB + 7), encrypted);
        const stored = sink.objects.get(manifest.artifact.key)!;
        const length = stored.data.length;
        const at = cut === "0" ? 0 : cut === "1" ? 1 : cut === "half" ? length >> 1 : length - 1;
        stored.data = stored.data.subarray(0, at);
        let released = 0;
        const error = await failureOf(async () => {
          // Unencrypted: checked before a byte is released. Encrypted: each chunk authenticates.
          const plain = await restore({ sink, manifest, keys: [{ key }], verifyFirst: !encrypted });
          const drained = await drain(plain);
          released = drained.released;
          throw drained.error;
        });
        const leftovers = released > manifest.content.bytes ? [`released ${released} plain bytes`] : [];
        // Encrypted chunks authenticate as they stream: a cut is a failed decryption.
        return {
          error,
          code: encrypted ? "DECRYPT_FAILED" : "INTEGRITY_MISMATCH",
          leftovers,
          secrets: [hexKey],
        };
      },
    );
  }

  for (const unsafe of ["../../etc/passwd", "/etc/passwd", "r/2026/../../../x", "r\\..\\x", "r//x"]) {
    fault("restore", `unsafe artifact.key ${JSON.stringify(unsafe)} in the manifest`, async () => {
      const { sink, manifest } = await backedUp(randomBytes(1000), false);
      const before = await listing(sink);
      const lying = { ...manifest, artifact: { ...manifest.artifact, key: unsafe } };
      const error = await failureOf(async () => drain(await restore({ sink, manifest: lying })));
      const named = (error as { details?: { issues?: Array<{ path: string }> } }).details?.issues?.some(
        (i) => i.path === "artifact.key",
      );
      const leftovers = [
        ...listingChange(before, await listing(sink)),
        ...(named ? [] : ["the error does not name artifact.key"]),
      ];
      return { error, code: "MANIFEST_INVALID", leftovers };
    });
  }

  const badKeys: Array<[string, unknown, string]> = [
    ["a bare identity string", [pair.identity], pair.identity],
    ["a bare Buffer", [key], hexKey],
    ["a Buffer, not in a list", key, hexKey],
    ["a bare passphrase string", "correct horse battery staple", "correct horse battery staple"],
    ["an object with two kinds", [{ key: hexKey, passphrase: "another secret phrase" }], hexKey],
  ];
  for (const [what, keys, secret] of badKeys) {
    fault("restore", `keys given as ${what}`, async () => {
      const { sink, manifest } = await backedUp(randomBytes(1000), true);
      const error = await failureOf(restore({ sink, manifest, keys: keys as DecryptionKey[] }));
      return { error, code: "CONFIG_INVALID", secrets: [secret] };
    });
  }
  fault("restore", "verify with a bare Buffer in keys", async () => {
    const { sink, manifest } = await backedUp(randomBytes(1000), true);
    const error = await failureOf(verify({ sink, manifest, keys: [key as unknown as DecryptionKey] }));
    return { error, code: "CONFIG_INVALID", secrets: [hexKey] };
  });
  fault("restore", "rekey with a bare identity string", async () => {
    const sink = memorySink();
    const manifest = await backup({
      job: "r",
      source: bytesSource({ data: randomBytes(1000) }),
      transforms: [aes256gcm({ recipients: [pair.recipient] })],
      sink,
    });
    const before = await listing(sink);
    const error = await failureOf(
      rekey({
        sink,
        manifest,
        identities: [pair.identity as unknown as DecryptionKey],
        recipients: [generateKeyPair().recipient],
      }),
    );
    return {
      error,
      code: "CONFIG_INVALID",
      leftovers: listingChange(before, await listing(sink)),
      secrets: [pair.identity],
    };
  });
});

async function tarOf(entries: Array<{ name: string; body?: string; type?: "file" | "directory" }>) {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === "directory") pack.entry({ name: e.name, type: "directory" });
    else pack.entry({ name: e.name }, e.body ?? "x");
  }
  pack.finalize();
  return readAll(Readable.from(pack));
}

/** A stream that records whether anything read from it. */
function watched(data: Buffer): { stream: Readable; reads: () => number } {
  let reads = 0;
  const stream = new Readable({
    read() {
      reads++;
      this.push(data);
      this.push(null);
    },
  });
  return { stream, reads: () => reads };
}

describe("extractTar", () => {
  for (const kind of ["a symlink to an empty folder", "a dangling symlink", "a file"] as const) {
    fault("extractTar", `target is ${kind}`, async () => {
      const root = await freshDir();
      const elsewhere = join(root, "elsewhere");
      await mkdir(elsewhere);
      const target = join(root, "target");
      if (kind === "a file") await writeFile(target, "keep me");
      else await symlink(kind === "a dangling symlink" ? join(root, "nowhere") : elsewhere, target);
      const { stream, reads } = watched(await tarOf([{ name: "a.txt" }, { name: "d", type: "directory" }]));
      const error = await failureOf(extractTar(stream, target));
      const info = await lstat(target);
      const leftovers = [
        ...(await readdir(elsewhere)).map((f) => `wrote ${f} through the symlink`),
        ...(await readdir(root)).filter((f) => !["elsewhere", "target"].includes(f)).map((f) => `left ${f}`),
        ...(reads() > 0 ? ["read the archive before checking the target"] : []),
        ...(kind === "a file" ? (info.isFile() ? [] : ["the file was replaced"]) : []),
        ...(kind !== "a file" && !info.isSymbolicLink() ? ["the symlink was replaced"] : []),
        ...(kind === "a symlink to an empty folder" && (await readlink(target)) !== elsewhere
          ? ["the symlink was changed"]
          : []),
      ];
      return { error, code: "CONFIG_INVALID", leftovers };
    });
  }

  for (const name of [
    "../escape.txt",
    "a/../../escape.txt",
    "/tmp/escape-abs.txt",
    "a/../b/../../escape.txt",
  ]) {
    fault("extractTar", `archive entry ${JSON.stringify(name)}`, async () => {
      const root = await freshDir();
      const target = join(root, "deep", "target");
      const archive = await tarOf([{ name: "ok.txt" }, { name, body: "pwned" }]);
      const error = await failureOf(extractTar(Readable.from([archive]), target));
      const escaped = await lstat(join(root, "deep", "escape.txt")).then(
        () => ["escape.txt written outside"],
        () => [],
      );
      return { error, code: "RESTORE_FAILED", leftovers: [...(await filesUnder(root)), ...escaped] };
    });
  }
});
