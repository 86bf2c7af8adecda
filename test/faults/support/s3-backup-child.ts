/**
 * A backup into S3 run in its own Node process, so that a fault test can SIGKILL it mid-upload.
 * Run with tsx:
 *
 *   node --import tsx test/faults/support/s3-backup-child.ts '<json>'
 *
 * where the JSON names `endpoint`, `region`, `bucket` and `job`. The credentials travel in the
 * environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never in argv.
 * The source sends 64 MiB slowly, so the upload is under way for several seconds.
 */
import { randomBytes } from "node:crypto";
import { S3Client } from "@aws-sdk/client-s3";
import { backup, bytesSource } from "../../../src/index.js";
import { s3Sink } from "../../../src/sinks/s3.js";

interface Plan {
  endpoint: string;
  region: string;
  bucket: string;
  job: string;
}

const plan = JSON.parse(process.argv[2] ?? "{}") as Plan;
const client = new S3Client({
  endpoint: plan.endpoint,
  region: plan.region,
  forcePathStyle: true,
  requestChecksumCalculation: "WHEN_REQUIRED",
  responseChecksumValidation: "WHEN_REQUIRED",
});
async function* slow() {
  for (let i = 0; i < 64; i++) {
    yield randomBytes(1024 * 1024);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
process.stdout.write("started\n");
await backup({
  job: plan.job,
  source: bytesSource({ data: slow }),
  sink: s3Sink({ client, bucket: plan.bucket, partSize: 5 * 1024 * 1024, queueSize: 2 }),
});
process.stdout.write("done\n");
