import { createRequire } from "node:module";
import type { z } from "zod";
import { StowageError } from "./errors.js";
import { type Issue, issuesFrom, listIssues } from "./issues.js";
import type { Sink, Source, Transform } from "./types.js";

/**
 * Parses a factory's or a function's options at the boundary. Every bad option is named in the
 * message and listed in `details.issues` (`{ path, problem }`, see `Issue`), so a user fixes them all at once.
 *
 * @throws {CONFIG_INVALID} when the input does not match the schema.
 */
export function parseOptions<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  // Bytes where the options object belongs (`bytesSource(buffer)`): a strict object schema would
  // list every index and method of the buffer as an unknown key. One line says what is wrong.
  const issues: Issue[] =
    ArrayBuffer.isView(input) || input instanceof ArrayBuffer
      ? [
          {
            path: "(options)",
            problem: `expected an options object, got a ${input.constructor.name} of ${input.byteLength} bytes (bytes go in one of its options)`,
          },
        ]
      : issuesFrom(result.error.issues, "(options)");
  const list = listIssues(issues);
  throw new StowageError("CONFIG_INVALID", `${where}: invalid options: ${list}`, { details: { issues } });
}

/**
 * Options that are plain data (strings, numbers, booleans, arrays and plain objects of them) as
 * JSON, for {@link parseOptionsOnce}; undefined for anything else (a Date, a function, NaN, a
 * cycle), which is then parsed every time. An `undefined` property is kept in the text, since a
 * strict schema refuses an unknown key whatever its value.
 */
function plainKey(input: unknown): string | undefined {
  let plain = true;
  try {
    const text = JSON.stringify(input, function (this: Record<string, unknown>, key, value) {
      const raw = this[key];
      if (raw === undefined) return "\u0000undefined";
      const type = typeof raw;
      if (
        (type === "number" && !Number.isFinite(raw)) ||
        type === "function" ||
        type === "symbol" ||
        type === "bigint" ||
        (type === "object" &&
          raw !== null &&
          ((!Array.isArray(raw) &&
            Object.getPrototypeOf(raw) !== Object.prototype &&
            Object.getPrototypeOf(raw) !== null) ||
            // JSON would print what toJSON returns, not the object a schema sees.
            typeof (raw as { toJSON?: unknown }).toJSON === "function"))
      ) {
        plain = false;
        return null;
      }
      return value;
    });
    return plain ? text : undefined;
  } catch {
    return undefined;
  }
}

const parsedOnce = new WeakMap<z.ZodType, Map<string, unknown>>();
const PARSED_ONCE_MAX = 64;

/**
 * {@link parseOptions} for plain-data options that a caller passes again and again (a job's
 * retention policy, its validation rules: every run plans with them), remembering what each
 * distinct value parsed to. The key is the value's content, not its identity, so an object
 * changed between calls is parsed afresh. What is returned is shared between calls: read it,
 * never change it. Bad options are never remembered; they throw as {@link parseOptions} does.
 *
 * @throws {CONFIG_INVALID} when the input does not match the schema.
 */
export function parseOptionsOnce<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const key = plainKey(input);
  if (key === undefined) return parseOptions(schema, input, where);
  let known = parsedOnce.get(schema);
  if (!known) {
    known = new Map();
    parsedOnce.set(schema, known);
  }
  if (known.has(key)) return known.get(key) as z.output<S>;
  const parsed = parseOptions(schema, input, where);
  if (known.size >= PARSED_ONCE_MAX) known.clear();
  known.set(key, parsed);
  return parsed;
}

type Zod = typeof z;
let zodModule: Zod | undefined;

/**
 * zod, loaded at its first use rather than at `import "stowage"`: it is half of what importing the
 * main entry costs (`npm run bench:import`). Loaded synchronously because factories validate their
 * options synchronously; zod 4's schemas work across its ESM and CJS copies. A bundler does not
 * follow this require, so a service bundled without its node_modules must keep `zod` beside the
 * bundle (install it, or mark it external): its absence is an UNSUPPORTED error saying so.
 * @internal
 */
export function loadZod(): Zod {
  if (zodModule) return zodModule;
  // The CJS build gets import.meta.url from the bundler, as the file's own URL.
  try {
    zodModule = (createRequire(import.meta.url)("zod") as { z: Zod }).z;
  } catch (error) {
    throw new StowageError(
      "UNSUPPORTED",
      'stowage needs its dependency "zod", which is not installed where this code runs: install it (npm install zod), or keep it external when bundling',
      { cause: error, details: { package: "zod" } },
    );
  }
  return zodModule;
}

/**
 * A zod schema built at its first use (any property read, `.parse()` included), so that defining
 * and exporting schemas costs nothing at import. The value behaves as the schema `build` returns:
 * it parses, composes into other schemas and reports the same issues.
 * @internal
 */
export function lazySchema<T extends object>(build: (zod: Zod) => T): T {
  let schema: T | undefined;
  const real = (): T => {
    schema ??= build(loadZod());
    return schema;
  };
  return new Proxy({} as T, {
    get: (_target, key) => Reflect.get(real(), key),
    has: (_target, key) => Reflect.has(real(), key),
    set: (_target, key, value) => Reflect.set(real(), key, value),
    ownKeys: () => Reflect.ownKeys(real()),
    // The proxy's own target is an empty object, so a property may only be reported as configurable.
    getOwnPropertyDescriptor: (_target, key) => {
      const descriptor = Reflect.getOwnPropertyDescriptor(real(), key);
      return descriptor && { ...descriptor, configurable: true };
    },
    getPrototypeOf: () => Reflect.getPrototypeOf(real()),
  });
}

/** A duration such as "15m", "24h", "30d", "2w", "7y" (also "90s", "500ms"). */
export const durationSchema = lazySchema((z) =>
  z.string().regex(/^\d+(ms|s|m|h|d|w|y)$/, 'expected a duration such as "15m", "24h", "30d" or "7y"'),
);

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  // A year is 365.25 days here: "7y" means seven years of elapsed time, not calendar years.
  y: 365.25 * 86_400_000,
};

/**
 * Milliseconds in a duration string.
 * @throws {CONFIG_INVALID} on a string that is not a duration.
 * @example parseDuration("30d") // 2_592_000_000
 */
export function parseDuration(value: string, option = "duration"): number {
  const match = /^(\d+)(ms|s|m|h|d|w|y)$/.exec(value);
  if (!match) {
    throw new StowageError("CONFIG_INVALID", `${option}: "${value}" is not a duration such as "30d"`, {
      details: { issues: [{ path: option, problem: "not a duration" }] },
    });
  }
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}

/** A zod check that a value is an AbortSignal (or absent). */
export const signalSchema = lazySchema((z) =>
  z.custom<AbortSignal>((v) => v instanceof AbortSignal, "expected an AbortSignal"),
);

/**
 * A zod check for bytes: any `Uint8Array`, a `Buffer` included. (`z.instanceof(Uint8Array)` infers
 * `Uint8Array<ArrayBuffer>`, which a `Buffer<ArrayBufferLike>` does not fit under TypeScript 5.7+.)
 */
export const bytesSchema = lazySchema((z) =>
  z.custom<Uint8Array>((v) => v instanceof Uint8Array, "expected bytes (a Buffer or Uint8Array)"),
);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** A Source, checked by shape (an object with `open()`), so users' own sources pass. */
export const sourceSchema = lazySchema((z) =>
  z.custom<Source>(
    (v) => isObject(v) && typeof v.open === "function",
    "expected a Source (an object with open())",
  ),
);
/** A Sink, checked by shape (`write()` and declared `capabilities`). */
export const sinkSchema = lazySchema((z) =>
  z.custom<Sink>(
    (v) => isObject(v) && typeof v.write === "function" && "capabilities" in v,
    "expected a Sink (an object with write() and capabilities)",
  ),
);
/** A Transform, checked by shape (an object with `encode()`). */
export const transformSchema = lazySchema((z) =>
  z.custom<Transform>((v) => isObject(v) && typeof v.encode === "function", "expected a Transform"),
);
