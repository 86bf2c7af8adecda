/**
 * A plain-format restore run in its own Node process, so that a fault test can SIGKILL it while
 * psql is still reading: the way a host service dies mid-restore. Run with tsx:
 *
 *   node --import tsx test/faults/support/restore-child.ts '<json>'
 *
 * where the JSON names `connection` and `database`. The password travels in the environment
 * (`STOWAGE_FAULT_PG_PASSWORD`). The dump it feeds is the first part of one: a table and a row,
 * then nothing more, ever — as if the artifact were still arriving from a slow sink. It prints
 * `fed` once that part is written.
 */
import { Readable } from "node:stream";
import { restorePostgres } from "../../../src/sources/postgres.js";

interface Plan {
  connection: { host: string; port: number; user: string; database: string };
  database: string;
}

const plan = JSON.parse(process.argv[2] ?? "{}") as Plan;
const password = process.env.STOWAGE_FAULT_PG_PASSWORD;
let fed = false;
const stream = new Readable({
  read() {
    if (fed) return; // the rest of the dump never comes
    fed = true;
    this.push("CREATE TABLE half_restored (id int);\nINSERT INTO half_restored VALUES (1);\n");
    setTimeout(() => process.stdout.write("fed\n"), 200);
  },
});
await restorePostgres({
  connection: { ...plan.connection, password },
  database: plan.database,
  format: "plain",
  stream,
});
