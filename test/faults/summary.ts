/**
 * Global setup of the fault suite: gives the test files a folder to record outcomes in, and when
 * the suite is over prints the one summary line:
 * `faults: N injected, N clean, N leftovers, N secrets`.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), "stowage-faults-"));
  project.provide("faultsDir", dir);
  return () => {
    const outcomes = readdirSync(dir).flatMap((f) =>
      readFileSync(join(dir, f), "utf8")
        .split("\n")
        .filter(Boolean)
        .map(
          (line) =>
            JSON.parse(line) as {
              code?: string;
              expected: string;
              leftovers: string[];
              secretsFound: string[];
            },
        ),
    );
    rmSync(dir, { recursive: true, force: true });
    const leftovers = outcomes.filter((o) => o.leftovers.length > 0).length;
    const secrets = outcomes.filter((o) => o.secretsFound.length > 0).length;
    const clean = outcomes.filter(
      (o) => o.code === o.expected && o.leftovers.length === 0 && o.secretsFound.length === 0,
    ).length;
    console.log(
      `faults: ${outcomes.length} injected, ${clean} clean, ${leftovers} leftovers, ${secrets} secrets`,
    );
  };
}
