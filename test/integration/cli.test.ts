import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const repo = new URL("../..", import.meta.url).pathname;
const tsx = join(repo, "node_modules/.bin/tsx");
const cli = join(repo, "src/cli.ts");
const src = (path: string) => JSON.stringify(join(repo, "src", path));

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI as a separate process (asynchronously), never throwing on a non-zero exit. */
function stowage(args: string[], options: { cwd: string; env?: Record<string, string> }): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      tsx,
      [cli, ...args],
      { cwd: options.cwd, env: { ...process.env, ...options.env }, maxBuffer: 64 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let work: string;
const key = "a".repeat(64);
const env = { STOWAGE_TEST_KEY: key };

/** A config with an encrypted file-tree job, a JSON state job, and optionally a failing one. */
function configText(
  dir: string,
  options: { failing?: boolean; rpo?: string; chained?: boolean; noKeys?: boolean } = {},
) {
  return `
import { aes256gcm } from ${src("transforms/aes-256-gcm.ts")};
import { gzip } from ${src("transforms/gzip.ts")};
import { filesystemSink } from ${src("sinks/filesystem.ts")};
import { bytesSource } from ${src("sources/bytes.ts")};
import { directorySource } from ${src("sources/directory.ts")};
import { auditLog, defineConfig, defineJob } from ${src("jobs/index.ts")};

const key = process.env.STOWAGE_TEST_KEY;
const local = filesystemSink({ root: ${JSON.stringify(join(dir, "backups"))} });
const offsite = filesystemSink({ root: ${JSON.stringify(join(dir, "offsite"))} });
const labels = { constitutional_hash: "cdd01ef066bc6cf2" };
const rules = { requiredLabels: labels, maxAge: "1h" };

export default defineConfig({
  jobs: [
    defineJob({
      name: "files",
      source: directorySource({ path: ${JSON.stringify(join(dir, "data"))} }),
      transforms: [gzip(), aes256gcm({ key })],
      ${options.noKeys ? "" : "keys: [{ key }],"}
      sink: local,
      ${options.chained ? `schedule: { full: "0 3 * * 0", incremental: "*/15 * * * *" },` : ""}
      copies: [{ sink: offsite, name: "offsite", retention: { keepLast: 3 } }],
      retention: { keepLast: 2 },
      labels,
      rules,
      drill: { target: { kind: "directory" }, check: ({ directory }) => Boolean(directory), rpo: "1h" },
    }),
    defineJob({
      name: "state",
      source: bytesSource({ data: '{"ok":true}', contentType: "application/json" }),
      sink: local,
      labels,
      rules,
    }),
    ${
      options.failing
        ? `defineJob({ name: "broken", sink: local, source: { kind: "http", name: "api", open: async () => { throw new Error("refused"); } } }),`
        : ""
    }
  ],
  audit: auditLog({ path: ${JSON.stringify(join(dir, "audit.jsonl"))} }),
  ${options.rpo ? `status: { rpo: ${JSON.stringify(options.rpo)} },` : ""}
});
`;
}

async function project(
  name: string,
  options: { failing?: boolean; rpo?: string; chained?: boolean; noKeys?: boolean } = {},
) {
  const dir = join(work, name);
  await mkdir(join(dir, "data", "sub"), { recursive: true });
  await writeFile(join(dir, "data", "a.txt"), "alpha\n".repeat(1000));
  await writeFile(
    join(dir, "data", "sub", "b.bin"),
    Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251)),
  );
  await writeFile(join(dir, "stowage.config.ts"), configText(dir, options));
  return dir;
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "stowage-cli-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("stowage CLI", () => {
  it("run: exit 0 when every job succeeds, text by default, JSON with --json, quiet stderr off a TTY", async () => {
    const dir = await project("ok");
    const text = await stowage(["run"], { cwd: dir, env });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^ok +files /m);
    expect(text.stdout).toMatch(/^ok +state /m);
    expect(text.stdout).toContain("2/2 jobs succeeded");
    expect(text.stderr).toBe(""); // no progress bar when stderr is not a terminal

    const json = await stowage(["run", "--json", "--job", "files"], { cwd: dir, env });
    expect(json.code).toBe(0);
    const cycle = JSON.parse(json.stdout);
    expect(cycle.ok).toBe(true);
    expect(cycle.jobs).toHaveLength(1);
    expect(cycle.jobs[0].copies[0]).toMatchObject({ target: "offsite", status: "succeeded" });
    expect(cycle.jobs[0].manifest.labels.constitutional_hash).toBe("cdd01ef066bc6cf2");
    // The key came from the environment; it is in no output and no audit line.
    const audit = await readFile(join(dir, "audit.jsonl"), "utf8");
    for (const out of [text.stdout, json.stdout, audit]) expect(out).not.toContain(key);
    expect(
      audit
        .trimEnd()
        .split("\n")
        .map((l) => JSON.parse(l).action),
    ).toEqual(["backup", "copy", "backup", "backup", "copy"]);
  });

  it("run: exit 1 when a job fails, and the other jobs still ran", async () => {
    const dir = await project("failing", { failing: true });
    const ran = await stowage(["run", "--json"], { cwd: dir, env });
    expect(ran.code).toBe(1);
    const cycle = JSON.parse(ran.stdout);
    expect(cycle.jobs.map((j: { job: string; status: string }) => `${j.job}:${j.status}`)).toEqual([
      "files:succeeded",
      "state:succeeded",
      "broken:failed",
    ]);
    expect(cycle.jobs[2].errors[0].code).toBe("SOURCE_FAILED");
  });

  it("exit 2 for a bad config, a missing config, an unknown command, flag or job", async () => {
    const dir = join(work, "bad");
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, "stowage.config.mjs"),
      `import { defineJob } from ${JSON.stringify(`file://${join(repo, "src/jobs/job.ts")}`)};\n` +
        "export const jobs = [];\n",
    );
    await writeFile(
      join(dir, "invalid.config.ts"),
      `import { defineJob } from ${src("jobs/index.ts")};
import { memorySink } from ${src("sinks/memory.ts")};
import { bytesSource } from ${src("sources/bytes.ts")};
export default [defineJob({ name: "x", source: bytesSource({ data: "x" }), sink: memorySink(), schedule: "sometimes" })];
`,
    );
    const invalid = await stowage(["run", "--config", "invalid.config.ts"], { cwd: dir });
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toContain("CONFIG_INVALID");
    expect(invalid.stderr).toContain("schedule");
    const missing = await stowage(["run", "--config", "nope.ts"], { cwd: dir });
    expect(missing.code).toBe(2);
    const okDir = await project("usage");
    expect((await stowage(["explode"], { cwd: okDir })).code).toBe(2);
    // Under --json a usage error is JSON on stdout too, like every other failure.
    for (const args of [
      ["explode", "--json"],
      ["run", "--frobnicate", "--json"],
      ["--json", "--nope"],
    ]) {
      const usage = await stowage(args, { cwd: okDir });
      expect(usage.code, args.join(" ")).toBe(2);
      expect(JSON.parse(usage.stdout).error.code, args.join(" ")).toBe("USAGE");
    }
    expect((await stowage(["run", "--frobnicate"], { cwd: okDir })).code).toBe(2);
    // A mistyped flag: the nearest one is named, and the help shown is the command's own.
    const typo = await stowage(["run", "--confg", "x.mjs"], { cwd: okDir });
    expect(typo.code).toBe(2);
    expect(typo.stderr).toMatch(/^stowage run: unknown option --confg \(did you mean --config\?\)\n/);
    expect(typo.stderr).toContain("Usage: stowage run ");
    expect((await stowage(["run", "--job", "nope"], { cwd: okDir, env })).code).toBe(2);
    expect((await stowage([], { cwd: okDir })).code).toBe(2);
    expect((await stowage(["--help"], { cwd: okDir })).code).toBe(0);
  });

  it("status: text, --json and --prometheus; exit 1 when an RPO is breached", async () => {
    const dir = await project("status");
    expect((await stowage(["run", "--job", "state"], { cwd: dir, env })).code).toBe(0);
    const text = await stowage(["status", "--job", "state"], { cwd: dir, env });
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/state +ok/);
    const json = JSON.parse(
      (await stowage(["status", "--json", "--job", "state"], { cwd: dir, env })).stdout,
    );
    expect(json.jobs[0]).toMatchObject({ job: "state", status: "ok" });
    expect(json.overall.backups).toBe(1);
    const prom = await stowage(["status", "--prometheus", "--job", "state"], { cwd: dir, env });
    expect(prom.code).toBe(0);
    expect(prom.stdout).toMatch(/^stowage_last_backup_timestamp_seconds\{backup_job="state"\} \d+/m);
    expect(prom.stdout).toMatch(/^# TYPE \w+ gauge$/m);
    // "files" has never run: it has no backup and breaches its RPO.
    const all = await stowage(["status", "--json"], { cwd: dir, env });
    expect(all.code).toBe(1);
    expect(JSON.parse(all.stdout).jobs.find((j: { job: string }) => j.job === "files").status).toBe(
      "failing",
    );
  });

  it("verify --chain: an incremental whose full is damaged fails only with --chain", async () => {
    const dir = await project("verify-chain", { chained: true });
    expect((await stowage(["run", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    await writeFile(join(dir, "data", "c.txt"), "new");
    expect((await stowage(["run", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    const files = ((await readdir(join(dir, "backups", "files"), { recursive: true })) as string[])
      .filter((f) => f.endsWith(".tar.gz.enc"))
      .sort();
    expect(files).toHaveLength(2);
    const fullArtifact = join(dir, "backups", "files", files[0]!);
    const bytes = await readFile(fullArtifact);
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x01;
    await writeFile(fullArtifact, bytes);
    const own = await stowage(["verify", "--json", "--job", "files", "--from", "primary"], { cwd: dir, env });
    expect(own.code).toBe(0);
    const chain = await stowage(["verify", "--json", "--chain", "--job", "files", "--from", "primary"], {
      cwd: dir,
      env,
    });
    expect(chain.code).toBe(1);
    expect(JSON.parse(chain.stdout).results[0]).toMatchObject({
      status: "failed",
      problems: expect.arrayContaining(["INTEGRITY_MISMATCH"]),
    });
  });

  it("verify says whether it checked the plain bytes: a trial restore with the job's keys, the stored bytes only without", async () => {
    const withKeys = await project("verify-keys");
    expect((await stowage(["run", "--job", "files"], { cwd: withKeys, env })).code).toBe(0);
    const full = await stowage(["verify", "--job", "files", "--from", "primary"], { cwd: withKeys, env });
    expect(full.code).toBe(0);
    expect(full.stdout).toMatch(/^OK +files@primary .*\(trial restore: plain bytes checked\)$/m);

    const noKeys = await project("verify-no-keys", { noKeys: true });
    expect((await stowage(["run", "--job", "files"], { cwd: noKeys, env })).code).toBe(0);
    const stored = await stowage(["verify", "--job", "files", "--from", "primary"], { cwd: noKeys, env });
    expect(stored.code).toBe(0);
    expect(stored.stdout).toMatch(/^OK +files@primary .*\(stored bytes only: the job has no keys/m);
    const json = await stowage(["verify", "--json", "--job", "files", "--from", "primary"], {
      cwd: noKeys,
      env,
    });
    expect(JSON.parse(json.stdout).results[0]).toMatchObject({ status: "ok", plainChecked: false });
  });

  it("verify: exit 0 for intact backups, 1 after a stored byte changes", async () => {
    const dir = await project("verify");
    expect((await stowage(["run", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    const ok = await stowage(["verify", "--json", "--job", "files"], { cwd: dir, env });
    expect(ok.code).toBe(0);
    const report = JSON.parse(ok.stdout);
    expect(report.results.map((r: { sink: string; status: string }) => `${r.sink}:${r.status}`)).toEqual([
      "primary:ok",
      "offsite:ok",
    ]);
    expect(report.results[0].plainChecked).toBe(true);
    const files = (await readdir(join(dir, "offsite"), { recursive: true })) as string[];
    const artifact = join(dir, "offsite", files.find((f) => f.endsWith(".tar.gz.enc"))!);
    const bytes = await readFile(artifact);
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x01;
    await writeFile(artifact, bytes);
    const bad = await stowage(["verify", "--json", "--job", "files"], { cwd: dir, env });
    expect(bad.code).toBe(1);
    const badReport = JSON.parse(bad.stdout);
    expect(badReport.results[1]).toMatchObject({
      sink: "offsite",
      status: "failed",
      problems: expect.arrayContaining(["INTEGRITY_MISMATCH"]),
    });
    const audit = (await readFile(join(dir, "audit.jsonl"), "utf8"))
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(audit.filter((e) => e.action === "verify").map((e) => e.result)).toEqual([
      "ok",
      "ok",
      "ok",
      "failed",
    ]);
  });

  it("restore: --out writes the plain bytes, --extract rebuilds the folder, --from reads a copy", async () => {
    const dir = await project("restore");
    expect((await stowage(["run"], { cwd: dir, env })).code).toBe(0);
    const out = await stowage(["restore", "--job", "state", "--out", "state.json"], { cwd: dir, env });
    expect(out.code).toBe(0);
    expect(await readFile(join(dir, "state.json"), "utf8")).toBe('{"ok":true}');
    expect((await stat(join(dir, "state.json"))).mode & 0o777).toBe(0o600);
    const toStdout = await stowage(["restore", "--job", "state", "--out", "-"], { cwd: dir, env });
    expect(toStdout.stdout).toBe('{"ok":true}');
    const ex = await stowage(["restore", "--job", "files", "--from", "offsite", "--extract", "restored"], {
      cwd: dir,
      env,
    });
    expect(ex.code).toBe(0);
    expect(await readFile(join(dir, "restored", "a.txt"), "utf8")).toBe("alpha\n".repeat(1000));
    expect(await readFile(join(dir, "restored", "sub", "b.bin"))).toEqual(
      await readFile(join(dir, "data", "sub", "b.bin")),
    );
    // Without the key, the restore fails (exit 1) and leaves no half-written file behind.
    const nokey = await stowage(["restore", "--job", "files", "--out", "x.tar"], {
      cwd: dir,
      env: { STOWAGE_TEST_KEY: "b".repeat(64) },
    });
    expect(nokey.code).toBe(1);
    expect(nokey.stderr).toMatch(/DECRYPT_FAILED/);
    const audit = (await readFile(join(dir, "audit.jsonl"), "utf8"))
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(audit.filter((e) => e.action === "restore").map((e) => `${e.result}:${e.error ?? ""}`)).toEqual([
      "ok:",
      "ok:",
      "ok:",
      "failed:DECRYPT_FAILED",
    ]);
  });

  it("prune: --dry-run lists what would go; prune deletes it (per sink)", async () => {
    const dir = await project("prune");
    for (let i = 0; i < 4; i++)
      expect((await stowage(["run", "--no-prune", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    const count = async (root: string) =>
      ((await readdir(join(dir, root), { recursive: true })) as string[]).filter((f) =>
        f.endsWith(".manifest.json"),
      ).length;
    expect([await count("backups"), await count("offsite")]).toEqual([4, 4]);
    const dry = await stowage(["prune", "--dry-run", "--json"], { cwd: dir, env });
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout);
    expect(
      plan.jobs[0].results.map((r: { target: string; deleted: string[] }) => [r.target, r.deleted.length]),
    ).toEqual([
      ["primary", 2],
      ["offsite", 1],
    ]);
    expect([await count("backups"), await count("offsite")]).toEqual([4, 4]);
    expect((await stowage(["prune"], { cwd: dir, env })).code).toBe(0);
    expect([await count("backups"), await count("offsite")]).toEqual([2, 3]);
  });

  it("drill: restores into a scratch folder, checks, reports RPO and RTO, and writes the report", async () => {
    const dir = await project("drill");
    expect((await stowage(["run", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    const ran = await stowage(["drill", "--job", "files", "--json", "--report", "drill.json"], {
      cwd: dir,
      env,
    });
    expect(ran.code).toBe(0);
    const report = JSON.parse(ran.stdout);
    expect(report).toMatchObject({ ok: true, job: "files", target: "directory", cleanup: { ok: true } });
    expect(report.rpoMs).toBeGreaterThanOrEqual(0);
    expect(report.rtoMs).toBeGreaterThanOrEqual(0);
    expect(report.objectives.rpo.met).toBe(true);
    expect(JSON.parse(await readFile(join(dir, "drill.json"), "utf8"))).toEqual(report);
  });

  it("keygen --signing: the signing key (0600, not printed) signs a job's manifests; the verify key checks them", async () => {
    const dir = await project("keygen-signing");
    const gen = await stowage(["keygen", "--signing", "--out", "signing.txt", "--json"], { cwd: dir });
    expect(gen.code).toBe(0);
    const { verifyKey, id } = JSON.parse(gen.stdout);
    expect(verifyKey).toMatch(/^stowage-verify1:/);
    const file = await readFile(join(dir, "signing.txt"), "utf8");
    const signingKey = file.split("\n").find((l) => l.startsWith("stowage-sign1:"))!;
    expect(gen.stdout).not.toContain(signingKey);
    expect((await stat(join(dir, "signing.txt"))).mode & 0o777).toBe(0o600);
    expect((await stowage(["keygen", "--signing", "--out", "signing.txt"], { cwd: dir })).code).toBe(2);

    await writeFile(
      join(dir, "signed.config.ts"),
      `import { filesystemSink } from ${src("sinks/filesystem.ts")};
import { bytesSource } from ${src("sources/bytes.ts")};
import { defineJob } from ${src("jobs/index.ts")};
export const jobs = [defineJob({
  name: "signed", source: bytesSource({ data: "vouched for" }),
  signingKey: process.env.SIGNING_KEY,
  sink: filesystemSink({ root: ${JSON.stringify(join(dir, "signed"))} }),
})];
`,
    );
    const cfg = ["--config", "signed.config.ts"];
    const ran = await stowage(["run", ...cfg], { cwd: dir, env: { SIGNING_KEY: signingKey } });
    expect(ran.code).toBe(0);
    expect(ran.stdout + ran.stderr).not.toContain(signingKey);
    const { filesystemSink, listManifests } = await import("../../src/index.js");
    const sink = filesystemSink({ root: join(dir, "signed") });
    const { manifests, invalid } = await listManifests(sink, { verifyKeys: [verifyKey] });
    expect(invalid).toEqual([]);
    expect(manifests.map((m) => m.signature?.keyId)).toEqual([id]);
    const stranger = JSON.parse((await stowage(["keygen", "--signing", "--json"], { cwd: dir })).stdout);
    const refused = await listManifests(sink, { verifyKeys: [stranger.verifyKey] });
    expect(refused.invalid.map((i) => i.error.code)).toEqual(["SIGNATURE_INVALID"]);
  });

  it("keygen: the recipient encrypts, the identity (written 0600, not printed) restores", async () => {
    const dir = await project("keygen");
    const gen = await stowage(["keygen", "--out", "identity.txt", "--json"], { cwd: dir });
    expect(gen.code).toBe(0);
    const { recipient } = JSON.parse(gen.stdout);
    expect(recipient).toMatch(/^stowage-pub1/);
    const identityFile = await readFile(join(dir, "identity.txt"), "utf8");
    const identity = identityFile.split("\n").find((l) => l.startsWith("STOWAGE-SECRET-KEY-1"))!;
    expect(gen.stdout).not.toContain(identity);
    expect((await stat(join(dir, "identity.txt"))).mode & 0o777).toBe(0o600);
    // Refuses to overwrite an identity: a bad --out, nothing was done.
    const again = await stowage(["keygen", "--out", "identity.txt", "--json"], { cwd: dir });
    expect(again.code).toBe(2);
    expect(JSON.parse(again.stdout).error.code).toBe("CONFIG_INVALID");
    expect(await readFile(join(dir, "identity.txt"), "utf8")).toBe(identityFile);

    await writeFile(
      join(dir, "pub.config.ts"),
      `import { aes256gcm } from ${src("transforms/aes-256-gcm.ts")};
import { filesystemSink } from ${src("sinks/filesystem.ts")};
import { bytesSource } from ${src("sources/bytes.ts")};
import { defineJob } from ${src("jobs/index.ts")};
export const jobs = [defineJob({
  name: "sealed", source: bytesSource({ data: "for your eyes only" }),
  transforms: [aes256gcm({ recipients: [process.env.RECIPIENT] })],
  keys: process.env.IDENTITY ? [{ identity: process.env.IDENTITY }] : [],
  sink: filesystemSink({ root: ${JSON.stringify(join(dir, "sealed"))} }),
})];
`,
    );
    const cfg = ["--config", "pub.config.ts"];
    expect((await stowage(["run", ...cfg], { cwd: dir, env: { RECIPIENT: recipient } })).code).toBe(0);
    const locked = await stowage(["restore", ...cfg, "--job", "sealed", "--out", "-"], {
      cwd: dir,
      env: { RECIPIENT: recipient },
    });
    expect(locked.code).toBe(1);
    const opened = await stowage(["restore", ...cfg, "--job", "sealed", "--out", "-"], {
      cwd: dir,
      env: { RECIPIENT: recipient, IDENTITY: identity },
    });
    expect(opened.code).toBe(0);
    expect(opened.stdout).toBe("for your eyes only");
  });

  it("a key variable that is not set: exit 2, CONFIG_INVALID naming the variable, no value printed", async () => {
    const dir = await project("unset-key");
    const { STOWAGE_TEST_KEY: _, ...without } = process.env;
    const ran = await new Promise<Ran>((resolve) => {
      execFile(tsx, [cli, "run", "--json"], { cwd: dir, env: without }, (error, stdout, stderr) =>
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr }),
      );
    });
    expect(ran.code).toBe(2);
    const { ok, error } = JSON.parse(ran.stdout);
    expect(ok).toBe(false);
    expect(error.code).toBe("CONFIG_INVALID");
    expect(error.unsetVariables).toEqual(["STOWAGE_TEST_KEY"]);
    expect(ran.stderr).toContain("STOWAGE_TEST_KEY");
    expect(await readdir(dir)).not.toContain("backups");
  });

  it("restore --out onto an existing file: exit 2 CONFIG_INVALID; --force replaces it whole, or not at all", async () => {
    const dir = await project("restore-exists");
    expect((await stowage(["run"], { cwd: dir, env })).code).toBe(0);
    await writeFile(join(dir, "state.json"), "precious");
    const refused = await stowage(["restore", "--job", "state", "--out", "state.json", "--json"], {
      cwd: dir,
      env,
    });
    expect(refused.code).toBe(2);
    const { error } = JSON.parse(refused.stdout);
    expect(error.code).toBe("CONFIG_INVALID");
    expect(error.issues.map((i: { path: string }) => i.path)).toEqual(["--out"]);
    expect(await readFile(join(dir, "state.json"), "utf8")).toBe("precious");

    // A failing restore (wrong key) with --force leaves the file as it was and no temporary file.
    await writeFile(join(dir, "files.tar"), "precious too");
    const before = (await readdir(dir)).sort();
    const failed = await stowage(["restore", "--job", "files", "--out", "files.tar", "--force", "--json"], {
      cwd: dir,
      env: { STOWAGE_TEST_KEY: "b".repeat(64) },
    });
    expect(failed.code).toBe(1);
    expect(JSON.parse(failed.stdout).error.code).toBe("DECRYPT_FAILED");
    expect(await readFile(join(dir, "files.tar"), "utf8")).toBe("precious too");
    expect((await readdir(dir)).sort()).toEqual(before);

    const forced = await stowage(["restore", "--job", "state", "--out", "state.json", "--force"], {
      cwd: dir,
      env,
    });
    expect(forced.code).toBe(0);
    expect(await readFile(join(dir, "state.json"), "utf8")).toBe('{"ok":true}');
    expect((await stat(join(dir, "state.json"))).mode & 0o777).toBe(0o600);
    expect((await readdir(dir)).sort()).toEqual(before);
  });

  it("a restore that fails leaves no file at --out", async () => {
    const dir = await project("restore-fails");
    expect((await stowage(["run", "--job", "files"], { cwd: dir, env })).code).toBe(0);
    const before = (await readdir(dir)).sort();
    const failed = await stowage(["restore", "--job", "files", "--out", "new.tar", "--json"], {
      cwd: dir,
      env: { STOWAGE_TEST_KEY: "b".repeat(64) },
    });
    expect(failed.code).toBe(1);
    expect(JSON.parse(failed.stdout).error.code).toBe("DECRYPT_FAILED");
    expect((await readdir(dir)).sort()).toEqual(before);
  });

  it("each command answers --help with its own usage and flags, exit 0; a flag it does not take is exit 2", async () => {
    const dir = await project("help");
    /** The flags an Options section lists, e.g. ["--config", "--job", ...]. */
    const flagsOf = (help: string) => [...help.matchAll(/^\s+(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]);
    const restore = await stowage(["restore", "--help"], { cwd: dir });
    expect(restore.code).toBe(0);
    expect(restore.stderr).toBe("");
    expect(flagsOf(restore.stdout)).toEqual(
      expect.arrayContaining([
        "--job",
        "--out",
        "--extract",
        "--at",
        "--from",
        "--force",
        "--progress-interval",
      ]),
    );
    expect(flagsOf(restore.stdout)).not.toContain("--dry-run");
    expect(flagsOf(restore.stdout)).not.toContain("--prometheus");
    const status = await stowage(["status", "--help"], { cwd: dir });
    expect(status.code).toBe(0);
    expect(flagsOf(status.stdout)).toContain("--prometheus");
    expect(flagsOf(status.stdout)).not.toContain("--out");
    const global = await stowage(["--help"], { cwd: dir });
    expect(global.stdout).not.toBe(restore.stdout);
    // The parser takes exactly what the help lists: a listed flag parses, one of another command does not.
    expect((await stowage(["status", "--prometheus", "--job", "state", "--help"], { cwd: dir })).code).toBe(
      0,
    );
    const foreign = await stowage(["status", "--out", "x.json"], { cwd: dir, env });
    expect(foreign.code).toBe(2);
    expect(await stat(join(dir, "x.json")).catch(() => undefined)).toBeUndefined();
    for (const command of ["run", "verify", "prune", "drill", "keygen"]) {
      const help = await stowage([command, "--help"], { cwd: dir });
      expect(help.code).toBe(0);
      expect(flagsOf(help.stdout)).toContain("--help");
      expect(help.stdout).not.toBe(global.stdout);
    }
  });

  it("off a terminal, a slow restore or verify prints progress lines every --progress-interval, and logs them", async () => {
    const dir = join(work, "slow");
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, "stowage.config.ts"),
      `
import { appendFileSync } from "node:fs";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { filesystemSink } from ${src("sinks/filesystem.ts")};
import { bytesSource } from ${src("sources/bytes.ts")};
import { defineConfig, defineJob } from ${src("jobs/index.ts")};

const local = filesystemSink({ root: ${JSON.stringify(join(dir, "backups"))} });
// Reads come 64 KiB every 40 ms: a restore of 1 MiB takes about 0.6 s.
const slow = new Proxy(local, {
  get(target, property) {
    if (property === "read") {
      return async (key, options) => {
        const stream = await target.read(key, options);
        return Readable.from((async function* () {
          for await (const chunk of stream) {
            for (let i = 0; i < chunk.length; i += 65536) {
              await sleep(40);
              yield chunk.subarray(i, i + 65536);
            }
          }
        })());
      };
    }
    const value = Reflect.get(target, property, target);
    return typeof value === "function" ? value.bind(target) : value;
  },
});
const log = (fields) => appendFileSync(${JSON.stringify(join(dir, "log.jsonl"))}, JSON.stringify(fields) + "\\n");
export default defineConfig({
  jobs: [defineJob({ name: "big", source: bytesSource({ data: Buffer.alloc(1 << 20, 7) }), sink: slow })],
  logger: { debug: log, info: log, warn: log, error: log },
});
`,
    );
    expect((await stowage(["run"], { cwd: dir })).code).toBe(0);
    const restored = await stowage(
      ["restore", "--job", "big", "--out", "big.bin", "--progress-interval", "100ms"],
      {
        cwd: dir,
      },
    );
    expect(restored.code).toBe(0);
    expect((await stat(join(dir, "big.bin"))).size).toBe(1 << 20);
    // Structure, not wording: each line names the operation and a percentage of the known size.
    const lines = (text: string) => text.split("\n").filter((l) => /progress/.test(l));
    expect(lines(restored.stderr).length).toBeGreaterThanOrEqual(1);
    for (const line of lines(restored.stderr)) expect(line).toMatch(/restore big .*\b\d{1,3}%/);
    const logged = (await readFile(join(dir, "log.jsonl"), "utf8"))
      .trimEnd()
      .split("\n")
      .map((l) => JSON.parse(l))
      .filter((e) => e.event === "progress");
    expect(logged.length).toBeGreaterThanOrEqual(1);
    expect(logged[0]).toMatchObject({ operation: "restore big", total: 1 << 20 });
    expect(logged[0].percent).toBeGreaterThanOrEqual(0);
    expect(logged[0].bytes).toBeLessThan(1 << 20); // printed before the end, not after it

    const verified = await stowage(["verify", "--json", "--progress-interval", "100ms"], { cwd: dir });
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout).ok).toBe(true);
    expect(lines(verified.stderr).length).toBeGreaterThanOrEqual(1);
    for (const line of lines(verified.stderr)) expect(line).toMatch(/verify big@primary .*\b\d{1,3}%/);

    // The default interval (30 s) and --no-progress: nothing on stderr for a short restore.
    const quiet = await stowage(["restore", "--job", "big", "--out", "-", "--no-progress"], { cwd: dir });
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe("");
    expect(
      (await stowage(["restore", "--job", "big", "--out", "-", "--progress-interval", "soon"], { cwd: dir }))
        .code,
    ).toBe(2);
  });
});
