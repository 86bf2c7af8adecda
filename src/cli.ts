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
 *
 * This file is only the bin's entry: the commands, their table and the help are in `./cli/`.
 */
import { realpathSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { main } from "./cli/commands.js";
import { EXIT } from "./cli/output.js";
import { StowageError } from "./core/errors.js";

export { COMMANDS, commandHelp, globalHelp, main } from "./cli/commands.js";
export { loadConfig } from "./cli/config.js";
export { EXIT, type Io } from "./cli/output.js";

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
