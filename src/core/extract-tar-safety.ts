import { lstat, readlink } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { isStowageError, StowageError } from "./errors.js";

/**
 * Why `extractTar` refused an archive, in `error.details.reason` of its `RESTORE_FAILED` error.
 * Stable strings: branch on them, not on the message.
 */
export type ExtractRefusal =
  /** A path with `..` in it. */
  | "path-traversal"
  /** An absolute path (`/etc/passwd`, `C:\…`). */
  | "absolute-path"
  /** A symlink or hard link whose target is, or resolves to, a place outside the target folder. */
  | "link-escape"
  /** An entry under a path the archive made a symlink: writing through it could leave the folder. */
  | "write-through-symlink"
  /** A character or block device, FIFO, or an entry type the extractor does not know. */
  | "special-file"
  /** A file entry whose data is not the size its header declares. */
  | "size-mismatch"
  /** The archive ends in the middle of an entry. */
  | "truncated"
  /** A header that does not parse (bad checksum, unknown format). */
  | "corrupt"
  /** The files add up to more than `maxBytes` (by default what the manifest declares). */
  | "too-large"
  /** An entry would replace a folder, or a folder a file, or a control character is in a name. */
  | "conflict";

export function refuse(name: string, reason: ExtractRefusal, problem: string): StowageError {
  return new StowageError(
    "RESTORE_FAILED",
    `extractTar: refusing entry ${JSON.stringify(name)}: ${problem}`,
    {
      details: { entry: name, reason, problem },
    },
  );
}

/** A relative, normalised archive path, or a refusal for anything that could leave the target. */
export function safeRelative(name: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL and friends are exactly what we refuse
  if (/[\u0000-\u001f]/.test(name)) throw refuse(name, "conflict", "control character in the path");
  if (name.startsWith("/") || name.startsWith("\\") || isAbsolute(name) || /^[A-Za-z]:/.test(name)) {
    throw refuse(name, "absolute-path", "absolute path");
  }
  // Backslashes are separators on Windows; treating them as such here only ever refuses more.
  const parts = name.split(/[/\\]+/).filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(name, "path-traversal", "'..' in the path");
  return parts.join("/");
}

export const SYMLOOP_MAX = 40;

/**
 * Follows `target` from the folder `from` (path components under `root`) through the finished tree
 * the way the kernel would, symlink by symlink, and returns where it ends, or `undefined` if it
 * ever steps out of `root`. A component that does not exist is taken literally, as are all after it.
 * Checking the finished tree matters: a link that looks harmless on its own (`up/../x`) escapes
 * once another entry makes `up` a link to `..`.
 */
export async function resolveWithin(
  root: string,
  from: string[],
  target: string,
  budget: { left: number },
): Promise<string[] | undefined> {
  if (target === "" || isAbsolute(target) || target.startsWith("\\") || /^[A-Za-z]:/.test(target)) {
    return undefined;
  }
  let at = [...from];
  let missing = false;
  for (const part of target.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (at.length === 0) return undefined;
      at.pop();
      continue;
    }
    at.push(part);
    if (missing) continue;
    const path = join(root, ...at);
    const info = await lstat(path).catch(() => undefined);
    if (!info) {
      missing = true;
      continue;
    }
    if (info.isSymbolicLink()) {
      if (--budget.left < 0) return undefined; // a loop, or a chain too long to trust
      const next = await resolveWithin(root, at.slice(0, -1), await readlink(path), budget);
      if (!next) return undefined;
      at = next;
    }
  }
  return at;
}

export function classify(error: unknown): StowageError | undefined {
  if (isStowageError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  // tar-stream's own errors carry no codes; these two messages are the ones it raises for a cut
  // or a damaged archive.
  if (/unexpected end of data/i.test(message)) {
    return new StowageError("RESTORE_FAILED", "extractTar: the archive ends in the middle of an entry", {
      cause: error,
      details: { reason: "truncated" satisfies ExtractRefusal },
    });
  }
  if (/invalid tar header|header exceeds max size|invalid header/i.test(message)) {
    return new StowageError("RESTORE_FAILED", `extractTar: damaged archive: ${message}`, {
      cause: error,
      details: { reason: "corrupt" satisfies ExtractRefusal },
    });
  }
  return undefined;
}

/** The hard link's source as a safe relative path, refusing the same things entry names refuse. */
export function safeRelativeLink(name: string, linkname: string): string {
  try {
    return safeRelative(linkname);
  } catch {
    throw refuse(name, "link-escape", "hard link to a path outside the target");
  }
}
