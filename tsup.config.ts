import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

// Every subpath in package.json "exports" is one entry here, so the two cannot drift apart.
const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8")) as {
  exports: Record<string, unknown>;
};
const entry: Record<string, string> = {};
for (const subpath of Object.keys(pkg.exports)) {
  if (subpath === "./package.json") continue;
  const name = subpath === "." ? "index" : subpath.slice(2);
  entry[name] = `src/${name}.ts`;
}

const common = { target: "node20", platform: "node", treeshake: true, sourcemap: false } as const;

export default defineConfig([
  {
    ...common,
    entry,
    format: ["esm", "cjs"],
    dts: true,
    clean: false, // "npm run build" clears dist first: the two builds run in parallel
    splitting: true,
  },
  // The `stowage` bin: ESM only (it uses import.meta), no types.
  { ...common, entry: { cli: "src/cli.ts" }, format: ["esm"], dts: false, clean: false, splitting: false },
]);
