import { tmpdir } from "node:os";
import type { z } from "zod";
import { isStowageError, StowageError } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import type { HttpRequestOptions } from "./exchange.js";
import { type Exchange, exchange, is2xx, requestShape } from "./exchange.js";
import type { HttpExpect } from "./expect.js";
import {
  DEFAULT_HTTP_MAX_PARSE_BYTES,
  differences,
  httpExpectSchema,
  MAX_HTTP_PARSE_BYTES,
  mediaType,
} from "./expect.js";
import { type Prepared, prepare, scrub, scrubDeep } from "./secrets.js";
import { Spool } from "./spool.js";

// `httpSource`: one endpoint's state, fetched into a spool and checked before a byte is kept.

/** Options of the source only: how a fetched body is kept and checked. */
const sourceShape = lazySchema((z) => ({
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
}));

/** The zod schema of {@link HttpSourceOptions}, which parses the options at the boundary. */
export const httpSourceOptionsSchema = lazySchema((z) =>
  z
    .object({
      ...requestShape,
      ...sourceShape,
      /** What the response must look like before it is kept. @default any 2xx */
      expect: httpExpectSchema.default({}),
      /** Logical name for the manifest. @default the URL's host and path */
      name: z.string().min(1).optional(),
    })
    .strict(),
);
export interface HttpSourceOptions extends HttpRequestOptions {
  /** What the response must look like before it is kept. @default any 2xx */
  expect?: HttpExpect;
  /** Logical name for the manifest. @default the URL's host and path */
  name?: string;
  /**
   * The largest JSON body parsed whole in memory (needed by `expect.schema`). A larger body is
   * checked by a streaming scanner instead, in constant memory: its JSON syntax and
   * `expect.requiredFields` (values up to 64 KiB each); with `expect.schema` it is refused with
   * reason `"too-large-to-validate"`. At most {@link MAX_HTTP_PARSE_BYTES}. @default 64 MiB
   */
  maxParseBytes?: number;
  /**
   * Folder for the temporary file each response is spooled to while it is fetched and checked:
   * mode 0600 in a fresh 0700 folder, unlinked as soon as it is open (so nothing is left even if
   * the process dies) and closed when the backup ends, fails or is aborted. @default os.tmpdir()
   */
  spoolDir?: string;
}
type _HttpSourceOptionsAgrees = Assert<Agrees<HttpSourceOptions, z.input<typeof httpSourceOptionsSchema>>>;
type HttpSourceParsed = z.output<typeof httpSourceOptionsSchema>;

export interface Fetched extends Exchange {
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
export async function fetchChecked(
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
 *   `details.reason` is an `HttpFailureReason`.
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
