/**
 * stowage against what users would pick instead, pair by pair on the same generated dump (not
 * repeating: every row is new text, ~3.7:1 under `gzip -6`), each pair measured alternately in the
 * same run (ours, theirs, ours, theirs… with `--repeat`; the fastest of each side counts):
 *
 *   backup  gzip-6 + AES-256-GCM     vs `pigz -6 | age -r`           (goal >= 1.0)
 *   backup  zstd-3 + AES-256-GCM     vs `zstd -3 -T0 | age -r`       (goal >= 1.0, Node with zstd)
 *   backup  every path               vs `restic backup --stdin`      (goal >= 2.0)
 *   restore decrypt + decompress     vs `age -d | pigz -d`, `age -d | zstd -d`   (goal >= 1.0)
 *   restore from S3 (local server), unencrypted and encrypted, vs `aws s3 cp` of the same object
 *           to stdout (goal >= 1.0)
 *   peak RSS of every stowage run    (goal <= 128 MiB)
 *
 * stowage runs as plain `node` on an esbuild bundle, in a child process, so its RSS and CPU are its
 * own. The zstd rows need a Node with zstd in node:zlib (>= 22.15 / 23.8): the running one, or the
 * one named by STOWAGE_BENCH_ZSTD_NODE (a path to a `node` binary). A peer that is not installed
 * is installed with apt-get when the bench runs as root, else its rows say why they were skipped.
 * Secrets travel in the environment (the stowage key, restic's password); age's recipient is public.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { startS3Server } from "../test/support/s3-server.js";
import type { ChildArgs, ChildResult } from "./core-child.js";
import { writeDumpFile } from "./data.js";
import type { BenchOptions, BenchRow } from "./lib.js";
import {
  awsCliEnv,
  childCommand,
  hasCommand,
  mbps,
  round,
  runChild,
  shell,
  sizeName,
  type Timed,
} from "./processes.js";

const MiB = 1 << 20;
const execFileAsync = promisify(execFile);

const load = () => {
  try {
    return readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
  } catch {
    return "?";
  }
};

/** The peer's command, installed from its Debian package when missing and possible; else why not. */
async function ensureTool(command: string, debianPackage: string): Promise<string | undefined> {
  if (await hasCommand(command)) return undefined;
  if (process.getuid?.() === 0 && (await hasCommand("apt-get"))) {
    await shell(`DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${debianPackage} >/dev/null`, {}).catch(
      () => undefined,
    );
    if (await hasCommand(command)) return undefined;
  }
  return `skipped: ${command} is not installed (Debian package ${debianPackage}; not root or apt-get failed)`;
}

/** A Node binary with zstd in node:zlib: this one, or STOWAGE_BENCH_ZSTD_NODE. */
async function zstdNode(): Promise<{ node?: string; why: string }> {
  const candidates = [process.execPath, process.env.STOWAGE_BENCH_ZSTD_NODE].filter(Boolean) as string[];
  for (const node of candidates) {
    try {
      const { stdout } = await execFileAsync(node, [
        "-p",
        "typeof require('node:zlib').createZstdCompress === 'function' ? process.version : ''",
      ]);
      if (stdout.trim()) return { node, why: `Node ${stdout.trim()}` };
    } catch {
      // not a usable node
    }
  }
  return {
    why: `skipped: Node ${process.version} has no zstd in node:zlib; set STOWAGE_BENCH_ZSTD_NODE to a Node >= 22.15`,
  };
}

type Ours = ChildResult;
interface Pair {
  ours: Ours;
  theirs: Timed;
  loadBefore: string;
  loadAfter: string;
}

const nothing = async () => undefined;

/**
 * Runs ours and theirs alternately `rounds` times (each side's `before` untimed, just before it);
 * keeps each side's fastest.
 */
async function pair(
  rounds: number,
  ours: () => Promise<Ours>,
  theirs: () => Promise<Timed>,
  before: { ours?: () => Promise<void>; theirs?: () => Promise<void> } = {},
): Promise<Pair> {
  const loadBefore = load();
  let a: Ours | undefined;
  let b: Timed | undefined;
  for (let i = 0; i < rounds; i++) {
    // Alternate which side goes first, too.
    const sides = [
      async () => {
        await (before.ours ?? nothing)();
        const r = await ours();
        if (!a || r.seconds < a.seconds) a = r;
      },
      async () => {
        await (before.theirs ?? nothing)();
        const r = await theirs();
        if (!b || r.seconds < b.seconds) b = r;
      },
    ];
    if (i % 2 === 1) sides.reverse();
    for (const side of sides) await side();
  }
  if (!a || !b) throw new Error("rounds must be at least 1");
  return { ours: a, theirs: b, loadBefore, loadAfter: load() };
}

const side = (t: { seconds: number; cpuSeconds?: number; mainCpuSeconds?: number | undefined }) =>
  t.cpuSeconds === undefined
    ? "?"
    : `${round(t.cpuSeconds, 2)} s CPU${t.mainCpuSeconds === undefined ? "" : ` (main thread ${round(t.mainCpuSeconds, 2)} s)`} / ${round(t.cpuSeconds / t.seconds, 2)} cores`;

function row(name: string, anchorName: string, bytes: number, p: Pair, goal: number, extra = ""): BenchRow {
  const ratio = mbps(bytes, p.ours.seconds) / mbps(bytes, p.theirs.seconds);
  return {
    name,
    stowage: round(mbps(bytes, p.ours.seconds)),
    anchor: round(mbps(bytes, p.theirs.seconds)),
    anchorName,
    unit: "MB/s",
    ratio: round(ratio, 2),
    target: `>= ${goal.toFixed(1)}; RSS <= 128 MiB`,
    pass: ratio >= goal && p.ours.peakRssMiB <= 128,
    peakRssMiB: round(p.ours.peakRssMiB),
    note: `stowage ${side(p.ours)}, peer ${side(p.theirs)}; load ${p.loadBefore} -> ${p.loadAfter}${extra ? `; ${extra}` : ""}`,
  };
}

const skipped = (name: string, anchorName: string, why: string): BenchRow => ({
  name,
  stowage: Number.NaN,
  anchor: Number.NaN,
  anchorName,
  unit: "MB/s",
  ratio: Number.NaN,
  target: "info (skipped)",
  pass: true,
  note: why,
});

export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const { workDir, scale } = options;
  const rounds = Math.max(1, options.repeat ?? 1);
  const bytes = Math.max(16 * MiB, Math.round((256 * scale) / 1) * MiB);
  const s3Bytes = Math.max(16 * MiB, Math.round(512 * scale) * MiB);
  const rows: BenchRow[] = [];
  const wanted = (name: string, anchorName: string) =>
    !options.rows || `${name} vs ${anchorName}`.includes(options.rows);
  const key = randomBytes(32).toString("hex");
  const cpuFile = join(workDir, "cpu.txt");
  const { argv } = await childCommand(workDir);
  const missing = {
    age: await ensureTool("age", "age"),
    pigz: await ensureTool("pigz", "pigz"),
    zstd: await ensureTool("zstd", "zstd"),
    restic: await ensureTool("restic", "restic"),
    aws: await ensureTool("aws", "awscli"),
  };
  const zstdRuntime = await zstdNode();

  const file = join(workDir, "dump.sql");
  await writeDumpFile(file, bytes, 7);
  const ageKey = join(workDir, "age-key.txt");
  let recipient = "";
  if (!missing.age) {
    await shell(`age-keygen -o '${ageKey}' 2>/dev/null`, {});
    recipient = (await execFileAsync("age-keygen", ["-y", ageKey])).stdout.trim();
  }
  const child = (args: ChildArgs, node?: string) => runChild(argv, args, key, node);
  const timed = (script: string, env: Record<string, string> = {}) => shell(script, env, cpuFile);
  const size = sizeName(bytes);

  // Backups, and then restores of what they wrote.
  const paths = [
    { codec: "gzip" as const, level: 6, peer: "pigz -6", unpeer: "pigz -d", node: process.execPath },
    {
      codec: "zstd" as const,
      level: 3,
      peer: "zstd -3 -T0 -q",
      unpeer: "zstd -d -q",
      node: zstdRuntime.node,
    },
  ];
  for (const path of paths) {
    const label = `${path.codec}-${path.level} + AES-256-GCM`;
    const peerTool = path.codec === "gzip" ? missing.pigz : missing.zstd;
    const why = missing.age ?? peerTool ?? (path.node ? undefined : zstdRuntime.why) ?? undefined;
    const anchorName = `${path.peer} | age -r`;
    if (why) {
      rows.push(skipped(`backup ${label} -> file, ${size}`, anchorName, why));
      continue;
    }
    const root = join(workDir, `sink-${path.codec}`);
    const out = join(workDir, `peer-${path.codec}.age`);
    const backupArgs: ChildArgs = {
      mode: "backup",
      file,
      root,
      job: path.codec,
      codec: path.codec,
      level: path.level,
    };
    const clean = async () => {
      await rm(root, { recursive: true, force: true });
      await mkdir(root, { recursive: true });
    };
    const backupName = `backup ${label} -> file, ${size}`;
    const restoreName = `restore (decrypt, ${path.codec} -d, 2×SHA-256) -> discard, ${size}`;
    const resticAnchor = "restic backup --stdin (zstd auto, AES-256-CTR + Poly1305)";
    const wantBackup = wanted(backupName, anchorName);
    const wantRestore = wanted(restoreName, `age -d | ${path.unpeer}`);
    const wantRestic = wanted(backupName, resticAnchor);
    if (!wantBackup && !wantRestore && !wantRestic) continue;
    await clean();
    // The restore reads the backup the backup pair's last round left (one untimed run without it).
    if (!wantBackup && wantRestore) {
      await child(backupArgs, path.node);
      await timed(`${path.peer} -c < '${file}' | age -r '${recipient}' > '${out}'`);
    }
    if (wantBackup) {
      const backupPair = await pair(
        rounds,
        () => child(backupArgs, path.node),
        () => timed(`${path.peer} -c < '${file}' | age -r '${recipient}' > '${out}'`),
        { ours: clean },
      );
      rows.push(
        row(
          backupName,
          anchorName,
          bytes,
          backupPair,
          1.0,
          `runtime ${path.node === process.execPath ? process.version : zstdRuntime.why}; stored ${round(bytes / backupPair.ours.storedBytes, 2)}:1`,
        ),
      );
    }
    if (wantRestore) {
      // The restore reads the backup the last round left.
      const restorePair = await pair(
        rounds,
        () =>
          child({ mode: "restore", root, job: path.codec, codec: path.codec, level: path.level }, path.node),
        () => timed(`age -d -i '${ageKey}' < '${out}' | ${path.unpeer} > /dev/null`),
      );
      rows.push(row(restoreName, `age -d | ${path.unpeer}`, bytes, restorePair, 1.0));
    }
    if (wantRestic && missing.restic) {
      rows.push(skipped(`backup ${label} vs restic`, "restic backup --stdin", missing.restic));
    } else if (wantRestic) {
      const repo = join(workDir, "restic-repo");
      const resticEnv = {
        RESTIC_PASSWORD: randomBytes(18).toString("base64"),
        RESTIC_CACHE_DIR: join(workDir, "restic-cache"),
      };
      // A fresh repository each run: restic deduplicates, so a second backup of the same data is free.
      const freshRepo = async () => {
        await rm(repo, { recursive: true, force: true });
        await shell(`restic init -q --repo '${repo}' >/dev/null`, resticEnv);
      };
      const resticPair = await pair(
        rounds,
        () => child(backupArgs, path.node),
        () =>
          timed(
            `restic -q --repo '${repo}' backup --stdin --stdin-filename dump.sql < '${file}' >/dev/null`,
            resticEnv,
          ),
        { ours: clean, theirs: freshRepo },
      );
      rows.push(row(backupName, resticAnchor, bytes, resticPair, 2.0));
      await rm(repo, { recursive: true, force: true });
    }
    await rm(root, { recursive: true, force: true });
    await rm(out, { force: true });
  }

  // Restore from S3: the same object, downloaded by `aws s3 cp` and restored by stowage.
  if (!wanted("restore from S3", "aws s3 cp")) return rows;
  if (missing.aws) {
    rows.push(skipped(`restore from S3, ${sizeName(s3Bytes)}`, "aws s3 cp", missing.aws));
    return rows;
  }
  const s3File = join(workDir, "s3-dump.sql");
  await writeDumpFile(s3File, s3Bytes, 11);
  const server = await startS3Server({ local: true });
  try {
    const { bucket } = await server.scratch();
    const s3 = { endpoint: server.endpoint, bucket };
    const cliEnv = awsCliEnv(workDir);
    for (const encrypt of [false, true]) {
      const job = encrypt ? "s3-enc" : "s3-plain";
      const made = await child({
        mode: "backup",
        file: s3File,
        root: workDir,
        job,
        codec: "none",
        level: 0,
        encrypt,
        s3,
      });
      const listing = await execFileAsync(
        "aws",
        ["--endpoint-url", server.endpoint, "s3", "ls", "--recursive", `s3://${bucket}/${job}/`],
        { env: { ...process.env, ...cliEnv } },
      );
      const objectKey = listing.stdout
        .split("\n")
        .map((l) => l.trim().split(/\s+/).at(-1) ?? "")
        .find((k) => k.startsWith(job) && !k.endsWith(".manifest.json"));
      if (!objectKey) throw new Error(`no artifact of ${job} in the bucket`);
      const p = await pair(
        rounds,
        () => child({ mode: "restore", root: workDir, job, codec: "none", level: 0, s3 }),
        () =>
          timed(
            `aws --endpoint-url '${server.endpoint}' s3 cp --only-show-errors 's3://${bucket}/${objectKey}' - > /dev/null`,
            cliEnv,
          ),
      );
      rows.push(
        row(
          `restore from S3 (s3rver, local), ${encrypt ? "AES-256-GCM, decrypted" : "unencrypted, checked block by block"}, ${sizeName(s3Bytes)}`,
          "aws s3 cp s3://… - (same object, same server)",
          made.storedBytes,
          p,
          1.0,
          "MB/s of stored bytes; readPartSize 16 MiB x readConcurrency 6 (the CLI: 8 MiB x 10); the CLI's time includes its start-up",
        ),
      );
    }
  } finally {
    await server.stop();
    await rm(s3File, { force: true });
  }
  return rows;
}
