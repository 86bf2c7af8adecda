/**
 * The monthly backup test (the ACSO seed's): for each tier of examples/tiered-backups.ts, take the
 * latest backup, verify it, restore it into a scratch target, check what came back, measure the
 * restore time (RTO) and the backup's age (RPO), and write one JSON report. Scratch targets are
 * removed afterwards. Exit code 0 when every drill passed, 1 otherwise — run it from a monthly
 * CronJob and alert on failure.
 *
 *   tsx examples/restore-drill.ts [report.json]
 *
 * | tier          | scratch target                                   | check                           |
 * |---------------|--------------------------------------------------|---------------------------------|
 * | postgres      | a new database on STOWAGE_DRILL_PG_URL (dropped) | the restored tables have rows   |
 * | postgres (S3) | the same, from the offsite copy in S3            | same                            |
 * | kubernetes    | server-side dry run of the restore               | the API server accepts every object |
 * | service-state | a temporary folder                               | JSON with the constitutional hash |
 * | audit-log     | a temporary folder                               | every line is a valid audit entry |
 *
 * Environment: the same as tiered-backups.ts, plus
 *   STOWAGE_DRILL_PG_URL     where scratch databases may be created (default STOWAGE_PG_URL)
 *   STOWAGE_DRILL_REPORT     the report's path (default the first argument, else ./restore-drill-report.json)
 */
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { auditEntrySchema, type DrillCheck, type DrillReport, restoreDrill } from "stowage";
import { kubernetesRestoreTarget } from "stowage/sources/kubernetes";
import { postgresRestoreTarget } from "stowage/sources/postgres";
import { CONSTITUTIONAL_HASH, kubeConfig, tieredConfig } from "./tiered-backups.js";

const config = tieredConfig();
const job = (name: string) => {
  const found = config.jobs.find((j) => j.name === name);
  if (!found) throw new Error(`no job ${name}`);
  return found;
};
const reportPath = resolve(
  process.env.STOWAGE_DRILL_REPORT ?? process.argv[2] ?? "restore-drill-report.json",
);
const scratchConnection = process.env.STOWAGE_DRILL_PG_URL ?? process.env.STOWAGE_PG_URL!;

/** Every public table restored, with its row count; the drill fails if there are none or all are empty. */
const tablesHaveRows: DrillCheck = ({ rows }) => {
  const tables = (rows ?? []).map((r) => ({ table: String(r.table_name), rows: Number(r.n) }));
  return { ok: tables.length > 0 && tables.some((t) => t.rows > 0), details: { tables } };
};
const ROW_COUNTS = `
  SELECT c.relname AS table_name,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1`;

const stateHasHash: DrillCheck = async ({ file }) => {
  const state = JSON.parse(await readFile(file!, "utf8")) as Record<string, unknown>;
  return {
    ok: state.constitutional_hash === CONSTITUTIONAL_HASH,
    details: { keys: Object.keys(state).length },
  };
};

const auditLinesValid: DrillCheck = async ({ directory }) => {
  let lines = 0;
  for (const name of await readdir(directory!)) {
    if (!name.endsWith(".jsonl")) continue;
    for (const line of (await readFile(join(directory!, name), "utf8")).split("\n")) {
      if (line.trim() === "") continue;
      if (!auditEntrySchema.safeParse(JSON.parse(line)).success)
        return { ok: false, details: { badLine: lines + 1 } };
      lines++;
    }
  }
  return { ok: lines > 0, details: { lines } };
};

const postgres = job("postgres");
const common = { audit: config.audit, rto: "1h" } as const;
const drills: Array<{ name: string; run: () => Promise<DrillReport> }> = [
  {
    name: "postgres",
    run: () =>
      restoreDrill({
        ...common,
        job: postgres,
        target: postgresRestoreTarget({ connection: scratchConnection, query: ROW_COUNTS }),
        check: tablesHaveRows,
        rpo: "30m",
      }),
  },
  {
    name: "postgres (offsite copy in S3)",
    run: () =>
      restoreDrill({
        ...common,
        job: postgres,
        sink: postgres.copies[0]!.sink,
        target: postgresRestoreTarget({ connection: scratchConnection, query: ROW_COUNTS }),
        check: tablesHaveRows,
        rpo: "30m",
      }),
  },
  {
    name: "kubernetes",
    run: () =>
      restoreDrill({
        ...common,
        job: job("kubernetes"),
        // A server-side dry run (dryRun=All) into the same cluster: checked, nothing stored.
        target: kubernetesRestoreTarget({ kubeConfig: kubeConfig() }),
        check: ({ kubernetes }) => ({
          ok: (kubernetes?.counts.failed ?? 1) === 0,
          details: { counts: kubernetes?.counts },
        }),
        rpo: "12h",
      }),
  },
  {
    name: "service-state",
    run: () =>
      restoreDrill({
        ...common,
        job: job("service-state"),
        target: { kind: "directory" },
        check: stateHasHash,
        rpo: "1h",
      }),
  },
  {
    name: "audit-log",
    run: () =>
      restoreDrill({
        ...common,
        job: job("audit-log"),
        target: { kind: "directory" },
        check: auditLinesValid,
        rpo: "10m",
      }),
  },
];

const startedAt = new Date().toISOString();
const results: Array<{ drill: string } & DrillReport> = [];
for (const drill of drills) {
  const report = await drill.run();
  results.push({ drill: drill.name, ...report });
  const errors = report.errors.map((e) => ` ${e.stage}:${e.code}`).join("");
  console.log(
    `${report.ok ? "ok  " : "FAIL"} ${drill.name.padEnd(30)} backup ${report.backup?.id ?? "-"}  RPO ${
      report.rpoMs === null ? "-" : `${Math.round(report.rpoMs / 1000)}s`
    }  RTO ${report.rtoMs === null ? "-" : `${report.rtoMs}ms`}${errors}`,
  );
}
const summary = {
  kind: "stowage-restore-drill",
  constitutional_hash: CONSTITUTIONAL_HASH,
  startedAt,
  finishedAt: new Date().toISOString(),
  ok: results.every((r) => r.ok),
  drills: results,
};
await writeFile(reportPath, `${JSON.stringify(summary, null, 2)}\n`);
console.log(`report: ${reportPath}`);
process.exitCode = summary.ok ? 0 : 1;
