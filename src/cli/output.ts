/** What every command shares for output: the streams, exit codes, usage errors and error reports. */
import type { Writable } from "node:stream";
import { isStowageError, StowageError } from "../core/errors.js";
import type { Issue } from "../core/issues.js";
import { configFile, unsetVariables } from "./config.js";
import { UsageError } from "./usage-error.js";

/** Exit codes: 0 all good; 1 a job failed or the status is failing; 2 bad command line or config. */
export const EXIT = { ok: 0, failed: 1, badConfig: 2 } as const;

export { UsageError };

/** The streams and context a command runs with; the bin passes the process's own. */
export interface Io {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  cwd: string;
  signal: AbortSignal;
}

/** Writes `text` to stdout with one trailing newline. */
export function print(io: Io, text: string): void {
  io.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

/** An option that names an existing file or folder: CONFIG_INVALID, nothing was run. */
export function outExists(path: string, problem: string): StowageError {
  return new StowageError("CONFIG_INVALID", `--out ${path} ${problem}`, {
    details: { path, issues: [{ path: "--out", problem }] },
  });
}

/**
 * Prints a failure: `stowage: CODE: message` and one line per issue on stderr; with `--json` also
 * `{ "ok": false, "error": { code, message, issues?, unsetVariables? } }` on stdout (on stderr
 * instead when stdout carries a restore). Resolves to the exit code: 2 for a bad command line or
 * config (nothing was run), 1 otherwise.
 */
export async function reportError(
  error: unknown,
  command: string,
  flags: { json?: boolean; config?: string; out?: string },
  io: Io,
): Promise<number> {
  const usage = error instanceof UsageError;
  const code = usage ? "USAGE" : isStowageError(error) ? error.code : "UNKNOWN";
  const message = error instanceof Error ? error.message : String(error);
  const issues = (isStowageError(error) ? (error.details.issues as Issue[] | undefined) : undefined) ?? [];
  // A config error may come from a key read from a variable that is not set: name the variable.
  const fromConfig =
    command !== "keygen" &&
    (code === "CONFIG_INVALID" || code === "DECRYPT_FAILED") &&
    !issues.some((i) => i.path.startsWith("--"));
  const unset = fromConfig ? await unsetVariables(configFile(flags.config, io.cwd)) : [];
  io.stderr.write(usage ? `stowage: ${message}\n` : `stowage: ${code}: ${message}\n`);
  for (const issue of issues) io.stderr.write(`  ${issue.path}: ${issue.problem}\n`);
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
