/** `stowage run`: every job (or --job …): backup, copies, retention, validation. */
import type { BackupProgress } from "../core/types.js";
import type { StowageConfig } from "../jobs/config.js";
import { type CycleResult, runJobs } from "../jobs/cycle.js";
import { formatBytes, formatDuration } from "../policies/status.js";
import { selectJobs } from "./config.js";
import { type Flags, positiveInteger, progressFor } from "./flags.js";
import { EXIT, type Io, print } from "./output.js";

function cycleText(cycle: CycleResult): string {
  const lines = cycle.jobs.map((j) => {
    const mark = j.status === "succeeded" ? "ok  " : j.status === "skipped" ? "skip" : "FAIL";
    const size = j.manifest ? `${formatBytes(j.bytes.plain)} -> ${formatBytes(j.bytes.stored)}` : "-";
    const copies = j.copies.map((c) => `${c.target}:${c.status}`).join(" ");
    const pruned = j.retention.map((r) => `${r.target}:-${r.deleted.length}`).join(" ");
    const head = `${mark} ${j.job.padEnd(24)} ${size.padEnd(24)} ${formatDuration(j.durations.totalMs).padEnd(8)}${
      copies ? ` copies ${copies}` : ""
    }${pruned ? ` pruned ${pruned}` : ""}`;
    const errors = j.errors.map(
      (e) => `       ${e.stage}${e.target ? `(${e.target})` : ""} ${e.code}: ${e.message}`,
    );
    return [head, ...errors].join("\n");
  });
  for (const e of cycle.errors) lines.push(`FAIL cycle ${e.stage} ${e.code}: ${e.message}`);
  lines.push(`${cycle.succeeded}/${cycle.jobs.length} jobs succeeded in ${formatDuration(cycle.durationMs)}`);
  return lines.join("\n");
}

/** Runs the selected jobs once; exit 1 when any failed. @throws {CONFIG_INVALID} a bad config */
export async function runCommand(flags: Flags, io: Io, load: () => Promise<StowageConfig>): Promise<number> {
  const config = await load();
  const jobs = selectJobs(config, flags.job);
  const concurrency = positiveInteger(flags.concurrency, "concurrency") ?? config.concurrency;
  const bar = progressFor(flags, io, config);
  try {
    const cycle = await runJobs(jobs, {
      concurrency,
      signal: io.signal,
      timeZone: config.timeZone,
      retention: flags.prune !== false && !flags["no-prune"],
      ...(config.audit ? { audit: config.audit } : {}),
      ...(config.lock ? { lock: config.lock } : {}),
      ...(config.logger ? { logger: config.logger } : {}),
      onProgress: (job: string, p: BackupProgress) =>
        p.done
          ? bar.end(`${job} backup`)
          : bar.update(`${job} backup`, { bytes: p.bytesRead, elapsedMs: p.elapsedMs }),
    });
    bar.done();
    print(io, flags.json ? JSON.stringify(cycle, null, 2) : cycleText(cycle));
    return cycle.ok ? EXIT.ok : EXIT.failed;
  } finally {
    bar.done();
  }
}
