import { pipeline } from "node:stream/promises";
import type { z } from "zod";
import { linkSignal } from "../../core/abort.js";
import { eachConcurrently } from "../../core/each-concurrently.js";
import { isStowageError, StowageError, throwIfAborted } from "../../core/errors.js";
import { lazySchema, parseOptions } from "../../core/options.js";
import { newPack, packedTar } from "../../core/pack-tar.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Source, SourceContext, SourceOutput } from "../../core/types.js";
import type { HttpSourceOptions } from "./http-source.js";
import { type Fetched, fetchChecked, httpSourceOptionsSchema } from "./http-source.js";
import { prepare, scrub, scrubDeep } from "./secrets.js";

// `httpBundleSource`: several services' states in one tar, with an `index.json` first.

/** A service name in a bundle: also its file name in the tar (`<name>.json`). */
export const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** The zod schema of {@link HttpBundleService}: one service of a bundle. */
export const httpBundleServiceSchema = lazySchema((z) =>
  httpSourceOptionsSchema.extend({
    /** The service's name: letters, digits, `.`, `_`, `-`; its file in the tar is `<name>.json`. */
    name: z.string().regex(SERVICE_NAME, "letters, digits, '.', '_' and '-', at most 128"),
  }),
);
export interface HttpBundleService extends HttpSourceOptions {
  /** The service's name: letters, digits, `.`, `_`, `-`; its file in the tar is `<name>.json`. */
  name: string;
}
type _HttpBundleServiceAgrees = Assert<Agrees<HttpBundleService, z.input<typeof httpBundleServiceSchema>>>;

/** The zod schema of {@link HttpBundleSourceOptions}, which parses the options at the boundary. */
export const httpBundleSourceOptionsSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/** What {@link httpBundleSource} takes: the services to fetch, and the options they share. */
export interface HttpBundleSourceOptions {
  /** The services whose state is fetched, one file each in the tar. */
  services: HttpBundleService[];
  /**
   * `"all-or-nothing"`: any failed service fails the backup. `"best-effort"`: failed services are
   * listed in the details and in `index.json`, and the backup keeps the rest (it fails only when
   * every service failed). @default "all-or-nothing"
   */
  mode?: "all-or-nothing" | "best-effort";
  /** Services fetched at once. @default 4 */
  concurrency?: number;
  /** Logical name for the manifest. @default "http-bundle" */
  name?: string;
}
type _HttpBundleSourceOptionsAgrees = Assert<
  Agrees<HttpBundleSourceOptions, z.input<typeof httpBundleSourceOptionsSchema>>
>;

/** Marks an `index.json` as a bundle's, so `restoreHttp` recognises one. */
export const HTTP_BUNDLE_FORMAT = "stowage-http-bundle";

/** The zod schema of {@link HttpBundleEntry}: one entry of a bundle's index. */
export const bundleEntrySchema = lazySchema((z) =>
  z.union([
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
  ]),
);
/** One line of a bundle's `index.json`: a service that was fetched, or one that failed. */
export type HttpBundleEntry =
  | {
      /** The service's name, as the bundle's options gave it. */
      name: string;
      /** Fetched and checked: its body is in `file`. */
      ok: true;
      /** Its file inside the bundle. */
      file: string;
      /** Where it was fetched from (credentials stripped). */
      url: string;
      /** The HTTP method used. */
      method: string;
      /** The HTTP status the service answered. */
      status: number;
      /** The response's content type. */
      contentType: string;
      /** The body's length. */
      bytes: number;
      /** SHA-256 of the body, lowercase hex. */
      sha256: string;
      /** How many requests it took. */
      attempts: number;
    }
  | {
      /** The service's name, as the bundle's options gave it. */
      name: string;
      /** Not fetched (best-effort mode): `error` says why. */
      ok: false;
      /** Where it was fetched from (credentials stripped). */
      url: string;
      /** The HTTP method used. */
      method: string;
      /** Why it failed: a {@link StowageError} code, its reason, its message. */
      error: {
        /** The {@link StowageError} code. */
        code: string;
        /** Its reason, when the code has one. */
        reason?: string | undefined;
        /** The error's message (stowage's errors never carry a secret). */
        message: string;
      };
    };
type _HttpBundleEntryAgrees = Assert<Agrees<HttpBundleEntry, z.output<typeof bundleEntrySchema>>>;

/** The zod schema of {@link HttpBundleIndex}: a bundle's index. */
export const httpBundleIndexSchema = lazySchema((z) =>
  z.object({
    format: z.literal(HTTP_BUNDLE_FORMAT),
    version: z.literal(1),
    mode: z.enum(["all-or-nothing", "best-effort"]),
    services: z.array(bundleEntrySchema),
  }),
);
/** A bundle's `index.json`: each service's status, file, bytes and SHA-256, or its error. */
export interface HttpBundleIndex {
  /** Always "stowage-http-bundle": marks the index as a bundle's. */
  format: typeof HTTP_BUNDLE_FORMAT;
  /** The index's layout version. */
  version: 1;
  /** Whether one failed service failed the bundle, or was recorded and skipped. */
  mode: "all-or-nothing" | "best-effort";
  /** One entry per service, in the order given. */
  services: HttpBundleEntry[];
}
type _HttpBundleIndexAgrees = Assert<Agrees<HttpBundleIndex, z.output<typeof httpBundleIndexSchema>>>;

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
      const controller = linkSignal(signal);
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
          await eachConcurrently(
            opts.services,
            opts.concurrency,
            async (service, i) => {
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
            },
            () => controller.signal.aborted,
          );
        } finally {
          controller.dispose();
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

        const pack = await newPack();
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
