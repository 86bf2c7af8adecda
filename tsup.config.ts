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
  // ESM: the library's entries and the `stowage` bin in one build, so they share chunks. A config
  // file that imports "stowage" then gets the very modules the bin runs on: each is loaded (and
  // compiled) once per process, which is most of what a short command such as `wal-push` costs.
  {
    ...common,
    entry: { ...entry, cli: "src/cli.ts" },
    format: ["esm"],
    dts: true,
    clean: false, // "npm run build" clears dist first: the builds run in parallel
    splitting: true,
  },
  // CommonJS for `require("stowage")`; the bin is ESM only (it uses import.meta and top-level await).
  { ...common, entry, format: ["cjs"], dts: true, clean: false, splitting: true },
]);
