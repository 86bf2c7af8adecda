/**
 * One measured stowage run, in a process of its own so its peak RSS is stowage's alone. bench/core.ts
 * bundles this file with esbuild and runs it with plain `node` (what users run: compiled JS, no
 * TypeScript loader in the process). Arguments: one JSON object in argv[2]; the key comes in the
 * environment (STOWAGE_BENCH_KEY, hex), never in argv. Prints one JSON line with the result.
 */
import { createReadStream, readFileSync } from "node:fs";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { backup } from "../src/core/backup.js";
import { listManifests } from "../src/core/catalog.js";
import { restore } from "../src/core/restore.js";
import type { Source, Transform } from "../src/core/types.js";
import { filesystemSink } from "../src/sinks/filesystem.js";
import { aes256gcm } from "../src/transforms/aes-256-gcm.js";
import { gzip } from "../src/transforms/gzip.js";
import { zstd } from "../src/transforms/zstd.js";

export interface ChildArgs {
  mode: "backup" | "restore";
  /** backup: the plain data file to read. */
  file?: string;
  /** The filesystem sink's root. */
  root: string;
  job: string;
  /** "none": no compression; with `encrypt: false` too, the artifact is the plain bytes. */
  codec: "gzip" | "zstd" | "none";
  level: number;
  /** AES-256-GCM after the codec. @default true */
  encrypt?: boolean;
  /** Read and write through the S3 sink on this server instead of the filesystem sink. */
  s3?: { endpoint: string; bucket: string };
}

export interface ChildResult {
  seconds: number;
  plainBytes: number;
  storedBytes: number;
  peakRssMiB: number;
  /** User + system CPU time of the whole process (all threads, including libuv's pool) while measured. */
  cpuSeconds: number;
  /**
   * User + system CPU time of the main (JavaScript) thread alone, where known (Linux): the part
   * that other cores cannot take, so the least wall time the run could have; the load does not
   * inflate it as it does wall time.
   */
  mainThreadCpuSeconds?: number;
  concurrency?: unknown;
}

function fileSource(path: string): Source {
  return {
    kind: "file",
    name: path,
    async open() {
      return {
        // 1 MiB reads: one read fills one compression block, which is then cut without a copy.
        stream: createReadStream(path, { highWaterMark: 1 << 20 }),
        contentType: "application/sql",
        details: async () => ({}),
      };
    },
  };
}

/** The main thread's user + system CPU seconds so far, from /proc (Linux); undefined elsewhere. */
function mainThreadCpu(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "latin1");
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks, 100 a second on Linux
  } catch {
    return undefined;
  }
}

/** With STOWAGE_BENCH_TRACE=1, prints memory use every second to stderr (for finding leaks). */
function traceMemory(): () => void {
  if (process.env.STOWAGE_BENCH_TRACE !== "1") return () => undefined;
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  const timer = setInterval(
    () => {
      const m = process.memoryUsage();
      process.stderr.write(
        `rss ${mib(m.rss)} heapUsed ${mib(m.heapUsed)} heapTotal ${mib(m.heapTotal)} external ${mib(m.external)} arrayBuffers ${mib(m.arrayBuffers)}\n`,
      );
    },
    Number(process.env.STOWAGE_BENCH_TRACE_MS ?? 1000),
  );
  return () => clearInterval(timer);
}

/** The S3 sink on the bench's local server (s3rver's fixed credentials; checksums as s3rver needs). */
async function s3BenchSink(s3: { endpoint: string; bucket: string }) {
  const { S3Client } = await import("@aws-sdk/client-s3");
  const { s3Sink } = await import("../src/sinks/s3.js");
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  return s3Sink({ client, bucket: s3.bucket, partSize: 8 << 20, queueSize: 10 });
}

async function main(): Promise<void> {
  const stopTrace = traceMemory();
  const args = JSON.parse(process.argv[2] ?? "{}") as ChildArgs;
  const key = process.env.STOWAGE_BENCH_KEY;
  if (!key) throw new Error("STOWAGE_BENCH_KEY is not set");
  const sink = args.s3 ? await s3BenchSink(args.s3) : filesystemSink({ root: args.root });
  const cpuBefore = process.resourceUsage();
  const mainBefore = mainThreadCpu();
  let result: Omit<ChildResult, "peakRssMiB" | "cpuSeconds">;
  if (args.mode === "backup") {
    const transforms: Transform[] = [];
    if (args.codec === "zstd") transforms.push(zstd({ level: args.level }));
    if (args.codec === "gzip") transforms.push(gzip({ level: args.level }));
    if (args.encrypt ?? true) transforms.push(aes256gcm({ key }));
    const started = process.hrtime.bigint();
    const manifest = await backup({ job: args.job, source: fileSource(args.file!), transforms, sink });
    result = {
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
      plainBytes: manifest.content.bytes,
      storedBytes: manifest.artifact.bytes,
      concurrency: manifest.transforms[0]?.concurrency,
    };
  } else {
    const { manifests } = await listManifests(sink, { job: args.job });
    const manifest = manifests.at(-1);
    if (!manifest) throw new Error(`no backup of job ${args.job} under ${args.root}`);
    const started = process.hrtime.bigint();
    let plainBytes = 0;
    // restore() checks the stored and plain SHA-256 and sizes as it streams; the bytes are dropped.
    await pipeline(
      await restore({ sink, manifest, keys: { key } }),
      new Writable({
        highWaterMark: 1 << 20,
        write(chunk: Buffer, _encoding, callback) {
          plainBytes += chunk.length;
          callback();
        },
      }),
    );
    result = {
      seconds: Number(process.hrtime.bigint() - started) / 1e9,
      plainBytes,
      storedBytes: manifest.artifact.bytes,
    };
  }
  stopTrace();
  const mainAfter = mainThreadCpu();
  const mainThreadCpuSeconds =
    mainBefore === undefined || mainAfter === undefined ? undefined : round2(mainAfter - mainBefore);
  const usage = process.resourceUsage();
  const peakRssMiB = usage.maxRSS / 1024; // maxRSS is in KiB
  const cpuSeconds =
    (usage.userCPUTime + usage.systemCPUTime - cpuBefore.userCPUTime - cpuBefore.systemCPUTime) / 1e6;
  // Exits once written: an S3 client's kept-alive sockets would hold the process open.
  process.stdout.write(
    `${JSON.stringify({ ...result, peakRssMiB, cpuSeconds, ...(mainThreadCpuSeconds === undefined ? {} : { mainThreadCpuSeconds }) } satisfies ChildResult)}\n`,
    () => process.exit(0),
  );
}

const round2 = (n: number) => Math.round(n * 100) / 100;

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
