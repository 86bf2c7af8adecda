import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { isStowageError } from "../../src/core/errors.js";
import { inlineParams } from "../../src/sources/postgres/sql-literals.js";

/** Reads back a literal as PostgreSQL would: '' is a quote, and in E'' a backslash escapes. */
function readLiteral(sql: string): string {
  const m = /^ ?(E?)'([\s\S]*)'$/.exec(sql);
  if (!m) throw new Error(`not a literal: ${sql}`);
  let body = m[2]!.replace(/''/g, "'");
  if (m[1]) body = body.replace(/\\(.)/gs, "$1");
  return body;
}

describe("inlineParams (COPY takes no bind parameters)", () => {
  it("replaces placeholders with quoted literals", () => {
    expect(inlineParams("SELECT * FROM t WHERE id > $1 AND name = $2", [5, "x"])).toBe(
      "SELECT * FROM t WHERE id > '5' AND name = 'x'",
    );
    expect(inlineParams("SELECT $1, $1", ["a"])).toBe("SELECT 'a', 'a'");
    expect(
      inlineParams(
        "SELECT $10",
        Array.from({ length: 10 }, (_, i) => i + 1),
      ),
    ).toBe("SELECT '10'");
  });

  it("leaves strings, identifiers, dollar quotes and comments alone", () => {
    const params = ["P1", "P2"];
    const cases: Array<[string, string]> = [
      ["SELECT '$1', $2", "SELECT '$1', 'P2'"],
      ["SELECT 'it''s $1', $2", "SELECT 'it''s $1', 'P2'"],
      ["SELECT E'\\' $1', $2", "SELECT E'\\' $1', 'P2'"],
      ['SELECT "col$1", $2', "SELECT \"col$1\", 'P2'"],
      ["SELECT a$1 FROM t WHERE b = $2", "SELECT a$1 FROM t WHERE b = 'P2'"],
      ["SELECT $$ $1 $$, $2", "SELECT $$ $1 $$, 'P2'"],
      ["SELECT $tag$ $1 $x$ $tag$, $2", "SELECT $tag$ $1 $x$ $tag$, 'P2'"],
      ["SELECT 1 -- $1\n, $2", "SELECT 1 -- $1\n, 'P2'"],
      ["SELECT /* $1 /* nested $1 */ still $1 */ $2", "SELECT /* $1 /* nested $1 */ still $1 */ 'P2'"],
    ];
    for (const [sql, expected] of cases) expect(inlineParams(sql, params)).toBe(expected);
  });

  it("renders each kind of value as node-postgres would send it", () => {
    const date = new Date("2026-01-02T03:04:05.678Z");
    expect(inlineParams("$1", [null])).toBe("NULL");
    expect(inlineParams("$1", [undefined])).toBe("NULL");
    expect(inlineParams("$1", [true])).toBe("'true'");
    expect(inlineParams("$1", [12345678901234567890n])).toBe("'12345678901234567890'");
    expect(inlineParams("$1", [date])).toBe("'2026-01-02T03:04:05.678Z'");
    expect(inlineParams("$1", [Buffer.from([0, 255])])).toBe(" E'\\\\x00ff'");
    expect(inlineParams("$1", [[1, 'a"b', null]])).toBe(String.raw` E'{"1","a\\"b",NULL}'`);
    expect(inlineParams("$1", [["x", ["y"]]])).toBe(`'{"x",{"y"}}'`);
    expect(inlineParams("$1", [{ a: "it's" }])).toBe(`'{"a":"it''s"}'`);
  });

  it("quotes any string so that PostgreSQL reads it back unchanged", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "binary", maxLength: 64 }).filter((s) => !s.includes("\0")),
        (s) => readLiteral(inlineParams("$1", [s])) === s,
      ),
    );
  });

  it("refuses a placeholder without a value, a NUL and an invalid Date", () => {
    for (const [sql, params] of [
      ["SELECT $2", ["only one"]],
      ["SELECT $0", ["x"]],
      ["SELECT $1", ["a\0b"]],
      ["SELECT $1", [new Date(Number.NaN)]],
    ] as const) {
      let code = "";
      try {
        inlineParams(sql, params as unknown as string[]);
      } catch (error) {
        if (isStowageError(error)) code = error.code;
      }
      expect(code).toBe("CONFIG_INVALID");
    }
  });
});
