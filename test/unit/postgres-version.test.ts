import { describe, expect, it } from "vitest";
import { isStowageError } from "../../src/core/errors.js";
import {
  assertPgDumpCanDump,
  parsePostgresVersion,
  serverMajor,
} from "../../src/sources/postgres/version.js";

function codeAndDetails(fn: () => unknown): { code: string; details: Record<string, unknown> } {
  try {
    fn();
  } catch (error) {
    if (isStowageError(error)) return { code: error.code, details: error.details };
    throw error;
  }
  throw new Error("expected a failure");
}

describe("PostgreSQL versions", () => {
  it("reads pg_dump --version lines", () => {
    expect(parsePostgresVersion("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n")).toEqual({
      version: "15.18",
      major: 15,
    });
    expect(parsePostgresVersion("pg_dump (PostgreSQL) 9.6.24")).toEqual({ version: "9.6.24", major: 9.6 });
    expect(parsePostgresVersion("pg_dump (PostgreSQL) 17devel")).toEqual({ version: "17", major: 17 });
    expect(parsePostgresVersion("16.4")).toEqual({ version: "16.4", major: 16 });
    expect(parsePostgresVersion("not a version")).toBeUndefined();
  });

  it("reads server_version_num", () => {
    expect(serverMajor(150018)).toBe(15);
    expect(serverMajor(160004)).toBe(16);
    expect(serverMajor(100023)).toBe(10);
    expect(serverMajor(90624)).toBe(9.6);
    expect(serverMajor(90224)).toBe(9.2);
  });

  it("accepts a pg_dump of the same or a newer major", () => {
    expect(assertPgDumpCanDump("pg_dump (PostgreSQL) 15.18", 150018, "15.18")).toEqual({
      pgDumpVersion: "15.18",
      pgDumpMajor: 15,
      serverMajor: 15,
    });
    expect(assertPgDumpCanDump("pg_dump (PostgreSQL) 16.2", 150018).serverMajor).toBe(15);
    expect(assertPgDumpCanDump("pg_dump (PostgreSQL) 15.1", 90624).serverMajor).toBe(9.6);
  });

  it("refuses a server newer than pg_dump with SOURCE_FAILED naming both versions", () => {
    const { code, details } = codeAndDetails(() =>
      assertPgDumpCanDump("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", 160004, "16.4"),
    );
    expect(code).toBe("SOURCE_FAILED");
    expect(details).toEqual({
      pgDumpVersion: "15.18",
      pgDumpMajor: 15,
      serverVersion: "16.4",
      serverMajor: 16,
    });
    expect(codeAndDetails(() => assertPgDumpCanDump("pg_dump (PostgreSQL) 9.6.24", 100001)).code).toBe(
      "SOURCE_FAILED",
    );
  });

  it("refuses a pg_dump whose version it cannot read", () => {
    expect(codeAndDetails(() => assertPgDumpCanDump("something else", 150018)).code).toBe("SOURCE_FAILED");
  });
});
