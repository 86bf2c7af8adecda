/**
 * Query parameters inlined as SQL literals: `COPY (query) TO STDOUT` takes no bind parameters.
 */
import { StowageError } from "../../core/errors.js";

/** A value that can stand in for `$n` in a query. */
export type PgParam =
  | string
  | number
  | bigint
  | boolean
  | Date
  | Uint8Array
  | null
  | undefined
  | readonly PgParam[]
  | { [key: string]: unknown };

const quoteLiteral = (text: string): string => {
  if (text.includes("\0")) {
    throw new StowageError(
      "CONFIG_INVALID",
      "pgQuerySource: a parameter holds a NUL character, which PostgreSQL cannot store",
      {
        details: { issues: [{ path: "params", problem: "NUL character" }] },
      },
    );
  }
  const body = text.replace(/'/g, "''");
  return text.includes("\\") ? ` E'${body.replace(/\\/g, "\\\\")}'` : `'${body}'`;
};

function arrayLiteral(values: readonly PgParam[]): string {
  const items = values.map((v) => {
    if (v === null || v === undefined) return "NULL";
    if (Array.isArray(v)) return arrayLiteral(v);
    const text = literalText(v);
    return `"${text.replace(/[\\"]/g, "\\$&")}"`;
  });
  return `{${items.join(",")}}`;
}

/** The text PostgreSQL should read for a parameter (as node-postgres would send it). */
function literalText(value: Exclude<PgParam, null | undefined>): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (typeof value === "boolean") return value ? "true" : "false";
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) {
      throw new StowageError("CONFIG_INVALID", "pgQuerySource: a parameter is an invalid Date", {
        details: { issues: [{ path: "params", problem: "invalid Date" }] },
      });
    }
    return value.toISOString();
  }
  if (value instanceof Uint8Array) return `\\x${Buffer.from(value).toString("hex")}`;
  if (Array.isArray(value)) return arrayLiteral(value);
  return JSON.stringify(value);
}

/**
 * Replaces `$1`, `$2`, … in `sql` with quoted literals of `params`. `COPY (query) TO STDOUT` takes
 * no bind parameters, so they are inlined; the scanner skips string literals (standard and `E''`),
 * quoted identifiers, dollar-quoted bodies and comments, and leaves identifiers such as `a$1` alone.
 * Literals are untyped (`'42'`), so PostgreSQL infers their type from context as it would for
 * a bind parameter.
 *
 * @throws {CONFIG_INVALID} when the query names a parameter that is not given.
 */
export function inlineParams(sql: string, params: readonly PgParam[]): string {
  let out = "";
  let i = 0;
  const n = sql.length;
  const isIdent = (ch: string | undefined) => ch !== undefined && /[A-Za-z0-9_$\u0080-\uffff]/.test(ch);
  while (i < n) {
    const ch = sql[i]!;
    const next = sql[i + 1];
    if (ch === "-" && next === "-") {
      const end = sql.indexOf("\n", i);
      const stop = end === -1 ? n : end;
      out += sql.slice(i, stop);
      i = stop;
    } else if (ch === "/" && next === "*") {
      let depth = 0;
      let j = i;
      while (j < n) {
        if (sql[j] === "/" && sql[j + 1] === "*") {
          depth++;
          j += 2;
        } else if (sql[j] === "*" && sql[j + 1] === "/") {
          depth--;
          j += 2;
          if (depth === 0) break;
        } else j++;
      }
      out += sql.slice(i, j);
      i = j;
    } else if (ch === "'") {
      const escapes = (sql[i - 1] === "E" || sql[i - 1] === "e") && !isIdent(sql[i - 2]);
      let j = i + 1;
      while (j < n) {
        if (escapes && sql[j] === "\\") j += 2;
        else if (sql[j] === "'" && sql[j + 1] === "'") j += 2;
        else if (sql[j] === "'") break;
        else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === '"') {
      let j = i + 1;
      while (j < n) {
        if (sql[j] === '"' && sql[j + 1] === '"') j += 2;
        else if (sql[j] === '"') break;
        else j++;
      }
      out += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === "$" && !isIdent(sql[i - 1])) {
      const param = /^\$(\d+)/.exec(sql.slice(i, i + 12));
      const tag = param
        ? null
        : /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i));
      if (param) {
        const index = Number(param[1]);
        if (index < 1 || index > params.length) {
          throw new StowageError(
            "CONFIG_INVALID",
            `pgQuerySource: the query uses $${index} but ${params.length} parameter(s) were given`,
            { details: { issues: [{ path: "params", problem: `no parameter $${index}` }] } },
          );
        }
        const value = params[index - 1];
        out += value === null || value === undefined ? "NULL" : quoteLiteral(literalText(value));
        i += param[0].length;
      } else if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        const stop = close === -1 ? n : close + tag[0].length;
        out += sql.slice(i, stop);
        i = stop;
      } else {
        out += ch;
        i++;
      }
    } else {
      out += ch;
      i++;
    }
  }
  return out;
}

/** A query made ready to sit inside `COPY ( … )`: no trailing semicolon, a comment cannot swallow `)`. */
export const copyBody = (sql: string) => `\n${sql.replace(/[\s;]+$/, "")}\n`;
