/**
 * A clone must pass its tests with nothing beside it: no file the tests, sources, scripts,
 * benchmarks or examples use may reach for a path outside the checkout (a sibling folder that only
 * a developer's machine has). CI also runs the suite in a fresh clone in an empty folder; this
 * guard says which file and which path, before that run fails for a reason harder to see.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const root = resolve(fileURLToPath(new URL("../..", import.meta.url)));
const scanned = ["src", "test", "scripts", "bench", "examples", ".ci", "vitest.config.ts", "tsup.config.ts"];
const textFile = /\.(ts|mts|cts|js|mjs|cjs|json|sh|ya?ml)$|(^|\/)run$/;

/** Relative path literals in `text` that, resolved from `fromDir`, lead outside `top`. */
function pathsLeaving(text: string, fromDir: string, top: string): string[] {
  const out: string[] = [];
  for (const match of text.matchAll(/(?<=["'`])((?:\.\.\/)+[\w.@/-]*)/g)) {
    const literal = match[1]!;
    const target = resolve(fromDir, literal);
    if (target !== top && !target.startsWith(top + sep)) out.push(literal);
  }
  return out;
}

function* files(at: string): Generator<string> {
  const stats = statSync(at);
  if (stats.isFile()) {
    if (textFile.test(at)) yield at;
    return;
  }
  for (const entry of readdirSync(at, { withFileTypes: true })) {
    if (entry.name === "node_modules" || entry.name === "out" || entry.name.startsWith(".cache")) continue;
    yield* files(join(at, entry.name));
  }
}

describe("the checkout is self-contained", () => {
  it("the guard sees a path that leaves the checkout, and not one that stays inside", () => {
    const fromDir = join(root, "test", "unit");
    expect(pathsLeaving('new URL("../../../outside/data/x.json", import.meta.url)', fromDir, root)).toEqual([
      "../../../outside/data/x.json",
    ]);
    expect(pathsLeaving('import { x } from "../../src/index.js";', fromDir, root)).toEqual([]);
    // A key that merely contains "../" (a test of unsafe keys) is not a path this file reads.
    expect(pathsLeaving('const unsafe = "r/2026/../../../x";', fromDir, root)).toEqual([]);
  });

  it("no file reads a path outside the checkout", () => {
    const offenders: string[] = [];
    for (const top of scanned) {
      const at = join(root, top);
      try {
        statSync(at);
      } catch {
        continue;
      }
      for (const file of files(at)) {
        if (file === fileURLToPath(import.meta.url)) continue; // its own self-test names one
        const found = pathsLeaving(readFileSync(file, "utf8"), dirname(file), root);
        offenders.push(...found.map((p) => `${relative(root, file)}: ${p}`));
      }
    }
    expect(offenders).toEqual([]);
  });
});
