/**
 * `npm run bench` — runs every bench module (bench/<topic>.ts exporting `run(options)`) and prints
 * one table. Modules that do not exist yet are listed as skipped.
 *
 *   --scale 0.05        sizes relative to the issues' (1 = 1 GiB and 4 GiB for core); default 1
 *   --only core,s3      run only these modules
 *   --repeat 2          measure each row this many times, alternating the sides; keep the fastest
 *                       (default: each module's own, see BenchOptions.repeat)
 *   --rows zstd-3       only the rows whose "name vs anchor" holds this text (modules that say so)
 *   --out FILE          also write the table and the machine as Markdown to FILE
 *
 * Benchmarks measure and report; they never fail a test run (the exit code is 0 unless a module
 * crashed).
 */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { BenchOptions, BenchRow } from "./lib.js";

const MODULES = ["core", "postgres", "s3", "wal", "incremental", "peers"] as const;

function machine(): Record<string, string> {
  let cpu = cpus()[0]?.model ?? "unknown";
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    cpu = /^model name\s*:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? cpu;
  } catch {
    // not Linux
  }
  const version = (cmd: string, args: string[]) => {
    try {
      return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
        .split("\n")[0]!
        .trim();
    } catch {
      return "not installed";
    }
  };
  const load = (() => {
    try {
      return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
    } catch {
      return "unknown";
    }
  })();
  return {
    date: new Date().toISOString(),
    cores: `${availableParallelism()} (nproc)`,
    cpu,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    node: process.version,
    UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "4 (default)",
    gzip: version("gzip", ["--version"]),
    pigz: version("pigz", ["--version"]),
    openssl: version("openssl", ["version"]),
    zstd: version("zstd", ["--version"]),
    "load average at start": load,
  };
}

const fmt = (n: number) => (Number.isNaN(n) ? "—" : String(n));
/** A table cell: pipes in shell commands would end the cell. */
const cell = (s: string) => s.replaceAll("|", "\\|");

function table(rows: Array<BenchRow & { module: string }>): string {
  const lines = [
    "| bench | what | stowage | anchor | anchor figure | ratio | target | result | peak RSS (MiB) | note |",
    "| --- | --- | ---: | --- | ---: | ---: | --- | --- | ---: | --- |",
  ];
  for (const r of rows) {
    const result = r.target.startsWith("info") ? "info" : r.pass ? "pass" : "**FAIL**";
    lines.push(
      `| ${r.module} | ${cell(r.name)} | ${fmt(r.stowage)} ${r.unit} | ${cell(r.anchorName)} | ${fmt(r.anchor)} ${r.unit} | ${fmt(r.ratio)} | ${cell(r.target)} | ${result} | ${r.peakRssMiB === undefined ? "—" : r.peakRssMiB} | ${cell(r.note ?? "")} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      scale: { type: "string", default: "1" },
      only: { type: "string" },
      out: { type: "string" },
      repeat: { type: "string" },
      rows: { type: "string" },
    },
  });
  const scale = Number(values.scale);
  const repeat = values.repeat === undefined ? undefined : Number(values.repeat);
  if (repeat !== undefined && !(Number.isInteger(repeat) && repeat >= 1)) {
    throw new Error(`--repeat must be a whole number of at least 1, got ${values.repeat}`);
  }
  if (!(scale > 0)) throw new Error(`--scale must be a positive number, got ${values.scale}`);
  const only = values.only?.split(",").map((s) => s.trim());
  const info = machine();
  const rows: Array<BenchRow & { module: string }> = [];
  const skipped: string[] = [];
  const started = Date.now();

  for (const name of MODULES) {
    if (only && !only.includes(name)) continue;
    const path = fileURLToPath(new URL(`./${name}.ts`, import.meta.url));
    if (!existsSync(path)) {
      skipped.push(`${name}: bench/${name}.ts does not exist yet`);
      continue;
    }
    const workDir = await mkdtemp(join(tmpdir(), `stowage-bench-${name}-`));
    const options: BenchOptions = {
      workDir,
      scale,
      ...(repeat ? { repeat } : {}),
      ...(values.rows ? { rows: values.rows } : {}),
    };
    process.stderr.write(`bench ${name}: running (scale ${scale}) in ${workDir}\n`);
    const moduleStarted = Date.now();
    try {
      const mod = (await import(`./${name}.js`)) as { run(o: BenchOptions): Promise<BenchRow[]> };
      for (const row of await mod.run(options)) rows.push({ ...row, module: name });
      process.stderr.write(`bench ${name}: done in ${Math.round((Date.now() - moduleStarted) / 1000)} s\n`);
    } catch (error) {
      process.exitCode = 1;
      skipped.push(`${name}: crashed: ${error instanceof Error ? error.message : String(error)}`);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  }

  const output = [
    `stowage benchmarks, scale ${scale}, repeat ${values.repeat ?? "each module's default"}, ${Math.round((Date.now() - started) / 1000)} s`,
    "",
    table(rows),
    "",
    ...(skipped.length > 0 ? ["Not run:", ...skipped.map((s) => `- ${s}`), ""] : []),
    "Machine:",
    ...Object.entries(info).map(([k, v]) => `- ${k}: ${v}`),
    `- load average at end: ${existsSync("/proc/loadavg") ? readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ") : "unknown"}`,
  ].join("\n");
  process.stdout.write(`${output}\n`);
  if (values.out) await writeFile(values.out, `${output}\n`);
}

await main();
