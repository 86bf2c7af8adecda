/**
 * Faults of the filesystem sink and of the core's pipeline into it: a source failing at byte N,
 * an abort mid-write, a sink that fails writes past N bytes (a full disk seen from the core), and
 * restores of tampered artifacts. Every fault checks the code, the folder seen from outside and
 * the secrets.
 */
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe } from "vitest";
import { aes256gcm, backup, bytesSource, filesystemSink, gzip, readAll, restore } from "../../src/index.js";
import { failingChunks } from "../../src/testing.js";
import { failsWritesAfter, failureOf, fault, filesUnder, listingChange, tempFolders } from "./harness.js";

const freshRoot = tempFolders("fs");

const key = randomBytes(32);
const hexKey = key.toString("hex");
const passphrase = "correct horse battery staple, faults edition";
const data = randomBytes(3 * 1024 * 1024 + 17);

describe("filesystem sink", () => {
  for (const at of [0, 1, 65_535, 65_536, 65_537, data.length - 1]) {
    fault("filesystem", `source fails at byte ${at}, encrypted with a key`, async () => {
      const root = await freshRoot();
      const error = await failureOf(
        backup({
          job: "f",
          source: bytesSource({ data: failingChunks(data, at) }),
          transforms: [gzip(), aes256gcm({ key: hexKey })],
          sink: filesystemSink({ root }),
        }),
      );
      return { error, code: "SOURCE_FAILED", leftovers: await filesUnder(root), secrets: [hexKey] };
    });
  }

  for (const limit of [0, 1, 1 << 20]) {
    fault("filesystem", `disk full after ${limit} stored bytes, passphrase`, async () => {
      const root = await freshRoot();
      const error = await failureOf(
        backup({
          job: "f",
          source: bytesSource({ data }),
          transforms: [gzip(), aes256gcm({ passphrase })],
          sink: failsWritesAfter(filesystemSink({ root }), limit, "ENOSPC"),
        }),
      );
      return { error, code: "SINK_WRITE_FAILED", leftovers: await filesUnder(root), secrets: [passphrase] };
    });
  }

  fault("filesystem", "abort mid-write", async () => {
    const root = await freshRoot();
    const controller = new AbortController();
    async function* slow() {
      for (let i = 0; i < 64; i++) {
        if (i === 8) controller.abort();
        yield randomBytes(64 * 1024);
        await new Promise((r) => setTimeout(r, 1));
      }
    }
    const error = await failureOf(
      backup({
        job: "f",
        source: bytesSource({ data: slow }),
        transforms: [aes256gcm({ key: hexKey })],
        sink: filesystemSink({ root }),
        signal: controller.signal,
      }),
    );
    return { error, code: "ABORTED", leftovers: await filesUnder(root), secrets: [hexKey] };
  });

  fault("filesystem", "restore with the wrong key releases nothing", async () => {
    const root = await freshRoot();
    const sink = filesystemSink({ root });
    const manifest = await backup({
      job: "f",
      source: bytesSource({ data }),
      transforms: [gzip(), aes256gcm({ key: hexKey })],
      sink,
    });
    const before = await filesUnder(root);
    const wrong = randomBytes(32).toString("hex");
    const error = await failureOf(async () =>
      readAll(await restore({ sink, manifest, keys: [{ key: wrong }] })),
    );
    return {
      error,
      code: "DECRYPT_FAILED",
      leftovers: listingChange(before, await filesUnder(root)),
      secrets: [hexKey, wrong],
    };
  });

  fault("filesystem", "restore of an artifact with one flipped byte", async () => {
    const root = await freshRoot();
    const sink = filesystemSink({ root });
    const manifest = await backup({
      job: "f",
      source: bytesSource({ data }),
      transforms: [gzip(), aes256gcm({ key: hexKey })],
      sink,
    });
    const path = join(root, manifest.artifact.key);
    const bytes = await import("node:fs/promises").then((fs) => fs.readFile(path));
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    await writeFile(path, bytes);
    const before = await filesUnder(root);
    let released = 0;
    const error = await failureOf(async () => {
      for await (const chunk of await restore({ sink, manifest, keys: [{ key: hexKey }] })) {
        released += (chunk as Buffer).length;
      }
    });
    return {
      error,
      code: "DECRYPT_FAILED",
      leftovers: [
        ...listingChange(before, await filesUnder(root)),
        ...(released > bytes.length ? [`released ${released} bytes past the tampered chunk`] : []),
      ],
      secrets: [hexKey],
    };
  });
});
