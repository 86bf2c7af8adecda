import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
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
