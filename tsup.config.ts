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

export default defineConfig({
  entry,
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  target: "node20",
  platform: "node",
  splitting: true,
  sourcemap: false,
  treeshake: true,
});
