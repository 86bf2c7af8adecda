import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { isDeepStrictEqual } from "node:util";
import tar from "tar-stream";
import { z } from "zod";
import { isStowageError, StowageError, type StowageErrorCode, throwIfAborted } from "../core/errors.js";
import { parseOptions, signalSchema } from "../core/options.js";
import { packedTar } from "../core/pack-tar.js";
import { readAll } from "../core/streams.js";
import type { Source, SourceContext, SourceOutput } from "../core/types.js";
import { JsonScanner, JsonSyntaxError, type ScannedValue } from "./http/json-scan.js";
import { Spool } from "./http/spool.js";

/** Header names whose values are always treated as secret (compared case-insensitively). */
export const DEFAULT_SECRET_HEADERS: readonly string[] = [
  "authorization",
  "proxy-authorization",
  "cookie",
  "x-api-key",
];

/** Query parameters whose values are redacted from recorded URLs unless listed otherwise. */
const SECRET_PARAM = /token|key|secret|pass|sig|auth|credential|session|code/i;

/** The most bytes read from one response, unless `maxBytes` says otherwise: 64 MiB. */
export const DEFAULT_HTTP_MAX_BYTES = 64 * 1024 * 1024;

/** The largest JSON body parsed whole in memory, unless `maxParseBytes` says otherwise: 64 MiB. */
export const DEFAULT_HTTP_MAX_PARSE_BYTES = 64 * 1024 * 1024;

/**
 * The ceiling for `maxParseBytes`: a parse holds the body about three times over (bytes, string,
 * value), and V8 cannot make a string much over 512 MiB at all.
 */
export const MAX_HTTP_PARSE_BYTES = 256 * 1024 * 1024;

const isZodSchema = (v: unknown): v is z.ZodType =>
  typeof v === "object" && v !== null && typeof (v as z.ZodType).safeParse === "function";

export const httpExpectSchema = z
  .object({
    /** Accepted status codes. @default any 2xx */
    status: z.array(z.number().int().min(100).max(599)).min(1).optional(),
    /**
     * Accepted media types, compared without parameters and case-insensitively
     * (`"application/json"` accepts `application/json; charset=utf-8`).
     * @default any
     */
    contentType: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    /** A zod schema the JSON body must satisfy. */
    schema: z.custom<z.ZodType>(isZodSchema, "expected a zod schema").optional(),
    /**
     * Fields the JSON body must carry, with exact values (deep equality). A key is a dot-separated
     * path (`"meta.hash"`); a top-level key that itself contains dots is looked up first.
     * @example { constitutional_hash: "cdd01ef066bc6cf2" }
     */
    requiredFields: z.record(z.string().min(1), z.unknown()).optional(),
    /**
     * Parse the body as JSON and refuse it if it is not. @default true when `schema` or
     * `requiredFields` is set or the response says it is JSON (`application/json`, `…+json`).
     */
    json: z.boolean().optional(),
  })
  .strict();
export type HttpExpect = z.input<typeof httpExpectSchema>;

const requestShape = {
  /** The endpoint. Credentials in it (`https://user:pass@…`) become a Basic Authorization header. */
  url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }),
  /** @default "GET" */
  method: z
    .string()
    .regex(/^[A-Z]+$/, "an upper-case HTTP method")
    .default("GET"),
  /** Request headers. Values of secret headers never appear in errors or manifests. @default {} */
  headers: z.record(z.string().min(1), z.string()).default({}),
  /** A request body, e.g. for a `POST` backup endpoint. */
  body: z.string().optional(),
  /** Per attempt, for the whole exchange (connect, headers, body). @default 30000 */
  timeoutMs: z.number().int().positive().default(30_000),
  /** Further attempts after a connection error, a timeout, a cut body, a 5xx or a 429. @default 3 */
  retries: z.number().int().min(0).max(20).default(3),
  /** First backoff delay; doubles each retry, with jitter (half fixed, half random). @default 500 */
  retryDelayMs: z.number().int().min(0).default(500),
  /** Cap on one backoff delay, a `Retry-After` included. @default 30000 */
  maxRetryDelayMs: z.number().int().min(0).default(30_000),
  /**
   * The most bytes read from one response; a larger one fails with reason `"too-large"`. The body
   * goes to a temporary file, not to memory, so this bounds disk use: raise it freely. @default 64 MiB
   */
  maxBytes: z.number().int().positive().default(DEFAULT_HTTP_MAX_BYTES),
  /** More header names to treat as secret, besides {@link DEFAULT_SECRET_HEADERS}. @default [] */
  secretHeaders: z.array(z.string().min(1)).default([]),
  /**
   * Query parameters whose values are redacted from recorded URLs and errors, besides any whose
   * name contains token, key, secret, pass, sig, auth, credential, session or code. @default []
   */
  secretParams: z.array(z.string().min(1)).default([]),
  /**
   * Follow redirects. Off by default: a redirect would carry custom secret headers (an API key) to
   * wherever it points; a 3xx then fails the status expectation instead. @default false
   */
  followRedirects: z.boolean().default(false),
};

/** Options of the source only: how a fetched body is kept and checked. */
const sourceShape = {
  /**
   * The largest JSON body parsed whole in memory (needed by `expect.schema`). A larger body is
   * checked by a streaming scanner instead, in constant memory: its JSON syntax and
   * `expect.requiredFields` (values up to 64 KiB each); with `expect.schema` it is refused with
   * reason `"too-large-to-validate"`. At most {@link MAX_HTTP_PARSE_BYTES}. @default 64 MiB
   */
  maxParseBytes: z.number().int().positive().max(MAX_HTTP_PARSE_BYTES).default(DEFAULT_HTTP_MAX_PARSE_BYTES),
  /**
   * Folder for the temporary file each response is spooled to while it is fetched and checked:
   * mode 0600 in a fresh 0700 folder, unlinked as soon as it is open (so nothing is left even if
   * the process dies) and closed when the backup ends, fails or is aborted. @default os.tmpdir()
   */
  spoolDir: z.string().min(1).optional(),
};

export const httpSourceOptionsSchema = z
  .object({
    ...requestShape,
    ...sourceShape,
    /** What the response must look like before it is kept. @default any 2xx */
    expect: httpExpectSchema.default({}),
    /** Logical name for the manifest. @default the URL's host and path */
    name: z.string().min(1).optional(),
  })
  .strict();
export type HttpSourceOptions = z.input<typeof httpSourceOptionsSchema>;
type HttpSourceParsed = z.output<typeof httpSourceOptionsSchema>;

/** Why an HTTP exchange failed, in `error.details.reason`. */
export type HttpFailureReason =
  | "connection"
  | "timeout"
  | "incomplete-body"
  | "too-large"
  | "status"
  | "content-type"
  | "json"
  | "schema"
  | "required-fields"
  /** A JSON body over `maxParseBytes` while `expect.schema` needs it whole. */
  | "too-large-to-validate"
  /** The temporary file the body is spooled to could not be written (a full disk). */
  | "spool";

// ————————————————————————————————————————————————————— secrets and URLs

interface Prepared {
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

type RequestOptions = {
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

function prepare(opts: RequestOptions, extraSecrets: readonly string[] = []): Prepared {
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

function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join("[REDACTED]");
  return out;
}

/** A copy of `value` (JSON-like) with every secret string replaced; for details and index files. */
function scrubDeep<T>(value: T, secrets: readonly string[]): T {
  if (secrets.length === 0) return value;
  return JSON.parse(scrub(JSON.stringify(value), secrets)) as T;
}

/** An error whose cause chain has its messages scrubbed: the original may quote a URL or a header. */
function scrubbedCause(error: unknown, secrets: readonly string[], depth = 0): unknown {
  if (!(error instanceof Error) || depth > 4) return error;
  const copy = new Error(scrub(error.message, secrets), {
    cause: scrubbedCause((error as { cause?: unknown }).cause, secrets, depth + 1),
  });
  copy.name = error.name;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string") (copy as Error & { code: string }).code = code;
  return copy;
}

// ————————————————————————————————————————————————————— one exchange, with retries

interface Exchange {
  status: number;
  contentType: string | undefined;
  /** Bytes of the response body (in the spool, if one was given). */
  bytes: number;
  attempts: number;
}

class AttemptFailure extends Error {
  constructor(
    readonly reason: HttpFailureReason,
    message: string,
    readonly retryable: boolean,
    readonly extra: Record<string, unknown> = {},
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A full disk or a broken temporary folder: not the server's fault, so not retried. */
const spoolFailed = (error: unknown): never => {
  throw new AttemptFailure("spool", "writing the body to a temporary file failed", false, {}, undefined, {
    cause: error,
  });
};

/** ABORTED naming the request (the URL as displayed: no credentials, no secret query values). */
function aborted(where: string, method: string, p: Prepared, cause: unknown): StowageError {
  return new StowageError("ABORTED", scrub(`${where}: ${method} ${p.display}: aborted`, p.secrets), {
    cause: scrubbedCause(cause, p.secrets),
    details: { url: p.display, method },
  });
}

/** `Retry-After` as milliseconds from now: delay-seconds or an HTTP date; undefined if neither. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

function backoff(failures: number, p: Prepared, retryAfterMs: number | undefined): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, p.maxRetryDelayMs);
  const exp = Math.min(p.maxRetryDelayMs, p.retryDelayMs * 2 ** (failures - 1));
  return exp / 2 + Math.random() * (exp / 2);
}

const is2xx = (s: number) => s >= 200 && s < 300;
const retryableStatus = (s: number) => s === 429 || s >= 500;

/**
 * One request. The response body goes into `spool` (emptied first) or, without one, is counted and
 * dropped: it is never held in memory.
 */
async function attempt(
  p: Prepared,
  request: { method: string; body?: Buffer | string; accept: (status: number) => boolean },
  signal: AbortSignal | undefined,
  where: string,
  spool: Spool | undefined,
): Promise<Omit<Exchange, "attempts">> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, p.timeoutMs);
  const forward = () => controller.abort(signal?.reason);
  signal?.addEventListener("abort", forward, { once: true });
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const failed = (error: unknown, reading: boolean): never => {
    if (error instanceof AttemptFailure) throw error;
    if (signal?.aborted) throw aborted(where, request.method, p, signal.reason);
    if (timedOut) {
      throw new AttemptFailure("timeout", `no complete response within ${p.timeoutMs} ms`, true);
    }
    throw new AttemptFailure(
      reading ? "incomplete-body" : "connection",
      reading ? "the response body ended early" : "the connection failed",
      true,
      {},
      undefined,
      { cause: error },
    );
  };
  try {
    let response: Response;
    try {
      response = await fetch(p.url, {
        method: request.method,
        headers: p.headers,
        ...(request.body !== undefined ? { body: request.body } : {}),
        redirect: p.redirect,
        signal: controller.signal,
      });
    } catch (error) {
      return failed(error, false);
    }
    const { status } = response;
    const contentType = response.headers.get("content-type") ?? undefined;
    if (!request.accept(status)) {
      await response.body?.cancel().catch(() => undefined);
      const retryable = retryableStatus(status);
      throw new AttemptFailure(
        "status",
        `status ${status}`,
        retryable,
        { status },
        retryable ? parseRetryAfter(response.headers.get("retry-after")) : undefined,
      );
    }
    const declared = Number(response.headers.get("content-length") ?? Number.NaN);
    if (declared > p.maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw new AttemptFailure(
        "too-large",
        `the response declares ${declared} bytes, over maxBytes ${p.maxBytes}`,
        false,
        { status, maxBytes: p.maxBytes },
      );
    }
    let total = 0;
    try {
      if (spool) await spool.reset().catch(spoolFailed);
      reader = response.body?.getReader();
      while (reader) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > p.maxBytes) {
          throw new AttemptFailure("too-large", `the response is larger than maxBytes ${p.maxBytes}`, false, {
            status,
            maxBytes: p.maxBytes,
          });
        }
        // Awaiting the write is the backpressure: the next chunk is read once this one is on disk.
        if (spool) await spool.write(value).catch(spoolFailed);
      }
    } catch (error) {
      return failed(error, true);
    }
    const encoded = (response.headers.get("content-encoding") ?? "identity").toLowerCase() !== "identity";
    // 204, 304 and HEAD answers have no body, whatever their Content-Length says.
    const bodiless = status === 204 || status === 304 || request.method === "HEAD";
    if (!encoded && !bodiless && Number.isFinite(declared) && total !== declared) {
      throw new AttemptFailure(
        "incomplete-body",
        `the body has ${total} of ${declared} declared bytes`,
        true,
        { status },
      );
    }
    return { status, contentType, bytes: total };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", forward);
    // Releases the socket when we stopped reading early (too large, aborted).
    await reader?.cancel().catch(() => undefined);
  }
}

/**
 * One request with retries on connection errors, timeouts, cut bodies, 5xx and 429 (honouring
 * `Retry-After`, capped), never on other statuses. Errors carry `code(reason)` and secret-free
 * details: the displayed URL, the attempts, the status, the reason.
 */
async function exchange(
  p: Prepared,
  request: { method: string; body?: Buffer | string; accept: (status: number) => boolean },
  signal: AbortSignal | undefined,
  codeFor: (reason: HttpFailureReason) => StowageErrorCode,
  where: string,
  spool?: Spool,
): Promise<Exchange> {
  for (let attempts = 1; ; attempts++) {
    if (signal?.aborted) throw aborted(where, request.method, p, signal.reason);
    try {
      return { ...(await attempt(p, request, signal, where, spool)), attempts };
    } catch (error) {
      if (!(error instanceof AttemptFailure)) throw error;
      if (error.retryable && attempts <= p.retries) {
        try {
          await sleep(backoff(attempts, p, error.retryAfterMs), undefined, signal ? { signal } : {});
        } catch (cause) {
          throw aborted(where, request.method, p, cause);
        }
        continue;
      }
      const cause = (error as { cause?: unknown }).cause;
      throw new StowageError(
        codeFor(error.reason),
        scrub(
          `${where}: ${request.method} ${p.display}: ${error.message} (after ${attempts} attempt${attempts === 1 ? "" : "s"})`,
          p.secrets,
        ),
        {
          ...(cause !== undefined ? { cause: scrubbedCause(cause, p.secrets) } : {}),
          details: { url: p.display, method: request.method, attempts, reason: error.reason, ...error.extra },
        },
      );
    }
  }
}

// ————————————————————————————————————————————————————— expectations

const mediaType = (contentType: string | undefined) => contentType?.split(";")[0]?.trim().toLowerCase();
const isJsonType = (type: string | undefined) =>
  !!type && (type === "application/json" || type.endsWith("+json"));

function lookup(data: unknown, path: string): { found: boolean; value?: unknown } {
  if (typeof data === "object" && data !== null && Object.hasOwn(data, path)) {
    return { found: true, value: (data as Record<string, unknown>)[path] };
  }
  let at: unknown = data;
  for (const part of path.split(".")) {
    if (typeof at !== "object" || at === null || !Object.hasOwn(at, part)) return { found: false };
    at = (at as Record<string, unknown>)[part];
  }
  return { found: true, value: at };
}

function preview(value: unknown): unknown {
  if (value === null || typeof value === "number" || typeof value === "boolean") return value;
  if (typeof value === "string") return value.length > 64 ? `${value.slice(0, 64)}…` : value;
  return Array.isArray(value) ? `array(${value.length})` : typeof value;
}

interface Difference {
  expectation: HttpFailureReason;
  field?: string;
  expected?: unknown;
  actual?: unknown;
  problem: string;
}

type Expect = z.output<typeof httpExpectSchema>;

/** The required field's value as found: absent, a value, or present but too large to compare. */
function compareField(field: string, expected: unknown, found: ScannedValue, out: Difference[]): void {
  if (!found.found) {
    out.push({ expectation: "required-fields", field, expected, problem: "missing" });
  } else if ("tooLarge" in found) {
    out.push({
      expectation: "required-fields",
      field,
      expected,
      actual: "(too large to compare)",
      problem: "differs (its value is too large to compare while streaming)",
    });
  } else if (!isDeepStrictEqual(found.value, expected)) {
    out.push({
      expectation: "required-fields",
      field,
      expected,
      actual: preview(found.value),
      problem: "differs",
    });
  }
}

/**
 * Checks a fetched response against `expect`; returns what differed (empty when it passes). A JSON
 * body up to `maxParseBytes` is parsed whole; a larger one is scanned as it is read back from the
 * spool, in constant memory (syntax and required fields; a schema cannot be checked that way).
 */
async function differences(
  expect: Expect,
  fetched: Exchange,
  spool: Spool,
  maxParseBytes: number,
): Promise<{ differences: Difference[]; json: boolean }> {
  const type = mediaType(fetched.contentType);
  const out: Difference[] = [];
  if (expect.contentType !== undefined) {
    const wanted = (Array.isArray(expect.contentType) ? expect.contentType : [expect.contentType]).map((t) =>
      t.toLowerCase(),
    );
    if (!type || !wanted.includes(type)) {
      out.push({
        expectation: "content-type",
        expected: wanted,
        actual: type ?? null,
        problem: "content type",
      });
    }
  }
  const json =
    expect.json ?? (expect.schema !== undefined || expect.requiredFields !== undefined || isJsonType(type));
  if (!json) return { differences: out, json };
  const fields = Object.entries(expect.requiredFields ?? {});

  if (spool.bytes > maxParseBytes) {
    if (expect.schema) {
      out.push({
        expectation: "too-large-to-validate",
        expected: { maxParseBytes },
        actual: { bytes: spool.bytes },
        problem: `the body (${spool.bytes} B) is larger than maxParseBytes (${maxParseBytes} B), and expect.schema needs it whole in memory; raise maxParseBytes (at most ${MAX_HTTP_PARSE_BYTES}) or check requiredFields instead`,
      });
      return { differences: out, json };
    }
    // Each field is looked up as a top-level key first, then as a dotted path, as `lookup` does.
    const paths = fields.flatMap(([field]) => [[field], field.split(".")]);
    const limits = fields.flatMap(([, expected]) => {
      const limit = Math.max(1 << 16, 8 * (JSON.stringify(expected)?.length ?? 0));
      return [limit, limit];
    });
    const scanner = new JsonScanner(paths, limits);
    try {
      for await (const chunk of spool.chunks()) scanner.write(chunk);
      scanner.end();
    } catch (error) {
      if (!(error instanceof JsonSyntaxError)) throw error;
      out.push({ expectation: "json", problem: `the body is not valid JSON (${error.message})` });
      return { differences: out, json };
    }
    for (const [i, [field, expected]] of fields.entries()) {
      const top = scanner.get(2 * i);
      compareField(field, expected, top.found ? top : scanner.get(2 * i + 1), out);
    }
    return { differences: out, json };
  }

  let data: unknown;
  try {
    data = JSON.parse((await spool.readAll()).toString("utf8"));
  } catch (error) {
    if (!(error instanceof SyntaxError)) throw error;
    out.push({ expectation: "json", problem: "the body is not valid JSON" });
    return { differences: out, json };
  }
  if (expect.schema) {
    const parsed = expect.schema.safeParse(data);
    if (!parsed.success) {
      for (const issue of parsed.error.issues.slice(0, 20)) {
        out.push({
          expectation: "schema",
          field: issue.path.map(String).join(".") || "(root)",
          problem: issue.message,
        });
      }
    }
  }
  for (const [field, expected] of fields) {
    const found = lookup(data, field);
    compareField(field, expected, found.found ? { found: true, value: found.value } : { found: false }, out);
  }
  return { differences: out, json };
}

// ————————————————————————————————————————————————————— the source

interface Fetched extends Exchange {
  /** The body, on disk; whoever holds a Fetched closes it (its stream does, once read). */
  spool: Spool;
  contentType: string;
  sha256: string;
  json: boolean;
}

/**
 * Fetches into a fresh spool and checks the response against `expect`. On success the caller owns
 * the spool; on any failure it is closed here.
 */
async function fetchChecked(
  opts: HttpSourceParsed,
  p: Prepared,
  signal: AbortSignal | undefined,
  where: string,
): Promise<Fetched> {
  const dir = opts.spoolDir ?? tmpdir();
  let spool: Spool;
  try {
    spool = await Spool.create(dir);
  } catch (error) {
    throw new StowageError("SOURCE_FAILED", `${where}: cannot create a temporary file in ${dir}`, {
      cause: error,
      details: { reason: "spool", spoolDir: dir },
    });
  }
  try {
    const wanted = opts.expect.status;
    const fetched = await exchange(
      p,
      {
        method: opts.method,
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        accept: (s) => (wanted ? wanted.includes(s) : is2xx(s)),
      },
      signal,
      (reason) => (reason === "status" ? "SOURCE_VALIDATION_FAILED" : "SOURCE_FAILED"),
      where,
      spool,
    ).catch((error: unknown) => {
      if (isStowageError(error, "SOURCE_VALIDATION_FAILED")) {
        const actual = error.details.status;
        error.details.differences = [
          { expectation: "status", expected: wanted ?? "2xx", actual, problem: "status" },
        ];
      }
      throw error;
    });
    let checked: Awaited<ReturnType<typeof differences>>;
    try {
      checked = await differences(opts.expect, fetched, spool, opts.maxParseBytes);
    } catch (error) {
      throw new StowageError(
        "SOURCE_FAILED",
        scrub(`${where}: ${opts.method} ${p.display}: reading the spooled body back failed`, p.secrets),
        { cause: error, details: { url: p.display, method: opts.method, reason: "spool" } },
      );
    }
    if (checked.differences.length > 0) {
      const list = checked.differences
        .map((d) =>
          d.field ? `${d.expectation} ${d.field}: ${d.problem}` : `${d.expectation}: ${d.problem}`,
        )
        .join("; ");
      throw new StowageError(
        "SOURCE_VALIDATION_FAILED",
        scrub(
          `${where}: ${opts.method} ${p.display}: the response failed its expectations: ${list}`,
          p.secrets,
        ),
        {
          details: scrubDeep(
            {
              url: p.display,
              method: opts.method,
              status: fetched.status,
              attempts: fetched.attempts,
              reason: checked.differences[0]!.expectation,
              differences: checked.differences,
            },
            p.secrets,
          ),
        },
      );
    }
    return {
      ...fetched,
      spool,
      contentType: checked.json
        ? "application/json"
        : (mediaType(fetched.contentType) ?? "application/octet-stream"),
      sha256: spool.sha256(),
      json: checked.json,
    };
  } catch (error) {
    await spool.close();
    throw error;
  }
}

function defaultName(url: string): string {
  const u = new URL(url);
  return `${u.host}${u.pathname}`;
}

/**
 * A service's state from its backup endpoint, e.g. `GET /api/v1/backup` with a compliance header,
 * kept only when it meets `expect`. The whole response is fetched and checked *before* a byte is
 * handed to the pipeline, so a response that fails leaves no artifact and no manifest.
 *
 * Memory stays bounded whatever the body's size: the response is spooled to a temporary file
 * (`spoolDir`, 0600, unlinked as soon as it is open, closed on every path) while it is hashed and
 * counted, checked from there, and the kept artifact is streamed from it. At most `maxBytes` are
 * read (64 MiB by default; a limit on disk use, not memory). A JSON body up to `maxParseBytes`
 * (64 MiB by default, at most 256 MiB) is parsed whole for `expect.schema`; a larger one is checked
 * by a streaming scanner (JSON syntax and `expect.requiredFields`), or refused with reason
 * `"too-large-to-validate"` when `expect.schema` needs it whole. Retries connection errors, timeouts, cut bodies, 5xx
 * and 429 with exponential backoff and jitter, honouring `Retry-After` (seconds or an HTTP date,
 * capped by `maxRetryDelayMs`); never other 4xx. Uses Node's built-in `fetch`.
 *
 * Secret header values (`Authorization`, `Proxy-Authorization`, `Cookie`, `X-Api-Key`, plus
 * `secretHeaders`), URL credentials and secret query values never appear in errors or manifests.
 * The manifest's details: `url` (redacted), `method`, `status`, `bytes`, `sha256`, `attempts`,
 * `contentType`.
 *
 * @throws {CONFIG_INVALID} on bad options, each named.
 * @throws {SOURCE_VALIDATION_FAILED} (from `backup`) when the status, content type, JSON, schema or
 *   required fields differ, or a body over `maxParseBytes` meets a schema (`"too-large-to-validate"`);
 *   `details.differences` says what (`details.reason` the first).
 * @throws {SOURCE_FAILED} on connection errors, timeouts, a body that ends early (after the
 *   retries), a body over `maxBytes`, or a temporary file that cannot be written (`"spool"`);
 *   `details.reason` is an {@link HttpFailureReason}.
 * @throws {ABORTED} when the backup's signal fires, naming the job, the source and the URL.
 * @example
 * await backup({
 *   job: "policy-service",
 *   source: httpSource({
 *     url: "http://policy:8080/api/v1/backup",
 *     headers: { "X-Constitutional-Hash": "cdd01ef066bc6cf2", Authorization: `Bearer ${token}` },
 *     expect: { requiredFields: { constitutional_hash: "cdd01ef066bc6cf2" } },
 *   }),
 *   sink,
 * });
 */
export function httpSource(options: HttpSourceOptions): Source {
  const opts = parseOptions(httpSourceOptionsSchema, options, "httpSource");
  const p = prepare(opts);
  const name = opts.name ?? defaultName(p.url);
  return {
    kind: "http",
    name,
    async open({ signal, job }: SourceContext): Promise<SourceOutput> {
      const where = job ? `backup ${job}: http source ${name}` : `http source ${name}`;
      const fetched = await fetchChecked(opts, p, signal, where);
      return {
        stream: fetched.spool.stream(where),
        contentType: fetched.contentType,
        ...(fetched.json ? { extension: ".json" } : {}),
        details: async () => ({
          url: p.display,
          method: opts.method,
          status: fetched.status,
          bytes: fetched.bytes,
          sha256: fetched.sha256,
          attempts: fetched.attempts,
          contentType: fetched.contentType,
        }),
      };
    },
  };
}

// ————————————————————————————————————————————————————— bundles

/** A service name in a bundle: also its file name in the tar (`<name>.json`). */
const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const httpBundleServiceSchema = httpSourceOptionsSchema.extend({
  /** The service's name: letters, digits, `.`, `_`, `-`; its file in the tar is `<name>.json`. */
  name: z.string().regex(SERVICE_NAME, "letters, digits, '.', '_' and '-', at most 128"),
});
export type HttpBundleService = z.input<typeof httpBundleServiceSchema>;

export const httpBundleSourceOptionsSchema = z
  .object({
    services: z
      .array(httpBundleServiceSchema)
      .min(1, "at least one service")
      .refine((s) => new Set(s.map((x) => x.name)).size === s.length, "service names must be unique")
      .refine((s) => !s.some((x) => x.name === "index"), 'a service cannot be named "index"'),
    /**
     * `"all-or-nothing"`: any failed service fails the backup. `"best-effort"`: failed services are
     * listed in the details and in `index.json`, and the backup keeps the rest (it fails only when
     * every service failed). @default "all-or-nothing"
     */
    mode: z.enum(["all-or-nothing", "best-effort"]).default("all-or-nothing"),
    /** Services fetched at once. @default 4 */
    concurrency: z.number().int().min(1).max(64).default(4),
    /** Logical name for the manifest. @default "http-bundle" */
    name: z.string().min(1).default("http-bundle"),
  })
  .strict();
export type HttpBundleSourceOptions = z.input<typeof httpBundleSourceOptionsSchema>;

/** Marks an `index.json` as a bundle's, so `restoreHttp` recognises one. */
export const HTTP_BUNDLE_FORMAT = "stowage-http-bundle";

const bundleEntrySchema = z.union([
  z.object({
    name: z.string().regex(SERVICE_NAME),
    ok: z.literal(true),
    file: z.string().regex(SERVICE_NAME),
    url: z.string(),
    method: z.string(),
    status: z.number(),
    contentType: z.string(),
    bytes: z.number().int().min(0),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    attempts: z.number(),
  }),
  z.object({
    name: z.string().regex(SERVICE_NAME),
    ok: z.literal(false),
    url: z.string(),
    method: z.string(),
    error: z.object({ code: z.string(), reason: z.string().optional(), message: z.string() }),
  }),
]);
/** One line of a bundle's `index.json`. */
export type HttpBundleEntry = z.infer<typeof bundleEntrySchema>;

export const httpBundleIndexSchema = z.object({
  format: z.literal(HTTP_BUNDLE_FORMAT),
  version: z.literal(1),
  mode: z.enum(["all-or-nothing", "best-effort"]),
  services: z.array(bundleEntrySchema),
});
/** A bundle's `index.json`: each service's status, file, bytes and SHA-256, or its error. */
export type HttpBundleIndex = z.infer<typeof httpBundleIndexSchema>;

const EXTENSION: Record<string, string> = { "application/json": ".json", "text/plain": ".txt" };

/**
 * Several services' states in one tar: `index.json` first (each service's status, bytes and
 * SHA-256, or its error code), then `<name>.json` per service that answered (`<name>.txt` or
 * `<name>.bin` for a service that does not speak JSON). Each service is fetched and checked as
 * {@link httpSource} does, `concurrency` at a time; memory holds every response until the tar is
 * written (each at most its `maxBytes`).
 *
 * In `"all-or-nothing"` mode the first failure stops the others and fails the backup with that
 * service's code. In `"best-effort"` mode failures are listed in `index.json` and in the details
 * (`failed: [{ name, code, reason }]`); the backup fails only when every service failed.
 *
 * @throws {CONFIG_INVALID} on bad options (duplicate names, a service named "index"), each named.
 * @throws {SOURCE_VALIDATION_FAILED | SOURCE_FAILED} (from `backup`) as {@link httpSource}, with
 *   `details.service` and `details.failed`.
 * @example
 * httpBundleSource({
 *   mode: "best-effort",
 *   services: ["policy", "audit"].map((name) => ({
 *     name, url: `http://${name}:8080/api/v1/backup`,
 *     expect: { requiredFields: { constitutional_hash: "cdd01ef066bc6cf2" } },
 *   })),
 * })
 */
export function httpBundleSource(options: HttpBundleSourceOptions): Source {
  const opts = parseOptions(httpBundleSourceOptionsSchema, options, "httpBundleSource");
  const prepared = opts.services.map((s) => prepare(s));
  const allSecrets = [...new Set(prepared.flatMap((p) => p.secrets))].sort((a, b) => b.length - a.length);
  return {
    kind: "http-bundle",
    name: opts.name,
    async open({ signal, startedAt, job }: SourceContext): Promise<SourceOutput> {
      const prefix = job ? `backup ${job}: ` : "";
      // Our own controller: in all-or-nothing mode the first failure stops the rest.
      const controller = new AbortController();
      const forward = () => controller.abort(signal.reason);
      signal.addEventListener("abort", forward, { once: true });
      const results: Array<{ ok: true; fetched: Fetched } | { ok: false; error: StowageError } | undefined> =
        opts.services.map(() => undefined);
      let firstFailure: { index: number; error: StowageError } | undefined;
      // Every response kept so far is a spool file to close, whatever happens next.
      const closeAll = () =>
        Promise.all(results.map((r) => (r?.ok ? r.fetched.spool.close() : undefined))).then(() => undefined);
      let handedOver = false;
      try {
        return await assemble();
      } finally {
        if (!handedOver) await closeAll();
      }

      async function assemble(): Promise<SourceOutput> {
        try {
          let next = 0;
          const worker = async () => {
            while (next < opts.services.length && !controller.signal.aborted) {
              const i = next++;
              const service = opts.services[i]!;
              try {
                const fetched = await fetchChecked(
                  service,
                  prepared[i]!,
                  controller.signal,
                  `${prefix}http bundle ${opts.name}: service ${service.name}`,
                );
                results[i] = { ok: true, fetched };
              } catch (error) {
                if (signal.aborted) throw error;
                if (controller.signal.aborted) return; // stopped by another service's failure
                const wrapped = isStowageError(error)
                  ? error
                  : new StowageError(
                      "SOURCE_FAILED",
                      scrub(`http bundle ${service.name}: ${String(error)}`, allSecrets),
                    );
                results[i] = { ok: false, error: wrapped };
                if (opts.mode === "all-or-nothing") {
                  firstFailure ??= { index: i, error: wrapped };
                  controller.abort();
                }
              }
            }
          };
          await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.services.length) }, worker));
        } finally {
          signal.removeEventListener("abort", forward);
        }
        throwIfAborted(signal, `http bundle ${opts.name}`);

        const failed = results.flatMap((r, i) =>
          r && !r.ok
            ? [{ name: opts.services[i]!.name, code: r.error.code, reason: r.error.details.reason }]
            : [],
        );
        if (firstFailure) {
          const { error, index } = firstFailure;
          throw new StowageError(
            error.code,
            `http bundle ${opts.name}: service ${opts.services[index]!.name} failed (all-or-nothing): ${error.message}`,
            { cause: error, details: { ...error.details, service: opts.services[index]!.name, failed } },
          );
        }
        if (failed.length === opts.services.length) {
          const codes = new Set(failed.map((f) => f.code));
          throw new StowageError(
            codes.size === 1 ? failed[0]!.code : "SOURCE_FAILED",
            `http bundle ${opts.name}: every service failed`,
            { details: { failed } },
          );
        }

        const entries: HttpBundleEntry[] = opts.services.map((service, i) => {
          const r = results[i]!;
          const base = { name: service.name, url: prepared[i]!.display, method: service.method };
          if (!r.ok) {
            const reason =
              typeof r.error.details.reason === "string" ? { reason: r.error.details.reason } : {};
            return { ...base, ok: false, error: { code: r.error.code, ...reason, message: r.error.message } };
          }
          const f = r.fetched;
          return {
            ...base,
            ok: true,
            file: `${service.name}${EXTENSION[f.contentType] ?? ".bin"}`,
            status: f.status,
            contentType: f.contentType,
            bytes: f.bytes,
            sha256: f.sha256,
            attempts: f.attempts,
          };
        });
        const index: HttpBundleIndex = scrubDeep(
          { format: HTTP_BUNDLE_FORMAT, version: 1, mode: opts.mode, services: entries },
          allSecrets,
        );

        const pack = tar.pack();
        const header = { mode: 0o644, mtime: startedAt, type: "file" as const };
        // Each body streams from its spool into its entry, one at a time: memory holds no body.
        const produce = async () => {
          try {
            pack.entry({ ...header, name: "index.json" }, Buffer.from(`${JSON.stringify(index, null, 2)}\n`));
            for (const [i, entry] of entries.entries()) {
              const r = results[i]!;
              if (!entry.ok || !r.ok) continue;
              await pipeline(
                r.fetched.spool.stream(`${prefix}http bundle ${opts.name}: service ${entry.name}`),
                pack.entry({ ...header, name: entry.file, size: r.fetched.bytes }),
              );
            }
          } finally {
            await closeAll();
          }
        };
        const stream = packedTar(pack, produce());
        stream.once("close", () => void closeAll());
        handedOver = true;
        const ok = entries.filter((e) => e.ok);
        return {
          stream,
          contentType: "application/x-tar",
          details: async () => ({
            mode: opts.mode,
            services: entries.length,
            succeeded: ok.length,
            bytes: ok.reduce((sum, e) => sum + (e.ok ? e.bytes : 0), 0),
            failed,
            results: entries.map((e) =>
              e.ok
                ? {
                    name: e.name,
                    url: e.url,
                    status: e.status,
                    bytes: e.bytes,
                    sha256: e.sha256,
                    attempts: e.attempts,
                  }
                : {
                    name: e.name,
                    url: e.url,
                    error: e.error.code,
                    ...(e.error.reason ? { reason: e.error.reason } : {}),
                  },
            ),
          }),
        };
      }
    },
  };
}

// ————————————————————————————————————————————————————— restore

const isReadable = (v: unknown): v is Readable =>
  typeof v === "object" && v !== null && typeof (v as Readable).pipe === "function";

// A restore sends the state as the body, so `body` is not an option there.
const { body: _body, ...restoreRequestShape } = requestShape;

export const restoreHttpOptionsSchema = z
  .object({
    ...restoreRequestShape,
    /** The state to send: usually `await restore({ sink, manifest })`. */
    stream: z.custom<Readable>(isReadable, "expected a Readable"),
    /**
     * Where to send it. For a bundle: a template with `{name}` (the service's name) or a map from
     * service name to URL; every service to be restored must have one.
     */
    url: z.union([requestShape.url, z.record(z.string().regex(SERVICE_NAME), requestShape.url)]),
    /** @default "POST" */
    method: z
      .string()
      .regex(/^[A-Z]+$/, "an upper-case HTTP method")
      .default("POST"),
    /** Content type of a single state. Bundles send each service's recorded type. @default "application/json" */
    contentType: z.string().min(1).default("application/json"),
    /**
     * Whether the stream is a bundle from {@link httpBundleSource}. @default detected: a tar whose
     * first entry is a bundle `index.json`
     */
    bundle: z.boolean().optional(),
    /** Restore only these services of a bundle. @default every service the bundle holds */
    services: z.array(z.string().regex(SERVICE_NAME)).optional(),
    /** Statuses that count as restored. @default any 2xx */
    expectStatus: z.array(z.number().int().min(100).max(599)).min(1).optional(),
    /**
     * Retries for a restore request, on the same faults as the source. Off by default: a restore
     * endpoint need not be idempotent. @default 0
     */
    retries: z.number().int().min(0).max(20).default(0),
    signal: signalSchema.optional(),
  })
  .strict();
export type RestoreHttpOptions = z.input<typeof restoreHttpOptionsSchema>;

export interface RestoreHttpResult {
  /** One per request sent, in order. */
  requests: Array<{ name?: string; url: string; status: number; bytes: number; attempts: number }>;
  /** Bundle services not sent: failed at backup time, or left out by `services`. */
  skipped: Array<{ name: string; reason: "failed-at-backup" | "not-selected" }>;
}

async function untar(buffer: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  const feeding = pipeline(Readable.from([buffer], { objectMode: false }), extract);
  feeding.catch(() => undefined); // surfaced by the iteration, or awaited below
  for await (const entry of extract) {
    const body = await readAll(entry as unknown as AsyncIterable<Uint8Array>, buffer.length);
    if (entry.header.type === "file") files.set(entry.header.name, body);
  }
  await feeding;
  return files;
}

const looksLikeTar = (b: Buffer) => b.length >= 512 && b.subarray(257, 262).toString("latin1") === "ustar";

/**
 * Sends a state back to a service's restore endpoint (`POST` by default). For a bundle from
 * {@link httpBundleSource} (detected, or `bundle: true`), one request per service, to `url` with
 * `{name}` filled in or to the service's entry in a `url` map; each body is checked against the
 * SHA-256 in `index.json` before it is sent, and every URL is resolved before the first request.
 * The state is read into memory first (at most `maxBytes`, 64 MiB by default). Stops at the first
 * failed request; `details.restored` lists what was sent before it.
 *
 * @throws {CONFIG_INVALID} on bad options, or a bundle service with no URL.
 * @throws {RESTORE_FAILED} on a refused or failed request (`details.reason`, `details.status`), a
 *   damaged bundle, or a state over `maxBytes`. {@link StowageError}s from `stream` (e.g.
 *   `INTEGRITY_MISMATCH`) pass through.
 * @throws {ABORTED} when `signal` fires.
 * @example
 * await restoreHttp({
 *   stream: await restore({ sink, manifest }),
 *   url: "http://{name}:8080/api/v1/restore",
 *   headers: { Authorization: `Bearer ${token}` },
 * });
 */
export async function restoreHttp(options: RestoreHttpOptions): Promise<RestoreHttpResult> {
  const opts = parseOptions(restoreHttpOptionsSchema, options, "restoreHttp");
  const { signal, stream } = opts;
  const where = "restoreHttp";
  let state: Buffer;
  try {
    throwIfAborted(signal, where);
    state = await readAll(stream, opts.maxBytes);
  } catch (error) {
    stream.destroy();
    if (isStowageError(error)) throw error;
    if (signal?.aborted) throw new StowageError("ABORTED", `${where}: aborted`, { cause: error });
    const tooLarge = error instanceof RangeError;
    throw new StowageError(
      "RESTORE_FAILED",
      tooLarge
        ? `${where}: the state is larger than maxBytes ${opts.maxBytes}`
        : `${where}: reading the state failed`,
      { cause: error, details: { reason: tooLarge ? "too-large" : "read" } },
    );
  }
  const accept = (s: number) => (opts.expectStatus ? opts.expectStatus.includes(s) : is2xx(s));
  const send = async (url: string, body: Buffer, contentType: string, name?: string) => {
    const p = prepare({ ...opts, url, headers: { "Content-Type": contentType, ...opts.headers } });
    const result = await exchange(
      p,
      { method: opts.method, body, accept },
      signal,
      () => "RESTORE_FAILED",
      name ? `${where} ${name}` : where,
    );
    return {
      ...(name ? { name } : {}),
      url: p.display,
      status: result.status,
      bytes: body.length,
      attempts: result.attempts,
    };
  };

  let files: Map<string, Buffer> | undefined;
  let index: HttpBundleIndex | undefined;
  if (opts.bundle !== false && looksLikeTar(state)) {
    try {
      files = await untar(state);
      const raw = files.get("index.json");
      const parsed = raw ? httpBundleIndexSchema.safeParse(JSON.parse(raw.toString("utf8"))) : undefined;
      if (parsed?.success) index = parsed.data;
    } catch (error) {
      if (opts.bundle) {
        throw new StowageError("RESTORE_FAILED", `${where}: the bundle is damaged`, {
          cause: error,
          details: { reason: "bundle" },
        });
      }
    }
  }
  if (opts.bundle && !index) {
    throw new StowageError("RESTORE_FAILED", `${where}: the state is not a bundle with a valid index.json`, {
      details: { reason: "bundle" },
    });
  }

  if (!index || !files) {
    if (typeof opts.url !== "string") {
      throw new StowageError("CONFIG_INVALID", `${where}: a single state needs one url, not a map`, {
        details: { issues: [{ option: "url", problem: "a map is for bundles" }] },
      });
    }
    return { requests: [await send(opts.url, state, opts.contentType)], skipped: [] };
  }

  // A bundle: resolve every URL and check every body before the first request.
  const known = new Set(index.services.map((s) => s.name));
  const unknown = (opts.services ?? []).filter((n) => !known.has(n));
  if (unknown.length > 0) {
    throw new StowageError("CONFIG_INVALID", `${where}: the bundle has no service ${unknown.join(", ")}`, {
      details: { issues: [{ option: "services", problem: `not in the bundle: ${unknown.join(", ")}` }] },
    });
  }
  const skipped: RestoreHttpResult["skipped"] = [];
  const plan: Array<{ name: string; url: string; body: Buffer; contentType: string }> = [];
  for (const entry of index.services) {
    if (opts.services && !opts.services.includes(entry.name)) {
      skipped.push({ name: entry.name, reason: "not-selected" });
      continue;
    }
    if (!entry.ok) {
      skipped.push({ name: entry.name, reason: "failed-at-backup" });
      continue;
    }
    const url =
      typeof opts.url === "string"
        ? opts.url.includes("{name}")
          ? opts.url.replaceAll("{name}", encodeURIComponent(entry.name))
          : undefined
        : opts.url[entry.name];
    if (url === undefined) {
      throw new StowageError(
        "CONFIG_INVALID",
        `${where}: no url for service ${entry.name} (give a template with {name} or a map)`,
        { details: { issues: [{ option: "url", problem: `no url for service ${entry.name}` }] } },
      );
    }
    const body = files.get(entry.file);
    const sha = body && createHash("sha256").update(body).digest("hex");
    if (!body || body.length !== entry.bytes || sha !== entry.sha256) {
      throw new StowageError("RESTORE_FAILED", `${where}: ${entry.file} does not match the bundle's index`, {
        details: { reason: "bundle", service: entry.name },
      });
    }
    plan.push({ name: entry.name, url, body, contentType: entry.contentType });
  }
  const requests: RestoreHttpResult["requests"] = [];
  for (const item of plan) {
    try {
      requests.push(await send(item.url, item.body, item.contentType, item.name));
    } catch (error) {
      if (isStowageError(error)) {
        error.details.service = item.name;
        error.details.restored = requests.map((r) => r.name);
      }
      throw error;
    }
  }
  return { requests, skipped };
}
