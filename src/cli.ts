#!/usr/bin/env node
/**
 * The `stowage` command, for scripts and Kubernetes CronJobs:
 *
 *   stowage run|verify|status|restore|prune|drill [--config stowage.config.ts] [options]
 *   stowage keygen [--out identity.txt]
 *
 * Exit codes a script can rely on: 0 all good; 1 a job (backup, copy, verify, drill...) failed or
 * the status is failing; 2 the command line or the config is bad (nothing was run).
 *
 * The config module (`stowage.config.ts`, `.mts`, `.mjs` or `.js`, looked up in the working
 * folder) default-exports `defineConfig({ jobs, audit?, ... })`, a list of jobs, or a function
 * returning either; a named `jobs` export works too. A TypeScript config is loaded through tsx.
 */
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync, realpathSync } from "node:fs";
import { link, open, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable, Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { listManifests } from "./core/catalog.js";
import { isStowageError, StowageError, wrapError } from "./core/errors.js";
import { extractTar } from "./core/extract-tar.js";
import type { Manifest } from "./core/manifest.js";
import { restore, verify } from "./core/restore.js";
import type { BackupProgress, Sink } from "./core/types.js";
import { VERSION } from "./core/version.js";
import { type AuditTrail, errorCode, manifestFacts } from "./jobs/audit.js";
import { defineConfig, type StowageConfig } from "./jobs/config.js";
import { type CycleResult, pruneJob, type RetentionResult, runJobs } from "./jobs/cycle.js";
import { type DrillReport, restoreDrill } from "./jobs/drill.js";
import type { Job } from "./jobs/job.js";
import { formatPrometheus } from "./policies/prometheus.js";
import { selectBackup } from "./policies/select.js";
import { formatBytes, formatDuration, formatStatusText, summarize } from "./policies/status.js";
import { generateKeyPair } from "./transforms/aes-256-gcm.js";

/** Exit codes. */
export const EXIT = { ok: 0, failed: 1, badConfig: 2 } as const;

const CONFIG_NAMES = ["stowage.config.ts", "stowage.config.mts", "stowage.config.mjs", "stowage.config.js"];

const HELP = `stowage ${VERSION} — automated, verifiable backups

Usage: stowage <command> [--config <file>] [options]

Commands:
  run       run every job (or --job ...): backup, copies, retention, validation
  verify    re-read the latest backup of each job in each sink and check it (--all: every backup)
  status    the status report (--json, or --prometheus for the exposition text)
  restore   restore a job's latest backup (--at <time>) to --out <file|-> or --extract <dir>
            (an existing --out file is replaced only with --force)
  prune     apply retention now (--dry-run to only show what would go)
  drill     restore drill of a job into its scratch target (--report <file> writes the JSON)
  keygen    a new key pair for write-only backups (--out <file> keeps the identity out of stdout)

Options:
  --config <file>   the config module (default: ./stowage.config.{ts,mts,mjs,js})
  --job <name>      only this job (repeatable)
  --json            machine-readable output
  --no-progress     no progress bar (it is shown only on a terminal anyway)
  --no-prune        run: skip retention
  --from <copy>     verify/restore/drill: use this copy's sink instead of the primary
  --force           restore: replace an existing --out file (atomically, once the restore is whole)

Exit codes: 0 all good, 1 some job failed, 2 bad command line or config.
With --json, a failure is printed as {"ok": false, "error": {"code", "message", ...}}.
`;

class UsageError extends Error {}

interface Io {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  cwd: string;
  signal: AbortSignal;
}

const OPTIONS = {
  config: { type: "string", short: "c" },
  job: { type: "string", short: "j", multiple: true },
  json: { type: "boolean", default: false },
  prometheus: { type: "boolean", default: false },
  progress: { type: "boolean", default: true },
  "no-progress": { type: "boolean", default: false },
  prune: { type: "boolean", default: true },
  "no-prune": { type: "boolean", default: false },
  "dry-run": { type: "boolean", default: false },
  all: { type: "boolean", default: false },
  at: { type: "string" },
  from: { type: "string" },
  out: { type: "string", short: "o" },
  extract: { type: "string" },
  report: { type: "string" },
  force: { type: "boolean", default: false },
  concurrency: { type: "string" },
  help: { type: "boolean", short: "h", default: false },
  version: { type: "boolean", short: "v", default: false },
} as const;

type Flags = ReturnType<typeof parseFlags>["values"];

function parseFlags(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** The config module's path: `--config`, else the first default name that exists. */
function configFile(path: string | undefined, cwd: string): string | undefined {
  return path ? resolve(cwd, path) : CONFIG_NAMES.map((n) => resolve(cwd, n)).find((p) => existsSync(p));
}

/**
 * The environment variables the config module reads (`process.env.NAME`, `process.env["NAME"]`)
 * that are unset or empty: a key taken from an unset variable surfaces as an option error of the
 * adapter (e.g. `aes256gcm`: "give exactly one of key, passphrase or recipients"), which cannot
 * know the variable's name. Names only, never values.
 */
async function unsetVariables(file: string | undefined): Promise<string[]> {
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
      { details: { issues: [{ option: "config", problem: "missing" }] } },
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
          { cause: error, details: { issues: [{ option: "config", problem: "tsx not installed" }] } },
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
      details: { issues: [{ option: "config", problem: "does not load" }] },
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
      details: { issues: [{ option: "jobs", problem: "missing" }] },
    });
  }
  return defineConfig(value as Parameters<typeof defineConfig>[0]);
}

function selectJobs(config: StowageConfig, names: readonly string[] | undefined): Job[] {
  if (!names || names.length === 0) return [...config.jobs];
  const unknown = names.filter((n) => !config.jobs.some((j) => j.name === n));
  if (unknown.length > 0) {
    throw new UsageError(
      `no job named ${unknown.join(", ")} (jobs: ${config.jobs.map((j) => j.name).join(", ")})`,
    );
  }
  return config.jobs.filter((j) => names.includes(j.name));
}

function sinkOf(job: Job, from: string | undefined): Sink {
  if (!from || from === "primary") return job.sink;
  const copy = job.copies.find((c, i) => (c.name ?? job.copies[i]!.sink.kind) === from);
  if (!copy) throw new UsageError(`job ${job.name} has no copy named ${from}`);
  return copy.sink;
}

/** A one-line progress bar on a terminal; nothing otherwise. */
function progressBar(io: Io, enabled: boolean) {
  const on = enabled && io.stderr.isTTY === true;
  let shown = false;
  return {
    update(label: string, p: { bytes: number; elapsedMs: number; total?: number }) {
      if (!on) return;
      const rate = p.elapsedMs > 0 ? (p.bytes / p.elapsedMs) * 1000 : 0;
      const width = 24;
      const bar =
        p.total && p.total > 0
          ? `[${"#".repeat(Math.round((Math.min(p.bytes, p.total) / p.total) * width)).padEnd(width, ".")}] `
          : "";
      io.stderr.write(`\r\x1b[K${label} ${bar}${formatBytes(p.bytes)}  ${formatBytes(rate)}/s`);
      shown = true;
    },
    done() {
      if (on && shown) io.stderr.write("\r\x1b[K");
      shown = false;
    },
  };
}

function print(io: Io, text: string): void {
  io.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

function cycleText(cycle: CycleResult): string {
  const lines = cycle.jobs.map((j) => {
    const mark = j.status === "succeeded" ? "ok  " : "FAIL";
    const size = j.manifest ? `${formatBytes(j.bytes.plain)} -> ${formatBytes(j.bytes.stored)}` : "-";
    const copies = j.copies.map((c) => `${c.target}:${c.status}`).join(" ");
    const pruned = j.retention.map((r) => `${r.target}:-${r.deleted.length}`).join(" ");
    const head = `${mark} ${j.job.padEnd(24)} ${size.padEnd(24)} ${formatDuration(j.durations.totalMs).padEnd(8)}${
      copies ? ` copies ${copies}` : ""
    }${pruned ? ` pruned ${pruned}` : ""}`;
    const errors = j.errors.map(
      (e) => `       ${e.stage}${e.target ? `(${e.target})` : ""} ${e.code}: ${e.message}`,
    );
    return [head, ...errors].join("\n");
  });
  for (const e of cycle.errors) lines.push(`FAIL cycle ${e.stage} ${e.code}: ${e.message}`);
  lines.push(`${cycle.succeeded}/${cycle.jobs.length} jobs succeeded in ${formatDuration(cycle.durationMs)}`);
  return lines.join("\n");
}

async function recordAudit(audit: AuditTrail | undefined, entry: Parameters<AuditTrail["record"]>[0]) {
  await audit?.record(entry);
}

async function cmdRun(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const jobs = selectJobs(config, flags.job);
  const bar = progressBar(io, flags.progress && !flags["no-progress"]);
  let concurrency = config.concurrency;
  if (flags.concurrency !== undefined) {
    concurrency = Number(flags.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new UsageError("--concurrency must be a positive integer");
  }
  const cycle = await runJobs(jobs, {
    concurrency,
    signal: io.signal,
    timeZone: config.timeZone,
    retention: flags.prune && !flags["no-prune"],
    ...(config.audit ? { audit: config.audit } : {}),
    ...(config.logger ? { logger: config.logger } : {}),
    onProgress: (job: string, p: BackupProgress) =>
      p.done ? bar.done() : bar.update(`${job} backup`, { bytes: p.bytesRead, elapsedMs: p.elapsedMs }),
  });
  bar.done();
  print(io, flags.json ? JSON.stringify(cycle, null, 2) : cycleText(cycle));
  return cycle.ok ? EXIT.ok : EXIT.failed;
}

interface VerifyLine {
  job: string;
  sink: string;
  key?: string;
  id?: string;
  status: "ok" | "failed" | "skipped" | "missing";
  problems: string[];
  plainChecked?: boolean;
}

async function cmdVerify(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const jobs = selectJobs(config, flags.job);
  const lines: VerifyLine[] = [];
  for (const job of jobs) {
    const targets: Array<{ name: string; sink: Sink }> = flags.from
      ? [{ name: flags.from, sink: sinkOf(job, flags.from) }]
      : [
          { name: "primary", sink: job.sink },
          ...job.copies.map((c, i) => ({ name: c.name ?? job.copies[i]!.sink.kind, sink: c.sink })),
        ];
    for (const { name, sink } of targets) {
      if (sink.capabilities.readLatency === "hours") {
        lines.push({
          job: job.name,
          sink: name,
          status: "skipped",
          problems: ["archive: restore before verifying"],
        });
        continue;
      }
      let manifests: Manifest[];
      let invalid: Array<{ key: string; error: StowageError }>;
      try {
        ({ manifests, invalid } = await listManifests(sink, { job: job.name, signal: io.signal }));
      } catch (error) {
        lines.push({ job: job.name, sink: name, status: "failed", problems: [errorCode(error)] });
        continue;
      }
      for (const bad of invalid) {
        lines.push({ job: job.name, sink: name, key: bad.key, status: "failed", problems: [bad.error.code] });
      }
      const chosen = flags.all
        ? manifests
        : [selectBackup(manifests, { job: job.name })].filter((m) => m !== undefined);
      if (chosen.length === 0)
        lines.push({ job: job.name, sink: name, status: "missing", problems: ["NOT_FOUND"] });
      for (const manifest of chosen) {
        const t0 = Date.now();
        try {
          const report = await verify({ sink, manifest, keys: job.keys, signal: io.signal });
          lines.push({
            job: job.name,
            sink: name,
            key: manifest.artifact.key,
            id: manifest.id,
            status: report.ok ? "ok" : "failed",
            problems: report.problems.map((p) => p.code),
            plainChecked: report.plain !== undefined,
          });
          await recordAudit(config.audit, {
            action: "verify",
            ...manifestFacts(manifest),
            sink: sink.kind,
            result: report.ok ? "ok" : "failed",
            ...(report.ok ? {} : { error: report.problems[0]?.code ?? "INTEGRITY_MISMATCH" }),
            durationMs: Date.now() - t0,
          });
        } catch (error) {
          lines.push({
            job: job.name,
            sink: name,
            key: manifest.artifact.key,
            status: "failed",
            problems: [errorCode(error)],
          });
          await recordAudit(config.audit, {
            action: "verify",
            ...manifestFacts(manifest),
            result: "failed",
            error: errorCode(error),
          });
        }
      }
    }
  }
  await config.audit?.flush();
  const failed = lines.filter((l) => l.status === "failed" || l.status === "missing");
  if (flags.json) print(io, JSON.stringify({ ok: failed.length === 0, results: lines }, null, 2));
  else {
    for (const l of lines) {
      const what = l.key ?? "(no backup)";
      const extra =
        l.problems.length > 0
          ? `  ${l.problems.join(", ")}`
          : l.plainChecked
            ? "  (decrypted and checked)"
            : "";
      print(io, `${l.status.toUpperCase().padEnd(7)} ${l.job}@${l.sink}  ${what}${extra}`);
    }
  }
  return failed.length === 0 ? EXIT.ok : EXIT.failed;
}

async function cmdStatus(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const jobs = selectJobs(config, flags.job);
  const manifests: Manifest[] = [];
  const invalid: Array<{ key: string; error: StowageError }> = [];
  for (const job of jobs) {
    const listing = await listManifests(job.sink, { job: job.name, signal: io.signal });
    manifests.push(...listing.manifests);
    invalid.push(...listing.invalid);
  }
  // The RPO: the config's, else each job's own `rules.maxAge`.
  const rpo: Record<string, string> = {};
  for (const job of jobs) {
    const own = typeof job.rules?.maxAge === "string" ? job.rules.maxAge : undefined;
    const configured = config.status?.rpo;
    const value = typeof configured === "string" ? configured : (configured?.[job.name] ?? own);
    if (value) rpo[job.name] = value;
  }
  // Rules for the compliance figures: the config's, else the jobs' when they all agree.
  const shared = new Set(jobs.map((j) => JSON.stringify(j.rules ?? null)));
  const rules = config.status?.rules ?? (shared.size === 1 ? jobs[0]?.rules : undefined);
  const report = summarize(manifests, {
    now: new Date(),
    rpo,
    invalid,
    jobs: jobs.map((j) => j.name),
    ...(rules ? { rules } : {}),
  });
  if (flags.prometheus) io.stdout.write(formatPrometheus(report));
  else if (flags.json) print(io, JSON.stringify(report, null, 2));
  else io.stdout.write(formatStatusText(report));
  return report.overall.status === "failing" ? EXIT.failed : EXIT.ok;
}

async function cmdRestore(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const [name, ...more] = flags.job ?? [];
  if (!name || more.length > 0) throw new UsageError("restore needs exactly one --job");
  if (!flags.out === !flags.extract)
    throw new UsageError("restore needs one of --out <file|-> or --extract <dir>");
  const [job] = selectJobs(config, [name]);
  const sink = sinkOf(job!, flags.from);
  const outPath = flags.out && flags.out !== "-" ? resolve(io.cwd, flags.out) : undefined;
  if (outPath) await checkOut(outPath, flags.force);
  const { manifests } = await listManifests(sink, { job: name, signal: io.signal });
  const manifest = selectBackup(manifests, { job: name, ...(flags.at ? { at: flags.at } : {}) });
  if (!manifest) {
    throw new StowageError(
      "NOT_FOUND",
      `job ${name} has no backup${flags.at ? ` at or before ${flags.at}` : ""}`,
      {
        details: { job: name },
      },
    );
  }
  if (flags.out === "-" && io.stdout.isTTY)
    throw new UsageError("refusing to write a backup to a terminal; use --out <file>");
  const bar = progressBar(io, flags.progress && !flags["no-progress"]);
  const t0 = Date.now();
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _e, cb) {
      bytes += chunk.length;
      bar.update(`restore ${name}`, { bytes, elapsedMs: Date.now() - t0, total: manifest.content.bytes });
      cb(null, chunk);
    },
  });
  try {
    const plain = await restore({ sink, manifest, keys: job!.keys, signal: io.signal });
    let summary: string;
    if (flags.extract) {
      const metered = Readable.from(
        (async function* () {
          for await (const chunk of plain) {
            bytes += (chunk as Buffer).length;
            bar.update(`restore ${name}`, {
              bytes,
              elapsedMs: Date.now() - t0,
              total: manifest.content.bytes,
            });
            yield chunk as Buffer;
          }
        })(),
      );
      const result = await extractTar(metered, resolve(io.cwd, flags.extract), { signal: io.signal });
      summary = `${result.files} files into ${result.directory}`;
    } else if (flags.out === "-") {
      await pipeline(plain, meter, io.stdout, { signal: io.signal, end: false });
      summary = "to stdout";
    } else {
      const path = outPath!;
      await writeAtomically(path, flags.force, io.signal, (out) =>
        pipeline(plain, meter, out, { signal: io.signal }),
      );
      summary = `to ${path}`;
    }
    bar.done();
    await recordAudit(config.audit, {
      action: "restore",
      ...manifestFacts(manifest),
      result: "ok",
      durationMs: Date.now() - t0,
    });
    await config.audit?.flush();
    const info = {
      ok: true,
      job: name,
      id: manifest.id,
      key: manifest.artifact.key,
      bytes,
      startedAt: manifest.startedAt,
    };
    if (flags.out !== "-") {
      print(
        io,
        flags.json
          ? JSON.stringify(info, null, 2)
          : `restored ${manifest.artifact.key} (${formatBytes(bytes)}) ${summary}`,
      );
    }
    return EXIT.ok;
  } catch (error) {
    bar.done();
    await recordAudit(config.audit, {
      action: "restore",
      ...manifestFacts(manifest),
      result: "failed",
      error: errorCode(error),
      durationMs: Date.now() - t0,
    }).catch(() => undefined);
    await config.audit?.flush().catch(() => undefined);
    throw error;
  }
}

/** An option that names an existing file or folder: CONFIG_INVALID, nothing was run. */
function outExists(path: string, problem: string): StowageError {
  return new StowageError("CONFIG_INVALID", `--out ${path} ${problem}`, {
    details: { path, issues: [{ option: "--out", problem }] },
  });
}

/** Refuses an --out that exists (unless `force`) or is a folder, before anything is restored. */
async function checkOut(path: string, force: boolean): Promise<void> {
  const info = await stat(path).catch(() => undefined);
  if (info?.isDirectory()) throw outExists(path, "is a folder; give a file name (or --extract <dir>)");
  if (info && !force) throw outExists(path, "exists; give --force to replace it");
}

/**
 * Writes a file whole or not at all: `write` fills a temporary file (0600) beside `path`, which is
 * synced and then renamed over `path` (`force`) or hard-linked to it (which refuses an existing
 * file, so a file that appeared meanwhile is not replaced). On any failure the temporary file is
 * removed and `path` is as it was.
 * @throws {CONFIG_INVALID} `path` exists and `force` is not set.
 * @throws {RESTORE_FAILED} the file could not be written; the error of `write` as it is.
 */
async function writeAtomically(
  path: string,
  force: boolean,
  signal: AbortSignal,
  write: (out: Writable) => Promise<void>,
): Promise<void> {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString("hex")}.stowage-tmp`);
  const fail = (error: unknown) =>
    isStowageError(error)
      ? error
      : wrapError(error, "RESTORE_FAILED", `restore: writing ${path}`, { path }, signal);
  let placed = false;
  try {
    try {
      await write(createWriteStream(temp, { flags: "wx", mode: 0o600 }));
      const handle = await open(temp, "r+");
      await handle.sync().finally(() => handle.close());
      if (force) await rename(temp, path);
      else {
        await link(temp, path).catch(async (error: NodeJS.ErrnoException) => {
          // A filesystem without hard links: check, then rename (a race remains, a narrow one).
          if (error.code === "EEXIST" || existsSync(path)) throw error;
          await rename(temp, path);
        });
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "EEXIST") {
        throw outExists(path, "exists; give --force to replace it");
      }
      throw fail(error);
    }
    placed = true;
  } finally {
    // After a link the temporary name goes; after a failure, the temporary file does.
    if (!placed || !force) await unlink(temp).catch(() => undefined);
  }
}

async function cmdPrune(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const jobs = selectJobs(config, flags.job);
  const out: Array<{ job: string; results: RetentionResult[] }> = [];
  for (const job of jobs) {
    const results = await pruneJob(job, {
      signal: io.signal,
      dryRun: flags["dry-run"],
      timeZone: config.timeZone,
      ...(config.audit ? { audit: config.audit } : {}),
      ...(config.logger ? { logger: config.logger } : {}),
    });
    out.push({ job: job.name, results });
  }
  await config.audit?.flush();
  const failed = out.some((o) => o.results.some((r) => r.status === "failed"));
  if (flags.json) print(io, JSON.stringify({ ok: !failed, dryRun: flags["dry-run"], jobs: out }, null, 2));
  else {
    for (const { job, results } of out) {
      if (results.length === 0) print(io, `${job}: no retention policy`);
      for (const r of results) {
        const verb = flags["dry-run"] ? "would delete" : "deleted";
        print(
          io,
          `${r.status === "failed" ? "FAIL" : "ok  "} ${job}@${r.target}: kept ${r.kept}, ${verb} ${r.deleted.length}${
            r.error ? `  ${r.error.code}: ${r.error.message}` : ""
          }`,
        );
        for (const key of r.deleted) print(io, `       ${key}`);
      }
    }
  }
  return failed ? EXIT.failed : EXIT.ok;
}

async function cmdDrill(config: StowageConfig, flags: Flags, io: Io): Promise<number> {
  const jobs = selectJobs(config, flags.job).filter((j) => j.drill !== undefined);
  if (jobs.length === 0) throw new UsageError("no job has a drill: give a job `drill: { target, check? }`");
  const reports: DrillReport[] = [];
  for (const job of jobs) {
    const drill = job.drill as Record<string, unknown>;
    reports.push(
      await restoreDrill({
        ...drill,
        job,
        ...(flags.from ? { sink: sinkOf(job, flags.from) } : {}),
        ...(config.audit ? { audit: config.audit } : {}),
        ...(config.logger ? { logger: config.logger } : {}),
        signal: io.signal,
      } as Parameters<typeof restoreDrill>[0]),
    );
  }
  const output = reports.length === 1 ? reports[0] : reports;
  if (flags.report) await writeFile(resolve(io.cwd, flags.report), `${JSON.stringify(output, null, 2)}\n`);
  if (flags.json) print(io, JSON.stringify(output, null, 2));
  else {
    for (const r of reports) {
      print(
        io,
        `${r.ok ? "ok  " : "FAIL"} drill ${r.job} (${r.target}): backup ${r.backup?.id ?? "-"}, RPO ${
          r.rpoMs === null ? "-" : formatDuration(r.rpoMs)
        }, RTO ${r.rtoMs === null ? "-" : formatDuration(r.rtoMs)}`,
      );
      for (const e of r.errors) print(io, `       ${e.stage} ${e.code}: ${e.message}`);
    }
  }
  return reports.every((r) => r.ok) ? EXIT.ok : EXIT.failed;
}

async function cmdKeygen(flags: Flags, io: Io): Promise<number> {
  const pair = generateKeyPair();
  if (flags.out) {
    const path = resolve(io.cwd, flags.out);
    // "wx": never overwrite an identity that may be the only key to existing backups.
    await writeFile(path, `# stowage identity for recipient ${pair.recipient}\n${pair.identity}\n`, {
      mode: 0o600,
      flag: "wx",
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== "EEXIST") throw error;
      throw outExists(path, "exists; an identity file is never replaced");
    });
    if (flags.json)
      print(io, JSON.stringify({ recipient: pair.recipient, id: pair.id, identityFile: path }, null, 2));
    else print(io, `recipient: ${pair.recipient}\nidentity written to ${path} (mode 0600)`);
    return EXIT.ok;
  }
  if (flags.json) print(io, JSON.stringify(pair, null, 2));
  else {
    print(
      io,
      `# recipient (public: give it to the backup host)\n${pair.recipient}\n# identity (secret: keep it in your secret store; it restores)\n${pair.identity}`,
    );
  }
  return EXIT.ok;
}

/**
 * Runs the CLI with the given arguments and streams; resolves to the exit code. Embeddable and
 * testable: it neither exits the process nor installs handlers (the bin below does).
 */
export async function main(argv: string[], io: Io): Promise<number> {
  let flags: Flags;
  let command: string | undefined;
  try {
    const parsed = parseFlags(argv);
    flags = parsed.values;
    [command] = parsed.positionals;
    if (parsed.positionals.length > 1) throw new UsageError(`unexpected argument ${parsed.positionals[1]}`);
  } catch (error) {
    io.stderr.write(`stowage: ${(error as Error).message}\n\n${HELP}`);
    return EXIT.badConfig;
  }
  if (flags.version) {
    print(io, VERSION);
    return EXIT.ok;
  }
  if (flags.help || !command) {
    (command || flags.help ? io.stdout : io.stderr).write(HELP);
    return flags.help ? EXIT.ok : EXIT.badConfig;
  }
  const commands = ["run", "verify", "status", "restore", "prune", "drill", "keygen"];
  if (!commands.includes(command)) {
    io.stderr.write(`stowage: unknown command ${command}\n\n${HELP}`);
    return EXIT.badConfig;
  }
  try {
    if (command === "keygen") return await cmdKeygen(flags, io);
    const config = await loadConfig(flags.config, io.cwd);
    switch (command) {
      case "run":
        return await cmdRun(config, flags, io);
      case "verify":
        return await cmdVerify(config, flags, io);
      case "status":
        return await cmdStatus(config, flags, io);
      case "restore":
        return await cmdRestore(config, flags, io);
      case "prune":
        return await cmdPrune(config, flags, io);
      default:
        return await cmdDrill(config, flags, io);
    }
  } catch (error) {
    return await reportError(error, command, flags, io);
  }
}

type Issue = { option: string; problem: string };

/**
 * Prints a failure: `stowage: CODE: message` and one line per issue on stderr; with `--json` also
 * `{ "ok": false, "error": { code, message, issues?, unsetVariables? } }` on stdout (on stderr
 * instead when stdout carries a restore). Resolves to the exit code: 2 for a bad command line or
 * config (nothing was run), 1 otherwise.
 */
async function reportError(error: unknown, command: string, flags: Flags, io: Io): Promise<number> {
  const usage = error instanceof UsageError;
  const code = usage ? "USAGE" : isStowageError(error) ? error.code : "UNKNOWN";
  const message = error instanceof Error ? error.message : String(error);
  const issues = (isStowageError(error) ? (error.details.issues as Issue[] | undefined) : undefined) ?? [];
  // A config error may come from a key read from a variable that is not set: name the variable.
  const fromConfig =
    command !== "keygen" &&
    (code === "CONFIG_INVALID" || code === "DECRYPT_FAILED") &&
    !issues.some((i) => i.option.startsWith("--"));
  const unset = fromConfig ? await unsetVariables(configFile(flags.config, io.cwd)) : [];
  io.stderr.write(usage ? `stowage: ${message}\n` : `stowage: ${code}: ${message}\n`);
  for (const issue of issues) io.stderr.write(`  ${issue.option}: ${issue.problem}\n`);
  for (const name of unset) {
    io.stderr.write(`  the config reads the environment variable ${name}, which is not set\n`);
  }
  if (flags.json) {
    const body = {
      ok: false,
      error: {
        code,
        message,
        ...(issues.length > 0 ? { issues } : {}),
        ...(unset.length > 0 ? { unsetVariables: unset } : {}),
      },
    };
    (command === "restore" && flags.out === "-" ? io.stderr : io.stdout).write(`${JSON.stringify(body)}\n`);
  }
  return usage || code === "CONFIG_INVALID" ? EXIT.badConfig : EXIT.failed;
}

/** True when this file is the process's entry point (the bin), not an import. */
function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    // npm's bin is a symlink to this file: compare real paths.
    return import.meta.url === pathToFileURL(realpathSync(resolve(entry))).href;
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  const controller = new AbortController();
  // A CronJob's pod gets SIGTERM before it is killed: abort so no half-written backup remains.
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`stowage: ${signal}, aborting\n`);
    controller.abort(new StowageError("ABORTED", `received ${signal}`));
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  // Until main() settles: a run whose work stops without settling (the event loop drained) must
  // not exit 0.
  process.exitCode = EXIT.failed;
  main(process.argv.slice(2), {
    stdout: process.stdout,
    stderr: process.stderr,
    cwd: process.cwd(),
    signal: controller.signal,
  }).then(
    (code) => {
      process.exitCode = code;
      // Let output drain and the process end by itself; a client left open in the config must
      // not keep a CronJob's pod alive forever.
      setTimeout(() => process.exit(code), 2_000).unref();
    },
    (error: unknown) => {
      process.stderr.write(`stowage: ${String(error)}\n`);
      process.exitCode = EXIT.failed;
    },
  );
}
