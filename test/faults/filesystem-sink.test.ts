/**
 * Faults of the filesystem sink's surroundings: a job folder that is a symbolic link out of the
 * root (every operation through it refused), a root on a read-only mount or below a file (the
 * real cause named), and a writer stalled mid-write while sweeps run with clocks far ahead (its
 * temporary file kept; the write then aborted leaves nothing).
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { afterAll, describe } from "vitest";
import {
  aes256gcm,
  applyRetention,
  backup,
  bytesSource,
  filesystemSink,
  findOrphans,
  gzip,
  listManifests,
  type Manifest,
  planRetention,
  readManifest,
  restore,
  type StowageError,
} from "../../src/index.js";
import { failureOf, fault, filesUnder } from "./harness.js";

const run = promisify(execFile);
const made: string[] = [];
afterAll(async () => {
  await Promise.all(made.map((r) => rm(r, { recursive: true, force: true })));
});

async function freshBase(): Promise<string> {
  const base = await mkdtemp(join(tmpdir(), "stowage-faults-fss-"));
  made.push(base);
  return base;
}

const key = randomBytes(32).toString("hex");
const data = randomBytes(256 * 1024 + 3);

/**
 * A root with two backups of job `linked`, whose folder is then moved out of the root and replaced
 * by a link to it: the backup's files now lie outside, reachable only through the link.
 */
async function linkedJob(): Promise<{
  root: string;
  outside: string;
  manifest: Manifest;
  newer: Manifest;
  before: string[];
}> {
  const base = await freshBase();
  const root = join(base, "root");
  const outside = join(base, "outside");
  const once = () =>
    backup({
      job: "linked",
      source: bytesSource({ data }),
      transforms: [gzip(), aes256gcm({ key })],
      sink: filesystemSink({ root }),
    });
  const manifest = await once();
  const newer = await once();
  await run("mv", [join(root, "linked"), outside]);
  await symlink(outside, join(root, "linked"));
  return { root, outside, manifest, newer, before: await filesUnder(outside) };
}

/** What changed outside the root, or a file that appeared inside it: leftovers of a refused operation. */
async function changes(root: string, outside: string, before: string[]): Promise<string[]> {
  const now = await filesUnder(outside);
  const inside = (await filesUnder(root)).filter((f) => !f.startsWith("linked"));
  return [
    ...now.filter((f) => !before.includes(f)).map((f) => `added outside: ${f}`),
    ...before.filter((f) => !now.includes(f)).map((f) => `removed outside: ${f}`),
    ...inside.map((f) => `inside: ${f}`),
  ];
}

describe("a job folder that is a symbolic link out of the root", () => {
  fault("filesystem", "backup writing through the link is refused", async () => {
    const { root, outside, before } = await linkedJob();
    const error = await failureOf(
      backup({ job: "linked", source: bytesSource({ data }), sink: filesystemSink({ root }) }),
    );
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: await changes(root, outside, before),
      secrets: [key],
    };
  });

  fault("filesystem", "listManifests of the whole sink is refused (not silently partial)", async () => {
    const { root, outside, before } = await linkedJob();
    const error = await failureOf(listManifests(filesystemSink({ root })));
    return { error, code: "SINK_READ_FAILED", leftovers: await changes(root, outside, before) };
  });

  fault("filesystem", "listManifests of the job is refused the same way", async () => {
    const { root, outside, before } = await linkedJob();
    const error = await failureOf(listManifests(filesystemSink({ root }), { job: "linked" }));
    return { error, code: "SINK_READ_FAILED", leftovers: await changes(root, outside, before) };
  });

  fault(
    "filesystem",
    "reading the manifest and restoring the artifact through the link are refused",
    async () => {
      const { root, outside, before, manifest } = await linkedJob();
      const sink = filesystemSink({ root });
      const error = await failureOf(readManifest(sink, `${manifest.artifact.key}.manifest.json`));
      const restoreError = await failureOf(async () => restore({ sink, manifest, keys: [{ key }] }));
      const codes = [error, restoreError].map((e) => (e as StowageError | undefined)?.code);
      return {
        error,
        code: "SINK_READ_FAILED",
        leftovers: [
          ...(codes[1] === "SINK_READ_FAILED" ? [] : [`restore: ${codes[1]}`]),
          ...(await changes(root, outside, before)),
        ],
        secrets: [key],
      };
    },
  );

  fault(
    "filesystem",
    "deleting through the link is refused; applyRetention reports it, deletes nothing",
    async () => {
      const { root, outside, before, manifest, newer } = await linkedJob();
      const sink = filesystemSink({ root });
      const error = await failureOf(sink.delete([manifest.artifact.key]));
      const plan = planRetention([manifest, newer], { keepLast: 1 }, { now: new Date() });
      const result = await applyRetention({ sink, plan, orphans: false });
      return {
        error,
        code: "SINK_DELETE_FAILED",
        leftovers: [
          ...result.deleted.map((d) => `applyRetention deleted ${d.key}`),
          ...(result.failed.length === 1 ? [] : ["applyRetention did not report the refused delete"]),
          ...(await changes(root, outside, before)),
        ],
      };
    },
  );

  fault("filesystem", "the orphan sweep through the link is refused", async () => {
    const { root, outside } = await linkedJob();
    await writeFile(join(outside, `.x.sql.stowage-tmp-0123456789ab`), "someone else's");
    const after = await filesUnder(outside);
    const error = await failureOf(
      findOrphans(filesystemSink({ root }), { olderThan: "0s", prefix: "linked/" }),
    );
    return { error, code: "SINK_READ_FAILED", leftovers: await changes(root, outside, after) };
  });
});

describe("a root the sink cannot create folders in", () => {
  for (const transforms of ["none", "gzip+aes"] as const) {
    fault("filesystem", `root on a read-only mount (EROFS named, not ENOENT), ${transforms}`, async () => {
      const base = await freshBase();
      await run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", base]);
      try {
        const root = join(base, "backups");
        const error = await failureOf(
          backup({
            job: "ro",
            source: bytesSource({ data }),
            transforms: transforms === "none" ? [] : [gzip(), aes256gcm({ key })],
            sink: filesystemSink({ root }),
          }),
        );
        const details = (error as StowageError | undefined)?.details ?? {};
        return {
          error,
          code: "SINK_WRITE_FAILED",
          leftovers: [
            ...(details.errno === "EROFS" ? [] : [`errno ${String(details.errno)}`]),
            ...(details.folder === root ? [] : [`folder ${String(details.folder)}`]),
            ...(await filesUnder(base)),
          ],
          secrets: [key],
        };
      } finally {
        await run("umount", [base]);
      }
    });
  }

  fault("filesystem", "root below a file (ENOTDIR named)", async () => {
    const base = await freshBase();
    await writeFile(join(base, "file"), "x");
    const error = await failureOf(
      backup({
        job: "f",
        source: bytesSource({ data }),
        sink: filesystemSink({ root: join(base, "file", "r") }),
      }),
    );
    const errno = (error as StowageError | undefined)?.details?.errno;
    return {
      error,
      code: "SINK_WRITE_FAILED",
      leftovers: [
        ...(errno === "ENOTDIR" ? [] : [`errno ${String(errno)}`]),
        ...(await filesUnder(base)),
      ].filter((f) => f !== "file"),
    };
  });
});

describe("a writer stalled mid-write while sweeps run", () => {
  fault(
    "filesystem",
    "stalled for days, swept from clocks 10 minutes and 2 days ahead: kept; then aborted: nothing left",
    async () => {
      const root = join(await freshBase(), "root");
      const sink = filesystemSink({ root });
      const kept = await backup({ job: "slow", source: bytesSource({ data }), sink });
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      async function* stalls() {
        yield data.subarray(0, 1000);
        await gate;
        yield data.subarray(1000);
      }
      const controller = new AbortController();
      const running = backup({
        job: "slow",
        source: bytesSource({ data: () => stalls() }),
        transforms: [gzip(), aes256gcm({ key })],
        sink,
        signal: controller.signal,
      });
      running.catch(() => undefined);
      const temps = async () => (await filesUnder(root)).filter((f) => f.includes(".stowage-tmp-"));
      for (let i = 0; i < 500 && (await temps()).length < 2; i++) await delay(10);
      const problems: string[] = [];
      const before = await temps();
      if (before.length !== 2)
        problems.push(`expected a temporary file and its record, saw ${before.join(", ")}`);
      const old = new Date(Date.now() - 2 * 86_400_000);
      for (const f of before) await utimes(join(root, f), old, old);
      for (const ahead of [10 * 60_000, 2 * 86_400_000]) {
        const now = new Date(Date.now() + ahead);
        const plan = planRetention([kept], { keepLast: 10 }, { now });
        const result = await applyRetention({ sink, plan, now, orphans: { olderThan: "1m" } });
        problems.push(...result.orphans.map((o) => `swept a live writer's ${o}`));
      }
      const after = await temps();
      if (after.join() !== before.join()) problems.push(`temporary files changed: ${after.join(", ")}`);
      controller.abort();
      release();
      const error = await failureOf(running);
      const keep = [kept.artifact.key, `${kept.artifact.key}.manifest.json`];
      return {
        error,
        code: "ABORTED",
        leftovers: [...problems, ...(await filesUnder(root)).filter((f) => !keep.includes(f))],
        secrets: [key],
        texts: [await readFile(join(root, `${kept.artifact.key}.manifest.json`), "utf8")],
      };
    },
  );
});
