/**
 * Faults of WAL archiving (`archiveWal` / `fetchWal`, what `wal-push` and `wal-fetch` run) on the
 * filesystem sink, whose writes fail here as a full disk's would:
 * - a record that cannot be written after its segment was stored (the segment is taken away);
 * - a segment that cannot be read; a re-push with other content (the archive stays as it was);
 * - a push ahead that fails (PostgreSQL's own push of it then fails the same way, and neither
 *   leaves anything);
 * - a fetch with the wrong key, and one of changed stored bytes (nothing at the destination).
 * The sink's folder and the destination folder are what is compared.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe } from "vitest";
import { segmentName } from "../../src/core/wal-names.js";
import { aes256gcm, filesystemSink, gzip, type Sink } from "../../src/index.js";
import { archiveWal, fetchWal } from "../../src/sources/postgres.js";
import { failsWritesAfter, failureOf, fault, filesUnder, tempFolders } from "./harness.js";

const freshFolder = tempFolders("wal");
const key = randomBytes(32);
/** `archiveWal` of `path` for job "db" through gzip + AES, as `wal-push` runs it. */
const push = (sink: Sink, path: string, ahead = 0) =>
  archiveWal({ sink, job: "db", path, transforms: [gzip(), aes256gcm({ key })], ahead });
const secrets = [key.toString("hex")];

/** A pg_wal folder with segments 1..`count` of timeline 1 (64 KiB each) and `.ready` for each. */
async function pgWal(count: number): Promise<{ dir: string; path: (n: number) => string }> {
  const dir = join(await freshFolder(), "pg_wal");
  await mkdir(join(dir, "archive_status"), { recursive: true });
  for (let n = 1; n <= count; n++) {
    await writeFile(join(dir, segmentName(1, n)), randomBytes(64 * 1024));
    await writeFile(join(dir, "archive_status", `${segmentName(1, n)}.ready`), "");
  }
  return { dir, path: (n) => join(dir, segmentName(1, n)) };
}

describe("WAL archiving", () => {
  fault(
    "wal",
    "the record cannot be written after the segment was stored: the segment is taken away",
    async () => {
      const root = await freshFolder();
      const { path } = await pgWal(1);
      const error = await failureOf(
        push(
          failsWritesAfter(filesystemSink({ root }), 0, "ENOSPC", (k) => k.endsWith(".wal.json")),
          path(1),
        ),
      );
      return { error, code: "SINK_WRITE_FAILED", leftovers: await filesUnder(root), secrets };
    },
  );

  fault("wal", "a segment that cannot be read stores nothing", async () => {
    const root = await freshFolder();
    const { dir } = await pgWal(0);
    await mkdir(join(dir, segmentName(1, 1))); // a folder where the segment should be
    const error = await failureOf(push(filesystemSink({ root }), join(dir, segmentName(1, 1))));
    return { error, code: "SOURCE_FAILED", leftovers: await filesUnder(root), secrets };
  });

  fault("wal", "a re-push with other content is refused and the archive stays as it was", async () => {
    const root = await freshFolder();
    const sink = filesystemSink({ root });
    const { path } = await pgWal(1);
    await push(sink, path(1));
    const before = await filesUnder(root);
    await writeFile(path(1), randomBytes(64 * 1024));
    const error = await failureOf(push(sink, path(1)));
    const after = await filesUnder(root);
    return {
      error,
      code: "INTEGRITY_MISMATCH",
      leftovers: after.join() === before.join() ? [] : after,
      secrets,
    };
  });

  fault(
    "wal",
    "a push ahead that fails leaves nothing, and PostgreSQL's own push of it fails the same way",
    async () => {
      const root = await freshFolder();
      const { path } = await pgWal(3);
      const sink = failsWritesAfter(filesystemSink({ root }), 4096, "ENOSPC", (k) =>
        k.includes(segmentName(1, 2)),
      );
      const first = await push(sink, path(1), 2);
      const error = await failureOf(push(sink, path(2)));
      // Segments 1 and 3 (pushed ahead) are archived, each with its record; nothing of 2 is anywhere.
      const expected = [1, 3].flatMap((n) => [
        `db/wal/00000001/${segmentName(1, n)}.gz.enc`,
        `db/wal/00000001/${segmentName(1, n)}.wal.json`,
      ]);
      const files = await filesUnder(root);
      const unexpected = [
        ...files.filter((f) => !expected.includes(f)),
        ...expected.filter((f) => !files.includes(f)).map((f) => `missing ${f}`),
        ...(first.ahead.join() === segmentName(1, 3) ? [] : [`pushed ahead: ${first.ahead.join()}`]),
      ];
      return { error, code: "SINK_WRITE_FAILED", leftovers: unexpected, secrets };
    },
  );

  /** Segment 1 archived into a fresh sink, and a fetch of it into a fresh, empty folder. */
  async function archivedOne() {
    const root = await freshFolder();
    const sink = filesystemSink({ root });
    const { path } = await pgWal(1);
    const { key: stored } = await push(sink, path(1));
    const out = await freshFolder();
    const fetch = (keys: Array<{ key: Buffer }>) =>
      failureOf(
        fetchWal({ sink, job: "db", name: segmentName(1, 1), dest: join(out, "RECOVERYXLOG"), keys }),
      );
    return { stored: join(root, stored), out, fetch };
  }

  fault("wal", "a fetch with the wrong key writes nothing at the destination", async () => {
    const { out, fetch } = await archivedOne();
    const wrong = randomBytes(32);
    const error = await fetch([{ key: wrong }]);
    return {
      error,
      code: "DECRYPT_FAILED",
      leftovers: await readdir(out),
      secrets: [...secrets, wrong.toString("hex")],
    };
  });

  fault("wal", "a fetch of changed stored bytes writes nothing at the destination", async () => {
    const { stored, out, fetch } = await archivedOne();
    const bytes = await readFile(stored);
    bytes[bytes.length >> 1]! ^= 0x01;
    await writeFile(stored, bytes);
    const error = await fetch([{ key }]);
    return { error, code: "DECRYPT_FAILED", leftovers: await readdir(out), secrets };
  });
});
