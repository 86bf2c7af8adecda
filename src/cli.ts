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
 * This file is only the bin's entry: the commands, their table and the help are in `./cli/`. It
 * turns on Node's compile cache (Node 22.1 and later) before anything else loads: compiling the
 * code is most of what a short command costs, and PostgreSQL starts a `wal-push` for every segment.
 */
import module from "node:module";

(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();
const { isEntryPoint, runBin } = await import("./cli/bin.js");
if (isEntryPoint(import.meta.url)) runBin();
