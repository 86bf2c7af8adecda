import { randomBytes } from "node:crypto";
import {
  appendFile,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  truncate,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  backup,
  extractTar,
  gzip,
  isStowageError,
  type MemorySink,
  memorySink,
  restore,
  type Sink,
  type StowageError,
} from "../../src/index.js";
import { logsSource } from "../../src/sources/logs.js";

const HOUR = 3_600_000;
let work: string;
beforeEach(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-logs-"));
});
afterEach(async () => {
  await rm(work, { recursive: true, force: true });
});

async function failure(promise: Promise<unknown>): Promise<StowageError> {
  try {
    await promise;
  } catch (error) {
    if (isStowageError(error)) return error;
    throw error;
  }
  throw new Error("expected a failure");
}

/** Writes a file and sets its mtime (millisecond precision, so a restored copy can match exactly). */
async function put(path: string, data: string | Buffer, mtime: Date): Promise<void> {
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, data);
  await utimes(path, mtime, mtime);
}

async function tree(root: string): Promise<Record<string, { data: string; mtimeNs: bigint; mode: number }>> {
  const out: Record<string, { data: string; mtimeNs: bigint; mode: number }> = {};
  for (const rel of (await readdir(root, { recursive: true })) as string[]) {
    const info = await lstat(join(root, rel), { bigint: true });
    if (!info.isFile()) continue;
    out[rel] = {
      data: (await readFile(join(root, rel))).toString("base64"),
      mtimeNs: info.mtimeNs,
      mode: Number(info.mode) & 0o777,
    };
  }
  return out;
}

/** A sink that runs `onFirstChunk` when the first byte reaches it, then stores as memorySink does. */
function sinkWithHook(onFirstChunk: () => Promise<void>): MemorySink {
  const inner = memorySink();
  let fired = false;
  return {
    ...inner,
    async write(key: string, body: Readable, options) {
      if (fired || key.endsWith(".manifest.json")) return inner.write(key, body, options);
      fired = true;
      const hooked = (async function* () {
        let first = true;
        for await (const chunk of body) {
          if (first) await onFirstChunk();
          first = false;
          yield chunk as Buffer;
        }
      })();
      const { Readable: R } = await import("node:stream");
      return inner.write(key, R.from(hooked, { objectMode: false }), options);
    },
  };
}

describe("logsSource", () => {
  it("exports the files in the window, nested and rotated, and restores them byte for byte with their mtimes", async () => {
    const logs = join(work, "var/log");
    const now = Date.now();
    const recent = (h: number) => new Date(now - h * HOUR - 123); // ms that are not whole seconds
    await put(join(logs, "app/app.log"), "line 3\nline 4\n", recent(1));
    await put(join(logs, "app/app.log.1"), "line 1\nline 2\n", recent(5));
    await put(join(logs, "app/app.log.2.gz"), gzipSync("older lines\n"), recent(20));
    await put(join(logs, "app/app.log.3.gz"), gzipSync("too old\n"), recent(48)); // outside the window
    await put(join(logs, "audit/2024/06/audit.log"), randomBytes(200_000), recent(2));
    await put(join(logs, "audit/2024/06/audit.log.tmp"), "partial", recent(2)); // excluded
    await put(join(logs, "audit/old/audit.log"), "ancient", recent(24 * 30)); // outside the window
    await put(join(logs, "readme.txt"), "not a log", recent(1)); // not matched
    await put(join(logs, "app/empty.log"), "", recent(3));

    const sink = memorySink();
    const manifest = await backup({
      job: "logs",
      source: logsSource({
        paths: ["app/*.log*", "audit/**/*"],
        baseDir: logs,
        exclude: ["**/*.tmp"],
        since: "24h",
      }),
      transforms: [gzip()],
      sink,
    });
    const expected = [
      "app/app.log",
      "app/app.log.1",
      "app/app.log.2.gz",
      "app/empty.log",
      "audit/2024/06/audit.log",
    ];
    const details = manifest.source.details as Record<string, unknown>;
    expect(details).toMatchObject({
      files: 5,
      outsideWindow: 2,
      grew: [],
      baseDir: logs,
      window: { until: null },
    });
    expect(details.bytes).toBe(14 + 14 + gzipSync("older lines\n").length + 200_000);
    const since = Date.parse((details.window as { since: string }).since);
    expect(since).toBe(Date.parse(manifest.startedAt) - 24 * HOUR);

    const target = join(work, "restored");
    await extractTar(await restore({ sink, manifest }), target);
    const original = await tree(logs);
    const restored = await tree(target);
    expect(Object.keys(restored).sort()).toEqual(expected);
    for (const rel of expected) expect(restored[rel]).toEqual(original[rel]);
  });

  it("takes explicit dates for since and until, until exclusive", async () => {
    const base = new Date("2024-03-01T00:00:00Z").getTime();
    await put(join(work, "a.log"), "a", new Date(base - 1));
    await put(join(work, "b.log"), "b", new Date(base));
    await put(join(work, "c.log"), "c", new Date(base + HOUR - 1));
    await put(join(work, "d.log"), "d", new Date(base + HOUR));
    const sink = memorySink();
    const manifest = await backup({
      job: "logs",
      source: logsSource({
        paths: [join(work, "*.log")],
        since: new Date(base),
        until: new Date(base + HOUR).toISOString(),
      }),
      sink,
    });
    expect(manifest.source.details).toMatchObject({ files: 2, outsideWindow: 2, baseDir: work });
    const target = join(work, "out");
    await extractTar(await restore({ sink, manifest }), target);
    expect((await readdir(target)).sort()).toEqual(["b.log", "c.log"]);
  });

  it("reads a growing file up to the size it had when opened, and says so", async () => {
    const big = join(work, "active.log");
    const original = randomBytes(24 * 1024 * 1024);
    await writeFile(big, original);
    const sink = sinkWithHook(() => appendFile(big, "written during the backup\n"));
    const manifest = await backup({
      job: "logs",
      source: logsSource({ paths: ["*.log"], baseDir: work }),
      sink,
    });
    expect(manifest.source.details).toMatchObject({
      files: 1,
      bytes: original.length,
      grew: [{ path: "active.log", bytesAtOpen: original.length, bytesNow: original.length + 26 }],
    });
    const target = join(work, "out");
    await extractTar(await restore({ sink, manifest }), target);
    expect((await readFile(join(target, "active.log"))).equals(original)).toBe(true);
  });

  it("fails, leaving nothing, when a file shrinks while read", async () => {
    const big = join(work, "active.log");
    await writeFile(big, randomBytes(24 * 1024 * 1024));
    const sink = sinkWithHook(() => truncate(big, 0));
    const error = await failure(
      backup({ job: "logs", source: logsSource({ paths: ["*.log"], baseDir: work }), sink }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details.reason).toBe("shrank");
    expect([...sink.objects.keys()]).toEqual([]);
  });

  it("fails, leaving nothing, when more files match than maxFiles", async () => {
    for (let i = 0; i < 4; i++) await writeFile(join(work, `${i}.log`), "x");
    const sink = memorySink();
    const error = await failure(
      backup({ job: "logs", source: logsSource({ paths: ["*.log"], baseDir: work, maxFiles: 3 }), sink }),
    );
    expect(error.code).toBe("SOURCE_FAILED");
    expect(error.details).toMatchObject({ reason: "too-many-files", matched: 4, maxFiles: 3 });
    expect([...sink.objects.keys()]).toEqual([]);
  });

  it("fails with SOURCE_EMPTY, leaving nothing, when no file matches in the window", async () => {
    await put(join(work, "old.log"), "old", new Date(Date.now() - 48 * HOUR));
    const sink = memorySink();
    for (const options of [
      { paths: ["*.txt"], baseDir: work },
      { paths: ["*.log"], baseDir: work, since: "24h" },
    ]) {
      const error = await failure(backup({ job: "logs", source: logsSource(options), sink }));
      expect(error.code).toBe("SOURCE_EMPTY");
      expect(error.details).toMatchObject({ reason: "no-files", outsideWindow: options.since ? 1 : 0 });
    }
    expect([...sink.objects.keys()]).toEqual([]);
  });

  it("backs up an empty tar when no file matches and allowEmpty says that is fine", async () => {
    await put(join(work, "old.log"), "old", new Date(Date.now() - 48 * HOUR));
    const sink = memorySink();
    const manifest = await backup({
      job: "logs",
      source: logsSource({ paths: ["*.log"], baseDir: work, since: "24h", allowEmpty: true }),
      sink,
    });
    expect(manifest.source.details).toMatchObject({ files: 0, bytes: 0, outsideWindow: 1 });
    const target = join(work, "out");
    await extractTar(await restore({ sink, manifest }), target);
    expect(await readdir(target)).toEqual([]);
  });

  it("closes its open file when the run is aborted mid-file", async () => {
    const big = join(work, "active.log");
    await writeFile(big, randomBytes(24 * 1024 * 1024));
    const controller = new AbortController();
    const openHere = async () => {
      const fds = await readdir("/proc/self/fd");
      const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
      return targets.filter((t) => t.startsWith(work));
    };
    let seenOpen: string[] = [];
    const sink: Sink = sinkWithHook(async () => {
      seenOpen = await openHere();
      controller.abort();
    });
    const error = await failure(
      backup({
        job: "logs",
        source: logsSource({ paths: ["*.log"], baseDir: work }),
        sink,
        signal: controller.signal,
      }),
    );
    expect(error.code).toBe("ABORTED");
    expect(seenOpen).toEqual([big]); // the probe sees the file while it is being read…
    // …and not after the abort (the close may land just after backup() rejects).
    for (let i = 0; i < 100 && (await openHere()).length > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await openHere()).toEqual([]);
  });

  it("refuses files outside baseDir and bad options by name", async () => {
    await writeFile(join(work, "x.log"), "x");
    await mkdir(join(work, "base"));
    const outside = await failure(
      backup({
        job: "logs",
        source: logsSource({ paths: ["../*.log"], baseDir: join(work, "base") }),
        sink: memorySink(),
      }),
    );
    expect(outside.code).toBe("CONFIG_INVALID");
    const bad = await failure(
      Promise.resolve().then(() => logsSource({ paths: [], since: "yesterday", maxFiles: 0 } as never)),
    );
    expect(bad.code).toBe("CONFIG_INVALID");
    expect((bad.details.issues as Array<{ path: string }>).map((i) => i.path).sort()).toEqual([
      "maxFiles",
      "paths",
      "since",
    ]);
  });
});
