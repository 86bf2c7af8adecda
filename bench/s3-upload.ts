/**
 * Child process of bench/s3.ts: one stowage backup of a file to the S3 server, in a fresh process
 * so its peak RSS (VmHWM) is stowage's alone. Reports { ms, baselineRss, peakRss, bytes, cpu } over IPC.
 */
import { createReadStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { S3Client } from "@aws-sdk/client-s3";
import { backup } from "../src/core/backup.js";
import { s3Sink } from "../src/sinks/s3.js";
import { bytesSource } from "../src/sources/bytes.js";

const { endpoint, bucket, file, partSize, queueSize } = JSON.parse(process.env.STOWAGE_BENCH_S3 ?? "{}");
const client = new S3Client({
  endpoint,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});
const sink = s3Sink({ client, bucket, prefix: "stowage", partSize, queueSize });
const hwm = async () =>
  Number(/VmHWM:\s+(\d+) kB/.exec(await readFile("/proc/self/status", "utf8"))?.[1] ?? 0) * 1024;
const baselineRss = process.memoryUsage().rss;
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const manifest = await backup({
  job: "bench",
  source: bytesSource({ data: () => createReadStream(file, { highWaterMark: 1 << 20 }) }),
  sink,
});
const ms = performance.now() - t0;
const usage = process.cpuUsage(cpu0);
process.send?.({
  ms,
  baselineRss,
  peakRss: await hwm(),
  bytes: manifest.artifact.bytes,
  cpu: { user: usage.user / 1e6, system: usage.system / 1e6 },
});
client.destroy();
