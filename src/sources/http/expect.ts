import { isDeepStrictEqual } from "node:util";
import type { z } from "zod";
import { lazySchema } from "../../core/options.js";
import type { Agrees, Assert } from "../../core/type-checks.js";
import type { Exchange, HttpFailureReason } from "./exchange.js";
import { JsonScanner, JsonSyntaxError, type ScannedValue } from "./json-scan.js";
import type { Spool } from "./spool.js";

// What a fetched response must look like before it is kept (`expect`), checked from the spool:
// parsed whole up to `maxParseBytes`, scanned while streaming above it.

/** The largest JSON body parsed whole in memory, unless `maxParseBytes` says otherwise: 64 MiB. */
export const DEFAULT_HTTP_MAX_PARSE_BYTES = 64 * 1024 * 1024;

/**
 * The ceiling for `maxParseBytes`: a parse holds the body about three times over (bytes, string,
 * value), and V8 cannot make a string much over 512 MiB at all.
 */
export const MAX_HTTP_PARSE_BYTES = 256 * 1024 * 1024;

const isZodSchema = (v: unknown): v is z.ZodType =>
  typeof v === "object" && v !== null && typeof (v as z.ZodType).safeParse === "function";

/** The zod schema of {@link HttpExpect}: a response expectation. */
export const httpExpectSchema = lazySchema((z) =>
  z
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
    .strict(),
);
/**
 * An HTTP source's `expect`: what a response must be to be kept (status, content type, JSON, a
 * zod schema), so that an error page is never stored as state.
 */
export interface HttpExpect {
  /** Accepted status codes. @default any 2xx */
  status?: number[];
  /**
   * Accepted media types, compared without parameters and case-insensitively
   * (`"application/json"` accepts `application/json; charset=utf-8`).
   * @default any
   */
  contentType?: string | string[];
  /** A zod schema the JSON body must satisfy. */
  schema?: z.ZodType;
  /**
   * Fields the JSON body must carry, with exact values (deep equality). A key is a dot-separated
   * path (`"meta.hash"`); a top-level key that itself contains dots is looked up first.
   * @example { constitutional_hash: "cdd01ef066bc6cf2" }
   */
  requiredFields?: Record<string, unknown>;
  /**
   * Parse the body as JSON and refuse it if it is not. @default true when `schema` or
   * `requiredFields` is set or the response says it is JSON (`application/json`, `…+json`).
   */
  json?: boolean;
}
type _HttpExpectAgrees = Assert<Agrees<HttpExpect, z.input<typeof httpExpectSchema>>>;

export const mediaType = (contentType: string | undefined) =>
  contentType?.split(";")[0]?.trim().toLowerCase();
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
export async function differences(
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
