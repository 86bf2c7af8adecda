/**
 * Faults of the directory source: the tree changes while it is packed (a file grows, shrinks or
 * is removed, a folder vanishes), or the path cannot be read at all. The change is made when the
 * sink has seen the first bytes, i.e. while the source is between listing a file and reading it.
 * Each checks the code, that the error names the file, and that the sink's folder is untouched.
 */
import { appendFile, mkdir, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe } from "vitest";
import { backup, directorySource, filesystemSink, type Sink } from "../../src/index.js";
import { failureOf, fault, filesUnder, tempFolders } from "./harness.js";

const freshDir = tempFolders("dir");

/** A sink that runs `change` once, when the first chunk of the body reaches it. */
function changingOnFirstBytes(inner: Sink, change: () => Promise<void>): Sink {
  return {
    ...inner,
    async write(k, body, options) {
      let changed = false;
      async function* watched() {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          if (!changed) {
            changed = true;
            await change();
          }
          yield chunk;
        }
      }
      return inner.write(k, Readable.from(watched()), options);
    },
  };
}

const MiB = 1 << 20;

/** Runs a backup of `tree` that makes `change` mid-way; returns the error and what it names. */
async function changedWhilePacked(
  setup: (tree: string) => Promise<void>,
  change: (tree: string) => Promise<void>,
  file: string | undefined,
) {
  const tree = await freshDir("tree");
  const store = await freshDir("sink");
  await setup(tree);
  const error = await failureOf(
    backup({
      job: "dir",
      source: directorySource({ path: tree }),
      sink: changingOnFirstBytes(filesystemSink({ root: store }), () => change(tree)),
    }),
  );
  const details = (error as { details?: { file?: unknown } }).details;
  const leftovers = [
    ...(await filesUnder(store)),
    ...(file !== undefined && details?.file !== file
      ? [`the error names ${String(details?.file)}, not ${file}`]
      : []),
  ];
  return { error, code: "SOURCE_FAILED", leftovers };
}

describe("directory source", () => {
  // "big" is packed first (sorted order): it is listed and being read when the sink sees bytes.
  for (const by of [1, 4096, 3 * MiB]) {
    fault("directory", `a file grows by ${by} B while it is packed`, () =>
      changedWhilePacked(
        (tree) => writeFile(join(tree, "big.bin"), Buffer.alloc(16 * MiB, 1)),
        (tree) => appendFile(join(tree, "big.bin"), Buffer.alloc(by, 2)),
        "big.bin",
      ),
    );
  }
  for (const to of [0, 1, 8 * MiB]) {
    fault("directory", `a file shrinks to ${to} B while it is packed`, () =>
      changedWhilePacked(
        (tree) => writeFile(join(tree, "big.bin"), Buffer.alloc(16 * MiB, 1)),
        (tree) => truncate(join(tree, "big.bin"), to),
        "big.bin",
      ),
    );
  }
  fault("directory", "a file is removed after the folder was listed", () =>
    changedWhilePacked(
      async (tree) => {
        await writeFile(join(tree, "a-big.bin"), Buffer.alloc(16 * MiB, 1));
        await writeFile(join(tree, "b-small.txt"), "gone soon");
      },
      (tree) => rm(join(tree, "b-small.txt")),
      "b-small.txt",
    ),
  );
  fault("directory", "a folder is removed after its parent was listed", () =>
    changedWhilePacked(
      async (tree) => {
        await writeFile(join(tree, "a-big.bin"), Buffer.alloc(16 * MiB, 1));
        await mkdir(join(tree, "b-folder"));
        await writeFile(join(tree, "b-folder", "x.txt"), "x");
      },
      (tree) => rm(join(tree, "b-folder"), { recursive: true }),
      "b-folder",
    ),
  );
  // The tests run as root, which reads through any permission bits; these paths fail for anyone.
  for (const [what, make] of [
    ["a path that does not exist", async (dir: string) => join(dir, "nowhere")],
    [
      "a path that is a file",
      async (dir: string) => {
        await writeFile(join(dir, "file"), "x");
        return join(dir, "file");
      },
    ],
    [
      "a path through a file",
      async (dir: string) => {
        await writeFile(join(dir, "file"), "x");
        return join(dir, "file", "below");
      },
    ],
  ] as const) {
    fault("directory", `unreadable path: ${what}`, async () => {
      const dir = await freshDir("bad");
      const store = await freshDir("sink");
      const error = await failureOf(
        backup({
          job: "dir",
          source: directorySource({ path: await make(dir) }),
          sink: filesystemSink({ root: store }),
        }),
      );
      return { error, code: "SOURCE_FAILED", leftovers: await filesUnder(store) };
    });
  }
});
