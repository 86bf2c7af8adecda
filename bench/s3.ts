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
import type { BenchOptions, BenchRow } from "./lib.js";

const MiB = 1024 * 1024;
const execFileAsync = promisify(execFile);

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
  const queueSize = 4;
  const file = join(options.workDir, "s3-bench.bin");
  const server = await startS3Server({ local: true });
  try {
    await writeRandomFile(file, bytes);
    const { bucket } = await server.scratch();

    // The anchor: the AWS CLI (its defaults: 8 MiB parts, 10 concurrent requests).
    const t0 = performance.now();
    await execFileAsync(
      "aws",
      [
        "--endpoint-url",
        server.endpoint,
        "s3",
        "cp",
        "--only-show-errors",
        file,
        `s3://${bucket}/anchor.bin`,
      ],
      {
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: options.workDir,
          AWS_ACCESS_KEY_ID: "S3RVER",
          AWS_SECRET_ACCESS_KEY: "S3RVER",
          AWS_DEFAULT_REGION: "us-east-1",
          AWS_CONFIG_FILE: "/dev/null",
          AWS_SHARED_CREDENTIALS_FILE: "/dev/null",
          AWS_REQUEST_CHECKSUM_CALCULATION: "WHEN_REQUIRED",
          AWS_RESPONSE_CHECKSUM_VALIDATION: "WHEN_REQUIRED",
        },
      },
    );
    const anchorMs = performance.now() - t0;

    const child = fork(fileURLToPath(new URL("./s3-upload.ts", import.meta.url)), [], {
      execArgv: ["--import", "tsx"],
      env: {
        ...process.env,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
        STOWAGE_BENCH_S3: JSON.stringify({ endpoint: server.endpoint, bucket, file, partSize, queueSize }),
      },
    });
    const result = await new Promise<{ ms: number; baselineRss: number; peakRss: number; bytes: number }>(
      (resolve, reject) => {
        child.once("message", resolve as (m: unknown) => void);
        child.once("exit", (code) => reject(new Error(`stowage upload child exited with ${code}`)));
      },
    );
    const mbps = (ms: number) => bytes / 1e6 / (ms / 1000);
    const stowage = mbps(result.ms);
    const anchor = mbps(anchorMs);
    const ratio = stowage / anchor;
    const bound = queueSize * partSize + 64 * MiB;
    const growth = result.peakRss - result.baselineRss;
    return [
      {
        name: `backup -> S3 (s3rver), ${Math.round(bytes / MiB)} MiB, partSize 8 MiB x queueSize 4`,
        stowage,
        anchor,
        anchorName: "aws s3 cp (same bytes, same server)",
        unit: "MB/s",
        ratio,
        target: ">= 1.0; RSS growth <= queueSize x partSize + 64 MiB",
        pass: ratio >= 1.0 && growth <= bound,
        peakRssMiB: Math.round(result.peakRss / MiB),
        note: `peak RSS ${Math.round(result.peakRss / MiB)} MiB = baseline ${Math.round(result.baselineRss / MiB)} MiB (node + SDK) + ${Math.round(growth / MiB)} MiB during the upload; bound ${Math.round(bound / MiB)} MiB`,
      },
    ];
  } finally {
    await server.stop();
    await rm(file, { force: true });
  }
}
