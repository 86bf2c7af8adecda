import { randomBytes } from "node:crypto";
import { StowageError } from "./errors.js";

/** Job names become the first segment of every key: lowercase words, digits, `.`, `_`, `-`. */
export const JOB_NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/**
 * A time-sortable backup id: UTC time to the millisecond plus 32 random bits, so two backups of
 * one job started in the same millisecond still differ, and string order is time order.
 * @example newBackupId(new Date("2026-11-22T03:49:24.123Z")) // "20261122T034924123Z-9f86d081"
 */
export function newBackupId(at: Date): string {
  const stamp =
    `${at.getUTCFullYear()}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}T` +
    `${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}${pad(at.getUTCMilliseconds(), 3)}Z`;
  return `${stamp}-${randomBytes(4).toString("hex")}`;
}

/** `<job>/<yyyy>/<mm>/<dd>/<id><extension>`: grouped by job, then by UTC day. */
export function artifactKey(job: string, id: string, extension: string): string {
  const day = `${id.slice(0, 4)}/${id.slice(4, 6)}/${id.slice(6, 8)}`;
  return `${job}/${day}/${id}${extension}`;
}

/**
 * Why a key could escape a sink's root or confuse a file system, or `undefined` for a safe one:
 * empty, absolute, with `..` or `.` segments, empty segments, backslashes or control characters
 * (NUL included).
 */
export function unsafeKeyProblem(key: unknown): string | undefined {
  return typeof key !== "string" || key.length === 0
    ? "is empty"
    : key.length > 1024
      ? "is longer than 1024 characters"
      : key.startsWith("/")
        ? "is absolute"
        : // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
          /[\u0000-\u001f\u007f\\]/.test(key)
          ? "contains a control character or a backslash"
          : key.split("/").some((s) => s === ".." || s === "." || s === "")
            ? "has an empty, '.' or '..' segment"
            : undefined;
}

/**
 * Refuses keys that could escape a sink's root or confuse a file system (see
 * `unsafeKeyProblem`).
 * @throws {CONFIG_INVALID}
 */
export function assertSafeKey(key: string, where: string): void {
  const problem = unsafeKeyProblem(key);
  if (problem) {
    throw new StowageError("CONFIG_INVALID", `${where}: key ${JSON.stringify(key)} ${problem}`, {
      details: { key, issues: [{ path: "key", problem }] },
    });
  }
}
