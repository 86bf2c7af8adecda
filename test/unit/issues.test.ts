/**
 * One issue shape, `{ path, problem }`, for every CONFIG_INVALID and MANIFEST_INVALID, and the CLI
 * printing each as `path: problem` (a manifest's issues printed `undefined:` when they had `field`).
 */
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { reportError } from "../../src/cli/output.js";
import type { StowageError } from "../../src/core/errors.js";
import { parseManifest } from "../../src/core/manifest.js";
import { parseOptions, sinkSchema } from "../../src/core/options.js";

function caught(fn: () => unknown): StowageError {
  try {
    fn();
  } catch (error) {
    return error as StowageError;
  }
  throw new Error("expected a throw");
}

const shape = { path: expect.any(String), problem: expect.any(String) };

describe("issues", () => {
  it("CONFIG_INVALID and MANIFEST_INVALID list { path, problem }", () => {
    const config = caught(() => parseOptions(z.object({ sink: sinkSchema }).strict(), { sink: 1 }, "test"));
    expect(config.code).toBe("CONFIG_INVALID");
    expect(config.details.issues).toEqual([{ ...shape, path: "sink" }]);
    const manifest = caught(() => parseManifest('{"version":1,"kind":"stowage-manifest"}', "m"));
    expect(manifest.code).toBe("MANIFEST_INVALID");
    const issues = manifest.details.issues as Array<Record<string, unknown>>;
    expect(issues.length).toBeGreaterThan(0);
    for (const issue of issues) expect(Object.keys(issue).sort()).toEqual(["path", "problem"]);
  });

  it("the CLI prints a manifest's issues by path", async () => {
    const error = caught(() => parseManifest('{"version":1,"kind":"stowage-manifest"}', "m"));
    const stderr = new PassThrough();
    const lines: string[] = [];
    stderr.on("data", (c) => lines.push(String(c)));
    const io = { stdout: new PassThrough(), stderr, cwd: process.cwd(), env: {} } as never;
    await reportError(error, "verify", {}, io);
    const text = lines.join("");
    expect(text).not.toContain("undefined:");
    const first = (error.details.issues as Array<{ path: string }>)[0]!.path;
    expect(text).toContain(`  ${first}: `);
  });
});
