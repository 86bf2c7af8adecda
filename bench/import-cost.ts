/**
 * `npm run bench:import` — what importing stowage costs a service at start-up: the time to import
 * the built main entry (dist/, so run `npm run build` first) in a fresh Node process, beside the
 * time to import each of its runtime dependencies alone, which shows what the entry pulls in.
 *
 *   --runs 15     fresh processes per row (default 15); the table shows the median and the fastest
 *
 * Each row is measured in its own process, from just before the dynamic `import()` to just after,
 * so Node's own start-up is not counted. Measures and reports; it never fails.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const { values } = parseArgs({ options: { runs: { type: "string", default: "15" } } });
const runs = Math.max(1, Number(values.runs));

function importMs(specifier: string): number {
  const code = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t);`;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", code], {
    cwd: root,
    encoding: "utf8",
  });
  return Number(out.trim());
}

function measure(label: string, specifier: string): string {
  importMs(specifier); // one warm-up run fills the OS file cache
  const times = Array.from({ length: runs }, () => importMs(specifier)).sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  return `| ${label} | ${median.toFixed(0)} ms | ${times[0]!.toFixed(0)} ms |`;
}

const entry = join(root, "dist", "index.js");
if (!existsSync(entry)) {
  console.error("bench:import: no dist/: run `npm run build` first");
  process.exit(1);
}
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
};
const rows = [measure('`import "stowage"` (dist/index.js)', pathToFileURL(entry).href)];
for (const dep of Object.keys(pkg.dependencies)) rows.push(measure(`\`import "${dep}"\` alone`, dep));
console.log(`Node ${process.version}, ${runs} fresh processes per row\n`);
console.log("| import | median | fastest |\n| --- | --- | --- |");
for (const row of rows) console.log(row);
