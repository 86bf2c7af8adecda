import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import { isStowageError, StowageError, throwIfAborted } from "../../core/errors.js";
import { loadTarStream } from "../../core/lazy-deps.js";
import { lazySchema, parseOptions, signalSchema } from "../../core/options.js";
import { readAll } from "../../core/streams.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import { type HttpBundleIndex, httpBundleIndexSchema, SERVICE_NAME } from "./bundle-source.js";
import type { HttpRequestOptions } from "./exchange.js";
import { exchange, is2xx, requestShape } from "./exchange.js";
import { prepare } from "./secrets.js";

// `restoreHttp`: sends a single state or a bundle's services back to their restore endpoints.

const isReadable = (v: unknown): v is Readable =>
  typeof v === "object" && v !== null && typeof (v as Readable).pipe === "function";

// A restore sends the state as the body, so `body` is not an option there. (A function, so that
// reading the shape, and with it loading zod, waits for the schema's first use.)
const restoreRequestShape = () => {
  const { body: _body, ...rest } = requestShape;
  return rest;
};

/** The zod schema of {@link RestoreHttpOptions}, which parses the options at the boundary. */
export const restoreHttpOptionsSchema = lazySchema((z) =>
  z
    .object({
      ...restoreRequestShape(),
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
    .strict(),
);
/**
 * What {@link restoreHttp} takes: the state to send, where and how to send it, and which bundle
 * services; plus the request options of the HTTP sources (headers, timeouts, size limit).
 */
export interface RestoreHttpOptions extends Omit<HttpRequestOptions, "url" | "method" | "body" | "retries"> {
  /** The state to send: usually `await restore({ sink, manifest })`. */
  stream: Readable;
  /**
   * Where to send it. For a bundle: a template with `{name}` (the service's name) or a map from
   * service name to URL; every service to be restored must have one.
   */
  url: string | Record<string, string>;
  /** @default "POST" */
  method?: string;
  /** Content type of a single state. Bundles send each service's recorded type. @default "application/json" */
  contentType?: string;
  /**
   * Whether the stream is a bundle from {@link httpBundleSource}. @default detected: a tar whose
   * first entry is a bundle `index.json`
   */
  bundle?: boolean;
  /** Restore only these services of a bundle. @default every service the bundle holds */
  services?: string[];
  /** Statuses that count as restored. @default any 2xx */
  expectStatus?: number[];
  /**
   * Retries for a restore request, on the same faults as the source. Off by default: a restore
   * endpoint need not be idempotent. @default 0
   */
  retries?: number;
  /** Aborts the operation; it then rejects with code `ABORTED`. */
  signal?: AbortSignal;
}
type _RestoreHttpOptionsAgrees = Assert<Agrees<RestoreHttpOptions, z.input<typeof restoreHttpOptionsSchema>>>;

/** What {@link restoreHttp} sent, and which bundle services it did not. */
export interface RestoreHttpResult {
  /** One per request sent, in order. */
  requests: Array<{
    /** The bundle service, absent for a single state. */
    name?: string;
    /** The URL the state went to, without credentials or secret query values. */
    url: string;
    /** The HTTP status of the last attempt. */
    status: number;
    /** Bytes of the request body. */
    bytes: number;
    /** How many times it was sent (1 without retries). */
    attempts: number;
  }>;
  /** Bundle services not sent: failed at backup time, or left out by `services`. */
  skipped: Array<{
    /** The bundle service. */
    name: string;
    /** `failed-at-backup`: the bundle holds no state for it; `not-selected`: not in `services`. */
    reason: "failed-at-backup" | "not-selected";
  }>;
}

async function untar(buffer: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = (await loadTarStream()).extract();
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
        details: { issues: [{ path: "url", problem: "a map is for bundles" }] },
      });
    }
    return { requests: [await send(opts.url, state, opts.contentType)], skipped: [] };
  }

  // A bundle: resolve every URL and check every body before the first request.
  const known = new Set(index.services.map((s) => s.name));
  const unknown = (opts.services ?? []).filter((n) => !known.has(n));
  if (unknown.length > 0) {
    throw new StowageError("CONFIG_INVALID", `${where}: the bundle has no service ${unknown.join(", ")}`, {
      details: { issues: [{ path: "services", problem: `not in the bundle: ${unknown.join(", ")}` }] },
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
        { details: { issues: [{ path: "url", problem: `no url for service ${entry.name}` }] } },
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
