/**
 * PostgreSQL connections: the options that name one (a URL or fields), resolving them to every field
 * decided, the environment and arguments a libpq tool gets (the password by environment, never
 * argv), the password a passfile holds for `pg`, and redacting the password from whatever this
 * adapter says.
 */
import { readFile } from "node:fs/promises";
import { userInfo } from "node:os";
import type { z } from "zod";
import { StowageError, type StowageErrorCode } from "../../core/errors.js";
import { lazySchema } from "../../core/options.js";
import { redactor as makeRedactor, REDACTED, type Redact, redactCause } from "../../core/redact.js";
import type { Agrees, Assert } from "../../core/type-checks.js";

const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] as const;

/** A connection given as fields. */
export const pgConnectionFieldsSchema = lazySchema((z) =>
  z
    .object({
      /** Host name, IP address, or a folder holding the server's Unix socket. @default "localhost" */
      host: z.string().min(1).default("localhost"),
      /** @default 5432 */
      port: z.number().int().min(1).max(65535).default(5432),
      /** @default the operating-system user, as libpq does */
      user: z.string().min(1).optional(),
      /** Handed to child processes as `PGPASSWORD`, never as an argument. */
      password: z.string().optional(),
      /** A libpq password file (`host:port:db:user:password` lines), handed over as `PGPASSFILE`. */
      passfile: z.string().min(1).optional(),
      /** @default "postgres" */
      database: z.string().min(1).optional(),
      /** libpq's `sslmode`. @default libpq's default ("prefer") for the tools; no TLS for the checks */
      sslmode: z.enum(SSL_MODES).optional(),
    })
    .strict(),
);

const URL_PARAMS = new Set([
  "sslmode",
  "host",
  "port",
  "user",
  "password",
  "dbname",
  "passfile",
  "application_name",
  "connect_timeout",
]);

/**
 * A PostgreSQL connection: a `postgres://user:password@host:port/database?sslmode=…` URL, or
 * {@link pgConnectionFieldsSchema fields}. Problems are reported without echoing the URL (it may
 * hold a password).
 */
export const pgConnectionSchema = lazySchema((z) =>
  z.union([
    z.string().superRefine((value, ctx) => {
      const problem = urlProblem(value);
      if (problem) ctx.addIssue({ code: "custom", message: problem });
    }),
    pgConnectionFieldsSchema,
  ]),
);
/** A connection given as fields. */
export interface PgConnectionFields {
  /** Host name, IP address, or a folder holding the server's Unix socket. @default "localhost" */
  host?: string;
  /** @default 5432 */
  port?: number;
  /** @default the operating-system user, as libpq does */
  user?: string;
  /** Handed to child processes as `PGPASSWORD`, never as an argument. */
  password?: string;
  /** A libpq password file (`host:port:db:user:password` lines), handed over as `PGPASSFILE`. */
  passfile?: string;
  /** @default "postgres" */
  database?: string;
  /** libpq's `sslmode`. @default libpq's default ("prefer") for the tools; no TLS for the checks */
  sslmode?: "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full";
}
type _PgConnectionFieldsAgrees = Assert<Agrees<PgConnectionFields, z.input<typeof pgConnectionFieldsSchema>>>;

/** A PostgreSQL connection: a `postgres://user:password@host:port/database?sslmode=…` URL, or fields. */
export type PgConnection = string | PgConnectionFields;
type _PgConnectionAgrees = Assert<Agrees<PgConnection, z.input<typeof pgConnectionSchema>>>;

/** A connection with every field decided. */
export interface ResolvedConnection {
  host: string;
  port: number;
  user: string;
  password?: string;
  passfile?: string;
  database: string;
  sslmode?: (typeof SSL_MODES)[number];
}

function urlProblem(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return "expected a postgres:// or postgresql:// URL";
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    return "expected a postgres:// or postgresql:// URL";
  }
  for (const name of url.searchParams.keys()) {
    if (!URL_PARAMS.has(name)) return `URL parameter "${name}" is not supported`;
  }
  const sslmode = url.searchParams.get("sslmode");
  if (sslmode !== null && !(SSL_MODES as readonly string[]).includes(sslmode)) {
    return `sslmode must be one of ${SSL_MODES.join(", ")}`;
  }
  const port = url.searchParams.get("port") ?? url.port;
  if (port && !/^\d{1,5}$/.test(port)) return "port must be a number";
  return undefined;
}

export function resolveConnection(
  input: z.output<typeof pgConnectionSchema>,
  database?: string,
): ResolvedConnection {
  const defaultUser = () => process.env.PGUSER ?? userInfo().username;
  if (typeof input !== "string") {
    return {
      host: input.host,
      port: input.port,
      user: input.user ?? defaultUser(),
      ...(input.password !== undefined ? { password: input.password } : {}),
      ...(input.passfile !== undefined ? { passfile: input.passfile } : {}),
      database: database ?? input.database ?? "postgres",
      ...(input.sslmode ? { sslmode: input.sslmode } : {}),
    };
  }
  const url = new URL(input);
  const q = url.searchParams;
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const password = q.get("password") ?? (url.password ? decodeURIComponent(url.password) : undefined);
  const passfile = q.get("passfile") ?? undefined;
  const sslmode = (q.get("sslmode") ?? undefined) as ResolvedConnection["sslmode"];
  return {
    host: q.get("host") ?? (hostname ? decodeURIComponent(hostname) : "localhost"),
    port: Number(q.get("port") ?? (url.port || 5432)),
    user: q.get("user") ?? (url.username ? decodeURIComponent(url.username) : defaultUser()),
    ...(password !== undefined ? { password } : {}),
    ...(passfile ? { passfile } : {}),
    database:
      database ??
      q.get("dbname") ??
      (url.pathname.length > 1 ? decodeURIComponent(url.pathname.slice(1)) : "postgres"),
    ...(sslmode ? { sslmode } : {}),
  };
}

/** Where a connection points, without its password: for messages and manifests. */
export function describeTarget(c: ResolvedConnection, database = c.database): Record<string, unknown> {
  return { host: c.host, port: c.port, user: c.user, database };
}

/** The environment for a libpq tool: the password by environment, never argv. */
export function toolEnvironment(c: ResolvedConnection, connectTimeoutMs: number): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, LC_MESSAGES: "C", PGAPPNAME: "stowage" };
  env.PGCONNECT_TIMEOUT = String(Math.max(2, Math.ceil(connectTimeoutMs / 1000)));
  if (c.password !== undefined) {
    env.PGPASSWORD = c.password;
  } else if (c.passfile !== undefined) {
    delete env.PGPASSWORD; // PGPASSWORD would take precedence over the passfile
    env.PGPASSFILE = c.passfile;
  }
  if (c.sslmode) env.PGSSLMODE = c.sslmode;
  return env;
}

/** Connection arguments for libpq tools; no secret is among them. */
export function toolConnectionArgs(c: ResolvedConnection, database: string): string[] {
  return ["--host", c.host, "--port", String(c.port), "--username", c.user, "--dbname", dbnameArg(database)];
}

/** libpq reads a `--dbname` with `=` or a URL prefix as a connection string; quote such names. */
function dbnameArg(name: string): string {
  if (!name.includes("=") && !/^postgres(ql)?:\/\//.test(name)) return name;
  return `dbname='${name.replace(/[\\']/g, "\\$&")}'`;
}

/** The password a libpq passfile holds for this connection, or undefined. */
export async function passwordFromPassfile(
  c: ResolvedConnection,
  database: string,
): Promise<string | undefined> {
  if (!c.passfile) return undefined;
  const text = await readFile(c.passfile, "utf8");
  for (const line of text.split(/\r?\n/)) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const fields: string[] = [];
    let current = "";
    for (let i = 0; i < line.length; i++) {
      const ch = line[i]!;
      if (ch === "\\" && i + 1 < line.length) current += line[++i];
      else if (ch === ":" && fields.length < 4) {
        fields.push(current);
        current = "";
      } else current += ch;
    }
    fields.push(current);
    if (fields.length !== 5) continue;
    const [host, port, db, user, password] = fields as [string, string, string, string, string];
    const match = (pattern: string, value: string) => pattern === "*" || pattern === value;
    const hostMatches = match(host, c.host) || (host === "localhost" && c.host.startsWith("/"));
    if (hostMatches && match(port, String(c.port)) && match(db, database) && match(user, c.user)) {
      return password;
    }
  }
  return undefined;
}

/** Arguments stowage sets itself; `extraArgs` may not override them. */
const RESERVED_DUMP_ARGS =
  /^(-f|--file|-F|--format|-d|--dbname|-h|--host|-p|--port|-U|--username|-W|--password|-w|--no-password)(=|$)|^-[fFdhpUWw]./;

/** Extra command-line arguments for a libpq tool, refusing the ones stowage sets itself. */
export const extraArgsSchema = lazySchema((z) =>
  z
    .array(
      z
        .string()
        .refine(
          (a) => !RESERVED_DUMP_ARGS.test(a),
          "sets a connection, file or format option stowage sets itself",
        ),
    )
    .default([]),
);

/** Replaces the password (and URL-encoded forms of it) and anything shaped like one with `[REDACTED]`. */
export function redactor(c: ResolvedConnection): Redact {
  return makeRedactor([c.password, c.password && encodeURIComponent(c.password)], {
    minLength: 1, // a short password is still a password
    patterns: [
      [/(postgres(?:ql)?:\/\/[^:@/\s]*):[^@\s]*@/gi, `$1:${REDACTED}@`],
      [/(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)/gi, `$1${REDACTED}`],
    ],
  });
}

/** An error whose message (and whose causes' messages) have been redacted. */
export function coded(
  code: StowageErrorCode,
  message: string,
  redact: Redact,
  details: Record<string, unknown>,
  cause?: unknown,
): StowageError {
  return new StowageError(code, redact(message), {
    ...(cause !== undefined ? { cause: redactCause(cause, redact) } : {}),
    details,
  });
}

export const errorMessage = (error: unknown) => (error instanceof Error ? error.message : String(error));
