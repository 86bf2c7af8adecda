/**
 * Deciding a point-in-time recovery before anything is written: which base backup, and whether
 * the archive holds every WAL segment from its start to the target. Pure: listings in, a plan out.
 */
import { StowageError } from "../../core/errors.js";
import type { Manifest } from "../../core/manifest.js";
import {
  type ArchivedWal,
  DEFAULT_WAL_SEGMENT_SIZE,
  parseLsn,
  parseWalName,
  segmentName,
} from "../../core/wal-names.js";
import type { PgBaseBackupDetails } from "./base-backup-source.js";

/** Where to stop replaying: a moment, an LSN, a named restore point, or the end of the archive. */
export type RecoveryTarget =
  | {
      /** Replay stops before the first transaction that committed after this moment. */
      time: Date | string;
    }
  | {
      /** Replay stops at this LSN, e.g. `0/3000060`. */
      lsn: string;
    }
  | {
      /** Replay stops at this restore point, made with `pg_create_restore_point(name)`. */
      name: string;
    }
  | "latest";

export interface RecoveryPlan {
  backup: Manifest;
  details: PgBaseBackupDetails;
  /** The first and last segment replay needs (the last: of the target, or the newest archived). */
  firstSegment: string;
  lastSegment: string;
}

const notFound = (message: string, details: Record<string, unknown>) =>
  new StowageError("NOT_FOUND", message, { details });

/** The base backup facts of a manifest, or undefined for any other manifest. */
export function baseBackupDetails(m: Manifest): PgBaseBackupDetails | undefined {
  const d = m.source.details as Partial<PgBaseBackupDetails>;
  if (typeof d.startLsn !== "string" || typeof d.stopLsn !== "string" || typeof d.timeline !== "number")
    return undefined;
  return d as PgBaseBackupDetails;
}

/** A target time as a Date. @throws {CONFIG_INVALID} */
export function targetTime(target: { time: Date | string }): Date {
  const at = target.time instanceof Date ? target.time : new Date(target.time);
  if (Number.isNaN(at.getTime())) {
    throw new StowageError("CONFIG_INVALID", `restorePostgresToPoint: target.time is not a time`, {
      details: { issues: [{ path: "target.time", problem: "not a valid time" }] },
    });
  }
  return at;
}

/**
 * Picks the base backup for `target` and checks the WAL it needs is all archived.
 * A time target takes the newest base backup finished at or before it; an LSN target the newest
 * whose stop LSN is at or before it; a named restore point and "latest" the newest (give
 * `backupId` for an older one, when the point was made before the newest backup).
 * @throws {NOT_FOUND} no base backup, a target before the oldest one or past the newest archived
 *   WAL (`details.reason`), or a segment missing from the chain (`details.segment` names it).
 */
export function planRecovery(
  job: string,
  backups: readonly Manifest[],
  wal: readonly ArchivedWal[],
  target: RecoveryTarget,
  backupId?: string,
): RecoveryPlan {
  const bases = backups
    .filter((m) => baseBackupDetails(m))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (bases.length === 0) throw notFound(`job ${job} has no base backup`, { job, reason: "no-base-backup" });
  const segments = wal.filter((w) => w.kind === "segment" || w.kind === "partial");
  const newestArchived = segments.reduce<Date | undefined>(
    (max, w) => (!max || w.archivedAt > max ? w.archivedAt : max),
    undefined,
  );
  const maxSegment = Math.max(-1, ...segments.map((w) => w.segment!));

  let candidates = bases;
  let lastSegment: number | undefined;
  if (typeof target === "object" && "time" in target) {
    const at = targetTime(target);
    candidates = bases.filter((m) => new Date(m.finishedAt) <= at);
    if (candidates.length === 0) {
      throw notFound(
        `job ${job}: ${at.toISOString()} is before the oldest base backup (${bases[0]!.finishedAt})`,
        {
          job,
          reason: "before-oldest-backup",
        },
      );
    }
    if (!newestArchived || at > newestArchived) {
      throw notFound(
        `job ${job}: ${at.toISOString()} is past the newest archived WAL (${newestArchived?.toISOString() ?? "none"})`,
        { job, reason: "after-newest-wal" },
      );
    }
  } else if (typeof target === "object" && "lsn" in target) {
    const lsn = parseLsn(target.lsn, "target.lsn");
    candidates = bases.filter((m) => parseLsn(baseBackupDetails(m)!.stopLsn) <= lsn);
    if (candidates.length === 0) {
      throw notFound(`job ${job}: LSN ${target.lsn} is before the oldest base backup`, {
        job,
        reason: "before-oldest-backup",
      });
    }
    const size = baseBackupDetails(candidates.at(-1)!)!.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
    lastSegment = Number(lsn / BigInt(size));
    if (lastSegment > maxSegment) {
      throw notFound(`job ${job}: LSN ${target.lsn} is past the newest archived WAL`, {
        job,
        reason: "after-newest-wal",
      });
    }
  }
  const backup = backupId ? candidates.find((m) => m.id === backupId) : candidates.at(-1);
  if (!backup) {
    throw notFound(`job ${job}: no base backup ${backupId} that fits the target`, {
      job,
      reason: "no-such-backup",
    });
  }
  const details = baseBackupDetails(backup)!;
  const size = details.walSegmentSize ?? DEFAULT_WAL_SEGMENT_SIZE;
  const first = parseWalName(details.startSegment, size)!.segment!;
  const stop = parseWalName(details.stopSegment, size)!.segment!;
  const last = Math.max(lastSegment ?? maxSegment, stop);
  // Every segment from the backup's start on, on its timeline or a later one (after a switch).
  const have = new Map<number, number>();
  for (const w of segments) {
    if (w.timeline >= details.timeline) have.set(w.segment!, Math.max(have.get(w.segment!) ?? 0, w.timeline));
  }
  let timeline = details.timeline;
  for (let n = first; n <= last; n++) {
    const found = have.get(n);
    if (found === undefined) {
      const missing = segmentName(timeline, n, size);
      throw notFound(
        `job ${job}: WAL segment ${missing} is missing from the archive; recovery cannot pass it`,
        {
          job,
          reason: "missing-segment",
          segment: missing,
        },
      );
    }
    timeline = found;
  }
  return {
    backup,
    details,
    firstSegment: details.startSegment,
    lastSegment: segmentName(timeline, last, size),
  };
}
