/**
 * Upload of a backup to the local S3 server (s3rver in a child process, see
 * test/support/s3-server.ts) through stowage's s3Sink, against `aws s3 cp` of the same bytes to
 * the same server in the same run. Reports the throughput ratio (target >= 1.0) and stowage's
 * peak RSS, whose growth over the process's baseline should stay within queueSize × partSize +
 * 64 MiB. Scale 1 = 1 GiB.
 */
import { execFile, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startS3Server } from "../test/support/s3-server.js";
import { type BenchOptions, type BenchRow, inRotation, median } from "./lib.js";
import { awsCliEnv } from "./processes.js";

const MiB = 1024 * 1024;
const execFileAsync = promisify(execFile);

interface UploadResult {
  ms: number;
  baselineRss: number;
  peakRss: number;
  bytes: number;
  cpu: { user: number; system: number };
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, "w");
  try {
    for (let done = 0; done < bytes; ) {
      const n = Math.min(8 * MiB, bytes - done);
      await handle.write(randomBytes(n));
      done += n;
    }
  } finally {
    await handle.close();
  }
}

export async function run(options: BenchOptions): Promise<BenchRow[]> {
  const bytes = Math.max(16 * MiB, Math.round(1024 * MiB * options.scale));
  const partSize = 8 * MiB;
  // 10 parts in flight, as the CLI keeps 10 requests going (its default max_concurrent_requests):
  // s3rver needs several parts in flight to stay busy (4 left it idle between parts, 6 kept 5.2
  // in flight against the CLI's 9.3), and the same concurrency makes the two sides comparable.
  const queueSize = 10;
  const rounds = Math.max(1, options.repeat ?? 5);
  const file = join(options.workDir, "s3-bench.bin");
  const server = await startS3Server({ local: true });
  try {
    await writeRandomFile(file, bytes);
    const { bucket } = await server.scratch();
    const cliEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin", ...awsCliEnv(options.workDir) };
    const cli = (args: string[]) =>
      execFileAsync("aws", ["--endpoint-url", server.endpoint, ...args], { env: cliEnv });

    // The anchor: the AWS CLI with its defaults (8 MiB parts, 10 concurrent requests), timed as a
    // command, so its interpreter's start-up is inside its time (measured alone below).
    const anchorRun = async () => {
      const t0 = performance.now();
      await cli(["s3", "cp", "--only-show-errors", file, `s3://${bucket}/anchor.bin`]);
      return performance.now() - t0;
    };
    // stowage: in a child process (so its RSS is its own), timed around backup() as a service
    // embedding the library would run it.
    const stowageRun = async () => {
      const child = fork(fileURLToPath(new URL("./s3-upload.ts", import.meta.url)), [], {
        execArgv: ["--import", "tsx"],
        env: {
          ...process.env,
          AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
          STOWAGE_BENCH_S3: JSON.stringify({ endpoint: server.endpoint, bucket, file, partSize, queueSize }),
        },
      });
      return new Promise<UploadResult>((resolve, reject) => {
        child.once("message", resolve as (m: unknown) => void);
        child.once("exit", (code) => reject(new Error(`stowage upload child exited with ${code}`)));
      });
    };
    // Each side starts from the same state: an empty bucket and nothing left to write back. s3rver
    // assembles a multipart object by copying its parts, and that took 3.0-3.2 s in an empty
    // bucket but 4.1 s once earlier uploads were there, so without emptying it the side that ran
    // first in a fresh server won by 10 %. The order also alternates between rounds.
    const settle = async () => {
      await cli(["s3", "rm", "--recursive", "--only-show-errors", `s3://${bucket}/`]);
      await execFileAsync("sync");
      await server.local?.clearRequests();
    };
    const anchorTimes: number[] = [];
    const results: UploadResult[] = [];
    // How long the server took to assemble each side's object (CompleteMultipartUpload), from its
    // request log: the part of the time neither client can change.
    const assembly: Record<"anchor" | "stowage", number[]> = { anchor: [], stowage: [] };
    // And how long each side kept it busy with parts: from the first UploadPart received to the
    // last answered.
    const partsPhase: Record<"anchor" | "stowage", number[]> = { anchor: [], stowage: [] };
    const assembled = async (side: keyof typeof assembly) => {
      const requests = (await server.local?.requests()) ?? [];
      const complete = requests.find((r) => r.method === "POST" && r.op === "uploadId");
      if (complete?.ms !== undefined) assembly[side].push(complete.ms / 1000);
      const parts = requests.filter((r) => r.method === "PUT" && r.op === "uploadId" && r.ms !== undefined);
      if (parts.length > 0) {
        const first = Math.min(...parts.map((r) => r.startedAt));
        const last = Math.max(...parts.map((r) => r.startedAt + (r.ms ?? 0)));
        partsPhase[side].push((last - first) / 1000);
      }
    };
    await inRotation(
      rounds,
      [
        async () => {
          anchorTimes.push(await anchorRun());
          await assembled("anchor");
        },
        async () => {
          results.push(await stowageRun());
          await assembled("stowage");
        },
      ],
      settle,
    );
    const t0 = performance.now();
    await cli(["s3", "ls", `s3://${bucket}/none/`]).catch(() => undefined);
    const cliStartMs = performance.now() - t0;

    const mbps = (ms: number) => bytes / 1e6 / (ms / 1000);
    const best = results.reduce((a, b) => (b.ms < a.ms ? b : a));
    const stowage = mbps(best.ms);
    const anchor = mbps(Math.min(...anchorTimes));
    const ratio = stowage / anchor;
    const bound = queueSize * partSize + 64 * MiB;
    const peakRss = Math.max(...results.map((r) => r.peakRss));
    const growth = Math.max(...results.map((r) => r.peakRss - r.baselineRss));
    const list = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(", ");
    return [
      {
        name: `backup -> S3 (s3rver), ${Math.round(bytes / MiB)} MiB, partSize 8 MiB x queueSize ${queueSize}`,
        stowage,
        anchor,
        anchorName: "aws s3 cp (same bytes, same server)",
        unit: "MB/s",
        ratio,
        target: ">= 1.0; RSS growth <= queueSize x partSize + 64 MiB",
        pass: ratio >= 1.0 && growth <= bound && results.every((r) => r.bytes === bytes),
        peakRssMiB: Math.round(peakRss / MiB),
        note:
          `best of ${rounds} alternating rounds (aws s3 cp: ${list(anchorTimes.map(mbps))} MB/s; stowage: ${list(results.map((r) => mbps(r.ms)))} MB/s; ` +
          `median ratio ${(median(results.map((r) => mbps(r.ms))) / median(anchorTimes.map(mbps))).toFixed(3)}); ` +
          `the parts took the server ${list(partsPhase.anchor)} s (CLI) and ${list(partsPhase.stowage)} s (stowage), ` +
          `its assembly of the object ${list(assembly.anchor)} s (CLI) and ${list(assembly.stowage)} s (stowage); ` +
          `the CLI's time includes its start-up (an empty \`aws s3 ls\` takes ${(cliStartMs / 1000).toFixed(2)} s), stowage's is backup() in a running process; ` +
          `stowage's CPU in its best round ${best.cpu.user.toFixed(2)} s user + ${best.cpu.system.toFixed(2)} s system; ` +
          `peak RSS ${Math.round(peakRss / MiB)} MiB, growth during the upload at most ${Math.round(growth / MiB)} MiB (bound ${Math.round(bound / MiB)} MiB)`,
      },
    ];
  } finally {
    await server.stop();
    await rm(file, { force: true });
  }
}
