/**
 * What the bench modules share for running both sides: shell pipelines timed with their CPU (GNU
 * time), and stowage in a child process of its own (so its peak RSS is its own).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { fileURLToPath } from "node:url";
import type { ChildArgs, ChildResult } from "./core-child.js";

export const GiB = 1 << 30;
const MB = 1e6;

export interface Timed {
  seconds: number;
  /** User + system CPU of the pipeline's processes (GNU time), when /usr/bin/time exists. */
  cpuSeconds?: number;
}

const GNU_TIME = "/usr/bin/time";

/** Runs a bash pipeline with `env` added; rejects on a non-zero exit (pipefail). */
export async function shell(script: string, env: Record<string, string>, cpuFile?: string): Promise<Timed> {
  const started = process.hrtime.bigint();
  const command = `set -euo pipefail; ${script}`;
  const timed = cpuFile !== undefined && existsSync(GNU_TIME);
  const child = spawn(
    timed ? GNU_TIME : "bash",
    timed ? ["-f", "%U %S", "-o", cpuFile, "bash", "-c", command] : ["-c", command],
    { env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (code !== 0) throw new Error(`shell pipeline failed (${code}): ${script}\n${stderr}`);
  if (!timed) return { seconds };
  const [user, system] = (await readFile(cpuFile, "utf8")).trim().split(/\s+/).map(Number);
  return { seconds, cpuSeconds: (user ?? 0) + (system ?? 0) };
}

/**
 * CPU seconds and cores used (CPU / wall) of both sides. On a machine shared with other work,
 * "cores used" shows how much of the machine each side actually got while it was measured.
 */
export function cpuNote(ours: Timed & { cpuSeconds: number }, theirs: Timed): string {
  const side = (t: Timed) =>
    t.cpuSeconds === undefined ? "?" : `${round(t.cpuSeconds)} s / ${round(t.cpuSeconds / t.seconds, 2)}`;
  return `CPU (user+sys) / cores used: stowage ${side(ours)}, anchor ${side(theirs)}`;
}

/** Runs `measure` `times` times and keeps the fastest run (the one least disturbed by other load). */
export async function fastest<T extends Timed>(times: number, measure: () => Promise<T>): Promise<T> {
  let best: T | undefined;
  for (let i = 0; i < times; i++) {
    const result = await measure();
    if (!best || result.seconds < best.seconds) best = result;
  }
  return best!;
}

export async function hasCommand(name: string): Promise<boolean> {
  return shell(`command -v ${name} >/dev/null`, {}).then(
    () => true,
    () => false,
  );
}

/**
 * Bundles bench/core-child.ts into one .mjs so the measured process is plain `node` running
 * JavaScript, as in production. Falls back to `node --import tsx` (whose loader thread adds about
 * 35 MiB of RSS) when esbuild cannot be loaded.
 */
export async function childCommand(workDir: string): Promise<{ argv: string[]; how: string }> {
  const entry = fileURLToPath(new URL("./core-child.ts", import.meta.url));
  try {
    const esbuild = await import("esbuild");
    // Inside the repository, named for this run: the dependencies stowage loads at first use (zod)
    // are required from beside the bundle, as they would be from beside an installed package.
    const outfile = fileURLToPath(
      new URL(`../node_modules/.cache/stowage-bench/core-child-${basename(workDir)}.mjs`, import.meta.url),
    );
    await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      outfile,
      logLevel: "error",
      // The AWS SDK's CommonJS requires Node built-ins, which an ES module bundle must be given.
      banner: {
        js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);",
      },
    });
    return { argv: [outfile], how: "node on an esbuild bundle" };
  } catch {
    return { argv: ["--import", "tsx", entry], how: "node --import tsx (RSS includes the TS loader)" };
  }
}

export async function runChild(
  argv: string[],
  args: ChildArgs,
  key: string,
  node = process.execPath,
): Promise<ChildResult> {
  const child = spawn(node, [...argv, JSON.stringify(args)], {
    env: { ...process.env, STOWAGE_BENCH_KEY: key },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", resolve);
  });
  if (code !== 0) throw new Error(`stowage ${args.mode} child failed (${code}):\n${stderr}`);
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as ChildResult;
}

export const mbps = (bytes: number, seconds: number) => bytes / MB / seconds;
export const round = (n: number, digits = 1) => Number(n.toFixed(digits));
export const sizeName = (bytes: number) =>
  bytes >= GiB ? `${round(bytes / GiB, 2)} GiB` : `${round(bytes / (1 << 20), 0)} MiB`;

/** The AWS CLI's environment for the local S3 test server (its fixed credentials), none of the user's config. */
export const awsCliEnv = (home: string) => ({
  HOME: home,
  AWS_ACCESS_KEY_ID: "S3RVER",
  AWS_SECRET_ACCESS_KEY: "S3RVER",
  AWS_DEFAULT_REGION: "us-east-1",
  AWS_CONFIG_FILE: "/dev/null",
  AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
  AWS_REQUEST_CHECKSUM_CALCULATION: "WHEN_REQUIRED",
  AWS_RESPONSE_CHECKSUM_VALIDATION: "WHEN_REQUIRED",
});
