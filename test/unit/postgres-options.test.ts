import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { isStowageError, type StowageError } from "../../src/core/errors.js";
import { pgDumpSource, pgQuerySource, restorePostgres } from "../../src/sources/postgres.js";

function configError(fn: () => unknown): StowageError {
  try {
    fn();
  } catch (error) {
    if (isStowageError(error, "CONFIG_INVALID")) return error;
    throw error;
  }
  throw new Error("expected CONFIG_INVALID");
}
const options = (e: StowageError) => (e.details.issues as Array<{ path: string }>).map((i) => i.path);

describe("postgres options", () => {
  it("accepts a URL or fields", () => {
    expect(pgDumpSource({ connection: "postgres://u:p@db.example:6543/app?sslmode=require" }).name).toBe(
      "app",
    );
    expect(pgDumpSource({ connection: "postgresql://db.example/app", database: "other" }).name).toBe("other");
    expect(pgDumpSource({ connection: { host: "db", user: "u", password: "p", database: "x" } }).kind).toBe(
      "postgres",
    );
    expect(pgQuerySource({ connection: { user: "u" }, query: "SELECT 1" }).name).toBe("postgres");
  });

  it("names every bad option, and never echoes a URL's password", () => {
    const secret = "Sup3r-Secret-Pw";
    const bad = configError(() =>
      pgDumpSource({
        connection: `postgres://u:${secret}@h/db?bogus=1`,
        format: "xml" as "plain",
        extraArgs: ["--no-owner", "--file=/tmp/x"],
      }),
    );
    expect(options(bad).sort()).toEqual(["connection", "extraArgs.1", "format"].sort());
    expect(JSON.stringify({ m: bad.message, d: bad.details })).not.toContain(secret);
    expect(options(configError(() => pgDumpSource({ connection: `mysql://u:${secret}@h/db` })))).toEqual([
      "connection",
    ]);
    expect(options(configError(() => pgDumpSource({ connection: { host: "h", port: 0 } })))).toEqual([
      "connection.port",
    ]);
    expect(options(configError(() => pgQuerySource({ connection: "postgres://h/db", query: "" })))).toEqual([
      "query",
    ]);
  });

  it("refuses extra arguments that would redirect the output or the connection", () => {
    for (const arg of [
      "-f",
      "-fout.sql",
      "--file",
      "--file=x",
      "-Fc",
      "--format=c",
      "-d",
      "--dbname=x",
      "-W",
      "-h",
      "--password",
    ]) {
      expect(
        options(configError(() => pgDumpSource({ connection: "postgres://h/db", extraArgs: [arg] }))),
      ).toEqual(["extraArgs.0"]);
    }
    expect(
      pgDumpSource({ connection: "postgres://h/db", extraArgs: ["--no-owner", "-Z0", "--if-exists"] }),
    ).toBeTruthy();
  });

  it("restorePostgres validates before touching the server, and releases the input", async () => {
    const stream = Readable.from([Buffer.from("SELECT 1;")]);
    await expect(
      restorePostgres({ stream, format: "plain", connection: "postgres://h/db", database: "" }),
    ).rejects.toMatchObject({ code: "CONFIG_INVALID" });
    expect(stream.destroyed).toBe(true);
  });
});
