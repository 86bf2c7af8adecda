/** `stowage status`: the status report as text, JSON or Prometheus exposition text. */

import { listManifests } from "../core/catalog.js";
import type { StowageError } from "../core/errors.js";
import type { Manifest } from "../core/manifest.js";
import { isBaseBackup, listArchivedWal } from "../core/wal-prune.js";
import { errorCode } from "../jobs/audit.js";
import type { StowageConfig } from "../jobs/config.js";
import { formatPrometheus } from "../policies/prometheus.js";
import { formatStatusText, summarize } from "../policies/status.js";
import type { WalInput } from "../policies/wal-report.js";
import { selectJobs } from "./config.js";
import type { Flags } from "./flags.js";
import { EXIT, type Io, print } from "./output.js";

/** Prints the status report; exit 1 when the overall status is failing. */
export async function statusCommand(
  flags: Flags,
  io: Io,
  load: () => Promise<StowageConfig>,
): Promise<number> {
  const config = await load();
  const jobs = selectJobs(config, flags.job);
  const manifests: Manifest[] = [];
  const invalid: Array<{ key: string; error: StowageError }> = [];
  for (const job of jobs) {
    const listing = await listManifests(job.sink, { job: job.name, signal: io.signal });
    manifests.push(...listing.manifests);
    invalid.push(...listing.invalid);
  }
  // The RPO: the config's, else each job's own `rules.maxAge`.
  const rpo: Record<string, string> = {};
  for (const job of jobs) {
    const own = typeof job.rules?.maxAge === "string" ? job.rules.maxAge : undefined;
    const configured = config.status?.rpo;
    const value = typeof configured === "string" ? configured : (configured?.[job.name] ?? own);
    if (value) rpo[job.name] = value;
  }
  // Rules for the compliance figures: the config's, else the jobs' when they all agree.
  const shared = new Set(jobs.map((j) => JSON.stringify(j.rules ?? null)));
  const rules = config.status?.rules ?? (shared.size === 1 ? jobs[0]?.rules : undefined);
  // The WAL archive of each job that keeps one (its source can ask the server, or it has base
  // backups): one listing, and the server's archiver where it answers (else the lag is unknown).
  const wal: Record<string, WalInput> = {};
  for (const job of jobs) {
    const ask = job.source.archiverStatus;
    if (!ask && !manifests.some((m) => m.job === job.name && isBaseBackup(m))) continue;
    const files = await listArchivedWal(job.sink, job.name, io.signal);
    let archiver: WalInput["archiver"];
    let archiverError: string | undefined;
    try {
      archiver = ask ? await ask.call(job.source, { signal: io.signal }) : undefined;
    } catch (error) {
      if (io.signal.aborted) throw error;
      archiverError = errorCode(error);
    }
    wal[job.name] = { files, ...(archiver ? { archiver } : {}), ...(archiverError ? { archiverError } : {}) };
  }
  const report = summarize(manifests, {
    now: new Date(),
    rpo,
    invalid,
    jobs: jobs.map((j) => j.name),
    ...(rules ? { rules } : {}),
    ...(Object.keys(wal).length > 0 ? { wal } : {}),
  });
  if (flags.prometheus) io.stdout.write(formatPrometheus(report));
  else if (flags.json) print(io, JSON.stringify(report, null, 2));
  else io.stdout.write(formatStatusText(report));
  return report.overall.status === "failing" ? EXIT.failed : EXIT.ok;
}
