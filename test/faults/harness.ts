/**
 * The fault suite's harness. A fault is injected through the public API only; then the harness
 * checks the four promises every fault must keep, and records the outcome so that the run ends
 * with one line: `faults: N injected, N clean, 0 leftovers, 0 secrets`.
 *
 * 1. the operation fails with a StowageError of the expected `code`;
 * 2. nothing is left behind (the caller collects what remains: artifacts, manifests, temporary
 *    files, open multipart uploads, child processes; the listing compared with the one before);
 * 3. no secret appears in the error, its details, its cause chain, or any other text the caller
 *    hands over (logs, manifests, sampled argv);
 * 4. the outcome is recorded in the folder the suite's global setup provides.
 *
 * Each port has its own file (`filesystem.test.ts`, `s3.test.ts`, …), so a new adapter joins the
 * suite by adding one.
 */
import { appendFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { inspect } from "node:util";
import { afterAll, expect, inject, it } from "vitest";
import { isStowageError, type Sink } from "../../src/index.js";

declare module "vitest" {
  export interface ProvidedContext {
    faultsDir: string;
  }
}

/** What a fault's body reports back to the harness. */
export interface FaultCheck {
  /** The error the faulty operation ended with; `undefined` if it did not fail. */
  error: unknown;
  /** The StowageError code it must carry. */
  code: string;
  /** What remains that must not: keys, temporary files, uploads, processes (empty when clean). */
  leftovers?: readonly string[];
  /** Secrets that must appear nowhere: passwords, keys, tokens, passphrases. */
  secrets?: readonly string[];
  /** More text to search for the secrets: logs, manifests, sampled argv, stderr. */
  texts?: readonly string[];
}

interface Outcome {
  port: string;
  name: string;
  code: string | undefined;
  expected: string;
  leftovers: readonly string[];
  secretsFound: string[];
}

/**
 * Every text reachable from an error: message, stack, code, details (as JSON and inspected), and
 * the same for each `cause` and each error of an AggregateError, however deep.
 */
export function errorTexts(error: unknown): string[] {
  const texts: string[] = [];
  const seen = new Set<unknown>();
  const visit = (e: unknown): void => {
    if (e === undefined || e === null || seen.has(e)) return;
    seen.add(e);
    texts.push(inspect(e, { depth: 12, showHidden: false }));
    if (typeof e !== "object") return;
    const { message, stack, details, cause, errors } = e as {
      message?: unknown;
      stack?: unknown;
      details?: unknown;
      cause?: unknown;
      errors?: unknown;
    };
    for (const t of [message, stack]) if (typeof t === "string") texts.push(t);
    if (details !== undefined) {
      try {
        texts.push(JSON.stringify(details));
      } catch {
        texts.push(inspect(details, { depth: 12 }));
      }
    }
    visit(cause);
    if (Array.isArray(errors)) for (const inner of errors) visit(inner);
  };
  visit(error);
  return texts;
}

/** The secrets (or their hex/base64 forms) that appear in any of the texts. */
export function secretsIn(texts: readonly string[], secrets: readonly string[]): string[] {
  const found = new Set<string>();
  for (const secret of secrets) {
    if (secret.length < 6) throw new Error(`a secret of ${secret.length} characters would match by chance`);
    const forms = [secret, Buffer.from(secret).toString("base64"), Buffer.from(secret).toString("hex")];
    if (texts.some((t) => forms.some((f) => t.includes(f)))) found.add(secret);
  }
  return [...found];
}

function record(outcome: Outcome): void {
  const dir = inject("faultsDir");
  appendFileSync(join(dir, `${process.pid}.jsonl`), `${JSON.stringify(outcome)}\n`);
}

/**
 * Declares one fault: `body` injects it and reports what happened; the harness asserts the code,
 * no leftovers and no secrets, and records the outcome for the summary line.
 */
export function fault(port: string, name: string, body: () => Promise<FaultCheck>, timeout?: number): void {
  it(
    `[${port}] ${name}`,
    async () => {
      const check = await body();
      const texts = [...errorTexts(check.error), ...(check.texts ?? [])];
      const outcome: Outcome = {
        port,
        name,
        code: isStowageError(check.error) ? check.error.code : undefined,
        expected: check.code,
        leftovers: check.leftovers ?? [],
        secretsFound: secretsIn(texts, check.secrets ?? []),
      };
      record(outcome);
      if (!isStowageError(check.error)) {
        throw new Error(`expected a StowageError ${check.code}, got ${inspect(check.error)}`, {
          cause: check.error,
        });
      }
      expect(outcome.code).toBe(check.code);
      expect(outcome.leftovers).toEqual([]);
      expect(outcome.secretsFound).toEqual([]);
    },
    timeout,
  );
}

/** The error a promise rejects with, or `undefined` if it resolves (a fault that did not fail). */
export async function failureOf(promise: Promise<unknown> | (() => Promise<unknown>)): Promise<unknown> {
  try {
    await (typeof promise === "function" ? promise() : promise);
    return undefined;
  } catch (error) {
    return error;
  }
}

/** Every key a sink lists under `prefix`. */
export async function listing(sink: Sink, prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of sink.list(prefix)) keys.push(info.key);
  return keys.sort();
}

/** Keys in `after` that were not in `before`, and keys of `before` that are gone: a changed listing. */
export function listingChange(before: readonly string[], after: readonly string[]): string[] {
  const was = new Set(before);
  const now = new Set(after);
  return [
    ...after.filter((k) => !was.has(k)).map((k) => `added ${k}`),
    ...before.filter((k) => !now.has(k)).map((k) => `removed ${k}`),
  ];
}

/** Every file under `dir` (recursively), relative to it: a sink's folder seen from outside. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string, rel: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true }).catch(() => [])) {
      const path = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) await walk(join(at, entry.name), path);
      else out.push(path);
    }
  };
  await walk(dir, "");
  return out.sort();
}

/** Processes running `command` (by argv[0]'s base name), as `pid cmdline`: leftovers if any. */
export async function processesNamed(command: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    const argv = cmdline.split("\0").filter(Boolean);
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    if (stat.includes(") Z ")) continue; // a zombie has already exited; its parent reaps it
    if (argv.some((a) => a === command || a.endsWith(`/${command}`))) found.push(`${pid} ${argv.join(" ")}`);
  }
  return found;
}

/**
 * Fresh temporary folders for one fault file, all removed after it:
 * `const freshRoot = tempFolders("core"); const root = await freshRoot();`
 */
export function tempFolders(name: string): (suffix?: string) => Promise<string> {
  const made: string[] = [];
  afterAll(async () => {
    await Promise.all(made.map((dir) => rm(dir, { recursive: true, force: true })));
  });
  return async (suffix?: string) => {
    const dir = await mkdtemp(join(tmpdir(), `stowage-faults-${name}${suffix ? `-${suffix}` : ""}-`));
    made.push(dir);
    return dir;
  };
}

/**
 * A sink whose `write` reads its body and fails with `errno` (ENOSPC: a full disk, EIO: a broken
 * one) once more than `limit` bytes went through: a sink that stops consuming mid-write. With
 * `only`, just the writes of the keys it accepts fail.
 */
export function failsWritesAfter(
  inner: Sink,
  limit: number,
  errno: "ENOSPC" | "EIO",
  only: (key: string) => boolean = () => true,
): Sink {
  return {
    ...inner,
    async write(key, body, options) {
      if (!only(key)) return inner.write(key, body, options);
      let seen = 0;
      async function* capped() {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          seen += chunk.length;
          if (seen > limit) throw Object.assign(new Error(`${errno}: write failed`), { code: errno });
          yield chunk;
        }
      }
      return inner.write(key, Readable.from(capped()), options);
    },
  };
}
