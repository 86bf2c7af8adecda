#!/usr/bin/env node
// The package as an adopter gets it: `npm pack` of the built dist (run `npm run build` first; the
// pack skips `prepack`, which would build it again),
// installed once into a fresh temporary folder, then used from projects beside each other that
// share that install:
//   - plain ESM and CJS: every subpath imports (with no optional peer installed) and the core runs;
//   - TypeScript, strict, in node16 resolution (ESM and CJS) and bundler resolution: the README's
//     snippets, as README.md has them, and the library's own values passed to its own options,
//     typecheck against the published .d.ts / .d.cts;
//   - the README's snippets marked `<!-- snippet: run -->` run, in order, in one scratch folder.
// Each ```ts block of README.md is preceded by `<!-- snippet: run -->`, `<!-- snippet: typecheck -->`
// or `<!-- snippet: excerpt of FILE -->` (FILE is in the repository and typechecked there); a block
// without a marker fails the check. Needs only the npm registry (for the package's dependencies).
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const keep = process.argv.includes("--keep");

function fail(message) {
  console.error(`consumer-check: ${message}`);
  process.exit(1);
}
function run(command, args, cwd, env = {}) {
  try {
    return execFileSync(command, args, {
      cwd,
      env: { ...process.env, ...env },
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (error) {
    fail(`${[command, ...args].join(" ")} (in ${cwd}) failed:\n${error.stdout ?? ""}${error.stderr ?? ""}`);
  }
}
const write = (file, text) => {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, text);
};
const json = (value) => `${JSON.stringify(value, null, 2)}\n`;

/** The ```ts blocks of README.md with the marker before each. */
function readmeSnippets() {
  const text = readFileSync(join(root, "README.md"), "utf8");
  const snippets = [];
  const fence = /(?:<!-- snippet: ([^>]*?) -->\n)?```ts\n([\s\S]*?)\n```/g;
  for (const match of text.matchAll(fence)) {
    const line = text.slice(0, match.index).split("\n").length;
    const marker = match[1];
    if (!marker) fail(`README.md:${line}: a ts block without a <!-- snippet: … --> marker`);
    const excerpt = /^excerpt of (\S+)$/.exec(marker);
    if (excerpt) {
      if (!existsSync(join(root, excerpt[1]))) fail(`README.md:${line}: ${excerpt[1]} does not exist`);
      continue;
    }
    if (marker !== "run" && marker !== "typecheck") fail(`README.md:${line}: unknown marker "${marker}"`);
    snippets.push({ line, run: marker === "run", code: match[2] });
  }
  if (snippets.length === 0) fail("no snippets found in README.md");
  return snippets;
}

if (!existsSync(join(root, "dist", "index.d.ts"))) fail("no dist/: run `npm run build` first");
const started = Date.now();
const scratch = mkdtempSync(join(tmpdir(), "stowage-consumer-"));
try {
  // One pack, one install: the projects below resolve stowage from this folder's node_modules.
  const tarball = run("npm", ["pack", "--silent", "--ignore-scripts", "--pack-destination", scratch], root)
    .trim()
    .split("\n")
    .at(-1);
  write(
    join(scratch, "package.json"),
    json({ private: true, dependencies: { stowage: `file:./${tarball}` } }),
  );
  run("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"], scratch);
  const installed = readdirSync(join(scratch, "node_modules"));
  for (const peer of Object.keys(pkg.peerDependencies ?? {})) {
    if (installed.includes(peer.split("/")[0]))
      fail(`npm install stowage installed the optional peer ${peer}`);
  }

  // Plain JavaScript, ESM and CJS: every subpath loads without its optional peer.
  const subpaths = Object.keys(pkg.exports)
    .filter((s) => s !== "./package.json")
    .map((s) => (s === "." ? "stowage" : `stowage/${s.slice(2)}`));
  const smoke = (load) => `${subpaths.map((s, i) => `const m${i} = ${load(s)};`).join("\n")}
const core = m0;
const sink = core.memorySink();
const manifest = await core.backup({ job: "smoke", source: core.bytesSource({ data: "hello" }), sink,
  transforms: [core.gzip(), core.aes256gcm({ key: core.generateKey() })] });
const report = await core.verify({ sink, manifest, keys: [{ key: core.generateKey() }] });
if (report.ok || manifest.content.bytes !== 5) throw new Error("unexpected result");
console.log("ok", ${subpaths.map((_, i) => `Object.keys(m${i}).length`).join(", ")});
`;
  write(join(scratch, "esm", "package.json"), json({ type: "module" }));
  write(
    join(scratch, "esm", "smoke.js"),
    smoke((s) => `await import("${s}")`),
  );
  write(join(scratch, "cjs", "package.json"), json({ type: "commonjs" }));
  write(
    join(scratch, "cjs", "smoke.js"),
    `(async () => {\n${smoke((s) => `require("${s}")`)}})().catch((e) => { console.error(e); process.exit(1); });\n`,
  );
  run(process.execPath, ["smoke.js"], join(scratch, "esm"));
  run(process.execPath, ["smoke.js"], join(scratch, "cjs"));

  // TypeScript, strict. The library's own values fit its own options; then the README's snippets.
  // The repository's own check (test/types/own-values.ts), now against the published types.
  const ownValues = readFileSync(join(root, "test", "types", "own-values.ts"), "utf8").replace(
    /from "\.\.\/\.\.\/src\/index\.js"/g,
    'from "stowage"',
  );
  if (!ownValues.includes('from "stowage"'))
    fail("test/types/own-values.ts no longer imports the package's root");
  const snippets = readmeSnippets();
  const compilerOptions = {
    strict: true,
    target: "ES2022",
    lib: ["ES2023"],
    types: ["node"],
    typeRoots: [join(root, "node_modules", "@types")],
    skipLibCheck: false,
    noEmit: true,
  };
  const projects = {
    // This one also emits, for the run below: one compile checks and builds.
    "ts-node16": {
      type: "module",
      options: { module: "node16", moduleResolution: "node16", noEmit: false, outDir: "out" },
      snippets: true,
    },
    "ts-bundler": {
      type: "module",
      options: { module: "esnext", moduleResolution: "bundler" },
      snippets: true,
    },
    "ts-node16-cjs": { type: "commonjs", options: { module: "node16", moduleResolution: "node16" } },
  };
  for (const [name, project] of Object.entries(projects)) {
    const dir = join(scratch, name);
    write(join(dir, "package.json"), json({ type: project.type }));
    write(join(dir, "own-values.ts"), ownValues);
    const files = ["own-values.ts"];
    if (project.snippets) {
      for (const [i, s] of snippets.entries()) {
        // Each snippet is a module of its own (top-level await needs one), as a user's file is.
        write(join(dir, `readme-${i + 1}.ts`), `${s.code}\nexport {};\n`);
        files.push(`readme-${i + 1}.ts`);
      }
    }
    write(
      join(dir, "tsconfig.json"),
      json({ compilerOptions: { ...compilerOptions, ...project.options }, files }),
    );
    run(process.execPath, [tsc, "-p", "tsconfig.json"], dir);
  }

  // Run the runnable snippets in order, as the strict node16 project compiled them.
  const runDir = join(scratch, "ts-node16");
  const work = join(scratch, "work");
  write(join(work, "uploads", "a.txt"), "first file\n");
  write(join(work, "uploads", "docs", "b.txt"), randomBytes(100_000).toString("base64"));
  write(join(work, "uploads", "skip.tmp"), "left out\n");
  const env = { BACKUP_KEY: randomBytes(32).toString("hex") };
  for (const [i, s] of snippets.entries()) {
    if (!s.run) continue;
    run(process.execPath, [join(runDir, "out", `readme-${i + 1}.js`)], work, env);
  }
  const restored = readFileSync(join(work, "restored", "docs", "b.txt"), "utf8");
  if (restored !== readFileSync(join(work, "uploads", "docs", "b.txt"), "utf8")) {
    fail("the README's restore did not give back the backed-up file");
  }
  if (existsSync(join(work, "restored", "skip.tmp"))) fail("the README's exclude did not leave skip.tmp out");

  const ran = snippets.filter((s) => s.run).length;
  console.log(
    `consumer-check: ${tarball} installed once; ESM and CJS load ${subpaths.length} entries; ` +
      `${snippets.length} README snippets typecheck (node16, bundler; strict), ${ran} ran; ` +
      `${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
} finally {
  if (keep) console.log(`kept ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
}
