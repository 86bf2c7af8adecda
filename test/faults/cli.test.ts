/**
 * Faults of the `stowage` command, run as a child process as a CronJob runs it: a key variable
 * that is not set, a config that throws at import, a missing --config, restore onto an existing
 * file, a corrupt artifact, the wrong key. Each checks the exit status and the JSON error code
 * (`--json`), that nothing new is left on disk, and that the key's value is in no output.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe } from "vitest";
import { StowageError, type StowageErrorCode } from "../../src/index.js";
import { fault, filesUnder, listingChange } from "./harness.js";

const repo = new URL("../..", import.meta.url).pathname;
const tsx = join(repo, "node_modules/.bin/tsx");
const cli = join(repo, "src/cli.ts");
const src = (path: string) => JSON.stringify(join(repo, "src", path));

const key = randomBytes(32).toString("hex");
const token = `api-token-${randomBytes(10).toString("hex")}`;

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-faults-cli-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

interface Ran {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; the environment has only what is given (plus PATH and HOME). */
function stowage(args: string[], cwd: string, env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      tsx,
      [cli, ...args],
      {
        cwd,
        env: {
          PATH: process.env.PATH ?? "",
          HOME: process.env.HOME ?? cwd,
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
          ...env,
        },
      },
      (error, stdout, stderr) => {
        resolve({ status: error ? Number(error.code) : 0, stdout, stderr });
      },
    );
  });
}

/** The StowageError the JSON output (`--json`) describes, for the harness; else what was printed. */
function errorOf(ran: Ran, stream: "stdout" | "stderr" = "stdout"): unknown {
  const text = ran[stream].trim().split("\n").at(-1) ?? "";
  try {
    const { error } = JSON.parse(text) as { error?: { code: StowageErrorCode; message: string } };
    if (error) return new StowageError(error.code, error.message, { details: { ...error } });
  } catch {
    // not JSON: hand the text over, the harness reports it
  }
  return ran;
}

const exited = (ran: Ran, expected: number) =>
  ran.status === expected ? [] : [`exit ${ran.status}, expected ${expected}: ${ran.stderr.slice(0, 300)}`];

/** A project folder with an encrypted job whose key comes from STOWAGE_FAULT_KEY. */
async function project(name: string, extraConfig = ""): Promise<string> {
  const dir = join(work, name);
  await mkdir(join(dir, "data"), { recursive: true });
  await writeFile(join(dir, "data", "a.txt"), "alpha\n".repeat(2000));
  await writeFile(
    join(dir, "stowage.config.ts"),
    `import { aes256gcm } from ${src("transforms/aes-256-gcm.ts")};
import { gzip } from ${src("transforms/gzip.ts")};
import { filesystemSink } from ${src("sinks/filesystem.ts")};
import { directorySource } from ${src("sources/directory.ts")};
import { defineConfig, defineJob } from ${src("jobs/index.ts")};
${extraConfig}
const key = process.env.STOWAGE_FAULT_KEY;
const apiToken = process.env.STOWAGE_FAULT_TOKEN;
export default defineConfig({
  jobs: [
    defineJob({
      name: "files",
      source: directorySource({ path: ${JSON.stringify(join(dir, "data"))} }),
      transforms: [gzip(), aes256gcm({ key })],
      keys: [{ key }],
      sink: filesystemSink({ root: ${JSON.stringify(join(dir, "backups"))} }),
      labels: { owner: apiToken ? "set" : "unset" },
    }),
  ],
});
`,
  );
  return dir;
}

const env = { STOWAGE_FAULT_KEY: key, STOWAGE_FAULT_TOKEN: token };
const secrets = [key, token];

describe("stowage CLI", () => {
  fault(
    "cli",
    "the key variable is not set",
    async () => {
      const dir = await project("unset-key");
      const before = await filesUnder(dir);
      const ran = await stowage(["run", "--json"], dir, { STOWAGE_FAULT_TOKEN: token });
      const error = errorOf(ran);
      const named = (error as StowageError).details?.unsetVariables as string[] | undefined;
      return {
        error,
        code: "CONFIG_INVALID",
        leftovers: [
          ...exited(ran, 2),
          ...(named?.includes("STOWAGE_FAULT_KEY") ? [] : ["the unset variable is not named"]),
          ...listingChange(before, await filesUnder(dir)),
        ],
        secrets,
        texts: [ran.stdout, ran.stderr],
      };
    },
    60_000,
  );

  fault(
    "cli",
    "a config that throws at import",
    async () => {
      const dir = await project(
        "throws",
        `if (process.env.STOWAGE_FAULT_KEY) throw new Error("config refuses");`,
      );
      const before = await filesUnder(dir);
      const ran = await stowage(["run", "--json"], dir, env);
      return {
        error: errorOf(ran),
        code: "CONFIG_INVALID",
        leftovers: [...exited(ran, 2), ...listingChange(before, await filesUnder(dir))],
        secrets,
        texts: [ran.stdout, ran.stderr],
      };
    },
    60_000,
  );

  fault(
    "cli",
    "--config names a file that does not exist",
    async () => {
      const dir = await project("missing-config");
      const before = await filesUnder(dir);
      const ran = await stowage(["run", "--json", "--config", "nope.config.ts"], dir, env);
      return {
        error: errorOf(ran),
        code: "CONFIG_INVALID",
        leftovers: [...exited(ran, 2), ...listingChange(before, await filesUnder(dir))],
        secrets,
        texts: [ran.stdout, ran.stderr],
      };
    },
    60_000,
  );

  describe("restore", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await project("restore");
      const ran = await stowage(["run"], dir, env);
      if (ran.status !== 0) throw new Error(`the backup for the restore faults failed: ${ran.stderr}`);
    }, 60_000);

    fault(
      "cli",
      "restore --out onto an existing file",
      async () => {
        await writeFile(join(dir, "files.tar"), "precious");
        const before = await filesUnder(dir);
        const ran = await stowage(["restore", "--job", "files", "--out", "files.tar", "--json"], dir, env);
        const kept = await readFile(join(dir, "files.tar"), "utf8");
        const changed = listingChange(before, await filesUnder(dir));
        await rm(join(dir, "files.tar"));
        return {
          error: errorOf(ran),
          code: "CONFIG_INVALID",
          leftovers: [
            ...exited(ran, 2),
            ...(kept === "precious" ? [] : ["the existing file was changed"]),
            ...changed,
          ],
          secrets,
          texts: [ran.stdout, ran.stderr],
        };
      },
      60_000,
    );

    fault(
      "cli",
      "restore with the wrong key",
      async () => {
        const before = await filesUnder(dir);
        const wrong = randomBytes(32).toString("hex");
        const ran = await stowage(["restore", "--job", "files", "--out", "out.tar", "--json"], dir, {
          ...env,
          STOWAGE_FAULT_KEY: wrong,
        });
        return {
          error: errorOf(ran),
          code: "DECRYPT_FAILED",
          leftovers: [...exited(ran, 1), ...listingChange(before, await filesUnder(dir))],
          secrets: [...secrets, wrong],
          texts: [ran.stdout, ran.stderr],
        };
      },
      60_000,
    );

    for (const where of ["--out", "--out -"] as const) {
      fault(
        "cli",
        `restore of a corrupt artifact (${where})`,
        async () => {
          const backups = join(dir, "backups");
          const artifact = (await readdir(backups, { recursive: true }))
            .map(String)
            .find((f) => f.endsWith(".tar.gz.enc"))!;
          const path = join(backups, artifact);
          const original = await readFile(path);
          const bytes = Buffer.from(original);
          bytes[bytes.length >> 1]! ^= 0x10;
          await writeFile(path, bytes);
          try {
            const before = await filesUnder(dir);
            const toStdout = where === "--out -";
            const ran = await stowage(
              ["restore", "--job", "files", "--out", toStdout ? "-" : "corrupt.tar", "--json"],
              dir,
              env,
            );
            return {
              error: errorOf(ran, toStdout ? "stderr" : "stdout"),
              code: "DECRYPT_FAILED",
              leftovers: [...exited(ran, 1), ...listingChange(before, await filesUnder(dir))],
              secrets,
              texts: [ran.stdout, ran.stderr],
            };
          } finally {
            await writeFile(path, original);
          }
        },
        60_000,
      );
    }
  });
});
