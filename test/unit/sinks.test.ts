import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { filesystemSink, memorySink } from "../../src/index.js";
import { sinkConformance } from "../conformance/sink.js";

sinkConformance("memory", async () => ({ sink: memorySink() }));

sinkConformance("filesystem", async () => {
  const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
  const sink = filesystemSink({ root });
  return {
    sink,
    leftovers: async () => {
      const temps: string[] = [];
      for await (const info of sink.temporaryFiles()) temps.push(info.key);
      // Also look for temp files by name, independently of the sink's own listing.
      const all = (await readdir(root, { recursive: true })) as string[];
      return [...temps, ...all.filter((p) => p.includes(".stowage-tmp-") && !temps.includes(p))];
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

describe("filesystem sink batching", () => {
  it("writes thousands of tiny chunks, batches across the 1 MiB boundary, byte for byte", async () => {
    const root = await mkdtemp(join(tmpdir(), "stowage-fs-"));
    try {
      const sink = filesystemSink({ root });
      // 5,000 chunks of 1..600 bytes (more than IOV_MAX in one batch), then one of 3 MiB.
      const chunks = Array.from({ length: 5000 }, (_, i) => randomBytes(1 + (i % 600)));
      chunks.push(randomBytes(3 << 20));
      const expected = Buffer.concat(chunks);
      await sink.write("a/tiny.bin", Readable.from(chunks));
      expect((await readFile(join(root, "a", "tiny.bin"))).equals(expected)).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
