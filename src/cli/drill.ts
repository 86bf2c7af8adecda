/** `stowage drill`: a restore drill of each job that has one, into its scratch target. */
import { writeFile } from "node:fs/promises";
import { resolve } from "node:path";
import type { StowageConfig } from "../jobs/config.js";
import { type DrillReport, restoreDrill } from "../jobs/drill.js";
import { formatDuration } from "../policies/status.js";
import { selectJobs, sinkOf } from "./config.js";
import type { Flags } from "./flags.js";
import { EXIT, type Io, print, UsageError } from "./output.js";

/** Runs each selected job's restore drill; exit 1 when one fails. */
export async function drillCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const config = await load();
  const jobs = selectJobs(config, flags.job).filter((j) => j.drill !== undefined);
  if (jobs.length === 0) throw new UsageError("no job has a drill: give a job `drill: { target, check? }`");
  const reports: DrillReport[] = [];
  for (const job of jobs) {
    const drill = job.drill as Record<string, unknown>;
    reports.push(
      await restoreDrill({
        ...drill,
        job,
        ...(flags.from ? { sink: sinkOf(job, flags.from) } : {}),
        ...(config.audit ? { audit: config.audit } : {}),
        ...(config.logger ? { logger: config.logger } : {}),
        signal: io.signal,
      } as Parameters<typeof restoreDrill>[0]),
    );
  }
  const output = reports.length === 1 ? reports[0] : reports;
  if (flags.report) await writeFile(resolve(io.cwd, flags.report), `${JSON.stringify(output, null, 2)}\n`);
  if (flags.json) print(io, JSON.stringify(output, null, 2));
  else {
    for (const r of reports) {
      print(
        io,
        `${r.ok ? "ok  " : "FAIL"} drill ${r.job} (${r.target}): backup ${r.backup?.id ?? "-"}, RPO ${
          r.rpoMs === null ? "-" : formatDuration(r.rpoMs)
        }, RTO ${r.rtoMs === null ? "-" : formatDuration(r.rtoMs)}`,
      );
      for (const e of r.errors) print(io, `       ${e.stage} ${e.code}: ${e.message}`);
    }
  }
  return reports.every((r) => r.ok) ? EXIT.ok : EXIT.failed;
}
