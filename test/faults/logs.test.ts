/**
 * Faults of the logs source through backup(): bad globs, globs and links that leave baseDir, a
 * file that cannot be read, a file truncated while it is packed, too many files, an abort mid-file.
 * Every fault checks the code, that the sink is empty and that no file under the log folder is
 * left open. A glob or time window that holds no file fails with SOURCE_EMPTY unless the source
 * is told `allowEmpty` (then the backup is an empty tar, and `details.outsideWindow` says how many
 * files the window left out).
 */
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readlink, rm, symlink, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, describe } from "vitest";
import { aes256gcm, backup, gzip, type LogsSourceOptions, logsSource, memorySink } from "../../src/index.js";
import { failureOf, fault, listing } from "./harness.js";

const roots: string[] = [];
afterAll(async () => {
  await Promise.all(roots.map((r) => rm(r, { recursive: true, force: true })));
});

const hexKey = randomBytes(32).toString("hex");

/** A log folder (0755, so an unprivileged reader can enter it) with a few files. */
async function logFolder(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "stowage-faults-logs-"));
  roots.push(root);
  await chmod(root, 0o755);
  await mkdir(join(root, "app"), { mode: 0o755 });
  await writeFile(join(root, "app", "a.log"), "line a\n".repeat(1000));
  await writeFile(join(root, "app", "b.log"), "line b\n".repeat(1000));
  return root;
}

/** Files under `dir` this process holds open. */
async function openUnder(dir: string): Promise<string[]> {
  const fds = await readdir("/proc/self/fd").catch(() => [] as string[]);
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return targets.filter((t) => t.startsWith(dir)).map((t) => `open: ${t}`);
}

/** Open files may close a moment after the rejection: give them a little time. */
async function stillOpen(dir: string): Promise<string[]> {
  for (let i = 0; i < 50 && (await openUnder(dir)).length > 0; i++)
    await new Promise((r) => setTimeout(r, 20));
  return openUnder(dir);
}

/** A memory sink that runs `onFirstChunk` when the first byte of the artifact reaches it. */
function sinkWithHook(onFirstChunk: () => Promise<void>) {
  const inner = memorySink();
  let fired = false;
  return {
    inner,
    sink: {
      ...inner,
      async write(key: string, body: Readable, options: Parameters<typeof inner.write>[2]) {
        if (fired || key.endsWith(".manifest.json")) return inner.write(key, body, options);
        fired = true;
        async function* hooked() {
          let first = true;
          for await (const chunk of body) {
            if (first) await onFirstChunk();
            first = false;
            yield chunk as Buffer;
          }
        }
        return inner.write(key, Readable.from(hooked()), options);
      },
    },
  };
}

/** Runs a logs backup with `options`; the sink, the folder's open files and the key are checked. */
async function logsFault(root: string, options: () => LogsSourceOptions, code: string, signal?: AbortSignal) {
  const sink = memorySink();
  const error = await failureOf(async () =>
    backup({
      job: "logs",
      source: logsSource(options()),
      transforms: [gzip(), aes256gcm({ key: hexKey })],
      sink,
      ...(signal ? { signal } : {}),
    }),
  );
  return {
    error,
    code,
    leftovers: [...(await listing(sink)), ...(await stillOpen(root))],
    secrets: [hexKey],
  };
}

/** Runs `fn` as an unprivileged user when root (root reads any file whatever its mode). */
async function unprivileged<T>(fn: () => Promise<T>): Promise<T> {
  const root = process.geteuid?.() === 0;
  if (root) process.seteuid!(65534);
  try {
    return await fn();
  } finally {
    if (root) process.seteuid!(0);
  }
}

describe("logs source", () => {
  for (const [name, paths] of [
    ["no glob at all", []],
    ["an empty glob", [""]],
  ] as const) {
    fault("logs", `bad glob: ${name}`, async () => {
      const root = await logFolder();
      return logsFault(root, () => ({ paths: [...paths], baseDir: root }), "CONFIG_INVALID");
    });
  }

  fault("logs", "a glob that matches no file", async () => {
    const root = await logFolder();
    return logsFault(root, () => ({ paths: ["app/*.txt"], baseDir: root }), "SOURCE_EMPTY");
  });

  fault("logs", "a window that holds no file", async () => {
    const root = await logFolder();
    return logsFault(root, () => ({ paths: ["app/*.log"], baseDir: root, until: "30d" }), "SOURCE_EMPTY");
  });

  fault("logs", "a glob reaching outside baseDir", async () => {
    const root = await logFolder();
    await writeFile(join(root, "top.log"), "above baseDir\n");
    return logsFault(
      root,
      () => ({ paths: ["../*.log", "app/*.log"], baseDir: join(root, "app") }),
      "CONFIG_INVALID",
    );
  });

  fault("logs", "a file linked to one outside baseDir", async () => {
    const root = await logFolder();
    const outside = await logFolder();
    await writeFile(join(outside, "private.key"), hexKey);
    await symlink(join(outside, "private.key"), join(root, "app", "c.log"));
    return {
      ...(await logsFault(root, () => ({ paths: ["app/*.log"], baseDir: root }), "CONFIG_INVALID")),
      secrets: [hexKey],
    };
  });

  fault("logs", "a folder linked to one outside baseDir", async () => {
    const root = await logFolder();
    const outside = await logFolder();
    await symlink(join(outside, "app"), join(root, "elsewhere"));
    return logsFault(root, () => ({ paths: ["**/*.log"], baseDir: root }), "CONFIG_INVALID");
  });

  fault("logs", "a file that cannot be read", async () => {
    const root = await logFolder();
    await chmod(join(root, "app", "b.log"), 0o000);
    const check = await unprivileged(() =>
      logsFault(root, () => ({ paths: ["app/*.log"], baseDir: root }), "SOURCE_FAILED"),
    );
    return check;
  });

  for (const to of [0, 100_000]) {
    fault("logs", `a file truncated to ${to} bytes while it is packed`, async () => {
      const root = await logFolder();
      const big = join(root, "app", "big.log");
      await writeFile(big, randomBytes(24 * 1024 * 1024));
      const { sink, inner } = sinkWithHook(() => truncate(big, to));
      const error = await failureOf(
        backup({
          job: "logs",
          source: logsSource({ paths: ["app/*.log"], baseDir: root }),
          transforms: [gzip(), aes256gcm({ key: hexKey })],
          sink,
        }),
      );
      return {
        error,
        code: "SOURCE_FAILED",
        leftovers: [...(await listing(inner)), ...(await stillOpen(root))],
        secrets: [hexKey],
      };
    });
  }

  fault("logs", "more files than maxFiles", async () => {
    const root = await logFolder();
    return logsFault(root, () => ({ paths: ["app/*.log"], baseDir: root, maxFiles: 1 }), "SOURCE_FAILED");
  });

  fault("logs", "abort while a file is read", async () => {
    const root = await logFolder();
    await writeFile(join(root, "app", "big.log"), randomBytes(24 * 1024 * 1024));
    const controller = new AbortController();
    const { sink, inner } = sinkWithHook(async () => controller.abort());
    const error = await failureOf(
      backup({
        job: "logs",
        source: logsSource({ paths: ["app/*.log"], baseDir: root }),
        transforms: [gzip(), aes256gcm({ key: hexKey })],
        sink,
        signal: controller.signal,
      }),
    );
    return {
      error,
      code: "ABORTED",
      leftovers: [...(await listing(inner)), ...(await stillOpen(root))],
      secrets: [hexKey],
    };
  });
});
