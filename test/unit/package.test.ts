import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { importPeer } from "../../src/core/peer.js";
import { isStowageError, type StowageError } from "../../src/index.js";

const repo = resolve(new URL("../..", import.meta.url).pathname);
const pkg = JSON.parse(readFileSync(join(repo, "package.json"), "utf8")) as {
  exports: Record<string, unknown>;
  dependencies: Record<string, string>;
  peerDependencies: Record<string, string>;
  peerDependenciesMeta: Record<string, { optional?: boolean }>;
};
const HEAVY = Object.keys(pkg.peerDependencies);

/** Every bare package a module reaches through its static relative imports. */
function packagesReachedFrom(entry: string): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const text = readFileSync(file, "utf8");
    // Static value imports and re-exports only: `import type` is erased, and `await import()` is
    // how adapters load optional peers.
    for (const match of text.matchAll(/^\s*(?:import|export)\b(?!\s+type\b)[^;]*?from\s+"([^"]+)"/gms)) {
      const spec = match[1]!;
      if (spec.startsWith(".")) visit(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
      else if (!spec.startsWith("node:"))
        packages.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]!);
    }
  };
  visit(entry);
  return packages;
}

describe("package shape", () => {
  it("every export subpath has its source file", () => {
    for (const subpath of Object.keys(pkg.exports)) {
      if (subpath === "./package.json") continue;
      const name = subpath === "." ? "index" : subpath.slice(2);
      expect(existsSync(join(repo, "src", `${name}.ts`)), subpath).toBe(true);
    }
  });

  it("the root entry reaches no heavy SDK, only declared dependencies", () => {
    const reached = packagesReachedFrom(join(repo, "src/index.ts"));
    expect(reached.has("croner")).toBe(true); // the scan does see packages
    for (const heavy of HEAVY) expect(reached.has(heavy), heavy).toBe(false);
    for (const name of reached) expect(Object.keys(pkg.dependencies), name).toContain(name);
  });

  it("the root entry loads tar-stream and tinyglobby only when an operation needs them", () => {
    // Importing stowage should not pay for what only a tar source, a restore or logsSource uses
    // (bench/import-cost.ts measures the import; src/core/lazy-deps.ts loads these at first use).
    const reached = packagesReachedFrom(join(repo, "src/index.ts"));
    for (const deferred of ["tar-stream", "tinyglobby"]) expect(reached.has(deferred), deferred).toBe(false);
  });

  it("no module imports zod as a value: schemas are built, and zod loaded, at their first use", () => {
    // zod was half of what `import "stowage"` cost (BENCHMARKS.md, import cost); lazySchema() in
    // src/core/options.ts defers it, so every entry must reach zod through that helper only.
    for (const subpath of Object.keys(pkg.exports)) {
      if (subpath === "./package.json") continue;
      const name = subpath === "." ? "index" : subpath.slice(2);
      expect(packagesReachedFrom(join(repo, "src", `${name}.ts`)).has("zod"), subpath).toBe(false);
    }
  });

  it("importing an entry builds no schema: zod is not loaded until an option is parsed", () => {
    // A fresh process (this one has long loaded zod): import every entry, see whether zod is in
    // the require cache (lazySchema loads it with require), then parse one option and look again.
    const entries = Object.keys(pkg.exports)
      .filter((subpath) => subpath !== "./package.json")
      .map((subpath) => join(repo, "src", `${subpath === "." ? "index" : subpath.slice(2)}.ts`));
    const code = `
      import { createRequire } from "node:module";
      const loaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => /[\\/]node_modules[\\/]zod[\\/]/.test(k));
      const mods = [];
      for (const entry of ${JSON.stringify(entries)}) mods.push(await import(entry));
      const atImport = loaded();
      try { mods[0].gzip({ level: 99 }); } catch (e) { if (e.code !== "CONFIG_INVALID") throw e; }
      console.log(JSON.stringify({ atImport, afterParse: loaded() }));`;
    const out = execFileSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", code], {
      cwd: repo,
      encoding: "utf8",
    });
    expect(JSON.parse(out.trim().split("\n").pop()!)).toEqual({ atImport: false, afterParse: true });
  });

  it("no subpath entry imports a heavy SDK statically: importing it works without the SDK installed", () => {
    for (const subpath of Object.keys(pkg.exports)) {
      if (subpath === "./package.json") continue;
      const name = subpath === "." ? "index" : subpath.slice(2);
      const reached = packagesReachedFrom(join(repo, "src", `${name}.ts`));
      for (const heavy of HEAVY) expect(reached.has(heavy), `${subpath} reaches ${heavy}`).toBe(false);
    }
  });

  it("a missing optional peer is UNSUPPORTED naming the package, at first use", async () => {
    const missing = "stowage-test-no-such-package";
    const error = await importPeer(missing, "testSink", () => import(/* @vite-ignore */ missing)).catch(
      (e: unknown) => e,
    );
    expect(isStowageError(error, "UNSUPPORTED")).toBe(true);
    expect((error as StowageError).details.package).toBe(missing);
  });

  it("heavy SDKs are optional peer dependencies", () => {
    for (const name of ["pg", "pg-copy-streams", "@aws-sdk/client-s3", "@kubernetes/client-node"]) {
      expect(pkg.peerDependencies[name], name).toBeDefined();
      expect(pkg.peerDependenciesMeta[name]?.optional, name).toBe(true);
    }
  });
});
