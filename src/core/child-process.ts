/**
 * Child processes that die with their parent: one place that spawns, stops and reaps the tools
 * adapters run (pg_dump, psql, pg_restore, ...), keeps the tail of their output for messages, and
 * turns a child's stdout into a stream that fails when the child does.
 *
 * A plain `spawn` leaves the child running when this process dies without a chance to clean up
 * (SIGKILL, the OOM killer, a crash in native code): a pg_dump goes on and finishes a plaintext
 * dump that nobody will ever commit or remove. On Linux the kernel can send a child a signal when
 * its parent dies (`PR_SET_PDEATHSIG`); Node cannot set it without native code, so the child is
 * started through util-linux's `setpriv --pdeathsig KILL -- <tool> <args>`, which sets it and then
 * execs the tool in place (same pid, same exit code, same stdio).
 */
import { type ChildProcess, type ChildProcessByStdio, type StdioOptions, spawn } from "node:child_process";
import { once } from "node:events";
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { delimiter, isAbsolute, join } from "node:path";
import { Readable } from "node:stream";
import { isAbortError, isStowageError, StowageError } from "./errors.js";

/** How a child ended. */
export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** A spawn failure (e.g. ENOENT for a missing tool). */
  error?: NodeJS.ErrnoException;
}

/** A child started by {@link spawnChild}; `P` narrows its stdio streams (`ChildProcessByStdio`). */
export interface SpawnedChild<P extends ChildProcess = ChildProcess> {
  child: P;
  /** Resolves (never rejects) once the child has exited, been reaped and its stdio has closed. */
  exit: Promise<ChildExit>;
  /** SIGTERM, SIGKILL after a grace period, and resolves once the child has been reaped; idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** Whether the kernel kills the child if this process dies (false where `setpriv` is missing). */
  diesWithParent: boolean;
}

export interface SpawnChildOptions {
  /** The child's whole environment: secrets travel here, never in `args`. */
  env: NodeJS.ProcessEnv;
  stdio: StdioOptions;
}

/** The `setpriv` to tie children with, looked for once per process. */
let tieing: Promise<string | undefined> | undefined;

/** The path of a `setpriv` that supports `--pdeathsig`, found once per process; undefined if none. */
function pdeathsigWrapper(): Promise<string | undefined> {
  tieing ??= (async () => {
    if (process.platform !== "linux") return undefined;
    const setpriv = await findExecutable("setpriv", `${process.env.PATH ?? ""}${delimiter}/usr/bin:/bin`);
    if (!setpriv) return undefined;
    // An old setpriv (util-linux < 2.33) lacks --pdeathsig: try it once on itself.
    const probe = spawn(setpriv, ["--pdeathsig", "KILL", "--", setpriv, "--version"], { stdio: "ignore" });
    const result = await closed(probe);
    return result.code === 0 ? setpriv : undefined;
  })();
  return tieing;
}

/**
 * Whether children spawned here die with this process (Linux with util-linux's `setpriv`).
 * @example if (!(await childrenDieWithParent())) log.warn("pg_dump may outlive a killed process");
 */
export function childrenDieWithParent(): Promise<boolean> {
  return pdeathsigWrapper().then((w) => w !== undefined);
}

/** `command` as the OS would find it on `path` (a `PATH` value), or undefined. */
async function findExecutable(command: string, path: string): Promise<string | undefined> {
  const candidates = command.includes("/")
    ? [command]
    : path
        .split(delimiter)
        .filter((dir) => isAbsolute(dir))
        .map((dir) => join(dir, command));
  for (const candidate of candidates) {
    try {
      if ((await stat(candidate)).isFile()) {
        await access(candidate, constants.X_OK);
        return candidate;
      }
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Resolves once the child has exited (and so been reaped) and its stdio has closed. */
export function closed(child: ChildProcess): Promise<ChildExit> {
  return once(child, "close").then(
    ([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }),
    (error: NodeJS.ErrnoException) => ({ code: null, signal: null, error }),
  );
}

/** Whether the child has exited (its exit code or signal is known). */
export const hasExited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/**
 * Stops a child: SIGTERM, SIGKILL after `graceMs`, and waits until it has been reaped. Its stdio is
 * closed first: a child blocked writing to a pipe nobody reads would never see its signal handled.
 */
export async function stopChild(child: ChildProcess, graceMs = 2000): Promise<void> {
  child.stdin?.destroy();
  child.stdout?.destroy();
  child.stderr?.destroy();
  if (child.pid === undefined || hasExited(child)) return;
  const exited = once(child, "exit").catch(() => undefined);
  child.kill("SIGTERM");
  const timer = setTimeout(() => {
    if (!hasExited(child)) child.kill("SIGKILL");
  }, graceMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Spawns `tool` so that it dies with this process: on Linux with util-linux's `setpriv` (Debian
 * and most distributions have it), through `setpriv --pdeathsig KILL -- <tool>`, which makes the
 * kernel SIGKILL the tool once this process has exited, however it died (SIGKILL included; allow
 * about a second). Where `setpriv` is missing or too old (util-linux < 2.33), and on other systems,
 * it falls back to a plain `spawn`, and a tool may then outlive a killed parent:
 * {@link childrenDieWithParent} says which. The tool is looked up on the `PATH` of `options.env`
 * first, so a missing tool still fails with ENOENT (an `exit.error`) rather than setpriv's exit 127.
 *
 * The kernel ties the child to the thread that spawned it: spawned from a worker thread, the
 * child is also killed when that worker ends. A parent that dies in the instant between the fork
 * and setpriv's `prctl` is not noticed (a window of microseconds).
 *
 * Secrets belong in `options.env`, never in `args` (argv is public in /proc).
 * @example
 * const { child, exit, stop } = await spawnChild("pg_dump", args, { env, stdio: ["ignore", "pipe", "pipe"] });
 */
export async function spawnChild<P extends ChildProcess = ChildProcess>(
  tool: string,
  args: readonly string[],
  options: SpawnChildOptions,
): Promise<SpawnedChild<P>> {
  const wrapper = await pdeathsigWrapper();
  const path = wrapper ? await findExecutable(tool, options.env.PATH ?? "") : undefined;
  const spawnOptions = { env: options.env, stdio: options.stdio };
  const child =
    wrapper && path
      ? spawn(wrapper, ["--pdeathsig", "KILL", "--", path, ...args], spawnOptions)
      : spawn(tool, [...args], spawnOptions);
  const exit = closed(child);
  let stopping: Promise<void> | undefined;
  return {
    child: child as P,
    exit,
    stop: (graceMs?: number) => {
      stopping ??= stopChild(child, graceMs);
      return stopping;
    },
    diesWithParent: wrapper !== undefined && path !== undefined,
  };
}

/** Keeps the last `limit` characters of a child's output (its stderr, for messages). */
export class OutputTail {
  private text = "";
  constructor(private readonly limit = 8192) {}
  push(chunk: Buffer | string): void {
    this.text += chunk.toString();
    if (this.text.length > this.limit * 2) this.text = this.text.slice(-this.limit);
  }
  toString(): string {
    return this.text.slice(-this.limit);
  }
}

/** The last non-empty lines of a stderr text, joined for a message. */
export const lastLines = (text: string, n = 3) =>
  text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-n)
    .join(" | ");

/**
 * Runs a short command to its end and collects its output (the last 64 KiB of each stream), e.g.
 * `pg_dump --version`. The signal stops the child; the result says how it ended.
 */
export async function runCollecting(
  tool: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  signal: AbortSignal | undefined,
): Promise<ChildExit & { stdout: string; stderr: string }> {
  const { child, exit } = await spawnChild<ChildProcessByStdio<null, Readable, Readable>>(tool, args, {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stdout = new OutputTail(65536);
  const stderr = new OutputTail(65536);
  child.stdout.on("data", (c: Buffer) => stdout.push(c));
  child.stderr.on("data", (c: Buffer) => stderr.push(c));
  const stop = () => void stopChild(child);
  signal?.addEventListener("abort", stop, { once: true });
  if (signal?.aborted) stop(); // fired while the child was being spawned
  try {
    const result = await exit;
    return { ...result, stdout: stdout.toString(), stderr: stderr.toString() };
  } finally {
    signal?.removeEventListener("abort", stop);
  }
}

/**
 * A child's stdout as a Readable with backpressure. It ends only after the child has exited
 * successfully (as `judge` decides); a bad exit errors it. Destroying it kills the child
 * (SIGTERM, then SIGKILL) and completes only once the child has been reaped. `tool` names the
 * child in the errors it makes itself.
 */
export class ChildStdout extends Readable {
  /** Settles when the stream has ended cleanly (resolves) or failed (rejects). */
  readonly done: Promise<void>;
  private settle!: { resolve: () => void; reject: (e: Error) => void };

  constructor(
    private readonly tool: string,
    private readonly child: ChildProcess,
    exit: Promise<ChildExit>,
    judge: (exit: ChildExit) => Error | undefined,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.done = new Promise<void>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.done.catch(() => undefined); // observed by the adapter; never an unhandled rejection
    const out = child.stdout!;
    out.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) out.pause();
    });
    out.once("error", (error) => this.destroy(error));
    out.once("end", () => {
      void exit.then((result) => {
        if (this.destroyed) return;
        const error = judge(result);
        if (error) this.destroy(error);
        else {
          this.settle.resolve();
          this.push(null);
        }
      });
    });
    // A process that dies before closing stdout (or never starts) is judged all the same.
    void exit.then((result) => {
      if (result.error && !this.destroyed) this.destroy(judge(result) ?? result.error);
    });
  }

  override _read(): void {
    this.child.stdout?.resume();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const failure =
      error === null || isAbortError(error)
        ? new StowageError("ABORTED", `${this.tool}: its output was closed before the end`, {
            cause: error ?? undefined,
          })
        : isStowageError(error)
          ? error
          : new StowageError("SOURCE_FAILED", `${this.tool}: ${error.message}`, { cause: error });
    this.settle.reject(failure);
    stopChild(this.child).then(
      () => callback(error),
      () => callback(error),
    );
  }
}
