import { setTimeout as sleep } from "node:timers/promises";
import type { z } from "zod";
import { linkSignal } from "../../core/abort.js";
import { StowageError, type StowageErrorCode } from "../../core/errors.js";
import { lazySchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { type Prepared, scrub, scrubbedCause } from "./secrets.js";
import type { Spool } from "./spool.js";

// One HTTP request as the source and restore send it: per-attempt timeout, retries with backoff
// and Retry-After, the body spooled (never held in memory), errors coded and scrubbed.

/** The most bytes read from one response, unless `maxBytes` says otherwise: 64 MiB. */
export const DEFAULT_HTTP_MAX_BYTES = 64 * 1024 * 1024;

/** Options of one request, shared by the source, the bundle's services and the restore. */
export const requestShape = lazySchema((z) => ({
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
  /** More header names to treat as secret, besides `DEFAULT_SECRET_HEADERS` (exported by `stowage/sources/http`). @default [] */
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
}));

/** Options of one HTTP request, shared by the source, a bundle's services and the restore. */
export interface HttpRequestOptions {
  /** The endpoint. Credentials in it (`https://user:pass@…`) become a Basic Authorization header. */
  url: string;
  /** @default "GET" */
  method?: string;
  /** Request headers. Values of secret headers never appear in errors or manifests. @default {} */
  headers?: Record<string, string>;
  /** A request body, e.g. for a `POST` backup endpoint. */
  body?: string;
  /** Per attempt, for the whole exchange (connect, headers, body). @default 30000 */
  timeoutMs?: number;
  /** Further attempts after a connection error, a timeout, a cut body, a 5xx or a 429. @default 3 */
  retries?: number;
  /** First backoff delay; doubles each retry, with jitter (half fixed, half random). @default 500 */
  retryDelayMs?: number;
  /** Cap on one backoff delay, a `Retry-After` included. @default 30000 */
  maxRetryDelayMs?: number;
  /**
   * The most bytes read from one response; a larger one fails with reason `"too-large"`. The body
   * goes to a temporary file, not to memory, so this bounds disk use: raise it freely. @default 64 MiB
   */
  maxBytes?: number;
  /** More header names to treat as secret, besides `DEFAULT_SECRET_HEADERS`. @default [] */
  secretHeaders?: string[];
  /**
   * Query parameters whose values are redacted from recorded URLs and errors, besides any whose
   * name contains token, key, secret, pass, sig, auth, credential, session or code. @default []
   */
  secretParams?: string[];
  /**
   * Follow redirects. Off by default: a redirect would carry custom secret headers (an API key) to
   * wherever it points; a 3xx then fails the status expectation instead. @default false
   */
  followRedirects?: boolean;
}
type _HttpRequestAgrees = Assert<Agrees<HttpRequestOptions, z.input<z.ZodObject<typeof requestShape>>>>;

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

export interface Exchange {
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

export const is2xx = (s: number) => s >= 200 && s < 300;
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
  const controller = linkSignal(signal, { timeoutMs: p.timeoutMs });
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const failed = (error: unknown, reading: boolean): never => {
    if (error instanceof AttemptFailure) throw error;
    if (signal?.aborted) throw aborted(where, request.method, p, signal.reason);
    if (controller.timedOut) {
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
    controller.dispose();
    // Releases the socket when we stopped reading early (too large, aborted).
    await reader?.cancel().catch(() => undefined);
  }
}

/**
 * One request with retries on connection errors, timeouts, cut bodies, 5xx and 429 (honouring
 * `Retry-After`, capped), never on other statuses. Errors carry `code(reason)` and secret-free
 * details: the displayed URL, the attempts, the status, the reason.
 */
export async function exchange(
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
