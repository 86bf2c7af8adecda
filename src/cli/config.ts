/** Finding and loading the config module, and picking jobs and sinks from it by name. */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isStowageError, StowageError } from "../core/errors.js";
import type { Sink } from "../core/types.js";
import { defineConfig, type StowageConfig } from "../jobs/config.js";
import type { Job } from "../jobs/job.js";
import { UsageError } from "./usage-error.js";

export const CONFIG_NAMES = [
  "stowage.config.ts",
  "stowage.config.mts",
  "stowage.config.mjs",
  "stowage.config.js",
];

/** The config module's path: `--config`, else the first default name that exists. */
export function configFile(path: string | undefined, cwd: string): string | undefined {
  return path ? resolve(cwd, path) : CONFIG_NAMES.map((n) => resolve(cwd, n)).find((p) => existsSync(p));
}

/**
 * The environment variables the config module reads (`process.env.NAME`, `process.env["NAME"]`)
 * that are unset or empty: a key taken from an unset variable surfaces as an option error of the
 * adapter (e.g. `aes256gcm`: "give exactly one of key, passphrase or recipients"), which cannot
 * know the variable's name. Names only, never values.
 */
export async function unsetVariables(file: string | undefined): Promise<string[]> {
  if (!file) return [];
  const text = await readFile(file, "utf8").catch(() => "");
  const names = new Set<string>();
  for (const m of text.matchAll(/process\.env(?:\.([A-Za-z_]\w*)|\[\s*["'`]([^"'`\]]+)["'`]\s*\])/g)) {
    names.add((m[1] ?? m[2])!);
  }
  return [...names].filter((name) => !process.env[name]);
}

/** Loads and checks the config module. @throws {CONFIG_INVALID} */
export async function loadConfig(path: string | undefined, cwd: string): Promise<StowageConfig> {
  const file = configFile(path, cwd);
  if (!file || !existsSync(file)) {
    throw new StowageError(
      "CONFIG_INVALID",
      path
        ? `config ${file} does not exist`
        : `no config: give --config or create ${CONFIG_NAMES.join(" / ")}`,
      { details: { issues: [{ path: "config", problem: "missing" }] } },
    );
  }
  let mod: Record<string, unknown>;
  try {
    if (/\.[cm]?ts$/.test(file)) {
      let tsImport: (specifier: string, parent: string) => Promise<Record<string, unknown>>;
      try {
        ({ tsImport } = await import("tsx/esm/api"));
      } catch (error) {
        throw new StowageError(
          "CONFIG_INVALID",
          `config ${file}: a TypeScript config needs tsx (npm install tsx), or write the config as .mjs`,
          { cause: error, details: { issues: [{ path: "config", problem: "tsx not installed" }] } },
        );
      }
      mod = await tsImport(pathToFileURL(file).href, import.meta.url);
    } else {
      mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    }
  } catch (error) {
    if (isStowageError(error)) throw error;
    throw new StowageError("CONFIG_INVALID", `config ${file} failed to load: ${(error as Error).message}`, {
      cause: error,
      details: { issues: [{ path: "config", problem: "does not load" }] },
    });
  }
  let value: unknown = mod.default ?? (mod.jobs !== undefined ? { jobs: mod.jobs } : undefined);
  // A CommonJS or transpiled module may nest the default export once more.
  if (
    value &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    "default" in value &&
    !("jobs" in value)
  ) {
    value = (value as { default: unknown }).default;
  }
  if (typeof value === "function") value = await (value as () => unknown)();
  if (Array.isArray(value)) value = { jobs: value };
  if (value === undefined) {
    throw new StowageError("CONFIG_INVALID", `config ${file} exports no jobs (default export or "jobs")`, {
      details: { issues: [{ path: "jobs", problem: "missing" }] },
    });
  }
  return defineConfig(value as Parameters<typeof defineConfig>[0]);
}
/** The jobs named by --job (all when none). @throws a usage error naming an unknown job */
export function selectJobs(config: StowageConfig, names: readonly string[] | undefined): Job[] {
  if (!names || names.length === 0) return [...config.jobs];
  const unknown = names.filter((n) => !config.jobs.some((j) => j.name === n));
  if (unknown.length > 0) {
    throw new UsageError(
      `no job named ${unknown.join(", ")} (jobs: ${config.jobs.map((j) => j.name).join(", ")})`,
    );
  }
  return config.jobs.filter((j) => names.includes(j.name));
}

/** The sink --from names: "primary" (the default) or a copy's name. */
export function sinkOf(job: Job, from: string | undefined): Sink {
  if (!from || from === "primary") return job.sink;
  const copy = job.copies.find((c, i) => (c.name ?? job.copies[i]!.sink.kind) === from);
  if (!copy) throw new UsageError(`job ${job.name} has no copy named ${from}`);
  return copy.sink;
}
