/**
 * The core knows no adapter: `src/core` and `src/policies` import nothing from sources, sinks or
 * transforms, except the core's static name → decoder map of the built-in transforms
 * (`src/core/codecs.ts`), which a manifest that names them needs in order to restore. `src/jobs`
 * restores through the RestoreTarget contract and imports no source. And no module
 * of `src` imports itself round a cycle, which could leave that map's decoders uninitialised.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const src = resolve(fileURLToPath(new URL("../../src", import.meta.url)));
const ADAPTERS = ["sources", "sinks", "transforms"];
/** The one written exception, and the only folder it may reach. */
const EXCEPTION = { file: "core/codecs.ts", reaches: "transforms" };

const files = readdirSync(src, { recursive: true, encoding: "utf8" })
  .filter((f) => f.endsWith(".ts"))
  .map((f) => f.split(sep).join("/"));

/** Relative modules a file imports, as paths under src: values only, or type imports too. */
function importsOf(file: string, withTypes: boolean): string[] {
  const text = readFileSync(join(src, file), "utf8");
  const pattern = withTypes
    ? /^\s*(?:import|export)\b[^;]*?from\s+"(\.[^"]+)"|import\(\s*"(\.[^"]+)"\s*\)/gms
    : /^\s*(?:import|export)\b(?!\s+type\b)[^;]*?from\s+"(\.[^"]+)"/gms;
  return [...text.matchAll(pattern)].map((m) =>
    relative(src, resolve(dirname(join(src, file)), (m[1] ?? m[2])!.replace(/\.js$/, ".ts")))
      .split(sep)
      .join("/"),
  );
}

describe("layering", () => {
  it("src/core and src/policies import no source, sink or transform, but for the decoder map", () => {
    const crossings: string[] = [];
    for (const file of files.filter((f) => f.startsWith("core/") || f.startsWith("policies/"))) {
      for (const target of importsOf(file, true)) {
        const folder = target.split("/")[0]!;
        if (!ADAPTERS.includes(folder)) continue;
        if (file === EXCEPTION.file && folder === EXCEPTION.reaches) continue;
        crossings.push(`${file} -> ${target}`);
      }
    }
    expect(crossings).toEqual([]);
    // The exception is still there, and still reaches only transforms.
    expect(importsOf(EXCEPTION.file, true).filter((t) => t.startsWith("transforms/")).length).toBeGreaterThan(
      0,
    );
  });

  it("src/jobs imports no source module, not even its types", () => {
    const crossings = files
      .filter((f) => f.startsWith("jobs/"))
      .flatMap((file) => importsOf(file, true).map((target) => `${file} -> ${target}`))
      .filter((edge) => edge.split(" -> ")[1]!.startsWith("sources/"));
    expect(crossings).toEqual([]);
  });

  it("no module of src imports itself through a cycle of value imports", () => {
    const graph = new Map(files.map((f) => [f, importsOf(f, false)]));
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const path: string[] = [];
    const visit = (file: string) => {
      state.set(file, "open");
      path.push(file);
      for (const next of graph.get(file) ?? []) {
        if (state.get(next) === "open") cycles.push([...path.slice(path.indexOf(next)), next].join(" -> "));
        else if (!state.has(next)) visit(next);
      }
      path.pop();
      state.set(file, "done");
    };
    for (const file of files) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });
});
