import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const repo = new URL("../..", import.meta.url).pathname;

describe("npm run demo (examples/quickstart.ts)", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("backs up, verifies, restores identically and lists, twice, reusing the key it generated", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "stowage-demo-"));
    dirs.push(cwd);
    const tsx = join(repo, "node_modules/.bin/tsx");
    const args = ["--tsconfig", join(repo, "tsconfig.json"), join(repo, "examples/quickstart.ts")];
    const env = { ...process.env, STOWAGE_DEMO_KEY: "" };
    const first = await run(tsx, args, { cwd, env });
    expect(first.stdout).toContain("Verify: OK");
    expect(first.stdout).toContain("every file is identical to the original");
    expect((await stat(join(cwd, ".stowage-demo.key"))).mode & 0o777).toBe(0o600);
    const second = await run(tsx, args, { cwd, env });
    expect(second.stdout).not.toContain("Generated a new key");
    expect(second.stdout).toContain("every file is identical to the original");
    const stored = (await readdir(join(cwd, "backups"), { recursive: true })) as string[];
    expect(stored.filter((p) => p.endsWith(".tar.gz.enc"))).toHaveLength(2);
    expect(stored.filter((p) => p.endsWith(".tar.gz.enc.manifest.json"))).toHaveLength(2);
  });
});
