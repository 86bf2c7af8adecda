/**
 * The WAL half of retention: lists a job's archived WAL (what `archiveWal` keeps under
 * `<job>/wal/`) and deletes what `planWalRetention` drops. `applyRetention` runs it for every job
 * whose kept backups include a base backup; `applyWalRetention` (in `stowage/sources/postgres`) is
 * the same step on its own.
 */
import { planWalRetention, type WalRetentionPlan } from "../policies/wal.js";
import { deleteKeys } from "./delete-keys.js";
import { type StowageError, wrapError } from "./errors.js";
import type { Manifest } from "./manifest.js";
import type { Sink } from "./types.js";
import { type ArchivedWal, groupWalListing, WAL_FOLDER } from "./wal-names.js";

/** One listing of `<job>/wal/`, grouped: archived files, and keys of pushes that never finished. */
async function listWal(sink: Sink, job: string, signal?: AbortSignal) {
  const listed: Array<{ key: string; lastModified: Date }> = [];
  const prefix = `${job}/${WAL_FOLDER}/`;
  try {
    for await (const info of sink.list(prefix, signal ? { signal } : {})) listed.push(info);
  } catch (error) {
    throw wrapError(error, "SINK_READ_FAILED", `listing the WAL of ${job}`, { prefix }, signal);
  }
  return groupWalListing(job, listed);
}

/** Every archived WAL file of a job (one listing of `<job>/wal/`). @throws {SINK_READ_FAILED} */
export async function listArchivedWal(sink: Sink, job: string, signal?: AbortSignal): Promise<ArchivedWal[]> {
  return (await listWal(sink, job, signal)).files;
}

/** An archived WAL file that retention deleted (or, with `dryRun`, would delete). */
export interface DeletedWal {
  /** The job whose archive held it. */
  job: string;
  /** The WAL file's name: `000000010000000000000003`, `….00000028.backup`. */
  name: string;
  /** Its stored artifact's key (`db/wal/00000001/000000010000000000000003.gz.enc`). */
  key: string;
  /** Every key removed with it (the artifact and its record). */
  keys: string[];
  /** `"before <segment>"`: the oldest segment a kept base backup needs. */
  reason: string;
}

/** A WAL file whose deletion failed; with `stage: "record"` it is intact and still archived. */
export interface FailedWalDeletion extends DeletedWal {
  /** Which deletion failed: the record (the file is untouched) or, after it, the artifact. */
  stage: "record" | "artifact";
  /** Why, with the sink's code. */
  error: StowageError;
}

/** Whether a manifest is a base backup that WAL replays from (it records its start segment). */
export const isBaseBackup = (m: Manifest): boolean => typeof m.source.details.startSegment === "string";

/**
 * Deletes the WAL files of `job` that no base backup in `kept` needs: each file's record first
 * (without it the file no longer counts as archived), then its artifact, in batches whose failures
 * are retried key by key. With no base backup in `kept`, nothing is deleted (see
 * `planWalRetention`). With `dryRun`, reports what would go.
 * @throws {SINK_READ_FAILED} when the WAL cannot be listed. {ABORTED}
 */
export async function pruneWal(options: {
  sink: Sink;
  job: string;
  kept: readonly Manifest[];
  dryRun: boolean;
  batchSize: number;
  signal: AbortSignal | undefined;
}): Promise<{ plan: WalRetentionPlan; deleted: DeletedWal[]; failed: FailedWalDeletion[] }> {
  const { sink, job, signal } = options;
  const { files, orphans } = await listWal(sink, job, signal);
  const plan = planWalRetention(options.kept, files);
  const drops = plan.drop.map(({ file, reason }) => {
    const { recordKey, keys, name } = file as ArchivedWal;
    return { job, name, key: keys.find((k) => k !== recordKey) ?? recordKey, keys, reason, recordKey };
  });
  const strip = ({ recordKey: _, ...d }: (typeof drops)[number]): DeletedWal => d;
  const result = { plan, deleted: [] as DeletedWal[], failed: [] as FailedWalDeletion[] };
  if (options.dryRun) {
    result.deleted = drops.map(strip);
    return result;
  }
  for (let i = 0; i < drops.length; i += options.batchSize) {
    const batch = drops.slice(i, i + options.batchSize);
    const recordErrors = await deleteKeys(
      sink,
      batch.map((d) => d.recordKey),
      signal,
      "WAL retention",
    );
    const gone = batch.filter((d) => !recordErrors.has(d.recordKey));
    for (const d of batch) {
      const error = recordErrors.get(d.recordKey);
      if (error) result.failed.push({ ...strip(d), stage: "record", error });
    }
    // A file whose record is gone no longer counts as archived; an artifact left behind here is
    // an orphan to the next listing, removed below by the next run.
    const artifacts = gone.flatMap((d) => d.keys.filter((k) => k !== d.recordKey));
    const artifactErrors = await deleteKeys(sink, artifacts, signal, "WAL retention");
    for (const d of gone) {
      const error = d.keys.map((k) => artifactErrors.get(k)).find((e) => e !== undefined);
      if (error) result.failed.push({ ...strip(d), stage: "artifact", error });
      else result.deleted.push(strip(d));
    }
  }
  // Artifacts whose record is missing and that sort before what is kept: a push that died, or a
  // deletion cut short. Newer ones may be a push in progress and are left alone.
  const from = plan.keepFrom?.slice(8);
  const stale = from
    ? orphans.filter((k) => (/\/[0-9A-F]{8}([0-9A-F]{16})[^/]*$/.exec(k)?.[1] ?? "~") < from)
    : [];
  if (stale.length > 0) await deleteKeys(sink, stale, signal, "WAL retention");
  return result;
}
