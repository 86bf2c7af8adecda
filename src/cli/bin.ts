/** The `stowage` process: its command line, its signals and its exit code. */
import { realpathSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { StowageError } from "../core/errors.js";
import { main } from "./commands.js";
import { EXIT } from "./output.js";

/** True when `url` (the bin's own module) is the process's entry point, not an import. */
export function isEntryPoint(url: string): boolean {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    // npm's bin is a symlink to the file: compare real paths.
    return url === pathToFileURL(realpathSync(resolve(entry))).href;
  } catch {
    return false;
  }
}

/** Runs the command line of this process, with SIGTERM and SIGINT aborting the run. */
export function runBin(): void {
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
