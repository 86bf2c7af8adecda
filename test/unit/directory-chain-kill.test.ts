/**
 * An incremental whose process is SIGKILLed part-way (the OOM killer, `kill -9`): it leaves no
 * artifact and no manifest, the next sweep removes its temporary file, and the next incremental
 * chains onto the full as if nothing had happened.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  aes256gcm,
  applyRetention,
  backup,
  directorySource,
  filesystemSink,
  gzip,
  listManifests,
  planRetention,
  restoreDirectoryChain,
} from "../../src/index.js";
import { tempFolders } from "../faults/harness.js";

const repo = fileURLToPath(new URL("../../", import.meta.url));
const childScript = fileURLToPath(new URL("../support/incremental-child.ts", import.meta.url));
/** Fresh temporary folders, removed after the file. */
const temp = tempFolders("chainkill");

/** Every file under `dir`, relative, sorted. */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

describe("an incremental SIGKILLed part-way", () => {
  it("leaves nothing the next sweep does not remove, and the chain goes on from the full", async () => {
    const tree = await temp("tree");
    const root = await temp("store");
    const sink = filesystemSink({ root });
    const key = randomBytes(32);
    await writeFile(join(tree, "a.txt"), "one");
    const full = await backup({
      job: "files",
      source: directorySource({ path: tree }).chainFrom({ kind: "full", sink }),
      sink,
      transforms: [gzip(), aes256gcm({ key })],
    });
    const before = await files(root);
    await writeFile(join(tree, "big.bin"), randomBytes(48 << 20));

    const child = spawn(
      process.execPath,
      ["--import", "tsx", childScript, JSON.stringify({ tree, root, job: "files" })],
      {
        cwd: repo,
        env: { ...process.env, STOWAGE_TEST_KEY: key.toString("hex") },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const output: string[] = [];
    child.stdout.on("data", (c: Buffer) => output.push(c.toString()));
    child.stderr.on("data", (c: Buffer) => output.push(c.toString()));
    const exited = new Promise((resolve) => child.once("exit", resolve));
    try {
      // Part-way: bytes of the incremental have reached the sink's temporary file.
      const deadline = Date.now() + 60_000;
      for (;;) {
        const growing = (await files(root)).filter((f) => !before.includes(f));
        const sizes = await Promise.all(
          growing.map((f) =>
            stat(join(root, f)).then(
              (s) => s.size,
              () => 0,
            ),
          ),
        );
        if (sizes.some((s) => s > 0)) break;
        if (Date.now() > deadline || output.join("").includes("done")) {
          throw new Error(`the incremental was never caught part-way: ${output.join("")}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill("SIGKILL");
      await exited;
    } finally {
      child.kill("SIGKILL");
    }
    expect(output.join("")).not.toContain("done");

    // No manifest, no artifact: the listing is the full alone.
    expect((await listManifests(sink, { job: "files" })).manifests.map((m) => m.id)).toEqual([full.id]);
    // The next sweep removes the temporary file: its writer is dead.
    const { manifests } = await listManifests(sink);
    const plan = planRetention(manifests, { keepLast: 100 }, { now: new Date() });
    await applyRetention({ sink, plan });
    expect(await files(root)).toEqual(before);

    // The chain goes on from the full.
    const inc = await backup({
      job: "files",
      source: directorySource({ path: tree }).chainFrom({
        kind: "incremental",
        base: full,
        sink,
        keys: [{ key }],
      }),
      sink,
      transforms: [gzip({ level: 1 }), aes256gcm({ key })],
    });
    expect(inc.chain?.parent?.id).toBe(full.id);
    const out = join(await temp("out"), "restored");
    await restoreDirectoryChain({ sink, manifest: inc, keys: [{ key }] }, out);
    expect((await readFile(join(out, "big.bin"))).equals(await readFile(join(tree, "big.bin")))).toBe(true);
  }, 120_000);
});
