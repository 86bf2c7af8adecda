import { StowageError } from "../core/errors.js";
import type { Manifest } from "../core/manifest.js";

/** How {@link selectBackup} picks: the job, the moment to restore to, and which time counts. */
export interface SelectBackupOptions {
  /** The job whose backups are candidates. */
  job: string;
  /**
   * The latest backup at or before this moment (a Date or an ISO 8601 string). Without it, the
   * latest backup of the job.
   */
  at?: Date | string;
  /**
   * Which time places a backup: `startedAt` (the default) is when a `pg_dump` takes its snapshot,
   * so "the database as it was at 03:00" is the last dump that *started* by 03:00, even if it
   * finished later; `finishedAt` picks only backups that were complete by then.
   * @default "startedAt"
   */
  by?: "startedAt" | "finishedAt";
}

/**
 * Picks the backup to restore: the latest of a job, or the latest at or before a point in time.
 * Pure: no I/O, no clock; ties on time go to the greater id (ids sort by start time).
 *
 * @returns the manifest, or `undefined` when the job has no backup at or before `at`.
 * @throws {CONFIG_INVALID} when `at` is not a valid time.
 * @example
 * const { manifests } = await listManifests(sink, { job: "app-db" });
 * const manifest = selectBackup(manifests, { job: "app-db", at: "2026-03-01T03:00:00Z" });
 */
export function selectBackup(
  manifests: readonly Manifest[],
  options: SelectBackupOptions,
): Manifest | undefined {
  const by = options.by ?? "startedAt";
  let limit = Number.POSITIVE_INFINITY;
  if (options.at !== undefined) {
    limit = (options.at instanceof Date ? options.at : new Date(options.at)).getTime();
    if (Number.isNaN(limit)) {
      throw new StowageError("CONFIG_INVALID", "selectBackup: at is not a valid time", {
        details: { issues: [{ path: "at", problem: "not a valid time" }] },
      });
    }
  }
  let best: { manifest: Manifest; time: number } | undefined;
  for (const manifest of manifests) {
    if (manifest.job !== options.job) continue;
    const time = Date.parse(manifest[by]);
    if (Number.isNaN(time) || time > limit) continue;
    if (!best || time > best.time || (time === best.time && manifest.id > best.manifest.id)) {
      best = { manifest, time };
    }
  }
  return best?.manifest;
}
