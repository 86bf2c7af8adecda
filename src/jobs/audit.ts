import { randomBytes } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Readable } from "node:stream";
import type { z } from "zod";
import { isStowageError, StowageError, wrapError } from "../core/errors.js";
import { assertSafeKey } from "../core/keys.js";
import type { Manifest } from "../core/manifest.js";
import { lazySchema, parseOptions, sinkSchema } from "../core/options.js";
import { readAll } from "../core/streams.js";
import type { Agrees, Assert } from "../core/type-checks.js";
import type { Sink } from "../core/types.js";

/** What an audit line records. */
export const AUDIT_ACTIONS = ["backup", "copy", "verify", "restore", "delete", "drill"] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

const sha256Hex = lazySchema((z) => z.string().regex(/^[0-9a-f]{64}$/));
const short = lazySchema((z) => z.string().max(512));

/**
 * One line of the audit log. The schema is strict and every field is a fact stowage computed (names,
 * keys, sizes, hashes, codes): there is no free-text field that could carry a message, a
 * connection string or a key. Errors are recorded by `code` only.
 */
export const auditEntrySchema = lazySchema((z) =>
  z
    .object({
      /** ISO time the action finished. */
      time: z.iso.datetime({ offset: true }),
      /** What was done: `backup`, `copy`, `verify`, `restore`, `delete`, `drill`… */
      action: z.enum(AUDIT_ACTIONS),
      /** The job's name. */
      job: short,
      /** The artifact key the action was about. */
      key: short.optional(),
      /** The backup id. */
      id: short.optional(),
      /** The sink kind acted on (for a copy: the destination). */
      sink: short.optional(),
      /** Where the object is (credentials stripped from URLs). */
      location: short.optional(),
      /** Stored bytes and their SHA-256. */
      bytes: z.number().int().nonnegative().optional(),
      /** SHA-256 of the stored bytes, lowercase hex. */
      sha256: sha256Hex.optional(),
      /** Plain bytes and their SHA-256. */
      plainBytes: z.number().int().nonnegative().optional(),
      /** SHA-256 of the plain bytes (before transforms), lowercase hex. */
      plainSha256: sha256Hex.optional(),
      /** For a copy: the sink kind copied from. */
      from: short.optional(),
      /** For a deletion: the retention reason; for a drill: the target kind. */
      reason: short.optional(),
      /** How long the action took, in milliseconds. */
      durationMs: z.number().nonnegative().optional(),
      /** `ok`, or `failed` with the reason in `error`. */
      result: z.enum(["ok", "failed"]),
      /** The replica that acted, when its job runs on a lock (several replicas share the trail). */
      replica: short.optional(),
      /** The fencing token of the lease the backup was committed under (see the manifest's `lease`). */
      fencingToken: z.number().int().nonnegative().optional(),
      /** A {@link StowageError} code (or "UNKNOWN"); never the message. */
      error: z
        .string()
        .regex(/^[A-Z][A-Z0-9_]{0,63}$/)
        .optional(),
    })
    .strict(),
);
/**
 * One line of the audit log, as {@link auditEntrySchema} checks it: facts stowage computed, never a
 * message or a secret.
 */
export interface AuditEntry {
  /** ISO time the action finished, with an offset. */
  time: string;
  /** What was done: `backup`, `copy`, `verify`, `restore`, `delete`, `drill`. */
  action: AuditAction;
  /** The job's name. */
  job: string;
  /** The artifact key the action was about. */
  key?: string | undefined;
  /** The backup id. */
  id?: string | undefined;
  /** The sink kind acted on (for a copy: the destination). */
  sink?: string | undefined;
  /** Where the object is (credentials stripped from URLs). */
  location?: string | undefined;
  /** Stored bytes. */
  bytes?: number | undefined;
  /** SHA-256 of the stored bytes, lowercase hex. */
  sha256?: string | undefined;
  /** Plain bytes (before transforms). */
  plainBytes?: number | undefined;
  /** SHA-256 of the plain bytes, lowercase hex. */
  plainSha256?: string | undefined;
  /** For a copy: the sink kind copied from. */
  from?: string | undefined;
  /** For a deletion: the retention reason; for a drill: the target kind. */
  reason?: string | undefined;
  /** How long the action took, in milliseconds. */
  durationMs?: number | undefined;
  /** `ok`, or `failed` with the code in `error`. */
  result: "ok" | "failed";
  /** The replica that acted, when its job runs on a lock (several replicas share the trail). */
  replica?: string | undefined;
  /** The fencing token of the lease the backup was committed under (see the manifest's `lease`). */
  fencingToken?: number | undefined;
  /** A {@link StowageError} code (or "UNKNOWN"); never the message. */
  error?: string | undefined;
}
type _AuditEntryAgrees = Assert<Agrees<AuditEntry, z.output<typeof auditEntrySchema>>>;
/** An entry as callers give it: `time` defaults to now. */
export type AuditEntryInput = Omit<AuditEntry, "time"> & {
  /** ISO time the action finished, with an offset. @default the time of the call */
  time?: string;
};

/**
 * Where audit lines go. `record` validates and appends one line; `flush` makes buffered lines
 * durable (a file trail writes each line at once, a sink trail writes its buffer as one object).
 */
export interface AuditTrail {
  /** Appends one entry. @throws {CONFIG_INVALID} for an entry that does not match the schema. */
  record(entry: AuditEntryInput): Promise<void>;
  /** Writes what is buffered. @throws {SINK_WRITE_FAILED} */
  flush(options?: { signal?: AbortSignal }): Promise<void>;
}

/** Strips `user:password@` from anything that parses as a URL, so a location never carries one. */
export function redactLocation(location: string): string {
  try {
    const url = new URL(location);
    if (url.username === "" && url.password === "") return location;
    url.username = "";
    url.password = "";
    return url.toString();
  } catch {
    return location;
  }
}

/** The code to record for a failure: a stowage code, or "UNKNOWN". */
export function errorCode(error: unknown): string {
  return isStowageError(error) ? error.code : "UNKNOWN";
}

/** The manifest facts an audit line carries: key, id, sink, location, sizes and hashes. */
export function manifestFacts(
  manifest: Manifest,
): Pick<
  AuditEntry,
  | "job"
  | "key"
  | "id"
  | "sink"
  | "location"
  | "bytes"
  | "sha256"
  | "plainBytes"
  | "plainSha256"
  | "fencingToken"
> {
  return {
    job: manifest.job,
    key: manifest.artifact.key,
    id: manifest.id,
    sink: manifest.artifact.sink,
    location: redactLocation(manifest.artifact.location),
    bytes: manifest.artifact.bytes,
    sha256: manifest.artifact.sha256,
    plainBytes: manifest.content.bytes,
    plainSha256: manifest.content.sha256,
    ...(manifest.lease ? { fencingToken: manifest.lease.fencingToken } : {}),
  };
}

function toLine(entry: AuditEntryInput): string {
  const input = {
    ...entry,
    time: entry.time ?? new Date().toISOString(),
    ...(entry.location === undefined ? {} : { location: redactLocation(entry.location) }),
  };
  const parsed = parseOptions(auditEntrySchema, input, "audit entry");
  return `${JSON.stringify(parsed)}\n`;
}

export const fileAuditOptionsSchema = lazySchema((z) =>
  z
    .object({
      /** The JSON-lines file; created (with its folder) if missing, appended to otherwise. */
      path: z.string().min(1),
      /** Mode of a file the trail creates. @default 0o600 */
      mode: z.number().int().min(0).max(0o777).default(0o600),
    })
    .strict(),
);
/** An audit trail in a JSON-lines file. */
export interface FileAuditOptions {
  /** The JSON-lines file; created (with its folder) if missing, appended to otherwise. */
  path: string;
  /** Mode of a file the trail creates. @default 0o600 */
  mode?: number;
}
type _FileAuditOptionsAgrees = Assert<Agrees<FileAuditOptions, z.input<typeof fileAuditOptionsSchema>>>;

export const sinkAuditOptionsSchema = lazySchema((z) =>
  z
    .object({
      sink: sinkSchema,
      /** Key prefix of the audit objects. @default "audit" */
      prefix: z
        .string()
        .regex(/^[a-z0-9][a-z0-9._/-]*$/, "lowercase letters, digits, '.', '_', '-' and '/'")
        .default("audit"),
    })
    .strict(),
);
/** An audit trail written to a sink, one object per flush. */
export interface SinkAuditOptions {
  /** The sink the audit objects are written to. */
  sink: Sink;
  /** Key prefix of the audit objects. @default "audit" */
  prefix?: string;
}
type _SinkAuditOptionsAgrees = Assert<Agrees<SinkAuditOptions, z.input<typeof sinkAuditOptionsSchema>>>;

/** Where `auditLog` writes: `{ path }` for a file, `{ sink, prefix? }` for a sink. */
export type AuditLogOptions = FileAuditOptions | SinkAuditOptions;

/**
 * An audit trail: JSON lines appended to a file, or written to a sink under a prefix.
 *
 * - `{ path }`: each `record` appends its line at once (`O_APPEND`, one write per line), so lines
 *   from concurrent jobs never interleave. The file is created with mode 0600.
 * - `{ sink, prefix }`: sinks cannot append, so lines are buffered and each `flush` writes them as
 *   one object, `<prefix>/<yyyy>/<mm>/<dd>/<time>-<random>.jsonl`; `runJobs`, the scheduler and
 *   `restoreDrill` flush at the end of each run. Memory: the lines of one run.
 *
 * @throws {CONFIG_INVALID} for bad options.
 * @example const audit = auditLog({ path: "/var/log/stowage/audit.jsonl" });
 *   await runJobs(jobs, { audit });
 */
export function auditLog(options: AuditLogOptions): AuditTrail {
  if (typeof options === "object" && options !== null && "sink" in options) {
    return sinkAudit(parseOptions(sinkAuditOptionsSchema, options, "auditLog"));
  }
  return fileAudit(parseOptions(fileAuditOptionsSchema, options, "auditLog"));
}

function fileAudit(opts: z.output<typeof fileAuditOptionsSchema>): AuditTrail {
  const path = resolve(opts.path);
  let chain: Promise<void> = Promise.resolve();
  let madeDir = false;
  return {
    record(entry) {
      let line: string;
      try {
        line = toLine(entry);
      } catch (error) {
        return Promise.reject(error);
      }
      // One append at a time, in call order: a line never interleaves with another.
      const write = chain.then(async () => {
        if (!madeDir) {
          await mkdir(dirname(path), { recursive: true, mode: 0o700 });
          madeDir = true;
        }
        await appendFile(path, line, { mode: opts.mode, flag: "a" });
      });
      chain = write.catch(() => undefined);
      return write.catch((error: unknown) => {
        throw wrapError(error, "SINK_WRITE_FAILED", `audit log ${path}: append failed`, { path });
      });
    },
    async flush() {
      await chain;
    },
  };
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

function sinkAudit(opts: z.output<typeof sinkAuditOptionsSchema>): AuditTrail {
  const { sink } = opts;
  const prefix = opts.prefix.replace(/\/+$/, "");
  let buffer: string[] = [];
  let chain: Promise<void> = Promise.resolve();
  return {
    async record(entry) {
      buffer.push(toLine(entry));
    },
    flush(options = {}) {
      const run = chain.then(async () => {
        if (buffer.length === 0) return;
        const lines = buffer;
        buffer = [];
        const at = new Date();
        const key =
          `${prefix}/${at.getUTCFullYear()}/${pad(at.getUTCMonth() + 1)}/${pad(at.getUTCDate())}/` +
          `${at.toISOString().replace(/[-:.]/g, "")}-${randomBytes(4).toString("hex")}.jsonl`;
        assertSafeKey(key, "audit log");
        try {
          await sink.write(key, Readable.from([Buffer.from(lines.join(""), "utf8")]), {
            contentType: "application/x-ndjson",
            ...(options.signal ? { signal: options.signal } : {}),
          });
        } catch (error) {
          buffer = [...lines, ...buffer]; // keep them for the next flush
          throw wrapError(error, "SINK_WRITE_FAILED", `audit log: writing ${key} failed`, { key });
        }
      });
      chain = run.catch(() => undefined);
      return run;
    },
  };
}

/**
 * Reads an audit log back, oldest line first, each parsed by {@link auditEntrySchema}.
 * @throws {MANIFEST_INVALID} for a line that is not a valid entry (naming its number);
 *   {SINK_READ_FAILED | NOT_FOUND} when the log cannot be read.
 * @example const entries = await readAuditLog({ path: "audit.jsonl" });
 */
export async function readAuditLog(
  options: { path: string } | { sink: Sink; prefix?: string },
  readOptions: { signal?: AbortSignal } = {},
): Promise<AuditEntry[]> {
  const texts: Array<{ where: string; text: string }> = [];
  if ("path" in options) {
    try {
      texts.push({ where: options.path, text: await readFile(options.path, "utf8") });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") {
        throw new StowageError("NOT_FOUND", `audit log ${options.path} does not exist`, {
          details: { key: options.path },
        });
      }
      throw wrapError(error, "SINK_READ_FAILED", `audit log ${options.path}`);
    }
  } else {
    const prefix = `${(options.prefix ?? "audit").replace(/\/+$/, "")}/`;
    const signal = readOptions.signal ? { signal: readOptions.signal } : {};
    for await (const info of options.sink.list(prefix, signal)) {
      if (!info.key.endsWith(".jsonl")) continue;
      const body = await readAll(await options.sink.read(info.key, signal));
      texts.push({ where: info.key, text: body.toString("utf8") });
    }
  }
  const entries: AuditEntry[] = [];
  for (const { where, text } of texts) {
    for (const [i, line] of text.split("\n").entries()) {
      if (line.trim() === "") continue;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (error) {
        throw new StowageError("MANIFEST_INVALID", `audit log ${where}: line ${i + 1} is not JSON`, {
          cause: error,
          details: { key: where, line: i + 1 },
        });
      }
      const parsed = auditEntrySchema.safeParse(value);
      if (!parsed.success) {
        throw new StowageError(
          "MANIFEST_INVALID",
          `audit log ${where}: line ${i + 1} is not an audit entry`,
          {
            details: { key: where, line: i + 1 },
          },
        );
      }
      entries.push(parsed.data);
    }
  }
  return entries;
}
