/**
 * An incremental directory backup in its own Node process, so that a test can SIGKILL it part-way:
 *
 *   node --import tsx test/support/incremental-child.ts '<json>'
 *
 * where the JSON names `tree`, `root` (a filesystem sink) and `job`. The key travels in the
 * environment (`STOWAGE_TEST_KEY`, hex), never in argv. It chains onto the job's newest backup,
 * prints `started` once the run is under way, and `done <key>` when it ends, which a killed run
 * never does.
 */
import { aes256gcm, backup, directorySource, filesystemSink, gzip, listManifests } from "../../src/index.js";

const plan = JSON.parse(process.argv[2] ?? "{}") as { tree: string; root: string; job: string };
const key = Buffer.from(process.env.STOWAGE_TEST_KEY ?? "", "hex");
const sink = filesystemSink({ root: plan.root });
const { manifests } = await listManifests(sink, { job: plan.job });
const base = manifests.at(-1)!;
process.stdout.write("started\n");
const manifest = await backup({
  job: plan.job,
  source: directorySource({ path: plan.tree }).chainFrom({
    kind: "incremental",
    base,
    sink,
    keys: [{ key }],
  }),
  sink,
  transforms: [gzip({ level: 9 }), aes256gcm({ key })],
});
process.stdout.write(`done ${manifest.artifact.key}\n`);
