// Redaction for the HTTP source and restore: which header values, URL credentials and query
// values are secret, and scrubbing them out of messages, details and cause chains.

import { redactCause, redactDeep, redactor } from "../../core/redact.js";

/** Header names whose values are always treated as secret (compared case-insensitively). */
export const DEFAULT_SECRET_HEADERS: readonly string[] = [
  "authorization",
  "proxy-authorization",
  "cookie",
  "x-api-key",
];

/** Query parameters whose values are redacted from recorded URLs unless listed otherwise. */
const SECRET_PARAM = /token|key|secret|pass|sig|auth|credential|session|code/i;

/** A request's options with its secrets collected and its URL made safe to record. */
export interface Prepared {
  url: string;
  /** The URL as recorded: no credentials, secret query values redacted. */
  display: string;
  headers: Record<string, string>;
  secrets: string[];
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  maxBytes: number;
  redirect: "follow" | "manual";
}

export type RequestOptions = {
  url: string;
  headers: Record<string, string>;
  timeoutMs: number;
  retries: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  maxBytes: number;
  secretHeaders: string[];
  secretParams: string[];
  followRedirects: boolean;
};

export function prepare(opts: RequestOptions, extraSecrets: readonly string[] = []): Prepared {
  const url = new URL(opts.url);
  const headers: Record<string, string> = { ...opts.headers };
  const secretNames = new Set([...DEFAULT_SECRET_HEADERS, ...opts.secretHeaders.map((h) => h.toLowerCase())]);
  const secrets: string[] = [...extraSecrets];
  if (url.username || url.password) {
    const user = decodeURIComponent(url.username);
    const pass = decodeURIComponent(url.password);
    secrets.push(user, pass, url.username, url.password);
    if (!Object.keys(headers).some((h) => h.toLowerCase() === "authorization")) {
      headers.Authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;
    }
    url.username = "";
    url.password = "";
  }
  for (const [name, value] of Object.entries(headers)) {
    if (!secretNames.has(name.toLowerCase())) continue;
    secrets.push(value, ...value.split(/[\s,;=]+/));
    const basic = /^basic\s+(\S+)$/i.exec(value);
    if (basic?.[1]) secrets.push(...Buffer.from(basic[1], "base64").toString("utf8").split(":"));
  }
  const secretParams = new Set(opts.secretParams);
  const display = new URL(url);
  for (const [name, value] of url.searchParams) {
    if (SECRET_PARAM.test(name) || secretParams.has(name)) {
      secrets.push(value, encodeURIComponent(value));
      display.searchParams.set(name, "REDACTED");
    }
  }
  return {
    url: url.toString(),
    display: display.toString(),
    headers,
    // Short strings would blank out ordinary words; a secret that short is no secret.
    secrets: [...new Set(secrets.filter((s) => s.length >= 4))].sort((a, b) => b.length - a.length),
    timeoutMs: opts.timeoutMs,
    retries: opts.retries,
    retryDelayMs: opts.retryDelayMs,
    maxRetryDelayMs: opts.maxRetryDelayMs,
    maxBytes: opts.maxBytes,
    redirect: opts.followRedirects ? "follow" : "manual",
  };
}

// The HTTP code passes its secrets as a list (collected by `prepare`, already without short
// fragments); the redaction itself is the core's.
export const scrub = (text: string, secrets: readonly string[]): string =>
  redactor(secrets, { minLength: 1 })(text);

/** A copy of `value` (JSON-like) with every secret string replaced; for details and index files. */
export const scrubDeep = <T>(value: T, secrets: readonly string[]): T =>
  secrets.length === 0 ? value : redactDeep(value, redactor(secrets, { minLength: 1 }));

/** An error whose cause chain has its messages scrubbed: the original may quote a URL or a header. */
export const scrubbedCause = (error: unknown, secrets: readonly string[]): unknown =>
  redactCause(error, redactor(secrets, { minLength: 1 }));
