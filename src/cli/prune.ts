/** `stowage prune`: apply retention now (--dry-run: only show what would go). */
import type { StowageConfig } from "../jobs/config.js";
import { pruneJob, type RetentionResult } from "../jobs/cycle.js";
import { selectJobs } from "./config.js";
import type { Flags } from "./flags.js";
import { EXIT, type Io, print } from "./output.js";

/** Applies (or, with --dry-run, plans) each job's retention; exit 1 when a sink fails. */
export async function pruneCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const config = await load();
  const jobs = selectJobs(config, flags.job);
  const out: Array<{ job: string; results: RetentionResult[] }> = [];
  for (const job of jobs) {
    const results = await pruneJob(job, {
      signal: io.signal,
      dryRun: flags["dry-run"] === true,
      timeZone: config.timeZone,
      ...(config.audit ? { audit: config.audit } : {}),
      ...(config.logger ? { logger: config.logger } : {}),
    });
    out.push({ job: job.name, results });
  }
  await config.audit?.flush();
  const failed = out.some((o) => o.results.some((r) => r.status === "failed"));
  if (flags.json)
    print(io, JSON.stringify({ ok: !failed, dryRun: flags["dry-run"] === true, jobs: out }, null, 2));
  else {
    for (const { job, results } of out) {
      if (results.length === 0) print(io, `${job}: no retention policy`);
      for (const r of results) {
        const verb = flags["dry-run"] ? "would delete" : "deleted";
        print(
          io,
          `${r.status === "failed" ? "FAIL" : "ok  "} ${job}@${r.target}: kept ${r.kept}, ${verb} ${r.deleted.length}${
            r.error ? `  ${r.error.code}: ${r.error.message}` : ""
          }`,
        );
        for (const key of r.deleted) print(io, `       ${key}`);
        if (r.walDeleted)
          print(io, `       ${verb} ${r.walDeleted.length} WAL files no kept base backup needs`);
      }
    }
  }
  return failed ? EXIT.failed : EXIT.ok;
}
