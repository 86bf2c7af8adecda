/**
 * A backup run in its own Node process, so that a fault test can SIGKILL it mid-dump: the way a
 * host service dies to the OOM killer or `kill -9`. Run with tsx:
 *
 *   node --import tsx test/faults/support/backup-child.ts '<json>'
 *
 * where the JSON names `root`, `job`, `connection`, `format` ("plain" | "custom") and `transforms`
 * ("none" | "gzip+aes"). The password travels in the environment (`STOWAGE_FAULT_PG_PASSWORD`),
 * never in argv. It prints `started <pid>` once the backup is under way, then the manifest's key
 * (or the error's code) when it ends, which a killed run never does.
 */
import { aes256gcm, backup, filesystemSink, gzip, isStowageError } from "../../../src/index.js";
import { pgDumpSource } from "../../../src/sources/postgres.js";

interface Plan {
  root: string;
  job: string;
  connection: { host: string; port: number; user: string; database: string };
  format: "plain" | "custom";
  transforms: "none" | "gzip+aes";
  key?: string;
}

const plan = JSON.parse(process.argv[2] ?? "{}") as Plan;
const password = process.env.STOWAGE_FAULT_PG_PASSWORD;
process.stdout.write(`started ${process.pid}\n`);
try {
  const manifest = await backup({
    job: plan.job,
    source: pgDumpSource({ connection: { ...plan.connection, password }, format: plan.format }),
    transforms: plan.transforms === "none" ? [] : [gzip(), aes256gcm({ key: plan.key! })],
    sink: filesystemSink({ root: plan.root }),
  });
  process.stdout.write(`done ${manifest.artifact.key}\n`);
} catch (error) {
  process.stdout.write(`failed ${isStowageError(error) ? error.code : String(error)}\n`);
  process.exitCode = 1;
}
